"""One SDK user's day, as issue 15 tells it: standalone databases and
buckets, honest engine versions, retries that survive the SDK's renames,
services per environment with references resolved in each, app services,
and buckets that a boot sees. Every client here is independent of mds:
the official SDK, psycopg, redis-py, boto3 and plain HTTP."""

from __future__ import annotations

import time
import uuid

import boto3
import httpx
import psycopg
import pytest
import redis
from botocore.config import Config
from botocore.exceptions import ClientError
from miosa import errors

from conftest import resolved


def hexid() -> str:
    return uuid.uuid4().hex[:8]


def wait_db(client, database_id: str, limit: float = 60.0) -> dict:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        db = client.databases.get(database_id)
        if db["state"] == "running":
            return db
        assert db["state"] in ("provisioning", "starting", "running"), db
        time.sleep(0.1)
    raise AssertionError(f"database {database_id} never ran")


def wait_service(client, service_id: str, limit: float = 60.0) -> dict:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        service = client.services.get(service_id)
        if service["state"] == "running":
            return service
        time.sleep(0.1)
    raise AssertionError(f"service {service_id} never ran")


def s3(endpoint: str, key_id: str, secret: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 0}),
    )


def api(mds, method: str, path: str, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {mds.admin_key}", **kwargs.pop("headers", {})}
    return httpx.request(method, f"{mds.url}/api/v1{path}", headers=headers, timeout=60, **kwargs)


def test_standalone_redis_and_bucket_then_attached_to_a_project(client, mds):
    # A standalone database needs no project, and works on its own.
    cache = client.databases.create(name=f"cache-{hexid()}", engine="redis")
    assert cache["project_id"] is None and cache["standalone"] is True
    assert cache["engine_version"] == "7"
    wait_db(client, cache["id"])
    creds = client.databases.credentials(cache["id"])
    r = redis.Redis.from_url(creds["url"])
    r.set("greeting", "kept across the attach")
    assert cache["id"] in [d["id"] for d in client.databases.list()]

    # A standalone bucket, with its own key pair, returned once.
    name = f"uploads-{hexid()}"
    bucket = client.storage.create_bucket(name)
    assert bucket["name"] == name and bucket["project_id"] is None
    keys = bucket["credentials"]
    own = s3(keys["endpoint"], keys["access_key_id"], keys["secret_access_key"])
    own.put_object(Bucket=name, Key="a.txt", Body=b"standalone")
    assert own.get_object(Bucket=name, Key="a.txt")["Body"].read() == b"standalone"
    assert client.storage.get_bucket(bucket["id"]).get("credentials") is None
    again = api(mds, "GET", f"/storage/buckets/{bucket['id']}/credentials").json()["data"]
    assert again["secret_access_key"] == keys["secret_access_key"]
    # Its key opens that bucket only.
    other = client.storage.create_bucket(f"other-{hexid()}")
    with pytest.raises(ClientError):
        own.put_object(Bucket=other["name"], Key="x", Body=b"x")
    assert [o["key"] for o in client.storage.list_objects(bucket["id"])] == ["a.txt"]

    # Attached to a project environment later: injected at the next boot,
    # with the data it had.
    project = client.projects.create(f"day-{hexid()}")
    attached = api(
        mds,
        "POST",
        f"/projects/{project['id']}/data-services?wait=true",
        json={"existing": cache["id"], "environment": "staging"},
    )
    assert attached.status_code == 201, attached.text
    assert attached.json()["data"]["project_id"] == project["id"]
    staging = resolved(mds, project["id"], "staging")
    assert staging["REDIS_URL"] == creds["url"]
    assert redis.Redis.from_url(staging["REDIS_URL"]).get("greeting") == b"kept across the attach"
    assert "REDIS_URL" not in resolved(mds, project["id"], "production")
    # Once attached, it is no longer standalone and cannot go to a second project.
    second = client.projects.create(f"day-{hexid()}")
    refused = api(
        mds, "POST", f"/projects/{second['id']}/data-services", json={"existing": cache["id"]}
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "DATABASE_ALREADY_ATTACHED"

    client.storage.delete_object(bucket["id"], "a.txt")
    client.storage.delete_bucket(bucket["id"])
    client.storage.delete_bucket(other["id"])


def test_a_bucket_made_for_a_project_is_what_its_environment_boots_with(client, mds):
    project = client.projects.create(f"bkt-{hexid()}")
    first = f"assets-{hexid()}"
    made = client.storage.create_bucket(first, project_id=project["id"], environment="staging")
    assert made["project_id"] == project["id"] and made["environment"] == "staging"
    staging = resolved(mds, project["id"], "staging")
    assert staging["STORAGE_BUCKET"] == first
    assert staging["STORAGE_KEY_ID"] == made["credentials"]["access_key_id"]
    assert "STORAGE_BUCKET" not in resolved(mds, project["id"], "production")
    # The boot's keys work on that bucket.
    booted = s3(staging["STORAGE_ENDPOINT"], staging["STORAGE_KEY_ID"], staging["STORAGE_KEY_SECRET"])
    booted.put_object(Bucket=first, Key="k", Body=b"v")
    # A second bucket in the same environment is a named storage service.
    second = f"exports-{hexid()}"
    client.storage.create_bucket(second, project_id=project["id"], environment="staging")
    staging = resolved(mds, project["id"], "staging")
    prefix = second.upper().replace("-", "_") + "_"
    assert staging[prefix + "STORAGE_BUCKET"] == second
    assert staging["STORAGE_BUCKET"] == first
    # Without an environment, a bucket is the default environment's.
    third = f"media-{hexid()}"
    client.storage.create_bucket(third, project_id=project["id"])
    assert resolved(mds, project["id"], "production")["STORAGE_BUCKET"] == third
    # A taken name is refused, and nothing half-made is left.
    before = len(client.storage.list_buckets())
    with pytest.raises(errors.MiosaError) as raised:
        client.storage.create_bucket(first, project_id=project["id"])
    assert raised.value.status_code == 409
    assert len(client.storage.list_buckets()) == before


def test_engine_versions_are_honoured_or_refused(client, mds):
    project = client.projects.create(f"ver-{hexid()}")
    running = client.databases.create(engine="postgres", name="main", project_id=project["id"])
    major = running["engine_version"]
    assert major.isdigit()
    exact = client.databases.create(
        engine="postgresql", name="exact", project_id=project["id"], version=major
    )
    assert exact["engine_version"] == major
    for asked in ("99", str(int(major) + 1)):
        with pytest.raises(errors.ValidationError) as raised:
            client.databases.create(
                engine="postgresql", name=f"v{asked}", project_id=project["id"], version=asked
            )
        assert raised.value.details["field"] == "engine_version"
        assert major in str(raised.value)
    with pytest.raises(errors.ValidationError):
        client.databases.create(engine="redis", name="r", engine_version="5")
    # Nothing was made by the refusals.
    names = {d["name"] for d in client.databases.list(project_id=project["id"])}
    assert names == {"main", "exact"}


def test_a_retry_with_reordered_or_renamed_fields_replays(client, mds):
    project = client.projects.create(f"idem-{hexid()}")
    key = f"idem-{hexid()}"
    major = client.databases.create(engine="postgres", project_id=project["id"])["engine_version"]
    first = client.databases.create(
        idempotency_key=key, name="orders", engine="postgres", version=major,
        project_id=project["id"],
    )
    # The same call, as another SDK version or a hand-written retry sends it.
    for body in (
        {"project_id": project["id"], "engine_version": major, "engine": "postgresql", "name": "orders"},
        {"version": major, "name": "orders", "project_id": project["id"], "engine": "postgres"},
    ):
        replay = api(mds, "POST", "/databases", json=body, headers={"Idempotency-Key": key})
        assert replay.status_code == 201, replay.text
        assert replay.headers.get("idempotent-replayed") == "true"
        assert replay.json()["data"]["id"] == first["id"]
    # Another meaning with the same key is still refused.
    changed = api(
        mds, "POST", "/databases",
        json={"project_id": project["id"], "engine": "postgres", "name": "other"},
        headers={"Idempotency-Key": key},
    )
    assert changed.status_code == 409
    assert changed.json()["error"]["code"] == "IDEMPOTENCY_KEY_MISMATCH"


def test_services_live_in_one_environment_and_references_resolve_in_each(client, mds):
    project = client.projects.create(f"env-{hexid()}")
    prod = client.services.create(project["id"], "Postgres", type="database", environment="production")
    staging = client.services.create(project["id"], "Postgres", type="database", environment="staging")
    assert prod["id"] != staging["id"]
    assert prod["environment_id"] != staging["environment_id"]
    wait_service(client, prod["id"])
    wait_service(client, staging["id"])
    prod_url = client.services.connection(prod["id"])["private_url"]
    staging_url = client.services.connection(staging["id"])["private_url"]
    assert prod_url != staging_url
    assert resolved(mds, project["id"], "production")["DATABASE_URL"] == prod_url
    assert resolved(mds, project["id"], "staging")["DATABASE_URL"] == staging_url
    with psycopg.connect(staging_url) as conn:
        conn.execute("CREATE TABLE only_in_staging (x int)")
    with psycopg.connect(prod_url) as conn:
        assert conn.execute("SELECT to_regclass('only_in_staging')").fetchone() == (None,)
    # Listing by environment shows that environment's service.
    assert [s["id"] for s in client.services.list(project["id"], environment="staging")] == [staging["id"]]
    assert {s["id"] for s in client.services.list(project["id"])} == {prod["id"], staging["id"]}
    # The same name once more in one environment is a conflict.
    with pytest.raises(errors.MiosaError) as raised:
        client.services.create(project["id"], "Postgres", type="database", environment="staging")
    assert raised.value.status_code == 409

    # App services: a web service per environment, its references resolved
    # in its own environment.
    web = client.services.create(project["id"], "web", type="web", environment="production")
    assert web["kind"] == "server" and web["state"] == "inactive" and web["state_reason"]
    web_staging = client.services.create(project["id"], "web", type="web", environment="staging")
    for service, url in ((web, prod_url), (web_staging, staging_url)):
        client.services.set_variables(service["id"], {"APP_DB": "${{Postgres.DATABASE_URL}}"})
        assert client.services.reveal_variable(service["id"], "APP_DB")["value"] == url
        names = [v["name"] for v in client.services.variables(service["id"])]
        assert names == ["APP_DB"]
    worker = client.services.create(project["id"], "jobs", type="worker")
    assert worker["kind"] == "worker"
    cron = client.services.create(project["id"], "nightly", type="cron", settings={"schedule": "0 3 * * *"})
    assert cron["state"] == "unsupported" and "cron" in cron["state_reason"]
    assert cron["settings"] == {"schedule": "0 3 * * *"}
    with pytest.raises(errors.ValidationError):
        client.services.create(project["id"], "x", type="quantum")

    # Deleting staging's member leaves production's database alone.
    client.services.delete(staging["id"])
    deadline = time.monotonic() + 30
    while "DATABASE_URL" in resolved(mds, project["id"], "staging"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with psycopg.connect(prod_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    client.services.delete(cron["id"])
    with pytest.raises(errors.NotFoundError):
        client.services.get(cron["id"])


def test_another_tenants_view_of_standalone_things(client, mds):
    """From the attacker's side: a key without the scopes, forged ids."""
    cache = client.databases.create(name=f"c-{hexid()}", engine="redis")
    reader = api(mds, "POST", "/api-keys", json={"name": "r", "scopes": ["projects:read"]}).json()["data"]
    headers = {"Authorization": f"Bearer {reader['key']}"}
    creds = httpx.get(f"{mds.url}/api/v1/databases/{cache['id']}/credentials", headers=headers)
    assert creds.status_code == 403
    made = httpx.post(f"{mds.url}/api/v1/databases", json={"engine": "redis"}, headers=headers)
    assert made.status_code == 403
    forged = client_get_status(mds, "/services/bnd_01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert forged == 404
    # The hidden holder of standalone services is no project anyone sees.
    assert all(not p["slug"].startswith("_") for p in client.projects.list())


def client_get_status(mds, path: str) -> int:
    return api(mds, "GET", path).status_code


def test_one_users_day_as_issue_15_tells_it(client, mds):
    """The scenario that failed, step by step, in the order a new user
    meets it; each step is what the issue says went wrong."""
    project = client.projects.create(f"day-{hexid()}")
    p = project["id"]

    # 1. A standalone cache and a bucket, without a project.
    cache = client.databases.create(name=f"cache-{hexid()}", engine="redis")
    assert cache["project_id"] is None
    uploads = client.storage.create_bucket(f"uploads-{hexid()}")
    assert uploads["project_id"] is None and uploads["credentials"]["access_key_id"]

    # 2. A version this server does not run is refused, not changed.
    with pytest.raises(errors.ValidationError):
        client.databases.create(engine="postgresql", name="db16", project_id=p, version="99")

    # 3. The SDK renames `version`; a retry with the same key replays.
    key = f"day-{hexid()}"
    major = client.databases.create(engine="postgresql", name="main", project_id=p)["engine_version"]
    made = client.databases.create(
        engine="postgresql", name="ledger", project_id=p, version=major, idempotency_key=key
    )
    again = client.databases.create(
        project_id=p, version=major, name="ledger", engine="postgresql", idempotency_key=key
    )
    assert again["id"] == made["id"]

    # 4. A service per environment, and references resolved in each.
    prod = client.services.create(p, "Postgres", type="database", environment="production")
    staging = client.services.create(p, "Postgres", type="database", environment="staging")
    assert prod["id"] != staging["id"]
    web = client.services.create(p, "web", type="web", environment="staging")
    client.services.set_variables(web["id"], {"APP_DB": "${{Postgres.DATABASE_URL}}"})
    wait_service(client, staging["id"])
    assert (
        client.services.reveal_variable(web["id"], "APP_DB")["value"]
        == client.services.connection(staging["id"])["private_url"]
    )

    # 5. Runtime env for sandboxes of the project.
    name = f"DAY_{hexid().upper()}"
    client.runtime_env.set(scope="project", project_id=p, target="sandbox", name=name, value="on")
    sandbox = client.sandboxes.create(project_id=p)
    try:
        out = sandbox.exec.run(f"printenv {name}")
        assert out.exit_code == 0 and out.stdout.strip() == "on"
    finally:
        sandbox.destroy()

    # 6. A bucket made for the project is what its boots see.
    assets = client.storage.create_bucket(f"assets-{hexid()}", project_id=p)
    assert resolved(mds, p, "production")["STORAGE_BUCKET"] == assets["name"]

    # 7. Public networking answers honestly on a server without a public address.
    status = client.databases.public_networking(made["id"])
    assert status["enabled"] is False and status["supported"] is False
    with pytest.raises(errors.MiosaError) as raised:
        client.databases.enable_public_networking(made["id"], allowlist=["127.0.0.1/32"])
    assert raised.value.status_code == 409


def test_a_standalone_postgres_attached_through_a_deployment(client, mds):
    db = client.databases.create(engine="postgresql", name=f"main-{hexid()}")
    wait_db(client, db["id"])
    url = client.databases.credentials(db["id"])["url"]
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)")
    project = client.projects.create(f"dep-{hexid()}")
    deployment = client.deployments.create(
        name=f"api-{hexid()}", run_command="true", metadata={"project_id": project["id"]}
    )
    try:
        link = client.deployments.attach_database(deployment.id, database_id=db["id"], env="staging")
        assert link["database_id"] == db["id"]
        staging = resolved(mds, project["id"], "staging")
        assert staging["DATABASE_URL"] == url
        with psycopg.connect(staging["DATABASE_URL"]) as conn:
            assert conn.execute("SELECT n FROM kept").fetchall() == [(1,)]
        assert client.databases.get(db["id"])["project_id"] == project["id"]
    finally:
        api(mds, "DELETE", f"/deployments/{deployment.id}")


def test_a_bucket_never_takes_or_removes_another_service(client, mds):
    """From review: a refused bucket create must leave what existed alone,
    and two creates racing for one name give one bucket and one refusal."""
    import threading

    project = client.projects.create(f"bk-{hexid()}")
    p = project["id"]
    made = api(mds, "POST", f"/projects/{p}/data-services?wait=true",
               json={"type": "storage", "environment": "production"})
    assert made.status_code == 201, made.text
    env = resolved(mds, p, "production")
    booted = s3(env["STORAGE_ENDPOINT"], env["STORAGE_KEY_ID"], env["STORAGE_KEY_SECRET"])
    booted.put_object(Bucket=env["STORAGE_BUCKET"], Key="kept", Body=b"kept")
    refused = api(mds, "POST", "/storage/buckets",
                  json={"name": "storage", "project_id": p, "environment": "staging"})
    assert refused.status_code == 409, refused.text
    assert booted.get_object(Bucket=env["STORAGE_BUCKET"], Key="kept")["Body"].read() == b"kept"
    assert [s["name"] for s in api(mds, "GET", f"/projects/{p}/data-services").json()["data"]] == ["storage"]

    # Two creates of one name, for two projects: one bucket, one refusal,
    # and the loser is left with nothing and learns no key.
    other = client.projects.create(f"bk-{hexid()}")
    name = f"race-{hexid()}"
    answers = {}

    def create(project_id):
        answers[project_id] = api(mds, "POST", "/storage/buckets",
                                  json={"name": name, "project_id": project_id})

    threads = [threading.Thread(target=create, args=(x,)) for x in (p, other["id"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(a.status_code for a in answers.values())
    assert codes == [201, 409], {k: (a.status_code, a.text[:200]) for k, a in answers.items()}
    winner = next(k for k, a in answers.items() if a.status_code == 201)
    loser = next(k for k, a in answers.items() if a.status_code == 409)
    assert answers[winner].json()["data"]["project_id"] == winner
    assert "credentials" not in answers[loser].text
    deadline = time.monotonic() + 30
    while any(s["name"] == name for s in api(mds, "GET", f"/projects/{loser}/data-services").json()["data"]):
        assert time.monotonic() < deadline, "the loser's service was left behind"
        time.sleep(0.1)

    # Names S3 allows and service names do not (dots, 63 characters).
    dotted = f"my.assets.{hexid()}"
    assert client.storage.create_bucket(dotted, project_id=p)["name"] == dotted
    long_name = f"l{hexid()}" + "x" * 54
    assert len(long_name) == 63
    assert client.storage.create_bucket(long_name)["name"] == long_name

    # Its key pair writes, so reading it takes a key that writes.
    reader = api(mds, "POST", "/api-keys", json={"name": "r", "scopes": ["storage:read"]}).json()["data"]
    bucket_id = answers[winner].json()["data"]["id"]
    denied = httpx.get(f"{mds.url}/api/v1/storage/buckets/{bucket_id}/credentials",
                       headers={"Authorization": f"Bearer {reader['key']}"})
    assert denied.status_code == 403


def test_a_member_acts_in_its_own_environment_only(client, mds):
    project = client.projects.create(f"mem-{hexid()}")
    p = project["id"]
    prod = client.services.create(p, "Postgres", type="database", environment="production")
    staging = client.services.create(p, "Postgres", type="database", environment="staging")
    wait_service(client, prod["id"])
    wait_service(client, staging["id"])
    staging_url = client.services.connection(staging["id"])["private_url"]
    with psycopg.connect(staging_url) as conn:
        conn.execute("CREATE TABLE survives (n int); INSERT INTO survives VALUES (1)")

    # Stopping, starting and restarting production's touch production only.
    assert client.services.stop(prod["id"]) == {"stopped": 1}
    assert client.services.get(staging["id"])["state"] == "running"
    client.services.start(prod["id"])
    before = len(client.databases.logs(prod["id"], lines=1000)["data"]["logs"])
    client.services.restart(staging["id"])
    logs = client.databases.logs(prod["id"], lines=1000)["data"]["logs"]
    assert sum("restarted" in line["line"] for line in logs[before - 1:]) <= 1

    # Deleting production's member leaves staging's database and data.
    client.services.delete(prod["id"])
    deadline = time.monotonic() + 30
    while "DATABASE_URL" in resolved(mds, p, "production"):
        assert time.monotonic() < deadline, "production's member was not deleted"
        time.sleep(0.1)
    time.sleep(1)  # a reconciler pass must not make it again
    assert "DATABASE_URL" not in resolved(mds, p, "production")
    with psycopg.connect(resolved(mds, p, "staging")["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT n FROM survives").fetchall() == [(1,)]
    # One service left, in staging (under the service's id, or staging's).
    listed = client.services.list(p)
    assert [s["environment_id"] for s in listed] == [staging["environment_id"]]
    assert client.services.get(staging["id"])["environment_id"] == staging["environment_id"]
    # The service's id now names its one remaining member, staging's; an
    # environment it is not in is not found, never silently used.
    assert client.services.get(prod["id"])["environment_id"] == staging["environment_id"]
    answer = api(mds, "GET", f"/services/{prod['id']}/variables?env=production")
    assert answer.status_code == 404, answer.text
