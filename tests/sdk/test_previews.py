"""Previews with data (issue 18): an environment made `--from` production
is filled from a restore point, never the live data. psql sees
production's rows with the masked columns masked, boto3 the objects,
supabase-auth logs a copied user in, and writes in the preview leave
production alone. Bad input gets a 422; a copy that cannot finish leaves
the preview refusing boots; a kill -9 mid-copy leaves nothing half-copied
visible as ready, and the next start finishes the copy."""

from __future__ import annotations

import re
import time
import uuid
from urllib.parse import quote

import psycopg
import pytest
import redis

from conftest import Server, resolved
from test_backups import PASSWORD, api, cli, gotrue, killed_mid_request, new_project, ok, s3, take_point


@pytest.fixture(scope="module")
def mds():
    server = Server("--expiry-check", "1s")
    yield server
    server.stop()


def env_of(mds, pid: str, name: str) -> dict:
    return ok(api(mds, "GET", f"/projects/{pid}/environments/{quote(name, safe='')}"))


def wait_copied(mds, pid: str, name: str, limit: float = 240) -> dict:
    deadline = time.monotonic() + limit
    while True:
        env = env_of(mds, pid, name)
        if env["data"]["state"] != "copying":
            return env
        assert time.monotonic() < deadline, env
        time.sleep(0.3)


def boot_env(mds, pid: str, name: str):
    return api(mds, "GET", f"/projects/{pid}/env", params={"env": name, "reveal": "true"})


def test_a_preview_branches_production_with_masks_and_leaves_it_alone(mds):
    project = new_project(mds, "branch", "postgres", "redis", "storage", "auth")
    pid = project["id"]
    prod = resolved(mds, pid, "production")
    with psycopg.connect(prod["DATABASE_URL"]) as conn:
        conn.execute(
            "CREATE TABLE users (id int PRIMARY KEY, email text UNIQUE NOT NULL, phone text, "
            "ssn varchar(80), plan text)"
        )
        conn.execute(
            "INSERT INTO users SELECT g, 'person' || g || '@real.example', '+1555' || g, "
            "'ssn-' || g, CASE WHEN g % 2 = 0 THEN 'pro' ELSE 'free' END FROM generate_series(1, 300) g"
        )
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, user_id int REFERENCES users, total numeric)")
        conn.execute("INSERT INTO orders SELECT g, 1 + g % 300, g * 2.5 FROM generate_series(1, 1000) g")
    redis.Redis.from_url(prod["REDIS_URL"]).set("feature:dark-mode", "on")
    objects = s3(prod)
    objects.put_object(Bucket=prod["STORAGE_BUCKET"], Key="avatars/ada.png", Body=b"\x89PNG ada")
    objects.put_object(Bucket=prod["STORAGE_BUCKET"], Key="docs/terms.txt", Body=b"terms v1")
    address = f"ada-{uuid.uuid4().hex[:6]}@example.com"
    gotrue(prod["AUTH_URL"]).sign_up({"email": address, "password": PASSWORD})
    gotrue(prod["AUTH_URL"]).sign_in_with_password({"email": address, "password": PASSWORD})

    # The CLI waits for the copy and says what each service got.
    done = cli(
        mds, "envs", "create", "preview/pr-42", "-p", pid, "--from", "production", "--data", "copy",
        "--mask", "users.email=email", "--mask", "users.phone=null", "--mask", "users.ssn=hash", "--ttl", "2h",
    )
    assert "copy of production (ready)" in done.stdout, done.stdout
    assert "masked users.email (300 rows)" in done.stdout, done.stdout
    env = env_of(mds, pid, "preview/pr-42")
    data = env["data"]
    assert data["state"] == "ready" and data["policy"] == "copy" and data["restore_point"], data
    assert sorted(s["kind"] for s in data["services"]) == ["auth", "postgres", "redis", "storage"], data
    assert env["expires_at"], env
    # No point was verified, so one was taken for the copy.
    point = ok(api(mds, "GET", f"/restore-points/{data['restore_point']}"))
    assert point["reason"] == "for-preview" and point["environment"] == "production", point

    preview = resolved(mds, pid, "preview/pr-42")
    assert preview["DATABASE_URL"] != prod["DATABASE_URL"]
    with psycopg.connect(preview["DATABASE_URL"]) as conn:
        copied = conn.execute("SELECT id, email, phone, ssn, plan FROM users ORDER BY id").fetchall()
        assert len(copied) == 300
        emails = [r[1] for r in copied]
        assert all(re.fullmatch(r"user_[0-9a-f]{16}@example\.invalid", e) for e in emails), emails[:3]
        assert len(set(emails)) == 300  # still unique
        assert all(r[2] is None for r in copied)
        assert all(re.fullmatch(r"[0-9a-f]{64}", r[3]) for r in copied)
        assert [r[4] for r in copied[:2]] == ["free", "pro"]  # the rest as it was
        assert conn.execute("SELECT count(*), sum(total) FROM orders").fetchone() == (1000, 1251250)
        assert conn.execute("SELECT count(*) FROM users WHERE email LIKE '%real.example'").fetchone()[0] == 0
        # The preview's own role owns the copy: it writes.
        conn.execute("INSERT INTO users VALUES (301, 'new@preview.test', NULL, NULL, 'free')")
        conn.execute("DELETE FROM orders WHERE id <= 500")
    assert redis.Redis.from_url(preview["REDIS_URL"]).get("feature:dark-mode") == b"on"
    preview_objects = s3(preview)
    bucket = preview["STORAGE_BUCKET"]
    assert bucket != prod["STORAGE_BUCKET"]
    keys = [o["Key"] for o in preview_objects.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["avatars/ada.png", "docs/terms.txt"]
    assert preview_objects.get_object(Bucket=bucket, Key="avatars/ada.png")["Body"].read() == b"\x89PNG ada"
    preview_objects.put_object(Bucket=bucket, Key="docs/terms.txt", Body=b"terms v2 draft")
    preview_objects.delete_object(Bucket=bucket, Key="avatars/ada.png")
    # A copied user logs in to the preview's own auth.
    assert preview["AUTH_URL"] != prod["AUTH_URL"]
    session = gotrue(preview["AUTH_URL"]).sign_in_with_password({"email": address, "password": PASSWORD})
    assert session.user.email == address
    redis.Redis.from_url(preview["REDIS_URL"]).set("feature:dark-mode", "off")

    # Production is as it was.
    with psycopg.connect(prod["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT count(*) FROM users WHERE email LIKE '%real.example'").fetchone()[0] == 300
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 1000
        assert conn.execute("SELECT phone FROM users WHERE id = 1").fetchone()[0] == "+15551"
    assert redis.Redis.from_url(prod["REDIS_URL"]).get("feature:dark-mode") == b"on"
    assert objects.get_object(Bucket=prod["STORAGE_BUCKET"], Key="docs/terms.txt")["Body"].read() == b"terms v1"
    assert objects.get_object(Bucket=prod["STORAGE_BUCKET"], Key="avatars/ada.png")["Body"].read() == b"\x89PNG ada"

    # A second preview of the same point: schema only, no auth users.
    ok(api(mds, "POST", f"/projects/{pid}/environments", json={
        "name": "preview/pr-43", "source_environment": "production", "data_policy": "schema",
        "restore_point": data["restore_point"],
    }), 201)
    schema = wait_copied(mds, pid, "preview/pr-43")["data"]
    assert schema["state"] == "ready", schema
    what = {s["kind"]: s["data"] for s in schema["services"]}
    assert what == {"postgres": "schema", "redis": "empty", "storage": "empty", "auth": "empty"}, schema
    second = resolved(mds, pid, "preview/pr-43")
    with psycopg.connect(second["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 0
        conn.execute("INSERT INTO users VALUES (1, 'a@b.test', NULL, NULL, 'free')")
    assert ok(api(mds, "GET", f"/projects/{pid}/auth/users", params={"env": "preview/pr-43"})) == []

    # The list shows each preview's data; the copies are audited.
    listed = cli(mds, "envs", "list", "-p", pid).stdout
    assert "copy of production: ready" in listed and "schema of production: ready" in listed, listed
    deadline = time.monotonic() + 10
    while True:
        events = ok(api(mds, "GET", "/audit-events", params={"project": pid, "action": "environment.copy"}))
        if len(events["events"]) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(events["events"]) == 2 and all(e["outcome"] == "ok" for e in events["events"]), events
    assert events["events"][0]["actor_kind"] == "system"

    # Deleting a preview with --purge keeps its data in a restore point.
    cli(mds, "envs", "delete", "preview/pr-42", "-p", pid, "--purge")
    points = ok(api(mds, "GET", f"/projects/{pid}/backups"))["restore_points"]
    kept = [p for p in points if p["environment"] == "preview/pr-42"]
    assert [p["reason"] for p in kept] == ["before-purge"] and kept[0]["state"] == "complete", points


def test_a_preview_gets_a_copy_of_its_sources_volume(client, mds):
    project = new_project(mds, "branchvol", "volume")
    pid = project["id"]
    production = resolved(mds, pid, "production")["VOLUME_ID"]
    writer = client.sandboxes.create(project_id=pid)
    client.volumes.attach(writer.id, production, mount_path="/state")
    assert writer.exec.run("echo 'trained weights' > /state/model.txt").exit_code == 0
    writer.destroy()  # a volume restores only detached; the preview's is new

    ok(api(mds, "POST", f"/projects/{pid}/environments",
           json={"name": "preview/vol", "source_environment": "production"}), 201)
    data = wait_copied(mds, pid, "preview/vol")["data"]
    assert data["state"] == "ready" and [s["kind"] for s in data["services"]] == ["volume"], data
    copy = resolved(mds, pid, "preview/vol")["VOLUME_ID"]
    assert copy != production
    reader = client.sandboxes.create(project_id=pid, metadata={"environment": "preview/vol"})
    client.volumes.attach(reader.id, copy, mount_path="/state")
    assert reader.exec.run("cat /state/model.txt").stdout == "trained weights\n"
    assert reader.exec.run("echo 'fine-tuned' > /state/model.txt").exit_code == 0
    reader.destroy()
    # The source's volume is as it was.
    again = client.sandboxes.create(project_id=pid)
    client.volumes.attach(again.id, production, mount_path="/state")
    assert again.exec.run("cat /state/model.txt").stdout == "trained weights\n"
    again.destroy()


def test_bad_copies_get_a_422_and_a_failed_one_refuses_boots(mds):
    empty = new_project(mds, "nodata")
    answer = api(mds, "POST", f"/projects/{empty['id']}/environments",
                 json={"name": "preview/x", "source_environment": "production"})
    assert answer.status_code == 422 and answer.json()["error"]["details"]["field"] == "source_environment"
    assert "no data service" in answer.json()["error"]["message"]

    project = new_project(mds, "bad", "postgres")
    pid = project["id"]
    other = new_project(mds, "other", "postgres")
    other_point = take_point(mds, other["id"])
    for body, field in [
        ({"source_environment": "nope"}, "source_environment"),
        ({"source_environment": "production", "data_policy": "all"}, "data_policy"),
        ({"source_environment": "production", "masks": ["users.email"]}, "masks"),
        ({"source_environment": "production", "masks": ["users.email=rot13"]}, "masks"),
        ({"source_environment": "production", "masks": ["x;drop.y=hash"]}, "masks"),
        ({"source_environment": "production", "data_policy": "schema", "masks": ["u.e=null"]}, "masks"),
        ({"source_environment": "production", "auth_users": "some"}, "auth_users"),
        ({"data_policy": "copy"}, "data_policy"),
        # Another project's point is not one of this source's.
        ({"source_environment": "production", "restore_point": other_point["id"]}, "restore_point"),
        ({"source_environment": "production", "ttl": "30m"}, "ttl"),
    ]:
        answer = api(mds, "POST", f"/projects/{pid}/environments", json={"name": "preview/bad", **body})
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["error"]["details"]["field"] == field, (body, answer.text)
    names = [e["name"] for e in ok(api(mds, "GET", f"/projects/{pid}/environments"))]
    assert "preview/bad" not in names

    # A mask naming no such column: the copy fails, and nothing boots there.
    with psycopg.connect(resolved(mds, pid, "production")["DATABASE_URL"]) as conn:
        conn.execute("CREATE TABLE users (id int, email text NOT NULL)")
        conn.execute("INSERT INTO users VALUES (1, 'a@real.example')")
    ok(api(mds, "POST", f"/projects/{pid}/environments", json={
        "name": "preview/typo", "source_environment": "production", "masks": ["users.emial=email"],
    }), 201)
    failed = wait_copied(mds, pid, "preview/typo")["data"]
    assert failed["state"] == "failed" and "users.emial" in failed["error"], failed
    answer = boot_env(mds, pid, "preview/typo")
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "ENVIRONMENT_NOT_READY", answer.text
    # NOT NULL is not nulled.
    ok(api(mds, "POST", f"/projects/{pid}/environments", json={
        "name": "preview/notnull", "source_environment": "production", "masks": ["users.email=null"],
    }), 201)
    failed = wait_copied(mds, pid, "preview/notnull")["data"]
    assert failed["state"] == "failed" and "NOT NULL" in failed["error"], failed


def test_a_kill_9_mid_copy_leaves_no_ready_preview_and_the_next_start_finishes_it():
    server = Server("--expiry-check", "1s")
    try:
        project = new_project(server, "crashcopy", "postgres")
        pid = project["id"]
        url = resolved(server, pid, "production")["DATABASE_URL"]
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE big (id int PRIMARY KEY, email text, pad text)")
            conn.execute(
                "INSERT INTO big SELECT g, 'p' || g || '@real.example', repeat(md5(g::text), 8) "
                "FROM generate_series(1, 400000) g"
            )
        path = f"/projects/{pid}/environments"
        body = {"name": "preview/crash", "source_environment": "production", "masks": ["big.email=email"]}
        # Created, then killed before the copy (a restore point, a template
        # copy, a clone of 400,000 rows) could finish.
        killed_mid_request(server, path, body, after=0.5)
        server = server.restarted("mds-2.log", "--expiry-check", "1s")
        env = env_of(server, pid, "preview/crash")
        if env["data"]["state"] == "copying":
            answer = boot_env(server, pid, "preview/crash")
            assert answer.status_code == 409 and answer.json()["error"]["code"] == "ENVIRONMENT_NOT_READY"
        env = wait_copied(server, pid, "preview/crash")
        assert env["data"]["state"] == "ready", env
        # This start did the copy: it was not done at the kill.
        log = (server.root / "mds-2.log").read_text()
        assert "copying data into a new environment" in log, log[-3000:]
        with psycopg.connect(resolved(server, pid, "preview/crash")["DATABASE_URL"]) as conn:
            masked = conn.execute("SELECT count(*) FROM big WHERE email LIKE '%@example.invalid'").fetchone()[0]
            assert masked == 400000
            # Nothing half-made is left on the engine: no clone, no
            # template copy under construction.
            leftovers = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'mds\\_branch\\_%' "
                "OR datname LIKE 'mds\\_tmplnew\\_%' OR datname LIKE 'mds\\_restore\\_%'"
            ).fetchall()
            assert leftovers == [], leftovers
    finally:
        server.stop()
