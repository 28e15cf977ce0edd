"""Credential rotation with overlap (issue 18), from the outside: a
deployment keeps serving requests that write through psql while its
environment's Postgres credentials are rotated, and none fails; the old
password works for the grace period, through the pooler and directly, and
is refused after it, its sessions ended; objects keep their owner; a
second rotation during the grace period is a 409; a kill -9 mid-rotation
leaves working credentials. Redis takes both users (redis-py and raw
sessions), storage a second key pair (boto3), auth a second signing
secret (supabase-auth, PyJWT)."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from urllib.parse import unquote, urlparse

import botocore.exceptions
import httpx
import jwt
import psycopg
import pytest
import redis
from supabase_auth.errors import AuthApiError

from conftest import Server, resolved
from test_backups import PASSWORD, cli, gotrue, killed_mid_request, s3
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
    # Counted, not timed: some requests before the rotation, some after it
    # (during it is what the rotation's length gives).
    def wait_for(count: int):
        deadline = time.monotonic() + 60
        while len(seen) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    try:
        wait_for(10)
        answer = rotate(mds, pid, grace="40s")
        wait_for(len(seen) + 10)
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
    assert len(seen) >= 20, len(seen)
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
    # (The sweep revokes the login, ends its sessions, then syncs the
    # pooler: the two ways in close within moments of each other.)
    deadline = time.monotonic() + 90
    while logs_in(before["DATABASE_URL_UNPOOLED"]) or logs_in(before["DATABASE_URL"]):
        assert time.monotonic() < deadline, "the old password still works"
        time.sleep(0.5)
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


def redis_session(url: str) -> socket.socket:
    """A raw connection logged in with the URL's user and password."""
    u = urlparse(url)
    conn = socket.create_connection((u.hostname, u.port), timeout=5)
    words = ["AUTH", unquote(u.username), unquote(u.password)]
    conn.sendall(f"*{len(words)}\r\n".encode() + b"".join(
        f"${len(w.encode())}\r\n{w}\r\n".encode() for w in words))
    assert conn.recv(100).startswith(b"+OK")
    return conn


def pongs(conn: socket.socket) -> bool:
    try:
        conn.sendall(b"*1\r\n$4\r\nPING\r\n")
        return conn.recv(100).startswith(b"+PONG")
    except OSError:
        return False


def test_redis_takes_both_users_during_the_grace_period_then_only_the_new(client, mds):
    project = client.projects.create(f"rotredis-{uuid.uuid4().hex[:6]}")
    pid = project["id"]
    assert api(mds, "POST", f"/projects/{pid}/data-services?wait=true",
               json={"type": "redis"}).status_code == 201
    before = resolved(mds, pid, "production")["REDIS_URL"]
    redis.Redis.from_url(before).set("kept", "yes")
    old_session = redis_session(before)
    answer = rotate(mds, pid, grace="6s")
    assert answer.status_code == 200, answer.text
    rotated = answer.json()["data"]["rotated"]
    assert [r["kind"] for r in rotated] == ["redis"], rotated
    after = resolved(mds, pid, "production")["REDIS_URL"]
    old_user, new_user = urlparse(before).username, urlparse(after).username
    assert new_user == f"{old_user}_r1" and rotated[0]["user"] == new_user, (before, after)
    # No connection was cut, and both passwords log in.
    assert pongs(old_session)
    assert redis.Redis.from_url(before).ping() and redis.Redis.from_url(after).ping()
    new_session = redis_session(after)
    redis.Redis.from_url(after).set("written", "after")
    # After the grace period: the old password is refused and the session
    # it opened is over; the new one's goes on.
    deadline = time.monotonic() + 30
    while True:
        try:
            redis.Redis.from_url(before).ping()
        except redis.exceptions.AuthenticationError:
            break
        assert time.monotonic() < deadline, "the old password still works"
        time.sleep(0.5)
    deadline = time.monotonic() + 10
    while pongs(old_session):
        assert time.monotonic() < deadline, "the old session goes on"
        time.sleep(0.3)
    assert pongs(new_session)
    fresh = redis.Redis.from_url(after)
    assert fresh.get("written") == b"after" and fresh.get("kept") == b"yes"


def test_storage_gets_a_second_key_pair_and_the_first_is_revoked_after_the_grace_period(client, mds):
    project = client.projects.create(f"rotstore-{uuid.uuid4().hex[:6]}")
    pid = project["id"]
    assert api(mds, "POST", f"/projects/{pid}/data-services?wait=true",
               json={"type": "storage"}).status_code == 201
    before = resolved(mds, pid, "production")
    s3(before).put_object(Bucket=before["STORAGE_BUCKET"], Key="a.txt", Body=b"first")
    answer = rotate(mds, pid, grace="5s")
    assert answer.status_code == 200, answer.text
    after = resolved(mds, pid, "production")
    assert after["AWS_ACCESS_KEY_ID"] == before["AWS_ACCESS_KEY_ID"] + "R1"
    assert after["AWS_SECRET_ACCESS_KEY"] != before["AWS_SECRET_ACCESS_KEY"]
    assert [r["user"] for r in answer.json()["data"]["rotated"]] == [after["AWS_ACCESS_KEY_ID"]]
    # Both pairs open the bucket meanwhile; neither opens another pair's
    # secret (a key id with the other secret is refused).
    for env in (before, after):
        assert s3(env).get_object(Bucket=env["STORAGE_BUCKET"], Key="a.txt")["Body"].read() == b"first"
    mixed = dict(after, AWS_SECRET_ACCESS_KEY=before["AWS_SECRET_ACCESS_KEY"])
    with pytest.raises(botocore.exceptions.ClientError):
        s3(mixed).get_object(Bucket=after["STORAGE_BUCKET"], Key="a.txt")
    deadline = time.monotonic() + 30
    while True:
        try:
            s3(before).get_object(Bucket=before["STORAGE_BUCKET"], Key="a.txt")
        except botocore.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == "InvalidAccessKeyId", e.response
            break
        assert time.monotonic() < deadline, "the old key pair still works"
        time.sleep(0.5)
    s3(after).put_object(Bucket=after["STORAGE_BUCKET"], Key="b.txt", Body=b"second")


def test_auth_signs_with_a_new_secret_and_accepts_the_old_one_until_the_grace_period_ends(client, mds):
    project = client.projects.create(f"rotauth-{uuid.uuid4().hex[:6]}")
    pid = project["id"]
    assert api(mds, "POST", f"/projects/{pid}/auth", json={}).status_code == 200
    before = resolved(mds, pid, "production")
    address = f"ada-{uuid.uuid4().hex[:6]}@example.com"
    gotrue(before["AUTH_URL"]).sign_up({"email": address, "password": PASSWORD})
    old_token = gotrue(before["AUTH_URL"]).sign_in_with_password(
        {"email": address, "password": PASSWORD}).session.access_token
    claims = {"algorithms": ["HS256"], "options": {"verify_aud": False, "verify_iss": False}}
    jwt.decode(old_token, before["AUTH_JWT_SECRET"], **claims)
    answer = rotate(mds, pid, grace="5s")
    assert answer.status_code == 200, answer.text
    assert [r["kind"] for r in answer.json()["data"]["rotated"]] == ["auth"]
    after = resolved(mds, pid, "production")
    assert after["AUTH_JWT_SECRET"] != before["AUTH_JWT_SECRET"]
    new_token = gotrue(after["AUTH_URL"]).sign_in_with_password(
        {"email": address, "password": PASSWORD}).session.access_token
    # New tokens are signed with the new secret (an app holding it verifies
    # them), and the server still takes the old ones meanwhile.
    jwt.decode(new_token, after["AUTH_JWT_SECRET"], **claims)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(new_token, before["AUTH_JWT_SECRET"], **claims)
    assert gotrue(after["AUTH_URL"]).get_user(old_token).user.email == address
    deadline = time.monotonic() + 30
    while True:
        try:
            gotrue(after["AUTH_URL"]).get_user(old_token)
        except AuthApiError:
            break
        assert time.monotonic() < deadline, "a token signed with the old secret is still taken"
        time.sleep(0.5)
    assert gotrue(after["AUTH_URL"]).get_user(new_token).user.email == address


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
    # --all: every environment of the project, each its own rotation.
    done = cli(mds, "credentials", "rotate", "-p", pid, "--all", "--grace", "5s")
    assert "production: rotated" in done.stdout and "staging: rotated" in done.stdout, done.stdout
    assert "_r1:" in resolved(mds, pid, "staging")["DATABASE_URL"]
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
