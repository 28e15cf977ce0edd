"""The connection pooler (issue 17): pgbouncer, supervised by mds in front
of the managed PostgreSQL, reached by real clients (psql, psycopg 3,
node-postgres and a raw-protocol SCRAM client) through the injected
DATABASE_URL; the API, SDK and CLI that set each binding's pool; and the
faults: other tenants' names and passwords, a reload while a tenant
works, kill -9 of the pooler, 10,000 idle clients."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import resource
import signal
import struct
import subprocess
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from miosa import errors

from conftest import REPO, Server, resolved

MDS = os.environ.get("MDS_BIN", str(REPO / "target" / "debug" / "mds"))
NODE_DIR = REPO / "tests" / "node"


@pytest.fixture(scope="module")
def mds():
    # Its own server: this file kills the pooler and fills it with clients.
    server = Server()
    yield server
    server.stop()


def api(mds, method: str, path: str, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {mds.admin_key}"}
    return httpx.request(method, f"{mds.url}/api/v1{path}", headers=headers, timeout=120, **kw)


def ok(answer: httpx.Response, status: int = 200) -> dict:
    assert answer.status_code == status, answer.text
    return answer.json()["data"]


def refused(answer: httpx.Response, field: str | None) -> dict:
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "VALIDATION_ERROR", error
    if field is not None:
        assert error["details"]["field"] == field, error
    return error


def cli(mds, *args: str) -> str:
    env = dict(os.environ, MIOSA_BASE_URL=mds.url, MIOSA_API_KEY=mds.admin_key)
    done = subprocess.run([MDS, *args], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def new_project(mds, name: str) -> str:
    return ok(api(mds, "POST", "/projects", json={"name": f"{name}-{uuid.uuid4().hex[:6]}"}), 201)["id"]


def attach(mds, name: str, **body) -> tuple[str, dict]:
    """A new project with Postgres attached (settled); its id and the view."""
    pid = new_project(mds, name)
    service = ok(api(mds, "POST", f"/projects/{pid}/data-services?wait=true",
                     json={"type": "postgres", **body}), 201)
    assert all(b["state"] == "running" for b in service["bindings"]), service
    return pid, service


def view(mds, pid: str, service: dict) -> dict:
    return ok(api(mds, "GET", f"/projects/{pid}/data-services/{service['name']}"))


def pools(service: dict) -> dict[str, dict]:
    """Each environment's `pool` block."""
    return {b["environment"]: b["pool"] for b in service["bindings"]}


def data_dir(mds) -> Path:
    return Path(os.path.realpath(mds.data_dir))


def pooler_dir(mds) -> Path:
    return data_dir(mds) / "engines" / "pooler"


def pooler_port(mds) -> int:
    return int((pooler_dir(mds) / "port").read_text().strip())


def engine_port(mds) -> int:
    return json.loads((data_dir(mds) / "engines" / "postgres.json").read_text())["port"]


def pooler_pids(mds) -> list[int]:
    found = subprocess.run(["pgrep", "-f", str(pooler_dir(mds) / "pgbouncer.ini")],
                           capture_output=True, text=True)
    return sorted(int(p) for p in found.stdout.split())


def with_database(url: str, database: str, password: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if password is not None:
        user = parts.username
        netloc = f"{user}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, f"/{database}", parts.query, ""))


def psql(url: str, sql: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PGCONNECT_TIMEOUT="10")
    env.pop("PGPASSWORD", None)
    return subprocess.run(["psql", url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
                          capture_output=True, text=True, env=env, timeout=60)


def role_backends(unpooled: str) -> int:
    """Server connections of the URL's role, not counting the one asking."""
    with psycopg.connect(unpooled, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = current_user AND pid <> pg_backend_pid()"
        ).fetchone()[0]


class BackendSampler:
    """Counts the role's server connections every 10 ms on a direct
    connection of its own, and keeps the largest count seen."""

    def __init__(self, unpooled: str) -> None:
        self.conn = psycopg.connect(unpooled, autocommit=True)
        self.most = 0
        self.samples = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.done.is_set():
            n = self.conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = current_user AND pid <> pg_backend_pid()"
            ).fetchone()[0]
            self.most = max(self.most, n)
            self.samples += 1
            time.sleep(0.01)

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        self.conn.close()
        return self.most


def healthz(mds) -> httpx.Response:
    return httpx.get(f"{mds.url}/healthz", timeout=10)


# -- defaults, files, the injected URLs ----------------------------------------


def test_a_binding_is_pooled_by_default_and_only_its_database_url_says_so(mds, client):
    pid, service = attach(mds, "pooled")
    for environment, pool in pools(service).items():
        assert pool["mode"] == "transaction" and pool["size"] == 10, (environment, pool)
        assert pool["pooled"] is True, pool
        for counter in ("clients_active", "clients_waiting", "servers_active", "servers_idle", "max_wait_ms"):
            assert counter in pool, (counter, pool)
    # The MIOSA view of the same database carries the same block.
    assert pools(client.databases.get(service["id"]))["production"]["mode"] == "transaction"

    env = resolved(mds, pid, "production")
    pooled, direct = urlsplit(env["DATABASE_URL"]), urlsplit(env["DATABASE_URL_UNPOOLED"])
    role = next(b["resource"] for b in service["bindings"] if b["environment"] == "production")
    assert (pooled.hostname, pooled.port) == ("127.0.0.1", pooler_port(mds))
    assert (direct.hostname, direct.port) == ("127.0.0.1", engine_port(mds))
    assert pooled.username == direct.username == role and pooled.path == direct.path == f"/{role}"
    assert pooled.password == direct.password
    # libpq's own variables are always the engine's.
    assert env["PGPORT"] == str(engine_port(mds)) and env["PGDATABASE"] == role

    done = psql(env["DATABASE_URL"], "SELECT current_user, current_database()")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{role}|{role}"
    staging = resolved(mds, pid, "staging")
    assert urlsplit(staging["DATABASE_URL"]).port == pooler_port(mds)
    assert staging["DATABASE_URL"] != env["DATABASE_URL"]

    # Verifiers only, readable by the pooler's user alone.
    users = pooler_dir(mds) / "users.txt"
    assert users.stat().st_mode & 0o777 == 0o600
    text = users.read_text()
    assert "SCRAM-SHA-256$" in text and role in text
    assert pooled.password not in text
    assert pooled.password not in (pooler_dir(mds) / "pgbouncer.ini").read_text()

    # One pooler, as the engine's OS user, reported by /healthz.
    [pooler] = pooler_pids(mds)
    engine_uid = (data_dir(mds) / "engines" / "postgres").stat().st_uid
    uid = next(int(line.split()[1]) for line in Path(f"/proc/{pooler}/status").read_text().splitlines()
               if line.startswith("Uid:"))
    assert uid == engine_uid
    assert healthz(mds).json()["engines"]["pooler"] == "running"

    explained = cli(mds, "env", "explain", "DATABASE_URL", "-p", pid)
    assert "pooled, transaction" in explained, explained


def test_pool_settings_are_checked(mds, client):
    pid = new_project(mds, "checked")
    path = f"/projects/{pid}/data-services"
    refused(api(mds, "POST", path, json={"type": "postgres", "pool_mode": "bogus"}), "pool_mode")
    refused(api(mds, "POST", path, json={"type": "postgres", "pool_mode": "statement"}), "pool_mode")
    refused(api(mds, "POST", path, json={"type": "postgres", "pool_size": 0}), "pool_size")
    refused(api(mds, "POST", path, json={"type": "postgres", "pool_size": 21}), "pool_size")
    refused(api(mds, "POST", path, json={"type": "redis", "pool_mode": "session"}), None)
    refused(api(mds, "POST", path, json={"type": "redis", "pool_size": 5}), None)
    refused(api(mds, "POST", path, json={"type": "postgres", "pool_max_clients": 0}), "pool_max_clients")
    # More than the pooler's client slots in all (--pooler-max-clients).
    refused(api(mds, "POST", path, json={"type": "postgres", "pool_max_clients": 12001}), "pool_max_clients")
    refused(api(mds, "POST", path, json={"type": "redis", "pool_max_clients": 5}), "pool_max_clients")
    assert ok(api(mds, "GET", path)) == []

    service = ok(api(mds, "POST", f"{path}?wait=true", json={"type": "postgres", "pool_size": 20}), 201)
    assert {p["size"] for p in pools(service).values()} == {20}
    one = f"{path}/{service['name']}"
    refused(api(mds, "PATCH", one, json={"pool_mode": "bogus"}), "pool_mode")
    refused(api(mds, "PATCH", one, json={"pool_size": 0}), "pool_size")
    refused(api(mds, "PATCH", one, json={"pool_max_clients": "many"}), "pool_max_clients")
    refused(api(mds, "PATCH", one, json={"pool_max_clients": -1}), "pool_max_clients")
    with pytest.raises(errors.ValidationError) as raised:
        client.services.update(service["id"], settings={"pool_max_clients": 0})
    assert raised.value.details["field"] == "pool_max_clients"
    with pytest.raises(errors.ValidationError) as raised:
        client.services.update(service["id"], settings={"pool_mode": "bogus"})
    assert raised.value.details["field"] == "pool_mode"
    # Nothing changed.
    assert {p["mode"] for p in pools(view(mds, pid, service)).values()} == {"transaction"}


def test_modes_and_sizes_through_the_api_sdk_and_cli(mds, client):
    pid = new_project(mds, "modes")
    cli(mds, "attach", "postgres", "-p", pid, "--pool", "session", "--pool-size", "5")
    [service] = ok(api(mds, "GET", f"/projects/{pid}/data-services"))
    assert {(p["mode"], p["size"], p["pooled"]) for p in pools(service).values()} == {("session", 5, True)}
    env = resolved(mds, pid, "production")
    assert urlsplit(env["DATABASE_URL"]).port == pooler_port(mds)
    # Session mode: one server connection for the client's whole session.
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("SET application_name = 'kept'")
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        for _ in range(5):
            with conn.transaction():
                conn.execute("SELECT 1")
        assert conn.execute("SHOW application_name").fetchone()[0] == "kept"
        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == backend

    # off: the next boot's DATABASE_URL is direct.
    cli(mds, "data", "pool", service["name"], "-p", pid, "--mode", "off")
    assert {p["pooled"] for p in pools(view(mds, pid, service)).values()} == {False}
    env = resolved(mds, pid, "production")
    assert env["DATABASE_URL"] == env["DATABASE_URL_UNPOOLED"]

    # The SDK: every environment; then a member id (the binding's) or
    # `?env=` picks one.
    client.services.update(service["id"], settings={"pool_mode": "transaction", "pool_size": 3})
    now = pools(view(mds, pid, service))
    assert {(p["mode"], p["size"], p["pooled"]) for p in now.values()} == {("transaction", 3, True)}
    staging_member = next(b["id"] for b in service["bindings"] if b["environment"] == "staging")
    client.services.update(staging_member, settings={"pool_size": 4})
    now = pools(view(mds, pid, service))
    assert (now["production"]["size"], now["staging"]["size"]) == (3, 4)
    ok(api(mds, "PATCH", f"/services/{service['id']}", params={"env": "staging"},
           json={"settings": {"pool_size": 5}}))
    now = pools(view(mds, pid, service))
    assert (now["production"]["size"], now["staging"]["size"]) == (3, 5)
    # The native PATCH, one environment.
    ok(api(mds, "PATCH", f"/projects/{pid}/data-services/{service['name']}",
           json={"environment": "staging", "pool_mode": "session"}))
    now = pools(view(mds, pid, service))
    assert (now["production"]["mode"], now["staging"]["mode"]) == ("transaction", "session")
    cli(mds, "data", "pool", service["name"], "-p", pid, "-e", "staging", "--size", "6")
    assert pools(view(mds, pid, service))["staging"]["size"] == 6

    # The new size holds at once: 30 clients at a time on 3 server connections.
    env = resolved(mds, pid, "production")
    assert urlsplit(env["DATABASE_URL"]).port == pooler_port(mds)
    sampler = BackendSampler(env["DATABASE_URL_UNPOOLED"])
    failures = []

    def work() -> None:
        try:
            with psycopg.connect(env["DATABASE_URL"], prepare_threshold=None) as conn:
                conn.execute("SELECT pg_sleep(0.05)")
        except psycopg.Error as e:
            failures.append(e)

    threads = [threading.Thread(target=work) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    most = sampler.stop()
    assert not failures, failures
    assert 1 <= most <= 3, most


# -- load: many clients, few server connections ------------------------------


async def _run_transactions(url: str, clients: int, holding) -> list:
    """Opens `clients` connections (50 handshakes at a time); once all are
    open, calls `holding` (in a thread), then runs one transaction on each
    at once. Answers each client's outcome."""
    gate = asyncio.Semaphore(50)

    async def connect() -> psycopg.AsyncConnection:
        async with gate:
            return await psycopg.AsyncConnection.connect(url, prepare_threshold=None, connect_timeout=30)

    conns = await asyncio.wait_for(asyncio.gather(*(connect() for _ in range(clients)), return_exceptions=True), 120)
    opened = [c for c in conns if not isinstance(c, BaseException)]
    try:
        if len(opened) < clients:
            return conns
        await asyncio.to_thread(holding)

        async def transaction(i: int, conn: psycopg.AsyncConnection) -> None:
            async with conn.transaction():
                await conn.execute("INSERT INTO hits (client) VALUES (%s)", (i,))
                await conn.execute("SELECT pg_sleep(0.01)")

        return await asyncio.wait_for(
            asyncio.gather(*(transaction(i, c) for i, c in enumerate(opened)), return_exceptions=True), 120)
    finally:
        await asyncio.gather(*(c.close() for c in opened), return_exceptions=True)


def test_500_clients_in_transactions_use_at_most_the_pool_size_of_server_connections(mds):
    pid, service = attach(mds, "crowd")
    env = resolved(mds, pid, "production")
    with psycopg.connect(env["DATABASE_URL_UNPOOLED"]) as conn:
        conn.execute("CREATE TABLE hits (client int PRIMARY KEY)")
    sampler = BackendSampler(env["DATABASE_URL_UNPOOLED"])
    seen: dict = {}

    def while_all_open() -> None:
        # 500 clients are logged in now. The view and /metrics count them
        # (their numbers are a moment old: allow the refresh).
        deadline = time.monotonic() + 10
        while True:
            pool = pools(view(mds, pid, service))["production"]
            if (pool["clients_active"] or 0) + (pool["clients_waiting"] or 0) >= 500 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        seen["pool"] = pool
        seen["metrics"] = httpx.get(f"{mds.url}/metrics", timeout=10,
                                    headers={"Authorization": f"Bearer {mds.admin_key}"}).text

    began = time.monotonic()
    try:
        results = asyncio.run(_run_transactions(env["DATABASE_URL"], 500, while_all_open))
    finally:
        most = sampler.stop()
    took = time.monotonic() - began
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, f"{len(failures)} failed, first: {failures[0]!r}"
    with psycopg.connect(env["DATABASE_URL_UNPOOLED"]) as conn:
        assert conn.execute("SELECT count(*) FROM hits").fetchone()[0] == 500
    print(f"500 clients, one transaction each: {took:.1f} s; at most {most} server connections "
          f"in {sampler.samples} samples")
    assert 1 <= most <= 10, most

    pool = seen["pool"]
    assert pool["clients_active"] + pool["clients_waiting"] >= 500, pool
    assert 0 <= pool["servers_active"] + pool["servers_idle"] <= 10, pool
    assert isinstance(pool["max_wait_ms"], int), pool
    # Labelled by binding, project and environment.
    binding = next(b["id"] for b in service["bindings"] if b["environment"] == "production")
    lines = seen["metrics"].splitlines()
    metric = [line for line in lines if line.startswith("mds_pool_clients_active{") and f'binding="{binding}"' in line]
    assert metric, [line for line in lines if line.startswith("mds_pool_clients_active{")]
    assert "project=" in metric[0] and 'environment="production"' in metric[0], metric
    assert int(metric[0].rsplit(" ", 1)[1]) >= 500, metric
    for name in ("mds_pool_clients_waiting", "mds_pool_servers_active", "mds_pool_servers_idle"):
        assert any(line.startswith(name + "{") and f'binding="{binding}"' in line for line in lines), name


def test_psycopg_and_node_postgres_work_through_the_pooler(mds):
    pid, _ = attach(mds, "clients")
    env = resolved(mds, pid, "production")
    url = env["DATABASE_URL"]
    with psycopg.connect(env["DATABASE_URL_UNPOOLED"]) as conn:
        conn.execute("CREATE TABLE node_check (client int, round int)")
        conn.execute("CREATE TABLE py_check (worker int, n int)")

    # psycopg 3 with server-side prepared statements off, as transaction
    # pooling needs: the same parameterised statements many times over.
    failures = []

    def worker(w: int) -> None:
        try:
            with psycopg.connect(url, prepare_threshold=None, autocommit=True) as conn:
                for n in range(100):
                    if n % 10 == 0:
                        with conn.transaction():
                            conn.execute("INSERT INTO py_check VALUES (%s, %s)", (w, n))
                    assert conn.execute("SELECT %s::int + %s", (n, w)).fetchone()[0] == n + w
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    with psycopg.connect(url, prepare_threshold=None) as conn:
        assert conn.execute("SELECT count(*) FROM py_check").fetchone()[0] == 120

    # node-postgres: 50 clients at once, 10 transactions each.
    assert (NODE_DIR / "node_modules" / "pg").is_dir(), "run scripts/install-deps (npm ci in tests/node)"
    done = subprocess.run(["node", str(NODE_DIR / "pool_check.js")], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, DATABASE_URL=url, CLIENTS="50", ROUNDS="10"))
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["errors"] == [] and result["transactions"] == 500, result
    assert result["rows"] == 500 and result["user"] == urlsplit(url).username, result
    assert 1 <= result["server_pids"] <= 10, result


def test_named_prepared_statements_survive_transaction_pooling(mds):
    """pgbouncer 1.24 prepares a client's named statement again on
    whichever server connection its next transaction lands on: psycopg 3
    preparing every statement (prepare_threshold=0) and node-postgres named
    queries work through a pool of two server connections shared by many
    clients."""
    pid, service = attach(mds, "prepared", pool_size=2)
    assert {p["size"] for p in pools(service).values()} == {2}
    env = resolved(mds, pid, "production")
    url = env["DATABASE_URL"]
    with psycopg.connect(env["DATABASE_URL_UNPOOLED"]) as conn:
        conn.execute("CREATE TABLE node_check (client int, round int)")
        conn.execute("CREATE TABLE prep (worker int, n int)")

    failures = []
    server_pids: set[int] = set()

    def worker(w: int) -> None:
        try:
            with psycopg.connect(url, prepare_threshold=0, autocommit=True) as conn:
                for n in range(60):
                    conn.execute("INSERT INTO prep VALUES (%s, %s)", (w, n), prepare=True)
                    row = conn.execute("SELECT count(*), pg_backend_pid() FROM prep WHERE worker = %s",
                                       (w,), prepare=True).fetchone()
                    assert row[0] == n + 1, (w, n, row)
                    server_pids.add(row[1])
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    # Eight clients' statements ran on at most two server connections,
    # hence on connections they were not first prepared on.
    assert 1 <= len(server_pids) <= 2, server_pids

    done = subprocess.run(["node", str(NODE_DIR / "pool_check.js")], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, DATABASE_URL=url, CLIENTS="20", ROUNDS="10", NAMED="1"))
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["errors"] == [] and result["transactions"] == 200, result
    assert 1 <= result["server_pids"] <= 2, result


def test_a_binding_holds_at_most_its_client_limit_and_others_are_untouched(mds, client):
    pid, service = attach(mds, "limited", pool_max_clients=3)
    assert {p["max_clients"] for p in pools(service).values()} == {3}
    other_pid, _ = attach(mds, "neighbour")
    env = resolved(mds, pid, "production")
    url = env["DATABASE_URL"]

    held = [psycopg.connect(url, autocommit=True) for _ in range(3)]
    try:
        with pytest.raises(psycopg.OperationalError) as raised:
            psycopg.connect(url, connect_timeout=10)
        assert "client connections exceeded" in str(raised.value), raised.value
        # Its direct URL, and another tenant through the pooler, still work.
        with psycopg.connect(env["DATABASE_URL_UNPOOLED"]) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        neighbour = resolved(mds, other_pid, "production")["DATABASE_URL"]
        others = [psycopg.connect(neighbour, autocommit=True) for _ in range(5)]
        for conn in others:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            conn.close()
        # The ones held work, and a slot given back is taken again.
        for conn in held:
            assert conn.execute("SELECT 2").fetchone() == (2,)
        held.pop().close()
        held.append(connect_soon(url))
    finally:
        for conn in held:
            conn.close()

    # Raised through the SDK for this environment, at once: no one cut.
    member = next(b for b in service["bindings"] if b["environment"] == "production")
    held = [psycopg.connect(url, autocommit=True) for _ in range(3)]
    try:
        client.services.update(member["id"], settings={"pool_max_clients": 5})
        assert pools(view(mds, pid, service))["production"]["max_clients"] == 5
        held += [connect_soon(url) for _ in range(2)]
        for conn in held:
            assert conn.execute("SELECT 3").fetchone() == (3,)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=10)
    finally:
        for conn in held:
            conn.close()
    # Back to the server's default (1000) with the CLI.
    cli(mds, "data", "pool", service["name"], "-p", pid, "-e", "production", "--max-clients", "1000")
    assert pools(view(mds, pid, service))["production"]["max_clients"] == 1000
    metrics = httpx.get(f"{mds.url}/metrics", timeout=30).text
    assert 'mds_pooler_info{version="PgBouncer 1.24.1",client_limit="true",prepared_statements="true"} 1' \
        in metrics, [line for line in metrics.splitlines() if "pooler_info" in line]


def connect_soon(url: str) -> psycopg.Connection:
    """A connection as soon as the pooler has counted a closed one out
    (it learns of a close from the socket, a moment later)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- isolation -----------------------------------------------------------------


def test_the_pooler_keeps_tenants_apart(mds):
    a_pid, _ = attach(mds, "tenant-a")
    b_pid, _ = attach(mds, "tenant-b")
    a, b = resolved(mds, a_pid, "production"), resolved(mds, b_pid, "production")
    a_staging = resolved(mds, a_pid, "staging")
    a_url, b_url = a["DATABASE_URL"], b["DATABASE_URL"]
    b_db = urlsplit(b_url).username
    assert urlsplit(a_url).port == urlsplit(b_url).port == pooler_port(mds)

    # A's credentials, B's database name: PostgreSQL's own refusal.
    for url, database in ((a_url, b_db), (a_url, a_staging["PGDATABASE"]), (b_url, urlsplit(a_url).username)):
        done = psql(with_database(url, database), "SELECT 1")
        assert done.returncode != 0
        assert f'permission denied for database "{database}"' in done.stderr, done.stderr
        with pytest.raises(psycopg.OperationalError) as raised:
            psycopg.connect(with_database(url, database), connect_timeout=10)
        assert f'permission denied for database "{database}"' in str(raised.value)

    done = psql(with_database(a_url, "no_such_db"), "SELECT 1")
    assert done.returncode != 0 and "no such database: no_such_db" in done.stderr, done.stderr

    # A's role with B's password, and the reverse; the superuser's name.
    b_password = urlsplit(b_url).password
    for url in (with_database(a_url, urlsplit(a_url).username, password=b_password),
                with_database(b_url, b_db, password=urlsplit(a_url).password)):
        done = psql(url, "SELECT 1")
        assert done.returncode != 0 and "SASL authentication failed" in done.stderr, done.stderr
    superuser = json.loads((data_dir(mds) / "engines" / "postgres.json").read_text())["superuser"]
    parts = urlsplit(a_url)
    done = psql(f"postgresql://{superuser}:{parts.password}@127.0.0.1:{parts.port}/postgres", "SELECT 1")
    assert done.returncode != 0, done.stdout

    # And each still works with its own.
    for url in (a_url, b_url):
        done = psql(url, "SELECT current_user")
        assert done.returncode == 0 and done.stdout.strip() == urlsplit(url).username, done.stderr


# -- changes while a tenant works ----------------------------------------------


def test_attach_patch_and_remove_of_others_drop_nothing_of_a_tenant_looping(mds, client):
    a_pid, _ = attach(mds, "steady")
    a = resolved(mds, a_pid, "production")
    with psycopg.connect(a["DATABASE_URL_UNPOOLED"]) as conn:
        conn.execute("CREATE TABLE ticks (n int)")
    [pooler] = pooler_pids(mds)
    stop = threading.Event()
    counts = {"queries": 0, "connects": 0}
    failures: list = []

    def loop() -> None:
        try:
            with psycopg.connect(a["DATABASE_URL"], prepare_threshold=None, autocommit=True) as held:
                n = 0
                while not stop.is_set():
                    n += 1
                    with held.transaction():
                        held.execute("INSERT INTO ticks VALUES (%s)", (n,))
                        held.execute("SELECT count(*) FROM ticks")
                    counts["queries"] += 1
                    if n % 10 == 0:
                        with psycopg.connect(a["DATABASE_URL"], prepare_threshold=None, connect_timeout=10) as fresh:
                            fresh.execute("SELECT 1")
                        counts["connects"] += 1
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(e)

    # A transaction that stays open across all the reloads.
    open_tx = psycopg.connect(a["DATABASE_URL"], prepare_threshold=None)
    open_tx.execute("INSERT INTO ticks VALUES (-1)")
    thread = threading.Thread(target=loop)
    thread.start()
    try:
        time.sleep(0.3)
        b_pid, b_service = attach(mds, "other")  # adds two bindings: a reload
        time.sleep(0.3)
        ok(api(mds, "PATCH", f"/projects/{b_pid}/data-services/{b_service['name']}", json={"pool_size": 5}))
        time.sleep(0.3)
        client.services.update(b_service["id"], settings={"pool_mode": "session"})
        b = resolved(mds, b_pid, "production")
        # B has a pooled client open when it is removed: that one is closed,
        # A's are not.
        b_held = psycopg.connect(b["DATABASE_URL"], autocommit=True)
        b_held.execute("SELECT 1")
        time.sleep(0.3)
        began = time.monotonic()
        ok(api(mds, "DELETE", f"/projects/{b_pid}/data-services/{b_service['name']}",
               params={"confirm": b_service["name"]}))
        removed_in = time.monotonic() - began
        deadline = time.monotonic() + 30
        while ok(api(mds, "GET", f"/projects/{b_pid}/data-services")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ok(api(mds, "GET", f"/projects/{b_pid}/data-services")) == []
        with pytest.raises(psycopg.OperationalError):
            b_held.execute("SELECT 1")
        b_held.close()
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not failures, failures
    assert counts["queries"] >= 20 and counts["connects"] >= 2, counts
    open_tx.execute("INSERT INTO ticks VALUES (-2)")
    open_tx.commit()
    open_tx.close()
    with psycopg.connect(a["DATABASE_URL_UNPOOLED"]) as conn:
        assert conn.execute("SELECT count(*) FROM ticks WHERE n < 0").fetchone()[0] == 2
    assert pooler_pids(mds) == [pooler], "a reload, not a restart"
    print(f"{counts} while attaching, patching and removing another tenant; its delete took {removed_in:.2f} s")
    # Its database is gone from the pooler too.
    done = psql(b["DATABASE_URL"], "SELECT 1")
    assert done.returncode != 0


def test_a_restore_closes_pooled_clients_first_and_the_pool_resumes(mds):
    pid, _ = attach(mds, "restored")
    env = resolved(mds, pid, "production")
    url = env["DATABASE_URL"]
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE kept (n int)")
        conn.execute("INSERT INTO kept SELECT generate_series(1, 100)")
    point = ok(api(mds, "POST", f"/projects/{pid}/environments/production/restore-points", json={}), 201)
    assert point["state"] == "complete", point
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM kept")
    held = psycopg.connect(url, autocommit=True, prepare_threshold=None)
    held.execute("SELECT 1")
    result = ok(api(mds, "POST", f"/projects/{pid}/environments/production/restores",
                    json={"confirm": True, "restore_point": point["id"]}))
    assert result["restored"], result
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")
    held.close()
    # New clients get through at once, to the restored data.
    with psycopg.connect(url, connect_timeout=10) as conn:
        assert conn.execute("SELECT count(*) FROM kept").fetchone()[0] == 100
        conn.execute("INSERT INTO kept VALUES (101)")


# -- the unpooled URL ----------------------------------------------------------


def test_database_url_unpooled_allows_listen_notify(mds):
    pid, _ = attach(mds, "listen")
    env = resolved(mds, pid, "production")
    with psycopg.connect(env["DATABASE_URL_UNPOOLED"], autocommit=True) as listener:
        listener.execute("LISTEN jobs")
        # NOTIFY is sent through the pooled URL, as an app would.
        with psycopg.connect(env["DATABASE_URL"], autocommit=True) as app:
            app.execute("SELECT pg_notify('jobs', 'job 1')")
        got = list(listener.notifies(timeout=10, stop_after=1))
    assert [(n.channel, n.payload) for n in got] == [("jobs", "job 1")]


# -- faults ---------------------------------------------------------------------


def test_a_killed_pooler_is_restarted_on_its_port(mds):
    pid, _ = attach(mds, "killed")
    url = resolved(mds, pid, "production")["DATABASE_URL"]
    port = pooler_port(mds)
    [before] = pooler_pids(mds)
    os.kill(before, signal.SIGKILL)
    began = time.monotonic()
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            break
        except psycopg.OperationalError:
            assert time.monotonic() - began < 5, "the pooler was not back within 5 s"
            time.sleep(0.02)
    took = time.monotonic() - began
    print(f"kill -9 of the pooler: a query through it again after {took:.2f} s")
    [after] = pooler_pids(mds)
    assert after != before
    assert pooler_port(mds) == port
    # The supervisor marks it running at its next readiness probe, which
    # may come a moment after the first client got through.
    deadline = time.monotonic() + 5
    while True:
        answer = healthz(mds)
        if answer.status_code == 200 and answer.json()["engines"]["pooler"] == "running":
            break
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.02)


def test_an_mds_restart_or_kill_keeps_the_pooler_port_and_urls_and_leaves_one_pooler():
    server = Server()

    def start_again() -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MDS_", "MIOSA_"))}
        env["MDS_LOG"] = "warn"
        server.proc = subprocess.Popen(
            [MDS, "server", "--data-dir", str(server.data_dir), "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL, stdout=server.log, stderr=subprocess.STDOUT, env=env,
        )
        server.url = server._wait_ready()

    try:
        pid, _ = attach(server, "restart")
        url = resolved(server, pid, "production")["DATABASE_URL"]
        port = pooler_port(server)
        assert len(pooler_pids(server)) == 1
        # A clean stop takes the pooler with it.
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=30)
        assert pooler_pids(server) == [], "mds stopped, its pooler still runs"
        start_again()
        # kill -9 of mds: whatever it leaves, the next start runs one pooler.
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=30)
        start_again()
        assert len(pooler_pids(server)) == 1, pooler_pids(server)
        assert pooler_port(server) == port
        assert resolved(server, pid, "production")["DATABASE_URL"] == url
        with psycopg.connect(url, connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()


class Scram:
    """A raw PostgreSQL protocol client that logs in with SCRAM-SHA-256
    and stays idle. The salted password (PBKDF2, the slow part) is computed
    once per salt, not once per client."""

    def __init__(self, user: str, password: str, database: str) -> None:
        self.user, self.password, self.database = user, password, database
        self.salted: dict[tuple[bytes, int], bytes] = {}

    @staticmethod
    def message(kind: bytes, body: bytes) -> bytes:
        return kind + struct.pack("!I", len(body) + 4) + body

    @staticmethod
    async def read(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        head = await reader.readexactly(5)
        size = struct.unpack("!I", head[1:])[0]
        body = await reader.readexactly(size - 4)
        if head[:1] == b"E":
            raise ConnectionError(body.replace(b"\0", b" ").decode(errors="replace"))
        return head[:1], body

    async def login(self, port: int) -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        params = b"user\0" + self.user.encode() + b"\0database\0" + self.database.encode() + b"\0\0"
        startup = struct.pack("!I", 196608) + params
        writer.write(struct.pack("!I", len(startup) + 4) + startup)
        kind, body = await self.read(reader)
        assert kind == b"R" and struct.unpack("!I", body[:4])[0] == 10, (kind, body)
        nonce = base64.b64encode(os.urandom(18)).decode()
        bare = f"n=,r={nonce}"
        first = f"n,,{bare}".encode()
        writer.write(self.message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first))
        kind, body = await self.read(reader)
        assert kind == b"R" and struct.unpack("!I", body[:4])[0] == 11, (kind, body)
        server_first = body[4:].decode()
        attrs = dict(part.split("=", 1) for part in server_first.split(","))
        assert attrs["r"].startswith(nonce)
        key = (base64.b64decode(attrs["s"]), int(attrs["i"]))
        if key not in self.salted:
            self.salted[key] = hashlib.pbkdf2_hmac("sha256", self.password.encode(), *key)
        client_key = hmac.new(self.salted[key], b"Client Key", hashlib.sha256).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        signed = f"{bare},{server_first},{without_proof}".encode()
        signature = hmac.new(hashlib.sha256(client_key).digest(), signed, hashlib.sha256).digest()
        proof = base64.b64encode(bytes(x ^ y for x, y in zip(client_key, signature))).decode()
        writer.write(self.message(b"p", f"{without_proof},p={proof}".encode()))
        while kind != b"Z":  # SASLFinal, AuthenticationOk, ParameterStatus..., BackendKeyData
            kind, body = await self.read(reader)
        return writer


def test_10000_idle_clients_exhaust_neither_the_server_nor_mds(mds):
    # One tenant with 10,000 and a psql beside them: its client limit
    # raised from the default 1000.
    pid, service = attach(mds, "idle", pool_max_clients=10_100)
    env = resolved(mds, pid, "production")
    parts = urlsplit(env["DATABASE_URL"])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 10_500:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < 10,500")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    mds_fds = lambda: len(os.listdir(f"/proc/{mds.proc.pid}/fd"))  # noqa: E731
    fds_before = mds_fds()
    scram = Scram(parts.username, parts.password, parts.path.lstrip("/"))
    writers: list[asyncio.StreamWriter] = []
    checks: dict = {}

    async def run() -> None:
        gate = asyncio.Semaphore(200)

        async def one() -> None:
            async with gate:
                writers.append(await scram.login(parts.port))

        began = time.monotonic()
        results = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(10_000)), return_exceptions=True), 150)
        checks["took"] = time.monotonic() - began
        checks["failures"] = [r for r in results if isinstance(r, BaseException)]
        if not checks["failures"]:
            # All 10,000 are logged in and idle: the rest must still work.
            checks["psql"] = await asyncio.to_thread(psql, env["DATABASE_URL"], "SELECT current_user")
            checks["healthz"] = await asyncio.to_thread(healthz, mds)
            checks["backends"] = await asyncio.to_thread(role_backends, env["DATABASE_URL_UNPOOLED"])
            checks["all_backends"] = await asyncio.to_thread(_all_backends, env["DATABASE_URL_UNPOOLED"])
            checks["mds_fds"] = mds_fds()
            checks["pool"] = await asyncio.to_thread(lambda: pools(view(mds, pid, service))["production"])
        for w in writers:
            w.write(Scram.message(b"X", b""))
            w.close()
        await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)

    try:
        asyncio.run(run())
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    failures = checks["failures"]
    assert not failures, f"{len(failures)} of 10,000 failed, first: {failures[0]!r}"
    print(f"10,000 idle clients logged in in {checks['took']:.1f} s; role backends {checks['backends']}, "
          f"all backends {checks['all_backends']}, mds fds {fds_before} -> {checks['mds_fds']}, pool {checks['pool']}")
    assert checks["psql"].returncode == 0, checks["psql"].stderr
    assert checks["psql"].stdout.strip() == parts.username
    assert checks["healthz"].status_code == 200, checks["healthz"].text
    assert checks["backends"] <= 10, checks["backends"]
    assert checks["all_backends"] < 300, checks["all_backends"]
    assert checks["mds_fds"] - fds_before < 100, (fds_before, checks["mds_fds"])
    # And a fresh client after they left.
    done = psql(env["DATABASE_URL"], "SELECT 1")
    assert done.returncode == 0, done.stderr


def _all_backends(unpooled: str) -> int:
    """Every connection the engine holds (rows of other roles show too)."""
    with psycopg.connect(unpooled, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity").fetchone()[0]
