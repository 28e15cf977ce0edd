"""The SDK's project calls beyond create/read/update/delete, through the
official MIOSA SDK: summary, environment duplicate and sync, and every
other method of `client.projects` answering as the SDK expects or with a
501 NOT_IMPLEMENTED naming the feature (never 404 "no such route")."""

from __future__ import annotations

import time
import uuid

import httpx
import psycopg
import pytest
from miosa.errors import MiosaError

from conftest import resolved


def admin(mds) -> dict[str, str]:
    return {"Authorization": f"Bearer {mds.admin_key}"}


def attach(mds, project_id: str, body: dict) -> dict:
    answer = httpx.post(f"{mds.url}/api/v1/projects/{project_id}/data-services?wait=true",
                        json=body, headers=admin(mds), timeout=60)
    assert answer.status_code == 201, answer.text
    return answer.json()["data"]


def error_of(call) -> MiosaError:
    with pytest.raises(MiosaError) as caught:
        call()
    return caught.value


def wait_env_running(mds, project_id: str, environment: str, limit: float = 60) -> dict:
    """The environment's boot env once every binding in it runs."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        answer = httpx.get(f"{mds.url}/api/v1/projects/{project_id}/env",
                           params={"env": environment, "reveal": "true"},
                           headers=admin(mds)).json()["data"]
        if not answer["pending"]:
            return {v["name"]: v["value"] for v in answer["variables"]}
        time.sleep(0.1)
    raise AssertionError(f"{environment} never settled")


def test_summary_counts_what_the_project_holds(client, mds):
    project = client.projects.create(f"sum-{uuid.uuid4().hex[:6]}")
    pid = project["id"]
    empty = client.projects.summary(pid)
    assert empty["project_id"] == pid and empty["counts"]["data_services"] == 0
    assert [e["name"] for e in empty["environments"]] == ["production", "staging"]

    db = attach(mds, pid, {"type": "postgres"})
    sandbox = client.sandboxes.create(project_id=pid)
    client.volumes.create(name=f"v-{uuid.uuid4().hex[:6]}", size_gb=1, project_id=pid)
    try:
        s = client.projects.summary(pid)
        assert s["counts"]["environments"] == 2
        assert s["counts"]["data_services"] == 1 and s["counts"]["sandboxes"] == 1
        assert s["counts"]["volumes"] == 1 and s["volumes"]["total"] == 1
        [svc] = s["data_services"]
        assert (svc["id"], svc["kind"], svc["state"]) == (db["id"], "postgres", "running")
        assert svc["environments"] == {"production": "running", "staging": "running"}
        by_env = {e["name"]: e for e in s["environments"]}
        assert by_env["production"]["services"] == {db["name"]: "running"}
        assert by_env["staging"]["sandboxes"] == 1  # sandboxes boot into staging
        assert s["sandboxes"] == {"running": 1}
    finally:
        sandbox.destroy()
    after = client.projects.summary(pid)
    assert after["counts"]["sandboxes"] == 0 and after["sandboxes"] == {"destroyed": 1}
    # Another project's summary, or one that is not there, is not found.
    assert error_of(lambda: client.projects.summary("proj_01HX0000000000000000000000")
                    ).status_code == 404


def test_duplicate_copies_configuration_with_new_credentials_and_no_data(client, mds):
    project = client.projects.create(f"dup-{uuid.uuid4().hex[:6]}")
    pid = project["id"]
    db = attach(mds, pid, {"type": "postgres"})
    client.projects.set_shared_variables(pid, {"API_BASE": "https://staging.example",
                                               "STRIPE_SECRET_KEY": "sk_test_1"},
                                         environment="staging")
    services_vars = httpx.put(f"{mds.url}/api/v1/services/{db['id']}/variables",
                              params={"env": "staging"},
                              json={"variables": {"POOL_SIZE": "5"}}, headers=admin(mds))
    assert services_vars.status_code == 200, services_vars.text
    staging = resolved(mds, pid, "staging")
    with psycopg.connect(staging["DATABASE_URL"]) as conn:
        conn.execute("CREATE TABLE notes (body text)")
        conn.execute("INSERT INTO notes VALUES ('only in staging')")

    envs = {e["name"]: e for e in client.projects.environments(pid)}
    dup = client.projects.duplicate_environment(pid, envs["staging"]["id"], "qa")
    assert dup["name"] == "qa" and dup["id"].startswith("env_")
    assert dup["duplicated_from"] == envs["staging"]["id"]
    assert sorted((c["set"], c["name"]) for c in dup["copied"]) == [
        ("service", "POOL_SIZE"), ("shared", "API_BASE"), ("shared", "STRIPE_SECRET_KEY")]
    assert "sk_test_1" not in str(dup)
    assert db["name"] in dup["services"]
    assert "qa" in [e["name"] for e in client.projects.environments(pid)]

    qa = wait_env_running(mds, pid, "qa")
    assert qa["API_BASE"] == "https://staging.example"
    assert qa["STRIPE_SECRET_KEY"] == "sk_test_1"
    # Its own database, its own credentials, empty.
    assert qa["DATABASE_URL"] != staging["DATABASE_URL"]
    assert qa["PGPASSWORD"] != staging["PGPASSWORD"]
    with psycopg.connect(qa["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT to_regclass('public.notes')").fetchone() == (None,)
    with psycopg.connect(staging["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT body FROM notes").fetchall() == [("only in staging",)]
    effective = httpx.get(f"{mds.url}/api/v1/projects/{pid}/env",
                          params={"env": "qa", "service": db["id"], "reveal": "true"},
                          headers=admin(mds)).json()["data"]["variables"]
    assert {v["name"]: v["value"] for v in effective}["POOL_SIZE"] == "5"

    # A taken name, a bad name or a missing one: refused, nothing made.
    before = len(client.projects.environments(pid))
    for name, status in (("qa", 409), ("bad name!", 422), ("", 422)):
        e = error_of(lambda: client.projects.duplicate_environment(pid, envs["staging"]["id"], name))
        assert e.status_code == status, (name, e.status_code, e.code)
    assert len(client.projects.environments(pid)) == before
    e = error_of(lambda: client.projects.duplicate_environment(pid, "nowhere", "qa2"))
    assert e.status_code == 404 and e.code == "ENVIRONMENT_NOT_FOUND"
    # A key that may not write variables may not copy them either.
    made = client.api_keys.create(name="dup-reader", scopes=["projects:read", "projects:write"])
    token = made.get("token") or made.get("key")
    refused = httpx.post(
        f"{mds.url}/api/v1/projects/{pid}/environments/{envs['staging']['id']}/duplicate",
        json={"name": "qa3"}, headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 403, refused.text
    assert "qa3" not in [e["name"] for e in client.projects.environments(pid)]


def test_sync_diffs_then_applies_and_never_removes(client, mds):
    project = client.projects.create(f"sync-{uuid.uuid4().hex[:6]}")
    pid = project["id"]
    envs = {e["name"]: e for e in client.projects.environments(pid)}
    prod, staging = envs["production"]["id"], envs["staging"]["id"]
    client.projects.set_shared_variables(pid, {"A": "1", "B": "staging-b", "SAME": "s"},
                                         environment="staging")
    client.projects.set_shared_variables(pid, {"B": "prod-b", "ONLY_PROD": "p", "SAME": "s"},
                                         environment="production")

    diff = client.projects.sync_environment(pid, prod, staging)
    assert diff["applied"] is False and diff["unchanged"] == 1
    assert sorted((c["name"], c["action"]) for c in diff["changes"]) == [
        ("A", "add"), ("B", "update")]
    assert "staging-b" not in str(diff)
    assert resolved(mds, pid, "production")["B"] == "prod-b"  # a diff writes nothing

    done = client.projects.sync_environment(pid, prod, staging, apply=True)
    assert done["applied"] is True and len(done["changes"]) == 2
    after = resolved(mds, pid, "production")
    assert (after["A"], after["B"], after["ONLY_PROD"]) == ("1", "staging-b", "p")
    again = client.projects.sync_environment(pid, prod, staging)
    assert again["changes"] == [] and again["unchanged"] == 3

    e = error_of(lambda: client.projects.sync_environment(pid, prod, prod))
    assert e.status_code == 422
    e = error_of(lambda: client.projects.sync_environment(pid, prod, "nowhere"))
    assert e.status_code == 404
    missing = httpx.post(f"{mds.url}/api/v1/projects/{pid}/environments/{prod}/sync",
                         json={}, headers=admin(mds))
    assert missing.status_code == 422
    assert missing.json()["error"]["details"]["field"] == "from_environment_id"


def test_every_other_projects_method_answers(client, mds):
    project = client.projects.create(f"calls-{uuid.uuid4().hex[:6]}", description="d")
    pid = project["id"]
    assert client.projects.get(pid)["id"] == pid
    assert pid in [p["id"] for p in client.projects.list()]
    assert client.projects.update(pid, description="e")["description"] == "e"
    made = client.projects.create_environment(pid, "preview/pr-1")
    assert made["name"] == "preview/pr-1"
    assert client.projects.update_environment(pid, made["id"], name="qa")["name"] == "qa"
    rows = client.projects.set_shared_variables(pid, {"X": "1"}, environment="qa")
    assert [r["name"] for r in rows] == ["X"]
    assert [r["name"] for r in client.projects.shared_variables(pid, environment="qa")] == ["X"]
    client.projects.delete_shared_variable(pid, "X", environment="qa")
    assert client.projects.shared_variables(pid, environment="qa") == []
    client.projects.delete_environment(pid, made["id"])
    assert "qa" not in [e["name"] for e in client.projects.environments(pid)]

    caps = client.projects.capabilities()
    assert caps == {"services_api": True, "image_source": False, "template_apply": False}
    for call, feature in (
        (lambda: client.projects.templates(), "project templates"),
        (lambda: client.projects.template("nextjs-postgres"), "project templates"),
        (lambda: client.projects.apply_template(pid, "redis", environment="staging",
                                                deploy=False), "project templates"),
        (lambda: client.projects.move(pid, "ws_other"), "moving a project"),
    ):
        e = error_of(call)
        assert (e.status_code, e.code) == (501, "NOT_IMPLEMENTED"), (feature, e.status_code)
        assert feature in str(e), str(e)

    client.projects.delete(pid)
    assert error_of(lambda: client.projects.get(pid)).status_code == 404


def test_database_logs_stream_recent_then_new_events(client, mds):
    import json
    import queue
    import threading

    project = client.projects.create(f"logs-{uuid.uuid4().hex[:6]}")
    db = attach(mds, project["id"], {"type": "postgres"})
    events: queue.Queue = queue.Queue()

    def read() -> None:
        try:
            for event in client.databases.stream_logs(db["id"]):
                events.put(event)
        except Exception as e:  # the stream ends when the test's server does
            events.put(e)

    threading.Thread(target=read, daemon=True).start()
    first = events.get(timeout=10)
    assert first["type"] == "log" and int(first["id"]) > 0
    recent = json.loads(first["data"])
    assert set(recent) == {"line", "stream", "t"} and recent["stream"] == "provision"
    # Drain what is already there, then a restart appears as a new event.
    while True:
        try:
            events.get(timeout=1)
        except queue.Empty:
            break
    client.databases.restart(db["id"])
    deadline = time.monotonic() + 10
    seen = []
    while time.monotonic() < deadline:
        event = events.get(timeout=10)
        assert not isinstance(event, Exception), event
        seen.append(json.loads(event["data"])["line"])
        if any(line.startswith("restarted") for line in seen):
            break
    assert any(line.startswith("restarted") for line in seen), seen

    # Reconnecting with Last-Event-ID resumes after it: nothing older.
    with httpx.stream("GET", f"{mds.url}/api/v1/databases/{db['id']}/logs/stream",
                      headers={**admin(mds), "Last-Event-ID": first["id"]}, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        ids = []
        for line in r.iter_lines():
            if line.startswith("id:"):
                ids.append(int(line[3:]))
            if len(ids) >= 2:
                break
        assert ids and min(ids) > int(first["id"])
    # A database that is not there is a 404 before any stream starts.
    gone = httpx.get(f"{mds.url}/api/v1/databases/ds_01HX0000000000000000000000/logs/stream",
                     headers=admin(mds))
    assert gone.status_code == 404


def test_database_metrics_are_the_engines_numbers(client, mds):
    import redis

    project = client.projects.create(f"metrics-{uuid.uuid4().hex[:6]}")
    pid = project["id"]
    pg = attach(mds, pid, {"type": "postgres"})
    rd = attach(mds, pid, {"type": "redis"})
    env = resolved(mds, pid, "production")

    def metrics(service_id: str, window: str = "1h") -> dict:
        answer = httpx.get(f"{mds.url}/api/v1/databases/{service_id}/metrics",
                           params={"window": window}, headers=admin(mds))
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]

    def production(m: dict) -> dict:
        [b] = [b for b in m["bindings"] if b["environment"] == "production"]
        [point] = b["points"]
        return point["values"]

    before = production(metrics(pg["id"]))
    # Direct: a fresh backend reports its counters when it goes idle, while
    # a pooled server connection may be within its report interval.
    with psycopg.connect(env["DATABASE_URL_UNPOOLED"]) as conn:
        conn.execute("CREATE TABLE big AS SELECT g, repeat('x', 200) AS pad "
                     "FROM generate_series(1, 20000) g")
        conn.commit()
        held = metrics(pg["id"], "5m")
        assert held["window"] == "5m" and held["engine"] == "postgresql"
        assert held["resolution"] == "current"
        now = production(held)
        assert now["connections"] >= 1
        assert now["database_size_bytes"] > before["database_size_bytes"] + 2_000_000
        assert now["xact_commit"] > before["xact_commit"]
    assert {b["environment"] for b in held["bindings"]} == {"production", "staging"}

    r = redis.Redis.from_url(env["REDIS_URL"])
    for i in range(25):
        r.set(f"k{i}", "v" * 100)
    values = production(metrics(rd["id"], "24h"))
    assert values["keys"] == 25
    assert values["connections"] >= 1 and values["used_memory_bytes"] > 0
    r.close()

    # A storage binding's numbers are its bucket's, from the object index.
    import boto3

    st = attach(mds, pid, {"type": "storage"})
    env = resolved(mds, pid, "production")
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"],
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                      region_name=env["AWS_REGION"])
    for i in range(3):
        s3.put_object(Bucket=env["STORAGE_BUCKET"], Key=f"o/{i}", Body=b"x" * (10 + i))
    assert production(metrics(st["id"])) == {"objects": 3, "bytes": 33}

    for bad in ("2h", "", "1d"):
        answer = httpx.get(f"{mds.url}/api/v1/databases/{pg['id']}/metrics",
                           params={"window": bad}, headers=admin(mds))
        assert answer.status_code == 422, (bad, answer.text)
        assert answer.json()["error"]["details"]["field"] == "window"
    missing = httpx.get(f"{mds.url}/api/v1/databases/ds_01HX0000000000000000000000/metrics",
                        headers=admin(mds))
    assert missing.status_code == 404
