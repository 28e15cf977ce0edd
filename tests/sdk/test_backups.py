"""Backups with independent clients: data written with psycopg, redis-py,
boto3 and supabase-auth; restore points taken and restored through the
API and the `mds` CLI; point-in-time recovery; drills that catch a flipped
bit; restores into another environment and their undo; and the faults:
kill -9 mid-backup, a second restore at once, a full repository disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import boto3
import httpx
import psycopg
import pytest
import redis
from botocore.config import Config
from supabase_auth import SyncGoTrueClient
from supabase_auth.errors import AuthApiError

from conftest import REPO, Server, resolved

PASSWORD = "correct horse battery"
MDS = os.environ.get("MDS_BIN", str(REPO / "target" / "debug" / "mds"))


@pytest.fixture(scope="module")
def mds():
    # WAL reaches the repository within 5 s (a restore flushes it anyway).
    server = Server("--wal-archive-timeout", "5s")
    yield server
    server.stop()


def api(mds, method: str, path: str, key: str | None = None, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or mds.admin_key}"}
    return httpx.request(method, f"{mds.url}/api/v1{path}", headers=headers, timeout=300, **kw)


def ok(answer: httpx.Response, status: int = 200) -> dict:
    assert answer.status_code == status, answer.text
    return answer.json()["data"]


def cli(mds, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, MIOSA_BASE_URL=mds.url, MIOSA_API_KEY=mds.admin_key)
    done = subprocess.run([MDS, *args], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def new_project(mds, name: str, *kinds: str) -> dict:
    project = ok(api(mds, "POST", "/projects", json={"name": f"{name}-{uuid.uuid4().hex[:6]}"}), 201)
    for kind in kinds:
        if kind == "auth":
            ok(api(mds, "POST", f"/projects/{project['id']}/auth", json={}))
        else:
            ok(api(mds, "POST", f"/projects/{project['id']}/data-services?wait=true", json={"type": kind}), 201)
    return project


def take_point(mds, pid: str, env: str = "production") -> dict:
    point = ok(api(mds, "POST", f"/projects/{pid}/environments/{env}/restore-points", json={}), 201)
    assert point["state"] == "complete", point
    return point


def restore(mds, pid: str, env: str = "production", **body) -> httpx.Response:
    return api(mds, "POST", f"/projects/{pid}/environments/{env}/restores", json={"confirm": True, **body})


def s3(env: dict[str, str]):
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL_S3"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
        config=Config(retries={"max_attempts": 1}),
    )


def gotrue(url: str) -> SyncGoTrueClient:
    return SyncGoTrueClient(url=url, auto_refresh_token=False, persist_session=False)


def rows(url: str, table: str = "orders") -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


def test_every_service_comes_back_exactly_and_the_restore_can_be_undone(mds):
    project = new_project(mds, "everything", "postgres", "redis", "storage", "auth")
    pid = project["id"]
    env = resolved(mds, pid, "production")

    # Postgres: a table, an index, a grant-bearing view.
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, item text, price numeric)")
        conn.execute("INSERT INTO orders SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, 500) g")
        conn.execute("CREATE VIEW cheap AS SELECT * FROM orders WHERE price < 10")
    # Redis: several types, a TTL.
    r = redis.Redis.from_url(env["REDIS_URL"])
    r.set("greeting", "hello")
    r.hset("user:1", mapping={"name": "Ada", "plan": "pro"})
    r.rpush("queue", *[f"job{i}" for i in range(20)])
    r.sadd("tags", "a", "b", "c")
    r.zadd("scores", {"ada": 3, "bob": 1})
    r.set("session", "s3cr3t", ex=3600)
    # Storage: small and multipart-sized objects.
    bucket = env["STORAGE_BUCKET"]
    objects = s3(env)
    big = os.urandom(9 << 20)
    objects.put_object(Bucket=bucket, Key="small.txt", Body=b"small", Metadata={"owner": "ada"})
    objects.put_object(Bucket=bucket, Key="big.bin", Body=big)
    objects.put_object(Bucket=bucket, Key="doomed.txt", Body=b"keep me")
    # Auth: two users.
    users = {}
    for name in ("ada", "bob"):
        address = f"{name}-{uuid.uuid4().hex[:6]}@example.com"
        users[name] = (address, gotrue(env["AUTH_URL"]).sign_up({"email": address, "password": PASSWORD}).user.id)

    point = take_point(mds, pid)
    kinds = sorted(s["kind"] for s in point["services"])
    assert kinds == ["auth", "postgres", "redis", "storage"], point
    assert all(s["skipped"] is None for s in point["services"]), point
    listed = json.loads(cli(mds, "backup", "list", "-p", pid, "--json").stdout)["data"]
    assert point["id"] in [p["id"] for p in listed["restore_points"]]
    assert listed["repository"]["same_disk_as_data"] is True and "same disk" in listed["repository"]["warning"]

    # A bad deploy.
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        conn.execute("DROP VIEW cheap")
        conn.execute("DROP TABLE orders")
        conn.execute("CREATE TABLE intruder (id int)")
    r.flushall()
    r.set("after", "the flush")
    objects.put_object(Bucket=bucket, Key="small.txt", Body=b"overwritten")
    objects.delete_object(Bucket=bucket, Key="doomed.txt")
    objects.put_object(Bucket=bucket, Key="new.txt", Body=b"new")
    ok(api(mds, "DELETE", f"/projects/{pid}/auth/users/{users['ada'][1]}"))
    gotrue(env["AUTH_URL"]).sign_up({"email": f"eve-{uuid.uuid4().hex[:6]}@example.com", "password": PASSWORD})

    # Apps still connected when the switch happens: one direct (its session
    # is ended by the swap) and one through the pooler (the pooler closes
    # it before the swap, so no server connection to the old data is left).
    held = psycopg.connect(env["DATABASE_URL_UNPOOLED"], autocommit=True)
    held.execute("SELECT 1")
    pooled = psycopg.connect(env["DATABASE_URL"], autocommit=True, prepare_threshold=None)
    pooled.execute("SELECT 1")
    result = ok(restore(mds, pid, restore_point=point["id"]))
    done = {s["kind"]: s for s in result["restored"]}
    assert sorted(done) == ["auth", "postgres", "redis", "storage"], result
    assert done["postgres"]["terminated"] >= 1
    for conn in (held, pooled):
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    undo = result["undo_restore_point"]
    assert undo and undo != point["id"]

    # Same credentials, the exact earlier state.
    after = resolved(mds, pid, "production")
    assert after["DATABASE_URL"] == env["DATABASE_URL"] and after["REDIS_URL"] == env["REDIS_URL"]
    assert len(rows(env["DATABASE_URL"])) == 500
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT count(*) FROM cheap").fetchone()[0] == 6
        assert conn.execute("SELECT to_regclass('intruder')").fetchone()[0] is None
        # The role still owns what it restored: it can write.
        conn.execute("INSERT INTO orders VALUES (501, 'more', 1)")
    r = redis.Redis.from_url(env["REDIS_URL"])
    assert r.get("greeting") == b"hello" and r.get("after") is None
    assert r.hgetall("user:1") == {b"name": b"Ada", b"plan": b"pro"}
    assert r.lrange("queue", 0, -1) == [f"job{i}".encode() for i in range(20)]
    assert r.smembers("tags") == {b"a", b"b", b"c"}
    assert r.zrange("scores", 0, -1, withscores=True) == [(b"bob", 1.0), (b"ada", 3.0)]
    assert 0 < r.ttl("session") <= 3600
    body = objects.get_object(Bucket=bucket, Key="small.txt")
    assert body["Body"].read() == b"small" and body["Metadata"] == {"owner": "ada"}
    assert objects.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == big
    assert objects.get_object(Bucket=bucket, Key="doomed.txt")["Body"].read() == b"keep me"
    keys = [o["Key"] for o in objects.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == ["big.bin", "doomed.txt", "small.txt"]
    ada = gotrue(env["AUTH_URL"]).sign_in_with_password({"email": users["ada"][0], "password": PASSWORD})
    assert ada.user.id == users["ada"][1]
    listed_users = ok(api(mds, "GET", f"/projects/{pid}/auth/users"))
    assert sorted(u["email"] for u in listed_users) == sorted(u[0] for u in users.values())

    # Undo: the bad deploy's state comes back (the CLI this time).
    cli(mds, "restore", "-p", pid, "-e", "production", "--restore-point", undo, "--yes")
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT to_regclass('orders')").fetchone()[0] is None
        assert conn.execute("SELECT to_regclass('intruder')").fetchone()[0] == "intruder"
    assert redis.Redis.from_url(env["REDIS_URL"]).get("after") == b"the flush"
    assert objects.get_object(Bucket=bucket, Key="small.txt")["Body"].read() == b"overwritten"


def wait_for_pitr_window(mds, pid: str) -> dict:
    # The first base backup starts 30 s after the server does.
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        pitr = ok(api(mds, "GET", f"/projects/{pid}/backups"))["pitr"]
        if pitr["window_start"]:
            return pitr
        time.sleep(0.5)
    raise AssertionError(f"no PITR window: {pitr}")


def test_pitr_brings_back_exactly_the_rows_before_the_moment_and_no_other_tenant_moves(mds):
    project = new_project(mds, "pitr", "postgres")
    other = new_project(mds, "bystander", "postgres")
    pid = project["id"]
    url = resolved(mds, pid, "production")["DATABASE_URL"]
    other_url = resolved(mds, other["id"], "production")["DATABASE_URL"]
    with psycopg.connect(other_url) as conn:
        conn.execute("CREATE TABLE ticks (id serial PRIMARY KEY, at timestamptz DEFAULT now())")
    stop = threading.Event()
    written = []

    def bystander():
        with psycopg.connect(other_url, autocommit=True) as conn:
            while not stop.is_set():
                written.append(conn.execute("INSERT INTO ticks DEFAULT VALUES RETURNING id").fetchone()[0])
                time.sleep(0.02)

    writer = threading.Thread(target=bystander)
    writer.start()
    try:
        wait_for_pitr_window(mds, pid)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, note text)")
            conn.execute("INSERT INTO t VALUES (1, 'row 1')")
            moment = conn.execute("SELECT clock_timestamp()").fetchone()[0]
            time.sleep(1.1)
            conn.execute("INSERT INTO t VALUES (2, 'row 2')")
        result = ok(restore(mds, pid, to_time=moment.isoformat()))
        assert result["restored"][0]["from"].startswith("pitr:"), result
        assert rows(url, "t") == [(1, "row 1")]
        # Long before the window: refused, naming the window.
        refused = restore(mds, pid, to_time="2020-01-01T00:00:00Z")
        assert refused.status_code == 422, refused.text
        assert "window" in refused.json()["error"]["message"]
    finally:
        stop.set()
        writer.join()
    # The bystander lost nothing and was never paused for long.
    with psycopg.connect(other_url) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM ticks ORDER BY id").fetchall()]
    assert ids == sorted(written) and len(ids) > 50


def test_a_drill_catches_a_flipped_bit_and_a_restore_from_it_refuses(mds):
    project = new_project(mds, "drill", "postgres")
    pid = project["id"]
    url = resolved(mds, pid, "production")["DATABASE_URL"]
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, item text)")
        conn.execute("INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 2000) g")
    point = take_point(mds, pid)
    drilled = ok(api(mds, "POST", f"/restore-points/{point['id']}/verify"))
    assert drilled["verification"]["state"] == "passed", drilled
    assert "2000 rows" in json.dumps(drilled["verification"]["detail"])

    dump = next((mds.data_dir / "backups" / "restore-points" / point["id"]).glob("*.pgdump"))
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x10
    dump.write_bytes(bytes(data))

    failed = cli(mds, "backup", "verify", point["id"], check=False)
    assert failed.returncode != 0, failed.stdout
    again = ok(api(mds, "GET", f"/restore-points/{point['id']}"))
    assert again["verification"]["state"] == "failed"
    assert "damaged" in json.dumps(again["verification"]["detail"])
    overview = ok(api(mds, "GET", f"/projects/{pid}/backups"))
    assert any(point["id"] in e for e in overview["errors"]), overview["errors"]
    metrics = httpx.get(f"{mds.url}/metrics").text
    failures = [l for l in metrics.splitlines() if l.startswith("mds_backup_drill_failures_total")]
    assert failures and float(failures[0].split()[-1]) >= 1
    assert "mds_backup_last_success_timestamp_seconds" in metrics

    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM orders WHERE id > 10")
    refused = restore(mds, pid, restore_point=point["id"])
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "BACKUP_DAMAGED"
    assert len(rows(url)) == 10  # nothing was switched


def test_into_another_environment_copies_production_and_leaves_it_alone(mds):
    project = new_project(mds, "into", "postgres", "redis")
    pid = project["id"]
    prod = resolved(mds, pid, "production")
    staging = resolved(mds, pid, "staging")
    with psycopg.connect(prod["DATABASE_URL"]) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, item text)")
        conn.execute("INSERT INTO orders VALUES (1, 'real'), (2, 'data')")
    redis.Redis.from_url(prod["REDIS_URL"]).set("cart", "3 items")
    with psycopg.connect(staging["DATABASE_URL"]) as conn:
        conn.execute("CREATE TABLE scratch (id int)")
    point = take_point(mds, pid, "production")

    result = ok(restore(mds, pid, "production", restore_point=point["id"], into="staging"))
    assert result["environment"] == "staging"
    assert rows(staging["DATABASE_URL"]) == [(1, "real"), (2, "data")]
    assert redis.Redis.from_url(staging["REDIS_URL"]).get("cart") == b"3 items"
    with psycopg.connect(staging["DATABASE_URL"]) as conn:
        # Staging's own role owns the copy.
        conn.execute("INSERT INTO orders VALUES (3, 'test')")
        assert conn.execute("SELECT to_regclass('scratch')").fetchone()[0] is None
    assert rows(prod["DATABASE_URL"]) == [(1, "real"), (2, "data")]
    assert resolved(mds, pid, "staging")["DATABASE_URL"] == staging["DATABASE_URL"]
    # Staging's replaced data is its own point.
    undo = ok(api(mds, "GET", f"/restore-points/{result['undo_restore_point']}"))
    assert undo["environment"] == "staging" and undo["reason"] == "before-restore"


def test_restores_need_their_scope_a_confirmation_and_one_at_a_time(mds):
    project = new_project(mds, "guard", "postgres")
    pid = project["id"]
    url = resolved(mds, pid, "production")["DATABASE_URL"]
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE big (id int, pad text)")
        conn.execute("INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 300000) g")
    point = take_point(mds, pid)

    reader = ok(api(mds, "POST", "/api-keys", json={"name": "reader", "scopes": ["backups:read", "backups:write", "projects:read"]}), 201)
    denied = api(mds, "POST", f"/projects/{pid}/environments/production/restores", key=reader["key"], json={"restore_point": point["id"], "confirm": True})
    assert denied.status_code == 403, denied.text
    unconfirmed = api(mds, "POST", f"/projects/{pid}/environments/production/restores", json={"restore_point": point["id"]})
    assert unconfirmed.status_code == 422 and "confirm" in unconfirmed.text
    wrong_env = restore(mds, pid, "staging", restore_point=point["id"])
    assert wrong_env.status_code == 422 and "production" in wrong_env.text
    forged = restore(mds, pid, restore_point="rp_01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert forged.status_code == 404
    assert restore(mds, pid, restore_point=point["id"], to_time="2026-01-01T00:00:00Z").status_code == 422

    # Retention is per environment, bounded, and shows in the overview.
    retention = f"/projects/{pid}/environments/staging/backup-retention"
    assert ok(api(mds, "PUT", retention, json={"retention_days": 7}))["retention_days"] == 7
    assert api(mds, "PUT", retention, json={"retention_days": 0}).status_code == 422
    envs = {e["environment"]: e for e in ok(api(mds, "GET", f"/projects/{pid}/backups"))["environments"]}
    assert envs["staging"]["retention_days"] == 7 and envs["production"]["retention_days"] == 30
    assert envs["production"]["last_success_at"] and not envs["production"]["overdue"]

    answers = []

    def run():
        answers.append(restore(mds, pid, restore_point=point["id"]))

    first = threading.Thread(target=run)
    first.start()
    time.sleep(0.3)
    second = restore(mds, pid, restore_point=point["id"])
    first.join()
    assert answers[0].status_code == 200, answers[0].text
    assert second.status_code == 409 and second.json()["error"]["code"] == "RESTORE_IN_PROGRESS", second.text


def killed_mid_request(server: Server, path: str, body: dict, after: float) -> None:
    """POSTs `body` and kills the server with SIGKILL `after` seconds in."""

    def send():
        try:
            api(server, "POST", path, json=body)
        except httpx.HTTPError:
            pass  # the server died mid-request, as intended

    thread = threading.Thread(target=send)
    try:
        thread.start()
        time.sleep(after)
    finally:
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        thread.join()


def test_a_kill_mid_backup_or_restore_leaves_nothing_half_done_and_the_start_cleans_up():
    server = Server()
    try:
        project = new_project(server, "crash", "postgres")
        pid = project["id"]
        url = resolved(server, pid, "production")["DATABASE_URL"]
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE big (id int, pad text)")
            conn.execute("INSERT INTO big SELECT g, md5(g::text) || repeat('y', 300) FROM generate_series(1, 400000) g")
        points_path = f"/projects/{pid}/environments/production/restore-points"
        killed_mid_request(server, points_path, {}, after=1.0)
        server = server.restarted("mds-2.log")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            points = ok(api(server, "GET", points_path))
            if all(p["state"] != "running" for p in points):
                break
            time.sleep(0.2)
        assert points and all(p["state"] == "failed" for p in points), points
        assert "interrupted" in points[0]["error"]
        assert not list((server.data_dir / "backups" / "restore-points").glob(f"{points[0]['id']}/*"))
        assert "interrupted by the last stop" in (server.root / "mds-2.log").read_text()

        # A point taken now is whole; a restore from it killed midway
        # leaves the data it would have replaced serving.
        point = take_point(server, pid)
        with psycopg.connect(url) as conn:
            conn.execute("DELETE FROM big WHERE id > 1000")
        restores_path = f"/projects/{pid}/environments/production/restores"
        killed_mid_request(server, restores_path, {"restore_point": point["id"], "confirm": True}, after=2.0)
        server = server.restarted("mds-3.log")
        assert len(rows(url, "big")) == 1000
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            log = (server.root / "mds-3.log").read_text()
            if "interrupted by the last stop" in log:
                break
            time.sleep(0.2)
        assert "interrupted by the last stop" in log, log[-3000:]
        # And the restore, run to its end now, brings everything back.
        ok(restore(server, pid, restore_point=point["id"]))
        assert len(rows(url, "big")) == 400000
    finally:
        server.stop()
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_repository_disk_fails_the_backup_visibly_and_lists_nothing_half_written(tmp_path):
    repo = tmp_path / "tiny-repo"
    repo.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(repo)], check=True)
    server = None
    try:
        server = Server("--backup-url", str(repo))
        project = new_project(server, "full", "postgres")
        pid = project["id"]
        url = resolved(server, pid, "production")["DATABASE_URL"]
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE big (id int, pad text)")
            conn.execute("INSERT INTO big SELECT g, md5(random()::text) || md5(random()::text) FROM generate_series(1, 200000) g")
        failed = api(server, "POST", f"/projects/{pid}/environments/production/restore-points", json={})
        assert failed.status_code == 422 and failed.json()["error"]["code"] == "BACKUP_FAILED", failed.text
        assert "No space left" in failed.text or "space" in failed.text
        points = ok(api(server, "GET", f"/projects/{pid}/environments/production/restore-points"))
        assert [p["state"] for p in points] == ["failed"]
        leftovers = [p for p in repo.rglob("*") if p.is_file() and "restore-points" in str(p)]
        assert leftovers == [], leftovers
        overview = ok(api(server, "GET", f"/projects/{pid}/backups"))
        assert overview["repository"]["same_disk_as_data"] is False
    finally:
        if server:
            server.stop()
        subprocess.run(["umount", str(repo)], check=False)


def test_deleting_a_data_service_first_keeps_a_restore_point_of_its_data(mds):
    project = new_project(mds, "deleted", "postgres")
    pid = project["id"]
    url = resolved(mds, pid, "production")["DATABASE_URL"]
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE kept (id int)")
        conn.execute("INSERT INTO kept SELECT generate_series(1, 42)")
    name = ok(api(mds, "GET", f"/projects/{pid}/data-services"))[0]["name"]
    ok(api(mds, "DELETE", f"/projects/{pid}/data-services/{name}", params={"confirm": name}))
    for env, rows_kept in [("production", "42 rows"), ("staging", "0 rows")]:
        points = ok(api(mds, "GET", f"/projects/{pid}/environments/{env}/restore-points"))
        assert [p["reason"] for p in points] == ["before-delete"], points
        assert rows_kept in points[0]["services"][0]["summary"], points
        assert points[0]["state"] == "complete"


def test_an_s3_repository_holds_points_that_restore(mds):
    """Another server's S3 endpoint (the module's) as the repository of a
    second server: object_store's multipart writes and reads for real."""
    admin = dict(
        line.split("=", 1) for line in (mds.data_dir / "s3-admin.env").read_text().split()
    )
    bucket = f"repo-{uuid.uuid4().hex[:8]}"
    storage = boto3.client(
        "s3",
        endpoint_url=admin["AWS_ENDPOINT_URL_S3"],
        aws_access_key_id=admin["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=admin["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    storage.create_bucket(Bucket=bucket)
    host = admin["AWS_ENDPOINT_URL_S3"].removeprefix("http://")
    url = f"s3://{admin['AWS_ACCESS_KEY_ID']}:{admin['AWS_SECRET_ACCESS_KEY']}@{host}/{bucket}/mds"
    second = Server("--backup-url", url)
    try:
        project = new_project(second, "remote", "postgres")
        pid = project["id"]
        db = resolved(second, pid, "production")["DATABASE_URL"]
        with psycopg.connect(db) as conn:
            conn.execute("CREATE TABLE orders (id int PRIMARY KEY, pad text)")
            # Over one 1 MiB frame and one 8 MiB part: several of each.
            conn.execute("INSERT INTO orders SELECT g, md5(random()::text) FROM generate_series(1, 300000) g")
        overview = ok(api(second, "GET", f"/projects/{pid}/backups"))
        assert overview["repository"]["same_disk_as_data"] is False
        assert overview["repository"]["warning"] is None
        assert "AWS" not in overview["repository"]["location"] and admin["AWS_SECRET_ACCESS_KEY"] not in json.dumps(overview)
        point = take_point(second, pid)
        keys = [o["Key"] for o in storage.list_objects_v2(Bucket=bucket, Prefix="mds/restore-points/")["Contents"]]
        assert any(point["id"] in k for k in keys), keys
        stored = storage.get_object(Bucket=bucket, Key=next(k for k in keys if k.endswith(".pgdump")))["Body"].read()
        assert stored.startswith(b"MDSBAK01") and b"PGDMP" not in stored[:64]
        with psycopg.connect(db) as conn:
            conn.execute("TRUNCATE orders")
        ok(restore(second, pid, restore_point=point["id"]))
        assert len(rows(db)) == 300000
        # Base backups and WAL go there too.
        wait_for_pitr_window(second, pid)
        drilled = ok(api(second, "POST", f"/restore-points/{point['id']}/verify"))
        assert drilled["verification"]["state"] == "passed", drilled["verification"]
    finally:
        second.stop()
