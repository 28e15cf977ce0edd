"""Sandboxes through the official MIOSA SDK and psql: create, wait, exec,
destroy; data outlives the sandbox; isolation between sandboxes and from
the host; bad input; 50 at once leave nothing behind."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import resolved


def admin(mds) -> dict[str, str]:
    return {"Authorization": f"Bearer {mds.admin_key}"}


def project_with_postgres(client, mds, name: str) -> dict:
    project = client.projects.create(f"{name}-{uuid.uuid4().hex[:6]}")
    answer = httpx.post(
        f"{mds.url}/api/v1/projects/{project['id']}/data-services?wait=true",
        json={"type": "postgres"},
        headers=admin(mds),
    )
    assert answer.status_code == 201, answer.text
    return project


def exec_raw(mds, sandbox_id: str, body: dict) -> httpx.Response:
    return httpx.post(
        f"{mds.url}/api/v1/sandboxes/{sandbox_id}/exec", json=body, headers=admin(mds), timeout=30
    )


def test_sdk_create_wait_exec_destroy_and_the_data_stays(client, mds):
    project = project_with_postgres(client, mds, "sbx")
    staging = resolved(mds, project["id"], "staging")

    sandbox = client.sandboxes.create(project_id=project["id"], env={"GREETING": "hello"})
    assert sandbox.state == "running"
    assert sandbox.data["environment"] == "staging"  # never production by accident
    assert sandbox.wait_until_ready(timeout=10)
    result = sandbox.exec.run('echo "$GREETING|$MIOSA_ENVIRONMENT|$DATABASE_URL"')
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"hello|staging|{staging['DATABASE_URL']}"
    made = sandbox.exec.run(
        'psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -c "CREATE TABLE notes (body text)" '
        "-c \"INSERT INTO notes VALUES ('kept')\""
    )
    assert made.exit_code == 0, made.stderr
    workspace = mds.data_dir / "sandboxes" / sandbox.id
    assert workspace.is_dir()

    sandbox.destroy()
    assert sandbox.state == "destroyed"
    assert client.sandboxes.get(sandbox.id).state == "destroyed"
    assert not workspace.exists()
    gone = exec_raw(mds, sandbox.id, {"command": "true"})
    assert gone.status_code == 409 and gone.json()["error"]["code"] == "SANDBOX_DESTROYED"

    # A new sandbox of the same project reads what the old one wrote.
    again = client.sandboxes.create(project_id=project["id"])
    read = again.exec.run('psql "$DATABASE_URL" -Atc "SELECT body FROM notes"')
    assert read.stdout.strip() == "kept", read.stderr

    # The SDK's project_auth, keyed by a sandbox: its project, in the
    # environment it boots in; the next boot gets AUTH_URL.
    status = client.project_auth.enable("sandbox", again.id)
    assert status["enabled"] is True and status["environment"] == "staging"
    assert status["auth_url"] == resolved(mds, project["id"], "staging")["AUTH_URL"]
    again.resume()
    assert again.exec.run("echo $AUTH_URL").stdout.strip() == status["auth_url"]
    again.destroy()


def test_environment_choice_names_and_listing(client, mds):
    project = project_with_postgres(client, mds, "sbx-env")
    production = resolved(mds, project["id"], "production")
    name = f"prod-{uuid.uuid4().hex[:6]}"
    sandbox = client.sandboxes.create(
        project_id=project["id"], name=name, metadata={"environment": "production"}, tags=["ci"]
    )
    out = sandbox.exec.run('echo "$MIOSA_ENVIRONMENT $DATABASE_URL"').stdout.strip()
    assert out == f"production {production['DATABASE_URL']}"
    assert client.sandboxes.get_by_name(name).id == sandbox.id
    assert sandbox.id in [s.id for s in client.sandboxes.list(tags=["ci"])]
    taken = httpx.post(f"{mds.url}/api/v1/sandboxes", json={"name": name}, headers=admin(mds))
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "SANDBOX_NAME_TAKEN"

    # Variables are resolved at boot: a change reaches the next boot only.
    client.projects.set_shared_variables(project["id"], {"FEATURE": "on"}, environment="production")
    assert sandbox.env.set([{"key": "OWN", "value": "mine"}])["vars"][0]["key"] == "OWN"
    assert sandbox.exec.run('echo "${FEATURE:-unset} ${OWN:-unset}"').stdout.strip() == "unset unset"
    sandbox.stop()
    assert sandbox.state == "stopped"
    stopped = exec_raw(mds, sandbox.id, {"command": "true"})
    assert stopped.status_code == 409 and stopped.json()["error"]["code"] == "SANDBOX_NOT_RUNNING"
    sandbox.resume()
    assert sandbox.state == "running"
    assert sandbox.exec.run('echo "$FEATURE $OWN"').stdout.strip() == "on mine"
    sandbox.destroy()
    # The name is free again once its sandbox is destroyed.
    client.sandboxes.create(name=name).destroy()


def test_platform_identity_wins_and_own_variables_are_capped(client, mds):
    """The boot env's precedence from the sandbox's side (MIOSA_* cannot be
    overridden, a shared variable may override a binding's), and the one
    validator for a sandbox's own variables, at create and at PUT."""
    project = project_with_postgres(client, mds, "sbx-precedence")
    client.projects.set_shared_variables(
        project["id"],
        {"MIOSA_ENVIRONMENT": "forged", "MIOSA_PROJECT_ID": "forged", "PGUSER": "mine"},
        environment="staging")
    sandbox = client.sandboxes.create(
        project_id=project["id"], env={"MIOSA_SANDBOX_ID": "forged", "OWN": "x"})
    out = sandbox.exec.run(
        'echo "$MIOSA_PROJECT_ID|$MIOSA_ENVIRONMENT|$MIOSA_SANDBOX_ID|$OWN|$PGUSER"')
    assert out.stdout.strip() == f"{project['id']}|staging|{sandbox.id}|x|mine", out.stderr
    env = httpx.get(f"{mds.url}/api/v1/projects/{project['id']}/env",
                    params={"env": "staging"}, headers=admin(mds)).json()["data"]
    by_name = {v["name"]: v for v in env["variables"]}
    assert by_name["MIOSA_ENVIRONMENT"]["source"]["layer"] == "platform"
    assert [o["layer"] for o in by_name["MIOSA_ENVIRONMENT"]["overridden"]] == ["shared"]
    assert by_name["PGUSER"]["source"]["layer"] == "shared"

    url = f"{mds.url}/api/v1/sandboxes/{sandbox.id}/env"
    big = "v" * (40 << 10)
    assert httpx.put(url, json={"vars": [{"key": "A", "value": big}]},
                     headers=admin(mds)).status_code == 200
    # Each value fits, but together they pass the 64 KiB a sandbox holds.
    over = httpx.put(url, json={"vars": [{"key": "B", "value": big}]}, headers=admin(mds))
    assert over.status_code == 422, over.text
    assert over.json()["error"]["details"]["field"] == "vars"
    for bad in ({"key": "BAD NAME", "value": "x"}, {"key": "N", "value": "a\u0000b"},
                {"key": "C", "value": "v" * ((64 << 10) + 1)}):
        answer = httpx.put(url, json={"vars": [bad]}, headers=admin(mds))
        assert answer.status_code == 422, (bad["key"], answer.text)
    keys = [v["key"] for v in httpx.get(url, headers=admin(mds)).json()["data"]["vars"]]
    assert sorted(keys) == ["A", "MIOSA_SANDBOX_ID", "OWN"]  # nothing half-written
    # A variable that steers how programs start needs env:reveal, here too.
    writer = httpx.post(f"{mds.url}/api/v1/api-keys", headers=admin(mds), json={
        "name": "env-writer", "scopes": ["env:read", "env:write"]}).json()["data"]["key"]
    steer = httpx.put(url, json={"vars": [{"key": "LD_PRELOAD", "value": "/tmp/x.so"}]},
                      headers={"Authorization": f"Bearer {writer}"})
    assert steer.status_code == 403, steer.text
    sandbox.destroy()


def test_sandboxes_are_isolated_from_each_other_and_the_host(client, mds):
    a = client.sandboxes.create()
    b = client.sandboxes.create()
    assert a.exec.run("echo secret > mine.txt && ls").stdout.strip() == "mine.txt"
    # A long command in A while B looks around.
    holder = threading.Thread(target=lambda: a.exec.run("sleep 3"))
    holder.start()
    time.sleep(0.5)
    looked = b.exec.run(
        "ls -A /workspace; ps -eo comm | grep -cx sleep; "
        f"cat {mds.data_dir}/master.key 2>&1; ls {mds.data_dir / 'sandboxes'} 2>&1; "
        "touch /usr/x 2>&1; id -u"
    )
    holder.join()
    lines = looked.stdout.strip().splitlines()
    # An empty workspace of its own, and no process of A's.
    assert lines[0] == "0", looked.stdout
    assert "No such file or directory" in looked.stdout
    assert "Read-only file system" in looked.stdout
    assert "secret" not in looked.stdout
    assert lines[-1] != "0"  # never root
    a.destroy()
    b.destroy()


def test_bad_input_gets_clear_errors(client, mds):
    sandbox = client.sandboxes.create()
    for body, status, code in [
        ({"command": "true", "timeout": 601}, 422, "TIMEOUT_TOO_LONG"),
        ({"command": "true", "timeout": 0}, 422, "VALIDATION_ERROR"),
        ({}, 422, "VALIDATION_ERROR"),
        ({"command": "true", "env": {"1BAD": "x"}}, 422, "VALIDATION_ERROR"),
        ({"command": "true", "env": "nope"}, 422, "VALIDATION_ERROR"),
    ]:
        answer = exec_raw(mds, sandbox.id, body)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["error"]["code"] == code
    assert exec_raw(mds, "sbx_missing", {"command": "true"}).status_code == 404
    bad_env = httpx.post(f"{mds.url}/api/v1/sandboxes", json={"env": {"A-B": "x"}}, headers=admin(mds))
    assert bad_env.status_code == 422
    no_project = httpx.post(
        f"{mds.url}/api/v1/sandboxes", json={"project_id": "proj_nope"}, headers=admin(mds)
    )
    assert no_project.status_code == 404

    # A command past its timeout is killed, with everything it started.
    # A duration no other process on the machine sleeps for.
    marker = f"sleep 30{os.getpid()}"
    started = time.monotonic()
    slow = exec_raw(mds, sandbox.id, {"command": f"{marker} & {marker}", "timeout": 1}).json()["data"]
    assert slow["timed_out"] is True and slow["exit_code"] == 124
    assert time.monotonic() - started < 10
    # The kernel finishes the dead jail's pid namespace a moment later (on
    # a loaded machine, seconds later).
    deadline = time.monotonic() + 15
    while marker in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout:
        assert time.monotonic() < deadline, "a timed-out command's children survived"
        time.sleep(0.05)
    failing = sandbox.exec.run("echo out; echo err >&2; exit 7")
    assert (failing.exit_code, failing.stdout, failing.stderr) == (7, "out\n", "err\n")
    # Endless output without a newline is cut, not held in memory.
    flood = exec_raw(mds, sandbox.id, {"command": "head -c 30000000 /dev/zero"}).json()["data"]
    assert flood["truncated"] is True and len(flood["stdout"]) == 8 << 20
    too_long = exec_raw(mds, sandbox.id, {"command": "echo " + "x" * 70_000})
    assert too_long.status_code == 422
    sandbox.destroy()

    # A sandbox of a project boots with its secrets: a key that may not
    # reveal them may not create, run or resume one either.
    project = project_with_postgres(client, mds, "sbx-scope")
    writer = client.api_keys.create(name="writer", scopes=["projects:read", "projects:write"])
    token = writer.get("token") or writer.get("key")
    refused = httpx.post(
        f"{mds.url}/api/v1/sandboxes",
        json={"project_id": project["id"], "environment": "production"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_scope"
    theirs = client.sandboxes.create(project_id=project["id"])
    peek = httpx.post(
        f"{mds.url}/api/v1/sandboxes/{theirs.id}/exec",
        json={"command": "env"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert peek.status_code == 403
    theirs.destroy()


def test_fifty_sandboxes_at_once_leave_nothing_behind(client, mds):
    ids: list[str] = []

    def one(i: int) -> str:
        sandbox = client.sandboxes.create(env={"N": str(i)})
        ids.append(sandbox.id)
        result = sandbox.exec.run('echo "$N" > n && cat n')
        sandbox.destroy()
        return result.stdout.strip()

    with ThreadPoolExecutor(max_workers=16) as pool:
        outputs = list(pool.map(one, range(50)))
    assert outputs == [str(i) for i in range(50)]
    # Nothing of these fifty is left (other tests' sandboxes and runtime
    # instances may run on this server meanwhile).
    assert [i for i in ids if (mds.data_dir / "sandboxes" / i).exists()] == []
    leftover = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        leftover += [i for i in ids if i in cmdline]
    assert leftover == []
