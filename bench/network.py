"""Network isolation bench (issue 19): `scripts/bench network`.

Two servers of the same release binary in one run: one isolated (the
default), one with `--network-isolation false` (the jail shares the
host's network, as before issue 19). Against each:

1. sandbox create -> first exec (`echo ok`), ROUNDS times: p50 and spread;
   target isolated at most +10 ms over shared;
2. one request through the router to an instance (`GET /`, keep-alive
   client, REQUESTS sequential requests per round): p50 per request;
   target at most +100 us over shared.

And on the isolated server only:

3. `pgbench -S` (10 clients, 2 threads) through the pooled DATABASE_URL
   from inside a sandbox, against the same pgbench from the host on the
   same URL, and through socat (a user-space relay, the usual peer of
   mds's forward) from the host, in turns; target inside/host at least
   0.8.

Prints Markdown for BENCHMARKS.md. Never a gate.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from urllib.parse import urlparse

import httpx

from common import Server, say, spread

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "30"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "400"))
PGBENCH_ROUNDS = int(os.environ.get("BENCH_PGBENCH_ROUNDS", "8"))
PGBENCH_SECS = int(os.environ.get("BENCH_PGBENCH_SECS", "8"))

APP = r'''
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        # One write: headers and body in separate small writes would meet
        # Nagle and the router's delayed ACK (40 ms a request).
        self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'''


def exec_in(server: Server, sandbox: str, command: str, timeout: int = 120) -> dict:
    return server.api("POST", f"/sandboxes/{sandbox}/exec", json={"command": command, "timeout": timeout})


def project(server: Server) -> str:
    pid = server.api("POST", "/projects", json={"name": f"net-{uuid.uuid4().hex[:6]}"})["id"]
    server.api("POST", f"/projects/{pid}/data-services?wait=true", json={"type": "postgres"})
    return pid


def create_then_exec(server: Server, pid: str) -> float:
    began = time.perf_counter()
    sandbox = server.api("POST", "/sandboxes", json={"project_id": pid})["id"]
    out = exec_in(server, sandbox, "echo ok")
    elapsed = (time.perf_counter() - began) * 1000
    assert out["stdout"].strip() == "ok", out
    server.api("DELETE", f"/sandboxes/{sandbox}")
    return elapsed


def deploy(server: Server, pid: str) -> dict[str, str]:
    """An instance of APP in production; the Host header that reaches it."""
    sandbox = server.api("POST", "/sandboxes", json={"project_id": pid, "environment": "production"})["id"]
    exec_in(server, sandbox, f"cat > app.py <<'EOF'\n{APP}\nEOF")
    deployment = server.api("POST", "/deployments", json={
        "name": f"web-{uuid.uuid4().hex[:6]}", "run_command": "python3 app.py",
        "metadata": {"project_id": pid, "health_check_path": "/"}})
    slug = server.api("POST", f"/deployments/{deployment['id']}/publish",
                      json={"source_sandbox_id": sandbox})["deployment"]["slug"]
    return {"Host": f"{slug}.production.localhost"}


def router_round(http: httpx.Client, server: Server, host: dict[str, str]) -> float:
    """Microseconds per request over REQUESTS sequential keep-alive requests."""
    began = time.perf_counter()
    for _ in range(REQUESTS):
        http.get(server.url, headers=host)
    return (time.perf_counter() - began) / REQUESTS * 1e6


def pgbench(server: Server, pid: str) -> dict[str, list[float]]:
    env = server.env(pid)
    url = env["DATABASE_URL"]
    subprocess.run(["pgbench", "-i", "-q", "-s", "5", env["DATABASE_URL_UNPOOLED"]], check=True,
                   capture_output=True)
    sandbox = server.api("POST", "/sandboxes", json={"project_id": pid, "environment": "production"})["id"]
    args = f"-S -n -c 10 -j 2 -T {PGBENCH_SECS}"

    def tps(text: str) -> float:
        for line in text.splitlines():
            if line.startswith("tps ="):
                return float(line.split()[2])
        raise RuntimeError(text)

    # A peer for the forward: socat, the usual user-space relay, from the
    # host's loopback to the same port.
    port = urlparse(url).port
    relay_port = free_port()
    relay = subprocess.Popen(["socat", f"TCP-LISTEN:{relay_port},bind=127.0.0.1,fork,reuseaddr,nodelay",
                              f"TCP:127.0.0.1:{port},nodelay"])
    relayed = url.replace(f":{port}/", f":{relay_port}/")
    time.sleep(0.5)
    results: dict[str, list[float]] = {"inside": [], "host": [], "socat": []}
    order = list(results)
    for round_ in range(PGBENCH_ROUNDS):
        # Which goes first changes every round too.
        for which in order[round_ % 3:] + order[:round_ % 3]:
            if which == "inside":
                out = exec_in(server, sandbox, f'pgbench {args} "$DATABASE_URL"', timeout=PGBENCH_SECS + 60)
                results[which].append(tps(out["stdout"]))
            else:
                target = url if which == "host" else relayed
                run = subprocess.run(["pgbench", *args.split(), target], check=True, capture_output=True, text=True)
                results[which].append(tps(run.stdout))
    relay.kill()
    server.api("DELETE", f"/sandboxes/{sandbox}")
    return results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mds-bench-net-") as tmp:
        Path(tmp).chmod(0o711)
        servers: dict[str, tuple[Server, str]] = {}
        for label, extra in (("isolated", ()), ("shared", ("--network-isolation", "false"))):
            root = Path(tmp) / label
            root.mkdir()
            root.chmod(0o711)
            say(f"starting the {label} server")
            server = Server(root, *extra, log_name=f"{label}.log")
            servers[label] = (server, project(server))
        # Rounds alternate between the two servers, so both see the same
        # machine (it is shared and noisy).
        create_exec: dict[str, list[float]] = {"isolated": [], "shared": []}
        say(f"create -> exec, {ROUNDS} rounds each, alternated")
        for _ in range(ROUNDS):
            for label, (server, pid) in servers.items():
                create_exec[label].append(create_then_exec(server, pid))
        say(f"router, {ROUNDS} rounds of {REQUESTS} requests each, alternated")
        hosts = {label: deploy(server, pid) for label, (server, pid) in servers.items()}
        per_request: dict[str, list[float]] = {"isolated": [], "shared": []}
        with httpx.Client(timeout=30) as http:
            for label, (server, _) in servers.items():
                for _ in range(50):
                    assert http.get(server.url, headers=hosts[label]).text == "ok"
            for _ in range(ROUNDS):
                for label, (server, _) in servers.items():
                    per_request[label].append(router_round(http, server, hosts[label]))
        servers["shared"][0].stop()
        say("pgbench -S inside a sandbox and from the host, alternated")
        pg = pgbench(*servers["isolated"])
        servers["isolated"][0].stop()
    inside, host, relayed = pg["inside"], pg["host"], pg["socat"]
    ratios = [i / h for i, h in zip(inside, host)]
    relay_ratios = [r / h for r, h in zip(relayed, host)]
    print("| measure | isolated | shared (before) | difference of medians |")
    print("|---|---|---|---|")
    iso, shared = create_exec["isolated"], create_exec["shared"]
    ce = statistics.median(iso) - statistics.median(shared)
    print(f"| sandbox create -> exec (ms) | {spread(iso, '{:.1f}')} | {spread(shared, '{:.1f}')} | "
          f"{ce:+.1f} ms (target <= +10) |")
    iso, shared = per_request["isolated"], per_request["shared"]
    rt = statistics.median(iso) - statistics.median(shared)
    print(f"| router request to an instance (us) | {spread(iso, '{:.0f}')} | {spread(shared, '{:.0f}')} | "
          f"{rt:+.0f} us (target <= +100) |")
    print()
    print("| pgbench -S, 10 clients, pooled URL | tps |")
    print("|---|---|")
    print(f"| inside a sandbox | {spread(inside, '{:.0f}')} |")
    print(f"| from the host | {spread(host, '{:.0f}')} |")
    print(f"| from the host through socat | {spread(relayed, '{:.0f}')} |")
    print(f"| inside / host, per round | {spread(ratios, '{:.2f}')} (target >= 0.8) |")
    print(f"| socat / host, per round | {spread(relay_ratios, '{:.2f}')} |")


if __name__ == "__main__":
    main()
