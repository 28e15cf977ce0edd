"""Network isolation, tried from inside a sandbox as an attacker would:
project A's sandbox reaches its own Postgres (pooled and direct), Redis,
storage (boto3) and auth (urllib, then supabase-auth from the host), and
nothing else of the host: not project B's Redis, not B's runtime
instance, not a server this test starts on the loopback. Egress is tried
only against a network namespace this test makes (198.51.100.2 there, a
documentation address); the private and link-local refusals are checked
inside the sandbox, where they stop before any packet exists."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import uuid

import httpx
import psycopg
import pytest
from urllib.parse import urlparse

from conftest import resolved, veth_namespace
from test_backups import PASSWORD, api, gotrue, new_project, ok
from test_deployments import MADE, app_sandbox, new_deployment, remove_what_was_made  # noqa: F401

HOST_ADDR = "198.51.100.1"
OUTSIDE_ADDR = "198.51.100.2"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def run(sandbox, command: str):
    return sandbox.exec.run(command)


def port_of(url: str) -> int:
    return urlparse(url).port


@pytest.fixture
def host_listener():
    """A TCP server on the host's loopback that nobody inside should reach."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[str] = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append("connection")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1], accepted
    server.close()


def test_a_sandbox_reaches_its_own_services_and_nothing_else_of_the_host(client, mds, host_listener):
    a = new_project(mds, "net-a", "postgres", "redis", "storage", "auth")
    b = new_project(mds, "net-b", "postgres", "redis")
    a_env = resolved(mds, a["id"], "production")
    b_env = resolved(mds, b["id"], "production")

    # B runs an app: its instance listens in a namespace of its own.
    b_sandbox = app_sandbox(client, b)
    deployment = new_deployment(client, b)
    slug = client.deployments.publish(deployment.id, source_sandbox_id=b_sandbox.id).deployment.slug
    b_instance = [i for i in client.deployments.runtime_instances(deployment.id).list()
                  if i.state == "healthy"][0]
    assert httpx.get(mds.url, headers={"Host": f"{slug}.production.localhost"}, timeout=30).text == "v1"
    # Not on the host's loopback any more: only the router reaches it.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", b_instance.port), timeout=5)

    sandbox = client.sandboxes.create(project_id=a["id"], metadata={"environment": "production"})
    MADE.append(("sandboxes", sandbox.id))

    # Its own services work, with the URLs exactly as injected.
    done = run(sandbox, 'psql "$DATABASE_URL" -Atc "CREATE TABLE t (v text); INSERT INTO t VALUES (\'in\')" '
                        '&& psql "$DATABASE_URL_UNPOOLED" -Atc "SELECT v FROM t" '
                        '&& redis-cli -u "$REDIS_URL" --no-auth-warning SET k inside')
    assert done.exit_code == 0 and done.stdout.split() == ["CREATE", "TABLE", "INSERT", "0", "1", "in", "OK"], (done.stdout, done.stderr)
    boto = run(sandbox, "python3 - <<'EOF'\n"
               "import os, boto3\n"
               "s3 = boto3.client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL_S3'],\n"
               "                  region_name=os.environ.get('AWS_REGION', 'us-east-1'))\n"
               "s3.put_object(Bucket=os.environ['STORAGE_BUCKET'], Key='from/inside.txt', Body=b'hi')\n"
               "print(s3.get_object(Bucket=os.environ['STORAGE_BUCKET'], Key='from/inside.txt')['Body'].read().decode())\n"
               "EOF")
    assert boto.exit_code == 0 and boto.stdout.strip() == "hi", boto.stderr
    address = f"inside-{uuid.uuid4().hex[:6]}@example.com"
    signup = run(sandbox, "python3 - <<'EOF'\n"
                 "import json, os, urllib.request\n"
                 "body = json.dumps({'email': '%s', 'password': '%s'}).encode()\n"
                 "req = urllib.request.Request(os.environ['AUTH_URL'] + '/signup', data=body,\n"
                 "                             headers={'content-type': 'application/json'})\n"
                 "print(urllib.request.urlopen(req, timeout=20).status)\n"
                 "EOF" % (address, PASSWORD))
    assert signup.exit_code == 0 and signup.stdout.strip() == "200", signup.stderr
    # What was done inside is there, seen by independent clients outside.
    assert redis_get(a_env["REDIS_URL"], "k") == "inside"
    session = gotrue(a_env["AUTH_URL"]).sign_in_with_password({"email": address, "password": PASSWORD})
    assert session.user.email == address

    # Nothing else of the host: B's Redis, B's instance, a server on the
    # loopback, A's own Redis through a wrong port. All refused at once.
    listener_port, accepted = host_listener
    targets = {
        "b-redis": port_of(b_env["REDIS_URL"]),
        "b-instance": b_instance.port,
        "host-server": listener_port,
    }
    assert targets["b-redis"] != port_of(a_env["REDIS_URL"])
    script = "; ".join(
        f"(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo {name}=open || echo {name}=refused"
        for name, port in targets.items()
    )
    began = time.monotonic()
    tried = run(sandbox, f"exec bash -c '{script}'")
    assert time.monotonic() - began < 10
    assert sorted(tried.stdout.split()) == sorted(f"{n}=refused" for n in targets), tried.stdout
    assert accepted == []
    # Its network namespace is not the host's.
    inside = run(sandbox, "readlink /proc/self/ns/net").stdout.strip()
    assert inside.startswith("net:[") and inside != os.readlink("/proc/self/ns/net")

    # A minimal /etc: no shadow, no host accounts.
    etc = run(sandbox, "ls /etc; cat /etc/shadow 2>&1; getent passwd | cut -d: -f1").stdout.split()
    assert "passwd" in etc and "resolv.conf" in etc and "ssl" in etc, etc
    assert "shadow" not in etc and "sudoers" not in etc and "ssh" not in etc, etc
    assert "No" in etc  # "cat: /etc/shadow: No such file or directory"
    accounts = {line for line in etc if line in ("root", "sandbox", "postgres", "mds", "nobody")}
    assert accounts <= {"root", "sandbox"}, etc


def redis_get(url: str, key: str) -> str:
    import redis
    return redis.Redis.from_url(url).get(key).decode()


@pytest.fixture
def outside():
    """A namespace with a veth pair to the host, and an HTTP server at
    OUTSIDE_ADDR:8080 in it: the only "outside" a sandbox is sent to."""
    if subprocess.run(["ip", "route", "show", "default"], capture_output=True, text=True).stdout.strip() == "":
        pytest.skip("this host has no default route, so mds gives no egress to sandboxes")
    with veth_namespace("mdso", HOST_ADDR, OUTSIDE_ADDR) as ns:
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns, "python3", "-m", "http.server", "8080", "--bind", OUTSIDE_ADDR],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection((OUTSIDE_ADDR, 8080), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the outside server did not start"
                    time.sleep(0.1)
            yield f"http://{OUTSIDE_ADDR}:8080/"
        finally:
            server.kill()


CURL = "curl -s -o /dev/null -w '%{http_code}' --max-time 5 "


def test_egress_follows_the_project_and_private_ranges_are_always_refused(client, mds, outside):
    project = new_project(mds, "egress", "postgres")
    assert project["network_egress"] == "allow"
    sandbox = client.sandboxes.create(project_id=project["id"], metadata={"environment": "production"})
    MADE.append(("sandboxes", sandbox.id))

    # allow: the outside answers, through pasta, from the sandbox's namespace.
    got = run(sandbox, CURL + outside)
    assert got.stdout == "200", (got.stdout, got.stderr)
    # The private, shared and link-local ranges are refused inside, at once
    # (the metadata address among them), whatever the host routes.
    began = time.monotonic()
    refused = run(sandbox, "exec bash -c 'for a in 169.254.169.254 10.0.0.1 172.16.0.1 192.168.0.1 100.64.0.1; do "
                           "(exec 3<>/dev/tcp/$a/80) 2>&1 | tail -1; done'")
    assert time.monotonic() - began < 5, refused.stdout
    lines = refused.stdout.strip().splitlines()
    assert len(lines) == 5 and all("Permission denied" in l or "unreachable" in l for l in lines), lines

    # none: only the data services; the change reaches the running sandbox.
    ok(api(mds, "PATCH", f"/projects/{project['id']}", json={"network_egress": "none"}))
    got = run(sandbox, CURL + outside)
    assert got.stdout == "000", got.stdout
    assert run(sandbox, 'psql "$DATABASE_URL" -Atc "SELECT 1"').stdout.strip() == "1"
    fresh = client.sandboxes.create(project_id=project["id"], metadata={"environment": "production"})
    MADE.append(("sandboxes", fresh.id))
    assert run(fresh, CURL + outside).stdout == "000"
    # Its namespace has a loopback and nothing else.
    assert run(fresh, "tail -n +3 /proc/net/dev | cut -d: -f1").stdout.split() == ["lo"]

    # And back.
    ok(api(mds, "PATCH", f"/projects/{project['id']}", json={"network_egress": "allow"}))
    assert run(sandbox, CURL + outside).stdout == "200"
    # A stopped sandbox lets its pasta go; resumed, it has a new one.
    pastas = lambda: subprocess.run(["pgrep", "-f", f"netns/{sandbox.id}"], capture_output=True,  # noqa: E731
                                    text=True).stdout.split()
    assert len(pastas()) == 1
    sandbox.stop()
    deadline = time.monotonic() + 10
    while pastas():
        assert time.monotonic() < deadline, "the stopped sandbox's pasta still runs"
        time.sleep(0.1)
    sandbox.resume()
    assert run(sandbox, CURL + outside).stdout == "200"

    bad = api(mds, "PATCH", f"/projects/{project['id']}", json={"network_egress": "some"})
    assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == "network_egress", bad.text
    bad = api(mds, "POST", "/projects", json={"name": "x", "network_egress": True})
    assert bad.status_code in (400, 422), bad.text
