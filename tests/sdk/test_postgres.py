"""Postgres data services through the official SDK's `databases` resource,
with psycopg connecting to what it hands out."""

from __future__ import annotations

import time
import uuid

import httpx
import psycopg
import pytest
from miosa import errors
from conftest import resolved


def wait_running(client, database_id: str, limit: float = 30.0) -> dict:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        db = client.databases.get(database_id)
        if db["state"] == "running":
            return db
        assert db["state"] in ("provisioning", "running"), db
        time.sleep(0.05)
    raise AssertionError(f"database {database_id} never ran")


def test_databases_create_get_list_credentials_delete(client, mds):
    project = client.projects.create(f"pg-{uuid.uuid4().hex[:6]}")
    db = client.databases.create(
        engine="postgresql", name="main", project_id=project["id"], size="small"
    )
    assert db["id"].startswith("ds_") and db["engine"] == "postgresql"
    db = wait_running(client, db["id"])
    assert db["connection_test"] == {"status": "ok"}
    assert db["id"] in [d["id"] for d in client.databases.list()]
    assert [d["id"] for d in client.databases.list(project_id=project["id"])] == [db["id"]]

    creds = client.databases.credentials(db["id"])
    for key in ("url", "host", "port", "database", "username", "password"):
        assert creds[key], key
    with psycopg.connect(creds["url"]) as conn:
        conn.execute("CREATE TABLE notes (body text)")
        conn.execute("INSERT INTO notes VALUES ('kept')")
    # The same database is what a process booting in production gets.
    env = resolved(mds, project["id"], "production")
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT body FROM notes").fetchone() == ("kept",)
    # Staging is another database, and production's credentials cannot open it.
    staging = resolved(mds, project["id"], "staging")
    assert staging["DATABASE_URL"] != env["DATABASE_URL"]
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host=env["PGHOST"], port=env["PGPORT"], user=env["PGUSER"],
            password=env["PGPASSWORD"], dbname=staging["PGDATABASE"],
        )

    client.databases.restart(db["id"])
    logs = client.databases.logs(db["id"], lines=20)
    assert logs["data"]["database_id"] == db["id"]

    client.databases.delete(db["id"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            client.databases.get(db["id"])
        except errors.NotFoundError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the database was not deleted")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(creds["url"], connect_timeout=5)


def test_database_errors(client):
    with pytest.raises(errors.ValidationError) as raised:
        client.databases.create(engine="mongodb", project_id="whatever")
    assert raised.value.details["field"] == "engine"
    with pytest.raises(errors.ValidationError) as raised:
        client.databases.create(engine="postgresql", environment="staging")
    assert raised.value.details["field"] == "environment"
    with pytest.raises(errors.NotFoundError):
        client.databases.create(engine="postgresql", project_id="no-such-project")
    with pytest.raises(errors.NotFoundError):
        client.databases.credentials("ds_01ARZ3NDEKTSV4RRFFQ69G5FAV")
    project = client.projects.create(f"pg-{uuid.uuid4().hex[:6]}")
    client.databases.create(engine="postgres", project_id=project["id"])
    with pytest.raises(errors.MiosaError) as raised:
        client.databases.create(engine="postgres", project_id=project["id"])
    assert raised.value.status_code == 409
    assert raised.value.code == "DATA_SERVICE_NAME_REQUIRED"


def test_services_of_kind_database(client, mds):
    project = client.projects.create(f"svc-{uuid.uuid4().hex[:6]}")
    service = client.services.create(project["id"], "Postgres", type="database")
    assert service["kind"] == "database" and service["name"] == "Postgres"
    deadline = time.monotonic() + 30
    while client.services.get(service["id"])["state"] != "running":
        assert time.monotonic() < deadline, "the database service never ran"
        time.sleep(0.05)
    assert [s["id"] for s in client.services.list(project["id"])] == [service["id"]]

    connection = client.services.connection(service["id"])
    with psycopg.connect(connection["private_url"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    rows = client.services.set_variables(
        service["id"],
        {
            "APP_DATABASE_URL": "${{Postgres.DATABASE_URL}}",
            "SESSION_KEY": "${{secret(32)}}",
            "GREETING": "hello",
        },
    )
    assert {r["name"] for r in rows} == {"APP_DATABASE_URL", "SESSION_KEY", "GREETING"}
    assert all("value" not in r for r in rows)
    effective = client.services.effective_variables(service["id"])
    names = {v["name"] for v in effective["variables"]}
    assert {"DATABASE_URL", "PGHOST", "APP_DATABASE_URL", "SESSION_KEY"} <= names
    assert all("value" not in v for v in effective["variables"])

    revealed = client.services.reveal_variable(service["id"], "APP_DATABASE_URL")
    assert revealed["value"] == connection["private_url"]
    with psycopg.connect(revealed["value"]) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == connection["username"]
    secret = client.services.reveal_variable(service["id"], "SESSION_KEY")["value"]
    assert len(secret) == 32 and "${{" not in secret

    with pytest.raises(errors.ValidationError) as raised:
        client.services.set_variables(service["id"], {"BAD": "${{secret(0)}}"})
    assert raised.value.details["field"] == "variables"
    # A web service is accepted and says why it does not run yet.
    web = client.services.create(project["id"], "web", type="web")
    assert web["state"] == "inactive" and web["state_reason"]

    client.services.delete_variables(service["id"], ["GREETING"])
    assert "GREETING" not in {r["name"] for r in client.services.variables(service["id"])}
    client.services.delete(service["id"])
