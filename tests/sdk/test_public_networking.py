"""Public networking of a managed database, through the SDK's
`databases.public_networking` calls, with psql connecting from a network
namespace this test makes (a veth pair: 10.231.0.1 here, 10.231.0.2
there), so the source address is not loopback and not this host's."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from miosa import Miosa, errors
from conftest import Server, veth_namespace

HOST_ADDR = "10.231.0.1"
NS_ADDR = "10.231.0.2"


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def netns():
    with veth_namespace("mdsp", HOST_ADDR, NS_ADDR) as ns:
        yield ns


@pytest.fixture(scope="module")
def public(netns):
    server = Server("--public-host", HOST_ADDR)
    yield server
    server.stop()


def restart(server: Server, *extra: str) -> None:
    """Stops mds and starts it again on the same data dir."""
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(timeout=30)
    binary = os.environ.get("MDS_BIN", server.proc.args[0])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MDS_", "MIOSA_"))}
    env["MDS_LOG"] = "warn"
    server.proc = subprocess.Popen(
        [binary, "server", "--data-dir", str(server.data_dir), "--listen", "127.0.0.1:0",
         "--public-host", HOST_ADDR, *extra],
        stdin=subprocess.DEVNULL, stdout=server.log, stderr=subprocess.STDOUT, env=env,
    )
    server.url = server._wait_ready()


def psql(ns: str, creds: dict, host: str, port: int, sslmode: str, sql: str,
         **more: str) -> subprocess.CompletedProcess:
    """psql from inside the namespace."""
    dsn = (f"host={host} port={port} user={creds['username']} dbname={creds['database']} "
           f"sslmode={sslmode} connect_timeout=5")
    for key, value in more.items():
        dsn += f" {key}={value}"
    return subprocess.run(
        ["ip", "netns", "exec", ns, "psql", dsn, "-X", "-Atc", sql],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "PGPASSWORD": creds["password"]},
    )


def admitted(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def refused(run: subprocess.CompletedProcess) -> None:
    assert run.returncode != 0, run.stdout
    assert "no pg_hba.conf entry" in run.stderr, run.stderr


def wait_running(client, database_id: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if client.databases.get(database_id)["state"] == "running":
            return
        time.sleep(0.05)
    raise AssertionError(f"database {database_id} never ran")


def test_the_allowlist_decides_who_reaches_a_database_over_tls(public, netns):
    client = Miosa(api_key=public.admin_key, base_url=public.url, max_retries=0)
    project = client.projects.create(f"pub-{uuid.uuid4().hex[:6]}")
    db = client.databases.create(engine="postgresql", project_id=project["id"])
    wait_running(client, db["id"])
    creds = client.databases.credentials(db["id"])
    staging = httpx.get(
        f"{public.url}/api/v1/databases/{db['id']}/credentials",
        params={"environment": "staging"},
        headers={"Authorization": f"Bearer {public.admin_key}"},
    ).json()["data"]

    closed = client.databases.public_networking(db["id"])
    assert closed["enabled"] is False and closed["supported"] is True
    assert closed["host"] is None and closed["allowlist"] == []

    opened = client.databases.enable_public_networking(db["id"], allowlist=[f"{NS_ADDR}/32"])
    assert opened["enabled"] is True and opened["supported"] is True
    assert opened["host"] == HOST_ADDR and opened["allowlist"] == [f"{NS_ADDR}/32"]
    port = opened["port"]
    assert isinstance(port, int) and opened["sslmode"] == "require"
    assert opened["self_signed_certificate"] is True
    by_env = {e["environment"]: e for e in opened["environments"]}
    assert by_env["production"]["public_url"] == (
        f"postgresql://{creds['username']}@{HOST_ADDR}:{port}/{creds['database']}"
        "?sslmode=require"
    )
    assert client.databases.public_networking(db["id"]) == opened

    # From the namespace, over TLS, as the binding's own role.
    out = admitted(psql(
        netns, creds, HOST_ADDR, port, "require",
        "SELECT ssl, inet_client_addr() FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    ))
    assert out == f"t|{NS_ADDR}"
    admitted(psql(netns, creds, HOST_ADDR, port, "require",
                  "CREATE TABLE notes (body text); INSERT INTO notes VALUES ('from afar')"))
    # Every environment's database is open, each with its own credentials.
    assert admitted(psql(netns, staging, HOST_ADDR, port, "require", "SELECT 1")) == "1"
    # Without TLS: refused.
    refused(psql(netns, creds, HOST_ADDR, port, "disable", "SELECT 1"))
    # Another database or the superuser: nothing names them there.
    refused(psql(netns, {**creds, "username": "mds_admin"}, HOST_ADDR, port, "require",
                 "SELECT 1"))
    refused(psql(netns, {**creds, "database": "mds_control"}, HOST_ADDR, port, "require",
                 "SELECT 1"))

    # An environment made after enabling is open too, once its database is.
    made = httpx.post(
        f"{public.url}/api/v1/projects/{project['id']}/environments", json={"name": "qa"},
        headers={"Authorization": f"Bearer {public.admin_key}"},
    )
    assert made.status_code == 201, made.text
    deadline = time.monotonic() + 30
    while True:
        qa = httpx.get(
            f"{public.url}/api/v1/databases/{db['id']}/credentials",
            params={"environment": "qa"},
            headers={"Authorization": f"Bearer {public.admin_key}"},
        )
        run = psql(netns, qa.json()["data"], HOST_ADDR, port, "require", "SELECT 1") \
            if qa.status_code == 200 else None
        if run is not None and run.returncode == 0:
            break
        assert time.monotonic() < deadline, (qa.text, run and run.stderr)
        time.sleep(0.1)

    # The list is replaced: the namespace is no longer on it.
    moved = client.databases.enable_public_networking(db["id"], allowlist=["10.231.0.99"])
    assert moved["allowlist"] == ["10.231.0.99/32"]
    refused(psql(netns, creds, HOST_ADDR, port, "require", "SELECT 1"))

    # No list: any source.
    anyone = client.databases.enable_public_networking(db["id"])
    assert anyone["allowlist"] == ["0.0.0.0/0", "::/0"]
    assert admitted(psql(netns, creds, HOST_ADDR, port, "require",
                         "SELECT body FROM notes")) == "from afar"

    closed = client.databases.disable_public_networking(db["id"])
    assert closed["enabled"] is False and closed["port"] is None
    refused(psql(netns, creds, HOST_ADDR, port, "require", "SELECT 1"))
    # Idempotent.
    assert client.databases.disable_public_networking(db["id"])["enabled"] is False

    # The platform's own access, on loopback, never changed.
    with psycopg.connect(creds["url"]) as conn:
        assert conn.execute("SELECT body FROM notes").fetchone() == ("from afar",)

    # A restart applies the stored allowlist again, with the same
    # self-signed certificate.
    client.databases.enable_public_networking(db["id"], allowlist=[f"{NS_ADDR}/32"])
    cert = public.data_dir / "engines/postgres/tls/self-signed.crt"
    made = cert.read_bytes()
    restart(public)
    assert cert.read_bytes() == made
    client = Miosa(api_key=public.admin_key, base_url=public.url, max_retries=0)
    again = client.databases.public_networking(db["id"])
    assert again["enabled"] is True and again["port"] == port
    assert admitted(psql(netns, creds, HOST_ADDR, port, "require", "SELECT 1")) == "1"

    # A certificate given with --tls-cert/--tls-key is what clients see:
    # verify-full with it as the root passes.
    tls = public.root / "given"
    tls.mkdir()
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
       "-nodes", "-days", "2", "-subj", "/CN=mds-test", "-addext",
       f"subjectAltName=IP:{HOST_ADDR}", "-keyout", str(tls / "key.pem"),
       "-out", str(tls / "cert.pem"))
    restart(public, "--tls-cert", str(tls / "cert.pem"), "--tls-key", str(tls / "key.pem"),
            "--public-hostname", "pg.mds.test")
    client = Miosa(api_key=public.admin_key, base_url=public.url, max_retries=0)
    named = client.databases.public_networking(db["id"])
    assert named["self_signed_certificate"] is False and named["host"] == "pg.mds.test"
    assert named["environments"][0]["public_url"].startswith(
        f"postgresql://{creds['username']}@pg.mds.test:{port}/")
    assert admitted(psql(netns, creds, HOST_ADDR, port, "verify-full", "SELECT 1",
                         sslrootcert=str(tls / "cert.pem"))) == "1"
    # The self-signed certificate is not it.
    failed = psql(netns, creds, HOST_ADDR, port, "verify-full", "SELECT 1",
                  sslrootcert=str(cert))
    assert failed.returncode != 0


def test_bad_requests_are_refused_with_what_was_wrong(public):
    client = Miosa(api_key=public.admin_key, base_url=public.url, max_retries=0)
    project = client.projects.create(f"pub-{uuid.uuid4().hex[:6]}")
    db = client.databases.create(engine="postgresql", project_id=project["id"])

    for allowlist, field in [
        (["10.0.0.0/8", "db.example.com"], "allowlist[1]"),
        (["10.0.0.0/33"], "allowlist[0]"),
        (["::/129"], "allowlist[0]"),
        (["10.0.0.0/8 trust"], "allowlist[0]"),
        ([], "allowlist"),
    ]:
        with pytest.raises(errors.ValidationError) as raised:
            client.databases.enable_public_networking(db["id"], allowlist=allowlist)
        assert raised.value.details["field"] == field, allowlist
    answer = httpx.post(
        f"{public.url}/api/v1/databases/{db['id']}/public-networking",
        json={"allowlist": "10.0.0.0/8"},
        headers={"Authorization": f"Bearer {public.admin_key}"},
    )
    assert answer.status_code == 422
    assert answer.json()["error"]["details"]["field"] == "allowlist"
    # Nothing was opened by any of them.
    assert client.databases.public_networking(db["id"])["enabled"] is False

    for call in (client.databases.public_networking, client.databases.enable_public_networking,
                 client.databases.disable_public_networking):
        with pytest.raises(errors.NotFoundError):
            call("ds_01JZZZZZZZZZZZZZZZZZZZZZZZ")

    reader_key = client.api_keys.create(name="reader", scopes=["projects:read"])["token"]
    reader = Miosa(api_key=reader_key, base_url=public.url, max_retries=0)
    assert reader.databases.public_networking(db["id"])["enabled"] is False
    for call in (reader.databases.enable_public_networking,
                 reader.databases.disable_public_networking):
        with pytest.raises(errors.PermissionError):
            call(db["id"])

    # Redis has no TLS here: no public endpoint.
    cache = client.databases.create(engine="redis", project_id=project["id"])
    status = client.databases.public_networking(cache["id"])
    assert status["supported"] is False and status["enabled"] is False
    assert "postgres" in status["reason"]
    with pytest.raises(errors.MiosaError) as raised:
        client.databases.enable_public_networking(cache["id"])
    assert raised.value.status_code == 409
    assert raised.value.code == "PUBLIC_NETWORKING_UNSUPPORTED"


def test_a_server_without_a_public_address_says_which_flag(client):
    project = client.projects.create(f"pub-{uuid.uuid4().hex[:6]}")
    db = client.databases.create(engine="postgresql", project_id=project["id"])
    status = client.databases.public_networking(db["id"])
    assert status["supported"] is False and status["enabled"] is False
    assert "--public-host" in status["reason"]
    with pytest.raises(errors.MiosaError) as raised:
        client.databases.enable_public_networking(db["id"], allowlist=["10.0.0.0/8"])
    assert raised.value.status_code == 409
    assert raised.value.code == "PUBLIC_ADDRESS_NOT_CONFIGURED"
    assert "--public-host" in raised.value.message
    assert client.databases.disable_public_networking(db["id"])["enabled"] is False


@pytest.mark.parametrize("host, said", [
    ("127.0.0.1", "loopback"),
    # TEST-NET-1: an address of no machine here; nothing is sent to it.
    ("192.0.2.1", "cannot be listened on"),
])
def test_a_public_host_that_cannot_serve_is_refused_at_start(tmp_path, host, said):
    tmp_path.chmod(0o711)
    binary = os.environ.get("MDS_BIN", str(Path(__file__).resolve().parents[2]
                                           / "target" / "debug" / "mds"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MDS_", "MIOSA_"))}
    run = subprocess.run(
        [binary, "server", "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0",
         "--public-host", host],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )
    assert run.returncode != 0
    assert said in run.stderr and "--public-host" in run.stderr, run.stderr
