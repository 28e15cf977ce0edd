"""Credential rotation with overlap (issue 18), from the outside: a
deployment keeps serving requests that write through psql while its
environment's Postgres credentials are rotated, and none fails; the old
password works for the grace period, through the pooler and directly, and
is refused after it, its sessions ended; objects keep their owner; a
second rotation during the grace period is a 409; a kill -9 mid-rotation
leaves working credentials."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import psycopg
import pytest

from conftest import Server, resolved
from test_backups import cli, killed_mid_request
from test_deployments import api, app_sandbox, new_deployment, project_with_postgres


@pytest.fixture(scope="module")
def mds():
    server = Server("--expiry-check", "1s")
    yield server
    server.stop()


def rotate(mds, pid: str, environment: str = "production", **body) -> httpx.Response:
    return api(mds, "POST", f"/projects/{pid}/environments/{environment}/credentials/rotate", json=body)


def logs_in(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def test_rotation_under_load_fails_no_request_and_the_old_password_ends_after_its_grace(client, mds):
    project = project_with_postgres(client, mds, "rotate")
    pid = project["id"]
    before = resolved(mds, pid, "production")
    owner = psycopg.conninfo.conninfo_to_dict(before["DATABASE_URL"])["user"]
    with psycopg.connect(before["DATABASE_URL"]) as conn:
        conn.execute("CREATE TABLE notes (body text)")
    sandbox = app_sandbox(client, project)
    deployment = new_deployment(client, project)
    slug = client.deployments.publish(deployment.id, source_sandbox_id=sandbox.id).deployment.slug

    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def hammer():
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                r = http.get(f"{mds.url}/write/{uuid.uuid4().hex[:8]}",
                             headers={"Host": f"{slug}.production.localhost"})
                seen.append((r.status_code, r.text))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        answer = rotate(mds, pid, grace="40s")
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert answer.status_code == 200, answer.text
    result = answer.json()["data"]
    assert [r["user"] for r in result["rotated"]] == [f"{owner}_r1"], result
    assert result["restarted"] == 1, result
    failed = [s for s in seen if s[0] != 200]
    assert not failed, failed[:5]
    assert len(seen) > 20, len(seen)
    with psycopg.connect(before["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT count(*) FROM notes").fetchone()[0] == len(seen)

    # New boots get the new credentials; the instance was restarted on them.
    after = resolved(mds, pid, "production")
    assert after["DATABASE_URL"] != before["DATABASE_URL"] and f"{owner}_r1:" in after["DATABASE_URL"]
    env = httpx.get(f"{mds.url}/env", headers={"Host": f"{slug}.production.localhost"}, timeout=30).json()
    assert env["DATABASE_URL"] == after["DATABASE_URL"]
    # What the new login makes, the owner role owns: nothing changes owner.
    with psycopg.connect(after["DATABASE_URL_UNPOOLED"]) as conn:
        conn.execute("CREATE TABLE made_after (id int)")
        owners = dict(conn.execute(
            "SELECT tablename, tableowner FROM pg_tables WHERE tablename IN ('notes', 'made_after')").fetchall())
        assert owners == {"notes": owner, "made_after": owner}, owners
        assert conn.execute("SELECT session_user, current_user").fetchone() == (f"{owner}_r1", owner)

    # `mds env explain` says how old the credentials are.
    explained = cli(mds, "env", "explain", "DATABASE_URL", "-p", pid).stdout
    assert "credentials: made " in explained and "1 rotation(s); the replaced ones work until" in explained, explained

    # During the grace period both work, pooled and direct.
    for url in (before["DATABASE_URL"], before["DATABASE_URL_UNPOOLED"], after["DATABASE_URL"]):
        assert logs_in(url), url
    held = psycopg.connect(before["DATABASE_URL_UNPOOLED"], autocommit=True)
    held.execute("SELECT 1")
    # One rotation of a binding at a time: the grace period counts.
    again = rotate(mds, pid, grace="1m")
    assert again.status_code == 409 and again.json()["error"]["code"] == "ROTATION_IN_PROGRESS", again.text

    # After it, the old password is refused and its sessions are over.
    deadline = time.monotonic() + 90
    while logs_in(before["DATABASE_URL_UNPOOLED"]):
        assert time.monotonic() < deadline, "the old password still works"
        time.sleep(0.5)
    assert not logs_in(before["DATABASE_URL"])
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")
    assert logs_in(after["DATABASE_URL"]) and logs_in(after["DATABASE_URL_UNPOOLED"])
    assert httpx.get(f"{mds.url}/write/after", headers={"Host": f"{slug}.production.localhost"},
                     timeout=30).status_code == 200
    deadline = time.monotonic() + 10
    while True:
        events = api(mds, "GET", "/audit-events", params={"project": pid, "action": "credentials."}).json()
        actions = sorted(e["action"] for e in events["data"]["events"] if e["outcome"] == "ok")
        if actions == ["credentials.revoke", "credentials.rotate"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert actions == ["credentials.revoke", "credentials.rotate"], events

    # The next rotation takes the other login role, and the CLI says so.
    done = cli(mds, "credentials", "rotate", "-p", pid, "--grace", "5s")
    assert f"{owner}_r2" in done.stdout, done.stdout
    latest = resolved(mds, pid, "production")
    assert logs_in(latest["DATABASE_URL"]) and logs_in(after["DATABASE_URL"])


def test_bad_rotations_get_clear_errors(client, mds):
    project = project_with_postgres(client, mds, "badrot")
    pid = project["id"]
    for body, field in [({"grace": "0s"}, "grace"), ({"grace": "30d"}, "grace"), ({"grace": "soon"}, "grace")]:
        answer = rotate(mds, pid, **body)
        assert answer.status_code == 422 and answer.json()["error"]["details"]["field"] == field, answer.text
    answer = rotate(mds, pid, service="nope")
    assert answer.status_code == 404, answer.text
    answer = rotate(mds, pid, unknown=True)
    assert answer.status_code in (400, 422), answer.text
    # A key that may only read the environment cannot rotate it.
    reader = api(mds, "POST", "/api-keys", json={"name": f"ro-{uuid.uuid4().hex[:6]}", "scopes": ["env:read"]})
    assert reader.status_code == 201, reader.text
    answer = api(mds, "POST", f"/projects/{pid}/environments/production/credentials/rotate",
                 key=reader.json()["data"]["token"], json={})
    assert answer.status_code == 403, answer.text
    # A project with no Postgres has nothing to rotate.
    empty = client.projects.create(f"empty-{uuid.uuid4().hex[:6]}")
    answer = rotate(mds, empty["id"])
    assert answer.status_code == 422 and "nothing to rotate" in answer.json()["error"]["message"], answer.text


def test_a_kill_9_mid_rotation_leaves_working_credentials():
    server = Server("--expiry-check", "1s")
    try:
        resp = api(server, "POST", "/projects", json={"name": f"killrot-{uuid.uuid4().hex[:6]}"})
        pid = resp.json()["data"]["id"]
        assert api(server, "POST", f"/projects/{pid}/data-services?wait=true",
                   json={"type": "postgres"}).status_code == 201
        before = resolved(server, pid, "production")
        killed_mid_request(server, f"/projects/{pid}/environments/production/credentials/rotate",
                           {"grace": "1h"}, after=0.05)
        server = server.restarted("mds-2.log", "--expiry-check", "1s")
        current = resolved(server, pid, "production")
        # Rolled back (the old ones current) or done (the old ones in grace):
        # either way both what apps hold and what new boots get work.
        assert logs_in(current["DATABASE_URL"]) and logs_in(current["DATABASE_URL_UNPOOLED"])
        assert logs_in(before["DATABASE_URL"]) and logs_in(before["DATABASE_URL_UNPOOLED"])
        if current["DATABASE_URL"] == before["DATABASE_URL"]:
            # Rolled back: a new rotation goes ahead once the sweep ran.
            deadline = time.monotonic() + 20
            while (answer := rotate(server, pid, grace="1m")).status_code == 409:
                assert time.monotonic() < deadline, answer.text
                time.sleep(0.5)
            assert answer.status_code == 200, answer.text
    finally:
        server.stop()
