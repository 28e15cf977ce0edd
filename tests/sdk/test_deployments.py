"""Deployments through the official MIOSA SDK, psycopg and plain HTTP:
publish from a sandbox, promote per environment, roll back, runtime
instances and the router, with the data untouched throughout; bad input
and attacks."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from miosa.types import Deployment, DeploymentVersion, PublishResult, RuntimeInstance

from conftest import Server, resolved

# The app every test deploys: a small HTTP server on $PORT that says which
# version it is, writes through psql, and can die on request. Its startup
# runs MIGRATE (SQL) if the release has one, as a "v2 creates a table"
# release would.
APP = r'''
import json, os, subprocess, threading, time, http.server
HERE = os.path.dirname(os.path.abspath(__file__))
SICK_UNTIL = [0.0]
if os.path.exists(os.path.join(HERE, "CRASHLOOP")):
    threading.Timer(1.0, lambda: os._exit(3)).start()
VERSION = open(os.path.join(HERE, "VERSION")).read().strip()
def psql(sql):
    return subprocess.run(["psql", os.environ["DATABASE_URL"], "-v", "ON_ERROR_STOP=1",
                           "-At", "-c", sql], capture_output=True, text=True)
if os.path.exists(os.path.join(HERE, "MIGRATE")):
    out = psql(open(os.path.join(HERE, "MIGRATE")).read())
    print("migrate:", out.returncode, out.stderr.strip(), flush=True)
if os.environ.get("VOLUME_LOG"):
    with open(os.environ["VOLUME_LOG"], "a") as f:
        f.write(os.environ["MIOSA_INSTANCE_ID"] + "\n")
class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, status, body):
        body = body.encode()
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path.startswith("/sick/"):
            SICK_UNTIL[0] = time.time() + float(self.path[6:])
            return self.reply(200, "sick")
        if self.path == "/health":
            broken = os.path.exists(os.path.join(HERE, "BROKEN")) or time.time() < SICK_UNTIL[0]
            return self.reply(500 if broken else 200, "broken" if broken else "ok")
        if self.path == "/env":
            keys = ["DATABASE_URL", "MIOSA_ENVIRONMENT", "FEATURE", "PORT", "MIOSA_INSTANCE_ID",
                    "MIOSA_DEPLOYMENT_ID"]
            return self.reply(200, json.dumps({k: os.environ.get(k) for k in keys}))
        if self.path.startswith("/write/"):
            out = psql("INSERT INTO notes VALUES ('%s')" % self.path[7:])
            return self.reply(200 if out.returncode == 0 else 500, out.stderr)
        self.reply(200, VERSION)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
'''


# What each test made on the shared server, removed after it (runtime
# instances are processes: later tests should not share the machine with
# them).
MADE: list[tuple[str, str]] = []


@pytest.fixture(autouse=True)
def remove_what_was_made(mds):
    yield
    while MADE:
        kind, id_ = MADE.pop()
        httpx.delete(f"{mds.url}/api/v1/{kind}/{id_}", headers=admin(mds), timeout=60)


def admin(mds) -> dict[str, str]:
    return {"Authorization": f"Bearer {mds.admin_key}"}


def api(mds, method: str, path: str, key: str | None = None, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or mds.admin_key}"}
    return httpx.request(method, f"{mds.url}/api/v1{path}", headers=headers, timeout=120, **kw)


def get_app(mds, deployment: str, environment: str = "production", path: str = "/") -> httpx.Response:
    """A request through the router, by Host header."""
    return httpx.get(
        f"{mds.url}{path}", headers={"Host": f"{deployment}.{environment}.localhost"}, timeout=30
    )


def project_with_postgres(client, mds, name: str) -> dict:
    project = client.projects.create(f"{name}-{uuid.uuid4().hex[:6]}")
    answer = api(mds, "POST", f"/projects/{project['id']}/data-services?wait=true",
                 json={"type": "postgres"})
    assert answer.status_code == 201, answer.text
    return project


def app_sandbox(client, project: dict, environment: str = "production"):
    sandbox = client.sandboxes.create(project_id=project["id"], metadata={"environment": environment})
    MADE.append(("sandboxes", sandbox.id))
    write(sandbox, "app.py", APP)
    write(sandbox, "VERSION", "v1")
    return sandbox


def write(sandbox, path: str, text: str) -> None:
    done = sandbox.exec.run(f"mkdir -p $(dirname {path}) && cat > {path} <<'MDS_EOF'\n{text}\nMDS_EOF")
    assert done.exit_code == 0, done.stderr


def new_deployment(client, project: dict, name: str = "web"):
    deployment = client.deployments.create(
        name=f"{name}-{uuid.uuid4().hex[:6]}",
        run_command="python3 app.py",
        metadata={"project_id": project["id"], "health_check_path": "/health",
                  "health_check_grace_sec": 20},
    )
    MADE.append(("deployments", deployment.id))
    return deployment


def rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def test_publish_promote_rollback_and_the_data_is_untouched(client, mds):
    project = project_with_postgres(client, mds, "dep")
    production = resolved(mds, project["id"], "production")
    sandbox = app_sandbox(client, project)
    write(sandbox, "MIGRATE", "CREATE TABLE IF NOT EXISTS notes (body text)")
    deployment = new_deployment(client, project)
    assert isinstance(deployment, Deployment) and deployment.state == "pending"

    first = client.deployments.publish(deployment.id, source_sandbox_id=sandbox.id)
    assert isinstance(first, PublishResult) and first.promoted
    assert (first.version.version_number, first.version.kind, first.version.state) == (
        1, "dynamic", "ready")
    assert first.deployment.state == "running"
    assert first.deployment.active_version_id == first.version.id
    assert first.release.deployment_version_id == first.version.id
    assert first.services[0].type == "web" and first.services[0].state == "healthy"
    assert len(first.version.artifact_sha256) == 64
    assert first.version.artifact_manifest["files"] >= 3
    slug = first.deployment.slug
    assert get_app(mds, slug).text == "v1"
    assert get_app(mds, slug, path="/write/by-v1").status_code == 200
    booted = get_app(mds, slug, path="/env").json()
    assert booted["DATABASE_URL"] == production["DATABASE_URL"]
    assert booted["MIOSA_ENVIRONMENT"] == "production"

    # v2's code creates a table at startup.
    write(sandbox, "VERSION", "v2")
    write(sandbox, "MIGRATE", "CREATE TABLE IF NOT EXISTS v2_things (id int); "
                              "INSERT INTO v2_things VALUES (2)")
    second = client.deployments.publish(deployment.id, source_sandbox_id=sandbox.id)
    assert second.version.version_number == 2
    assert get_app(mds, slug).text == "v2"
    assert get_app(mds, slug, path="/env").json()["DATABASE_URL"] == booted["DATABASE_URL"]

    # Rollback without a version: the one before. No data is rewound.
    rolled = client.deployments.rollback(deployment.id)
    assert rolled.active_version_id == first.version.id
    assert rolled.running_artifact_sha256 == first.version.artifact_sha256
    assert get_app(mds, slug).text == "v1"
    assert rows(production["DATABASE_URL"], "SELECT id FROM v2_things") == [(2,)]
    assert rows(production["DATABASE_URL"], "SELECT body FROM notes") == [("by-v1",)]
    assert get_app(mds, slug, path="/env").json()["DATABASE_URL"] == booted["DATABASE_URL"]
    states = {v.version_number: v.state for v in client.deployments.versions(deployment.id).list()}
    assert states == {2: "archived", 1: "ready"}

    # Forward again, by version id, then by release id.
    client.deployments.rollback(deployment.id, version_id=second.version.id)
    assert get_app(mds, slug).text == "v2"
    client.deployments.releases(deployment.id).promote(first.release.id)
    assert get_app(mds, slug).text == "v1"

    # Every read parses with the SDK's strict models.
    versions = client.deployments.versions(deployment.id)
    assert versions.get(second.version.id).version_number == 2
    assert [v.version_number for v in versions.list()] == [2, 1]
    assert [v.version_number for v in versions.list(state="archived")] == [2]
    releases = client.deployments.releases(deployment.id).list()
    assert {r.kind for r in releases} == {"rootfs"}
    assert client.deployments.releases(deployment.id).get(second.release.id).sha256 == \
        second.version.artifact_sha256
    instances = client.deployments.runtime_instances(deployment.id).list()
    assert all(isinstance(i, RuntimeInstance) for i in instances)
    live = [i for i in instances if i.state == "healthy"]
    assert len(live) == 1 and live[0].release_id == first.release.id
    assert {i.state for i in instances} <= {"healthy", "destroyed"}
    assert client.deployments.runtime_instances(deployment.id).get(live[0].id).port > 0
    logs = client.deployments.runtime_instances(deployment.id).logs(live[0].id)
    assert any("healthy" in line for line in logs["lines"])
    assert any(live[0].id in line and "healthy" in line
               for line in client.deployments.get_logs(deployment.id)["lines"])
    build_log = client.deployments.version_logs(deployment.id, second.version.id)
    assert second.version.artifact_sha256 in str(build_log)
    listed = client.deployments.list(project_id=project["id"])
    assert [d.id for d in listed] == [deployment.id]
    assert client.deployments.get(deployment.id).environments["production"][
        "active_version_id"] == first.version.id

    # The sandbox goes; the deployment and the data stay.
    sandbox.destroy()
    assert get_app(mds, slug).text == "v1"
    assert rows(production["DATABASE_URL"], "SELECT count(*) FROM notes") == [(1,)]


def test_each_environment_has_its_own_version_variables_and_database(client, mds):
    project = project_with_postgres(client, mds, "envs")
    sandbox = app_sandbox(client, project)
    deployment = new_deployment(client, project)
    first = client.deployments.publish(deployment.id, source_sandbox_id=sandbox.id)
    write(sandbox, "VERSION", "v2")
    second = client.deployments.publish(deployment.id, source_sandbox_id=sandbox.id, promote=False)
    assert not second.promoted and second.services == []
    staged = client.deployments.versions(deployment.id).promote(
        second.version.id, environment="staging")
    assert staged.environments["staging"]["active_version_id"] == second.version.id
    assert staged.environments["production"]["active_version_id"] == first.version.id
    slug = first.deployment.slug
    assert get_app(mds, slug, "production").text == "v1"
    assert get_app(mds, slug, "staging").text == "v2"
    urls = {e: get_app(mds, slug, e, "/env").json()["DATABASE_URL"] for e in ("production", "staging")}
    assert urls["staging"] == resolved(mds, project["id"], "staging")["DATABASE_URL"]
    assert urls["staging"] != urls["production"]

    # A preview environment is one more environment: its own version.
    made = api(mds, "POST", f"/projects/{project['id']}/environments", json={"name": "preview/pr-7"})
    assert made.status_code == 201, made.text
    client.deployments.versions(deployment.id).promote(first.version.id, environment="preview/pr-7")
    assert get_app(mds, slug, "preview-pr-7").text == "v1"
    assert get_app(mds, slug, "staging").text == "v2"
    # A preview that goes takes its instance with it.
    gone = api(mds, "DELETE", f"/projects/{project['id']}/environments/{made.json()['data']['id']}?purge=true")
    assert gone.status_code == 200, gone.text
    assert get_app(mds, slug, "preview-pr-7").status_code == 404
    assert "preview/pr-7" not in client.deployments.get(deployment.id).environments

    # Variables per environment: sealed, previews only, at the next boot.
    rows_ = client.deployments.set_env(deployment.id, {"FEATURE": "on-in-staging"},
                                       environment="staging")
    assert [(r["name"], r["environment"], r["preview"]) for r in rows_] == [
        ("FEATURE", "staging", "on-i…")]
    assert "on-in-staging" not in str(client.deployments.list_env(deployment.id))
    assert get_app(mds, slug, "staging", "/env").json()["FEATURE"] is None
    # Nothing a user sets overrides what mds says the instance is, or the
    # port its router sends to: not a deployment variable, not a shared one.
    client.deployments.set_env(deployment.id, {"PORT": "1", "MIOSA_INSTANCE_ID": "forged"},
                               environment="staging")
    client.projects.set_shared_variables(
        project["id"], {"MIOSA_ENVIRONMENT": "forged", "MIOSA_DEPLOYMENT_ID": "forged"},
        environment="staging")
    client.deployments.redeploy(deployment.id)
    staged = get_app(mds, slug, "staging", "/env").json()
    assert staged["FEATURE"] == "on-in-staging"
    assert staged["MIOSA_ENVIRONMENT"] == "staging"
    assert staged["MIOSA_DEPLOYMENT_ID"] == deployment.id
    assert staged["MIOSA_INSTANCE_ID"] in [
        i.id for i in client.deployments.runtime_instances(deployment.id).list()]
    assert staged["PORT"] != "1"
    assert get_app(mds, slug, "production", "/env").json()["FEATURE"] is None
    for name in ("PORT", "MIOSA_INSTANCE_ID"):
        assert api(mds, "DELETE", f"/deployments/{deployment.id}/env/{name}",
                   params={"environment": "staging"}).status_code == 200
    assert api(mds, "DELETE", f"/deployments/{deployment.id}/env/FEATURE",
               params={"environment": "staging"}).status_code == 200

    # Auth resolves a deployment to its project (production by default).
    assert client.project_auth.status("deployment", deployment.id)["enabled"] is False
    client.project_auth.enable("deployment", deployment.id)
    assert client.project_auth.status("project", project["id"])["enabled"] is True

    attached = client.deployments.attach_database(deployment.id)
    assert attached["attached"] and attached["database_id"].startswith("ds_")
    assert client.deployments.get(deployment.id).linked_database_id == attached["database_id"]

    # The bridge route publishes by name, creating the deployment.
    bridged = client.deployments.publish_from_sandbox(sandbox.id, name=f"site-{uuid.uuid4().hex[:4]}")
    MADE.append(("deployments", bridged["deployment"]["id"]))
    assert bridged["version"]["kind"] == "static" and bridged["promoted"]
    assert get_app(mds, bridged["deployment"]["slug"], path="/VERSION").text.strip() == "v2"


def test_no_request_fails_during_promote_and_rollback(client, mds):
    project = project_with_postgres(client, mds, "zero")
    sandbox = app_sandbox(client, project)
    deployment = new_deployment(client, project)
    first = client.deployments.publish(deployment.id, source_sandbox_id=sandbox.id)
    write(sandbox, "VERSION", "v2")
    second = client.deployments.publish(deployment.id, source_sandbox_id=sandbox.id, promote=False)
    slug = first.deployment.slug

    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def hammer():
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                r = http.get(mds.url, headers={"Host": f"{slug}.production.localhost"})
                seen.append((r.status_code, r.text))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    # Counted, not timed, so a slow machine cannot fail it on a count.
    def wait_until(done):
        deadline = time.monotonic() + 60
        while not done() and time.monotonic() < deadline:
            time.sleep(0.05)

    try:
        wait_until(lambda: len(seen) >= 20)
        client.deployments.versions(deployment.id).promote(second.version.id)
        wait_until(lambda: [b for _, b in seen[-4:]].count("v2") == 4)
        client.deployments.rollback(deployment.id)
        mark = len(seen)
        wait_until(lambda: len(seen) >= mark + 20)
    finally:
        stop.set()
        for t in threads:
            t.join()
    failed = [s for s in seen if s[0] != 200]
    assert not failed, failed[:5]
    bodies = [b for _, b in seen]
    assert "v2" in bodies and bodies[0] == "v1" and bodies[-1] == "v1"
    assert len(seen) >= 40


def test_a_failing_release_never_gets_traffic_and_bad_versions_are_refused(client, mds):
    project = project_with_postgres(client, mds, "bad")
    sandbox = app_sandbox(client, project)
    deployment = new_deployment(client, project)
    first = client.deployments.publish(deployment.id, source_sandbox_id=sandbox.id)
    slug = first.deployment.slug

    write(sandbox, "VERSION", "broken")
    write(sandbox, "BROKEN", "yes")
    seen: list[str] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            seen.append(get_app(mds, slug).text)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        failing = api(mds, "POST", f"/deployments/{deployment.id}/publish",
                      json={"source_sandbox_id": sandbox.id, "health_check_path": "/health"})
    finally:
        stop.set()
        watcher.join()
    assert failing.status_code == 422, failing.text
    error = failing.json()["error"]
    assert error["code"] == "HEALTH_CHECK_FAILED"
    assert set(seen) == {"v1"}
    assert get_app(mds, slug).text == "v1"
    bad_instance = client.deployments.runtime_instances(deployment.id).get(
        error["details"]["instance_id"])
    assert bad_instance.state in ("error", "destroyed")
    assert client.deployments.get(deployment.id).active_version_id == first.version.id

    # A version that failed to build cannot be promoted: 409.
    failed = api(mds, "POST", f"/deployments/{deployment.id}/publish",
                 json={"source_sandbox_id": sandbox.id, "output_path": "no-such-dir"})
    assert failed.status_code == 422 and failed.json()["error"]["code"] == "BUILD_FAILED"
    failed_id = failed.json()["error"]["details"]["version_id"]
    assert [v.id for v in client.deployments.versions(deployment.id).list(state="failed")] == [failed_id]
    refused = api(mds, "POST", f"/deployments/{deployment.id}/versions/{failed_id}/promote")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "VERSION_FAILED"
    refused = api(mds, "POST", f"/deployments/{deployment.id}/rollback", json={"version_id": failed_id})
    assert refused.status_code == 409

    # Another deployment's version is not this one's: 404.
    other = new_deployment(client, project, "other")
    theirs = client.deployments.publish(other.id, source_sandbox_id=sandbox.id, promote=False)
    for path in (f"/deployments/{deployment.id}/versions/{theirs.version.id}/promote",
                 f"/deployments/{deployment.id}/versions/{theirs.version.id}"):
        assert api(mds, "POST" if path.endswith("promote") else "GET", path).status_code == 404
    assert api(mds, "POST", f"/deployments/{deployment.id}/rollback",
               json={"version_id": theirs.version.id}).status_code == 404
    assert get_app(mds, slug).text == "v1"

    # Bad input names its field, never a 500.
    for body, field in [
        ({"source_sandbox_id": sandbox.id, "output_path": "../../etc"}, "output_path"),
        ({"source_sandbox_id": sandbox.id, "entrypoint": "../x"}, "entrypoint"),
        ({"source_sandbox_id": sandbox.id, "port": 70000}, "port"),
        ({"source_sandbox_id": sandbox.id, "health_check_path": "no-slash"}, "health_check_path"),
        ({"source_sandbox_id": sandbox.id, "kind": "lambda"}, "kind"),
        ({}, "source_sandbox_id"),
    ]:
        r = api(mds, "POST", f"/deployments/{deployment.id}/publish", json=body)
        assert r.status_code in (400, 422), (body, r.text)
        assert field in r.text, (field, r.text)
    assert api(mds, "POST", "/deployments/dep_nope/publish",
               json={"source_sandbox_id": sandbox.id}).status_code == 404
    assert api(mds, "POST", "/deployments", json={"name": "!!!"}).status_code == 422
    taken = api(mds, "POST", "/deployments", json={"name": deployment.name})
    assert taken.status_code == 409


def test_a_killed_instance_is_replaced_and_its_writes_are_kept(client, mds):
    project = project_with_postgres(client, mds, "crash")
    production = resolved(mds, project["id"], "production")
    sandbox = app_sandbox(client, project)
    write(sandbox, "MIGRATE", "CREATE TABLE IF NOT EXISTS notes (body text)")
    deployment = new_deployment(client, project)
    slug = client.deployments.publish(deployment.id, source_sandbox_id=sandbox.id).deployment.slug
    for i in range(3):
        assert get_app(mds, slug, path=f"/write/row{i}").status_code == 200
    (before,) = [i for i in client.deployments.runtime_instances(deployment.id).list()
                 if i.state == "healthy"]
    # kill -9 from the host, of every process booted as that instance.
    killed = 0
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"MIOSA_INSTANCE_ID={before.id}".encode() in environ:
            os.kill(int(proc.name), signal.SIGKILL)
            killed += 1
    assert killed >= 1

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = client.deployments.runtime_instances(deployment.id).get(before.id)
        if now.state == "healthy" and now.restart_count >= 1:
            break
        time.sleep(0.2)
    assert now.state == "healthy" and now.restart_count == 1, now
    assert get_app(mds, slug).text == "v1"
    assert rows(production["DATABASE_URL"], "SELECT body FROM notes ORDER BY body") == [
        ("row0",), ("row1",), ("row2",)]
    logs = client.deployments.runtime_instances(deployment.id).logs(before.id)["lines"]
    assert any("restarting" in line for line in logs)

    # Failing health checks take it out of the route until they pass again.
    assert get_app(mds, slug, path="/sick/9").text == "sick"
    states, while_unhealthy = set(), set()
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        state = client.deployments.runtime_instances(deployment.id).get(before.id).state
        states.add(state)
        if state == "unhealthy":
            # (It may pass a check between the two reads: then it is 200.)
            routed = get_app(mds, slug)
            while_unhealthy.add((routed.status_code, routed.json()["error"]["code"]
                                 if routed.status_code == 503 else routed.text))
        if "unhealthy" in states and state == "healthy":
            break
        time.sleep(0.2)
    assert "unhealthy" in states and state == "healthy", states
    assert (503, "NO_HEALTHY_INSTANCE") in while_unhealthy, while_unhealthy
    assert get_app(mds, slug).text == "v1"

    # One that keeps crashing stops being restarted: `error`.
    write(sandbox, "CRASHLOOP", "yes")
    write(sandbox, "VERSION", "v2")
    looping = client.deployments.publish(deployment.id, source_sandbox_id=sandbox.id)
    (crashing,) = [i for i in client.deployments.runtime_instances(deployment.id).list()
                   if i.release_id == looping.release.id]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = client.deployments.runtime_instances(deployment.id).get(crashing.id)
        if now.state == "error":
            break
        time.sleep(0.5)
    assert now.state == "error" and "crashed 6 times" in now.error_message, now
    assert now.restart_count == 5
    assert get_app(mds, slug).status_code == 503
    # The data is still all there.
    assert rows(production["DATABASE_URL"], "SELECT count(*) FROM notes") == [(3,)]


def test_a_volume_follows_the_new_instance(client, mds):
    project = project_with_postgres(client, mds, "vol")
    sandbox = app_sandbox(client, project)
    deployment = new_deployment(client, project)
    volume = api(mds, "POST", "/volumes", json={"name": f"data-{uuid.uuid4().hex[:6]}",
                                                 "size_gb": 1, "backend": "dir"}).json()["data"]
    claimed = api(mds, "POST", f"/deployments/{deployment.id}/volumes",
                  json={"volume_id": volume["id"], "mount_path": "/data"})
    assert claimed.status_code == 201, claimed.text
    client.deployments.set_env(deployment.id, {"VOLUME_LOG": "/data/instances.log"})

    first = client.deployments.publish(deployment.id, source_sandbox_id=sandbox.id)
    slug = first.deployment.slug

    def holder() -> str:
        attachment = api(mds, "GET", f"/volumes/{volume['id']}").json()["data"]["attachment"]
        assert attachment["holder_kind"] == "instance", attachment
        return attachment["computer_id"]

    one = holder()
    assert one.startswith("ri_")
    write(sandbox, "VERSION", "v2")
    client.deployments.publish(deployment.id, source_sandbox_id=sandbox.id)
    assert get_app(mds, slug).text == "v2"
    two = holder()
    assert two != one
    # The volume's data went along: both instances wrote to the same file.
    log = (mds.data_dir / "volumes" / volume["id"]).rglob("instances.log")
    text = next(log).read_text()
    assert text.split() == [one, two]
    # While the instance holds it, a sandbox cannot take it: one writer.
    taken = api(mds, "POST", f"/sandboxes/{sandbox.id}/volumes",
                json={"volume_id": volume["id"], "mount_path": "/mnt/x"})
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "VOLUME_IN_USE"


def test_static_sites_and_attacks(client, mds):
    project = project_with_postgres(client, mds, "static")
    sandbox = client.sandboxes.create(project_id=project["id"])
    MADE.append(("sandboxes", sandbox.id))
    write(sandbox, "dist/index.html", "<h1>home</h1>")
    write(sandbox, "dist/app/page.txt", "page")
    made = sandbox.exec.run(
        "ln -s /etc/passwd dist/passwd && ln -s / dist/root && mkfifo dist/pipe && "
        "mkdir dist/ro && ln -s /etc/passwd dist/ro/link && chmod 555 dist/ro")
    assert made.exit_code == 0, made.stderr
    site = client.deployments.create(name=f"site-{uuid.uuid4().hex[:6]}",
                                     metadata={"project_id": project["id"]})
    MADE.append(("deployments", site.id))
    published = client.deployments.publish(site.id, source_sandbox_id=sandbox.id,
                                           output_path="dist", entrypoint="index.html")
    assert published.version.kind == "static" and published.services[0].type == "static_web"
    slug = published.deployment.slug
    assert "home" in get_app(mds, slug).text
    assert get_app(mds, slug, path="/app/page.txt").text.strip() == "page"
    # Links out of the release are not followed: the router serves files as mds.
    # Only files and directories are served: no link out, no FIFO to hang on.
    for path in ("/passwd", "/root/etc/passwd", "/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
                 "/ro/link", "/pipe", "/" + "a" * 300):
        r = get_app(mds, slug, path=path)
        assert "root:" not in r.text, path
        assert r.status_code in (400, 404), (path, r.status_code)
    assert published.deployment.public_url.startswith(f"http://{slug}.production.localhost:")

    # Hosts that name nothing, and the API's own host, are not routed.
    assert get_app(mds, "nope").status_code == 404
    assert get_app(mds, slug, "staging").status_code == 404
    assert httpx.get(f"{mds.url}/healthz").status_code == 200

    # Code of another project never runs with this one's secrets.
    other = client.projects.create(f"other-{uuid.uuid4().hex[:6]}")
    stranger = client.sandboxes.create(project_id=other["id"])
    MADE.append(("sandboxes", stranger.id))
    mismatch = api(mds, "POST", f"/deployments/{site.id}/publish",
                   json={"source_sandbox_id": stranger.id})
    assert mismatch.status_code == 409 and mismatch.json()["error"]["code"] == "PROJECT_MISMATCH"

    # A sandbox of no project cannot be deployed, and nothing is left made.
    loose = client.sandboxes.create()
    MADE.append(("sandboxes", loose.id))
    name = f"loose-{uuid.uuid4().hex[:6]}"
    refused = api(mds, "POST", f"/sandboxes/{loose.id}/deploy", json={"name": name})
    assert refused.status_code == 422 and "source_sandbox_id" in refused.text
    assert api(mds, "GET", f"/deployments/{name}").status_code == 404

    # Scopes, from the attacker's side.
    def key(scopes):
        r = api(mds, "POST", "/api-keys", json={"name": f"k-{uuid.uuid4().hex[:4]}", "scopes": scopes})
        assert r.status_code == 201, r.text
        return r.json()["data"]["key"]

    reader = key(["deployments:read"])
    writer = key(["deployments:write", "deployments:read"])
    assert api(mds, "GET", f"/deployments/{site.id}", key=reader).status_code == 200
    for method, path in [("POST", f"/deployments/{site.id}/rollback"),
                         ("POST", f"/deployments/{site.id}/stop"),
                         ("DELETE", f"/deployments/{site.id}")]:
        assert api(mds, method, path, key=reader).status_code == 403
    # Publishing boots code with the environment's secrets: env:reveal.
    assert api(mds, "POST", f"/deployments/{site.id}/publish", key=writer,
               json={"source_sandbox_id": sandbox.id}).status_code == 403
    assert api(mds, "GET", f"/deployments/{site.id}/env", key=writer).status_code == 403
    # So does anything else that boots it, and its logs (which may print them).
    for method, path in [("POST", f"/deployments/{site.id}/rollback"),
                         ("POST", f"/deployments/{site.id}/redeploy"),
                         ("POST", f"/deployments/{site.id}/versions/{published.version.id}/promote"),
                         ("GET", f"/deployments/{site.id}/logs")]:
        denied = api(mds, method, path, key=writer)
        assert denied.status_code == 403 and "env:reveal" in denied.text, (path, denied.text)
    assert api(mds, "GET", f"/deployments/{site.id}", key="msk_" + "x" * 40).status_code == 401
    # Variables that steer how programs start run code at the next boot:
    # an env:write key without env:reveal cannot set them, anywhere.
    env_writer = key(["env:write", "env:read", "projects:read"])
    for path, body in [
        (f"/deployments/{site.id}/env", {"env": {"NODE_OPTIONS": "--require /tmp/x.js"}}),
        (f"/deployments/{site.id}/env", {"env": {"BROWSER": "sh -c 'env' #%s"}}),
        (f"/projects/{project['id']}/shared-variables", {"variables": {"LD_PRELOAD": "/tmp/x.so"}}),
    ]:
        method = "PUT" if "shared" in path else "POST"
        refused = api(mds, method, path, key=env_writer, json=body)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["details"]["required_scope"] == "env:reveal"
    assert api(mds, "POST", f"/deployments/{site.id}/env", key=env_writer,
               json={"env": {"FEATURE": "on"}}).status_code == 200

    stopped = client.deployments.stop(site.id)
    assert stopped.state == "stopped"
    assert get_app(mds, slug).status_code == 404
    client.deployments.delete(site.id)
    assert api(mds, "GET", f"/deployments/{site.id}").status_code == 404


def test_releases_past_retention_are_collected_and_then_gone():
    """`--keep-releases 1`: the newest version and each environment's
    active and previous ones keep their artifacts; serving another is 410."""
    from miosa import Miosa

    server = Server("--keep-releases", "1")
    try:
        client = Miosa(api_key=server.admin_key, base_url=server.url, max_retries=0)
        project = project_with_postgres(client, server, "keep")
        sandbox = app_sandbox(client, project)
        deployment = new_deployment(client, project)
        published = {}
        for n in (1, 2, 3, 4):
            write(sandbox, "VERSION", f"v{n}")
            published[n] = client.deployments.publish(
                deployment.id, source_sandbox_id=sandbox.id, promote=n <= 2)
        releases = server.data_dir / "releases"
        present = {p.name.split(".")[0] for p in releases.glob("*/*.tar.zst")}
        sha = {n: r.version.artifact_sha256 for n, r in published.items()}
        # v2 active, v1 previous, v4 newest: kept. v3: collected.
        assert present == {sha[1], sha[2], sha[4]}
        gone = api(server, "POST", f"/deployments/{deployment.id}/versions/{published[3].version.id}/promote")
        assert gone.status_code == 410 and gone.json()["error"]["code"] == "ARTIFACT_GONE"
        gone = api(server, "POST", f"/deployments/{deployment.id}/rollback",
                   json={"version_id": published[3].version.id})
        assert gone.status_code == 410
        # Still listed, still ready: only its bytes are gone.
        assert client.deployments.versions(deployment.id).get(published[3].version.id).state == "ready"
        assert get_app(server, published[1].deployment.slug).text == "v2"
        client.deployments.rollback(deployment.id)
        assert get_app(server, published[1].deployment.slug).text == "v1"
    finally:
        server.stop()


def test_a_web_service_runs_as_its_deployment_with_references_resolved_in_its_environment(client, mds):
    project = project_with_postgres(client, mds, "websvc")
    web = client.services.create(
        project["id"], "web", type="web", environment="staging",
        settings={"start_command": "python3 app.py", "health_check_path": "/health"},
    )
    MADE.append(("deployments", web["deployment_id"]))
    assert web["state"] == "inactive" and web["deployment_id"] in web["state_reason"]
    client.services.set_variables(web["id"], {"FEATURE": "${{postgres.DATABASE_URL}}"})
    sandbox = app_sandbox(client, project, environment="staging")
    published = client.deployments.publish(
        web["deployment_id"], source_sandbox_id=sandbox.id, environment="staging"
    )
    answer = get_app(mds, published.deployment.slug, "staging", "/env")
    assert answer.status_code == 200, (answer.status_code, answer.text, published)
    booted = answer.json()
    staging = resolved(mds, project["id"], "staging")
    # The reference resolved at boot, in the service's own environment.
    assert booted["FEATURE"] == staging["DATABASE_URL"]
    assert booted["MIOSA_ENVIRONMENT"] == "staging"
    assert client.services.get(web["id"])["state"] == "active"
    # Stopping the service stops what serves.
    assert client.services.stop(web["id"]) == {"stopped": 1}
    assert client.services.get(web["id"])["state"] == "stopped"


def test_a_plain_deployments_variables_are_taken_as_written(client, mds):
    """Only an app service's variables hold references; a deployment's own
    (CI templates, say) reach the instance as written."""
    project = project_with_postgres(client, mds, "plain")
    deployment = new_deployment(client, project)
    client.deployments.set_env(deployment.id, {"FEATURE": "${{ github.sha }} ${{unclosed"})
    sandbox = app_sandbox(client, project)
    published = client.deployments.publish(deployment.id, source_sandbox_id=sandbox.id)
    booted = get_app(mds, published.deployment.slug, path="/env").json()
    assert booted["FEATURE"] == "${{ github.sha }} ${{unclosed"
