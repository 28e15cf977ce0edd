"""Runtime env (`client.runtime_env`) through the official MIOSA SDK: set,
list, get, delete; what a sandbox and a runtime instance boot with; its
place below shared variables; disabled variables; scopes, targets,
reveal and bad input."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from miosa import Miosa
from miosa.errors import MiosaError

# A runtime instance that answers its own environment as JSON.
APP = r'''
import json, os, http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(dict(os.environ)).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'''


def admin(mds) -> dict[str, str]:
    return {"Authorization": f"Bearer {mds.admin_key}"}


def key_with(client, mds, *scopes: str) -> Miosa:
    made = client.api_keys.create(name=f"k-{uuid.uuid4().hex[:6]}", scopes=list(scopes))
    token = made.get("token") or made.get("key")
    return Miosa(api_key=token, base_url=mds.url, max_retries=0)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8].upper()}"


def printenv(sandbox, name: str) -> str:
    out = sandbox.exec.run(f"printenv {name} || echo '<unset>'")
    assert out.exit_code == 0, out.stderr
    return out.stdout.strip()


def error_of(call) -> tuple[int, str, dict]:
    with pytest.raises(MiosaError) as caught:
        call()
    e = caught.value
    return e.status_code, e.code, (e.details or {})


def test_set_list_get_delete_and_what_a_sandbox_boots_with(client, mds):
    project = client.projects.create(f"rte-{uuid.uuid4().hex[:6]}")
    pid = project["id"]
    both, runtime_only, off = unique("RTE_BOTH"), unique("RTE_RUNTIME"), unique("RTE_OFF")

    made = client.runtime_env.set(scope="project", project_id=pid, target="all",
                                  name=both, value="project-value")
    assert made["id"].startswith("rtenv_")
    assert (made["scope"], made["project_id"], made["target"], made["name"]) == (
        "project", pid, "all", both)
    assert made["enabled"] is True and "value" not in made
    assert made["preview"] == "proj…"
    rt = client.runtime_env.set(project_id=pid, target="deployment", name=runtime_only, value="rt")
    assert (rt["scope"], rt["target"]) == ("project", "runtime")  # the SDK's words, canonical
    client.runtime_env.set(project_id=pid, name=off, value="hidden", enabled=False)

    listed = client.runtime_env.list(scope="project", project_id=pid)
    assert sorted(r["name"] for r in listed) == sorted([both, runtime_only, off])
    assert all("value" not in r for r in listed)
    assert "project-value" not in json.dumps(listed)
    assert [r["name"] for r in client.runtime_env.list(project_id=pid, target="runtime")] == [
        runtime_only]
    assert client.runtime_env.get(made["id"])["name"] == both

    # The same key again replaces the value and keeps the id.
    again = client.runtime_env.set(project_id=pid, target="all", name=both, value="second")
    assert again["id"] == made["id"] and again["preview"] == "seco…"

    sandbox = client.sandboxes.create(project_id=pid)
    try:
        assert printenv(sandbox, both) == "second"
        assert printenv(sandbox, runtime_only) == "<unset>"  # runtime instances only
        assert printenv(sandbox, off) == "<unset>"  # kept, not injected
    finally:
        sandbox.destroy()

    # Another project's sandbox does not see this project's variables.
    other = client.projects.create(f"rte-other-{uuid.uuid4().hex[:6]}")
    theirs = client.sandboxes.create(project_id=other["id"])
    try:
        assert printenv(theirs, both) == "<unset>"
    finally:
        theirs.destroy()

    client.runtime_env.delete(made["id"])
    status, code, _ = error_of(lambda: client.runtime_env.get(made["id"]))
    assert status == 404, code
    assert both not in [r["name"] for r in client.runtime_env.list(project_id=pid)]
    # Deleting the project takes its variables with it.
    client.projects.delete(pid)
    assert all(r["project_id"] != pid for r in client.runtime_env.list(scope="project"))


def test_precedence_tenant_project_shared_and_the_sandbox_target(client, mds):
    project = client.projects.create(f"rte-prec-{uuid.uuid4().hex[:6]}")
    pid = project["id"]
    name, only_tenant, sandbox_only = unique("RTE_P"), unique("RTE_T"), unique("RTE_S")
    made = []
    try:
        made.append(client.runtime_env.set(scope="tenant", name=name, value="tenant"))
        made.append(client.runtime_env.set(scope="tenant", name=only_tenant, value="t-only"))
        made.append(client.runtime_env.set(scope="workspace", name=name, value="workspace"))
        made.append(client.runtime_env.set(scope="project", project_id=pid, name=name,
                                           value="project"))
        made.append(client.runtime_env.set(scope="tenant", target="computer",
                                           name=sandbox_only, value="sbx"))
        # The tenant's and workspace's defaults, then the project's, then a
        # shared variable of the environment, which wins.
        env = httpx.get(f"{mds.url}/api/v1/projects/{pid}/env", params={"env": "staging"},
                        headers=admin(mds)).json()["data"]
        by_name = {v["name"]: v for v in env["variables"]}
        assert by_name[name]["source"] == {"layer": "runtime_env", "origin": "project"}
        assert [o["origin"] for o in by_name[name]["overridden"]] == ["workspace", "tenant"]
        assert by_name[only_tenant]["source"]["layer"] == "runtime_env"
        assert sandbox_only not in by_name  # GET /env shows what every process gets

        sandbox = client.sandboxes.create(project_id=pid)
        try:
            assert printenv(sandbox, name) == "project"
            assert printenv(sandbox, only_tenant) == "t-only"
            assert printenv(sandbox, sandbox_only) == "sbx"
            client.projects.set_shared_variables(pid, {name: "shared"}, environment="staging")
            assert printenv(sandbox, name) == "project"  # injected at boot only
            sandbox.resume()
            assert printenv(sandbox, name) == "shared"
        finally:
            sandbox.destroy()
        # A sandbox of no project gets the tenant's defaults.
        loose = client.sandboxes.create()
        try:
            assert printenv(loose, only_tenant) == "t-only"
            assert printenv(loose, name) == "workspace"
        finally:
            loose.destroy()
    finally:
        for row in made:
            client.runtime_env.delete(row["id"])


def test_a_runtime_variable_reaches_the_instance_and_not_the_sandbox(client, mds):
    project = client.projects.create(f"rte-dep-{uuid.uuid4().hex[:6]}")
    pid = project["id"]
    rt, sb = unique("RTE_RT"), unique("RTE_SB")
    client.runtime_env.set(project_id=pid, target="runtime", name=rt, value="for-instances")
    client.runtime_env.set(project_id=pid, target="sandbox", name=sb, value="for-sandboxes")
    sandbox = client.sandboxes.create(project_id=pid, metadata={"environment": "production"})
    deployment = None
    try:
        put = sandbox.exec.run(f"cat > app.py <<'MDS_EOF'\n{APP}\nMDS_EOF")
        assert put.exit_code == 0, put.stderr
        assert printenv(sandbox, rt) == "<unset>"
        assert printenv(sandbox, sb) == "for-sandboxes"
        deployment = client.deployments.create(
            name=f"rte-{uuid.uuid4().hex[:6]}", run_command="python3 app.py",
            metadata={"project_id": pid})
        published = client.deployments.publish(deployment.id, source_sandbox_id=sandbox.id)
        seen = httpx.get(mds.url, headers={
            "Host": f"{published.deployment.slug}.production.localhost"}, timeout=30).json()
        assert seen.get(rt) == "for-instances"
        assert sb not in seen
    finally:
        if deployment is not None:
            httpx.delete(f"{mds.url}/api/v1/deployments/{deployment.id}", headers=admin(mds),
                         timeout=60)
        sandbox.destroy()
        client.projects.delete(pid)


def test_reveal_needs_env_reveal_and_scopes_are_enforced(client, mds):
    project = client.projects.create(f"rte-keys-{uuid.uuid4().hex[:6]}")
    pid = project["id"]
    name = unique("RTE_SECRET_TOKEN")
    made = client.runtime_env.set(project_id=pid, name=name, value="s3cr3t-value")
    assert made["is_secret"] is True and "s3cr3t" not in made["preview"]
    url = f"{mds.url}/api/v1/runtime-env/{made['id']}"
    revealed = httpx.get(url, params={"reveal": "true"}, headers=admin(mds))
    assert revealed.status_code == 200 and revealed.json()["data"]["value"] == "s3cr3t-value"

    reader = key_with(client, mds, "env:read", "env:write")
    rows = reader.runtime_env.list(project_id=pid)
    assert [r["name"] for r in rows] == [name] and "value" not in rows[0]
    assert "value" not in reader.runtime_env.get(made["id"])
    # The reader's key, by hand, asking for the value.
    made_key = client.api_keys.create(name="rte-reader", scopes=["env:read"])
    plain = made_key.get("token") or made_key.get("key")
    refused = httpx.get(url, params={"reveal": "true"},
                        headers={"Authorization": f"Bearer {plain}"})
    assert refused.status_code == 403, refused.text
    assert "s3cr3t" not in refused.text
    # A read-only key may not write; a key of no env scope may not read.
    status, _, _ = error_of(lambda: key_with(client, mds, "env:read").runtime_env.set(
        project_id=pid, name="X", value="y"))
    assert status == 403
    status, _, _ = error_of(lambda: key_with(client, mds, "projects:read").runtime_env.list())
    assert status == 403
    # A variable that steers how programs start needs env:reveal too.
    status, _, _ = error_of(lambda: reader.runtime_env.set(
        project_id=pid, name="LD_PRELOAD", value="/tmp/x.so"))
    assert status == 403
    client.projects.delete(pid)


def test_bad_input_is_refused_and_nothing_is_left(client, mds):
    project = client.projects.create(f"rte-bad-{uuid.uuid4().hex[:6]}")
    pid = project["id"]
    cases = [
        (dict(project_id=pid, name="BAD NAME", value="x"), "name"),
        (dict(project_id=pid, name="1X", value="x"), "name"),
        (dict(project_id=pid, name="NUL", value="a\u0000b"), "value"),
        (dict(project_id=pid, name="BIG", value="v" * ((64 << 10) + 1)), "value"),
        (dict(project_id=pid, value="x"), "name"),
        (dict(project_id=pid, name="NOVALUE"), "value"),
        (dict(project_id=pid, name="T", value="x", target="agent"), "target"),
        (dict(project_id=pid, name="T", value="x", target="everything"), "target"),
        (dict(project_id=pid, name="T", value="x", scope="sandbox"), "scope"),
        (dict(project_id=pid, name="T", value="x", scope="galaxy"), "scope"),
        (dict(scope="project", name="T", value="x"), "project_id"),
        (dict(scope="tenant", project_id=pid, name="T", value="x"), "project_id"),
        (dict(project_id=pid, name="T", value="x", metadata=[1]), "metadata"),
    ]
    for params, field in cases:
        status, code, details = error_of(lambda: client.runtime_env.set(**params))
        assert status == 422, (params, status, code)
        assert details.get("field") == field, (params, details)
    # A project that is not there (or not this tenant's) is not found.
    status, _, _ = error_of(lambda: client.runtime_env.set(
        project_id="proj_01HX0000000000000000000000", name="T", value="x"))
    assert status == 404
    for bad in ({"scope": "galaxy"}, {"target": "agent"}):
        status, _, _ = error_of(lambda: client.runtime_env.list(**bad))
        assert status == 422
    status, _, _ = error_of(lambda: client.runtime_env.delete("rtenv_nope"))
    assert status == 404
    assert client.runtime_env.list(project_id=pid) == []
    client.projects.delete(pid)
