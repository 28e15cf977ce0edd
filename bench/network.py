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
   same URL, alternated; target inside/host at least 0.8.

Prints Markdown for BENCHMARKS.md. Never a gate.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from common import Server, say, spread

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "20"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "400"))
PGBENCH_ROUNDS = int(os.environ.get("BENCH_PGBENCH_ROUNDS", "5"))
PGBENCH_SECS = int(os.environ.get("BENCH_PGBENCH_SECS", "8"))

APP = r'''
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
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


def create_then_exec(server: Server, pid: str) -> list[float]:
    samples = []
    for _ in range(ROUNDS):
        began = time.perf_counter()
        sandbox = server.api("POST", "/sandboxes", json={"project_id": pid})["id"]
        out = exec_in(server, sandbox, "echo ok")
        samples.append((time.perf_counter() - began) * 1000)
        assert out["stdout"].strip() == "ok", out
        server.api("DELETE", f"/sandboxes/{sandbox}")
    return samples


def router(server: Server, pid: str) -> list[float]:
    sandbox = server.api("POST", "/sandboxes", json={"project_id": pid, "environment": "production"})["id"]
    exec_in(server, sandbox, f"cat > app.py <<'EOF'\n{APP}\nEOF")
    name = f"web-{uuid.uuid4().hex[:6]}"
    deployment = server.api("POST", "/deployments", json={
        "name": name, "run_command": "python3 app.py",
        "metadata": {"project_id": pid, "health_check_path": "/"}})
    slug = server.api("POST", f"/deployments/{deployment['id']}/publish",
                      json={"source_sandbox_id": sandbox})["deployment"]["slug"]
    host = {"Host": f"{slug}.production.localhost"}
    per_request = []
    with httpx.Client(timeout=30) as http:
        for _ in range(50):
            assert http.get(server.url, headers=host).text == "ok"
        for _ in range(ROUNDS):
            began = time.perf_counter()
            for _ in range(REQUESTS):
                http.get(server.url, headers=host)
            per_request.append((time.perf_counter() - began) / REQUESTS * 1e6)
    server.api("DELETE", f"/deployments/{deployment['id']}")
    server.api("DELETE", f"/sandboxes/{sandbox}")
    return per_request


def pgbench(server: Server, pid: str) -> tuple[list[float], list[float]]:
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

    inside, host = [], []
    for _ in range(PGBENCH_ROUNDS):
        out = exec_in(server, sandbox, f'pgbench {args} "$DATABASE_URL"', timeout=PGBENCH_SECS + 60)
        inside.append(tps(out["stdout"]))
        run = subprocess.run(["pgbench", *args.split(), url], check=True, capture_output=True, text=True)
        host.append(tps(run.stdout))
    server.api("DELETE", f"/sandboxes/{sandbox}")
    return inside, host


def main() -> None:
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="mds-bench-net-") as tmp:
        for label, extra in (("isolated", ()), ("shared", ("--network-isolation", "false"))):
            root = Path(tmp) / label
            root.mkdir()
            root.chmod(0o711)
            say(f"starting the {label} server")
            server = Server(root, *extra)
            pid = project(server)
            say(f"{label}: create -> exec x{ROUNDS}")
            results.setdefault(label, {})["create_exec"] = create_then_exec(server, pid)
            say(f"{label}: router x{ROUNDS}x{REQUESTS}")
            results[label]["router"] = router(server, pid)
            if label == "isolated":
                say("isolated: pgbench -S inside and from the host")
                inside, host = pgbench(server, pid)
                results[label]["pg_inside"], results[label]["pg_host"] = inside, host
            server.stop()
    iso, shared = results["isolated"], results["shared"]
    ratios = [i / h for i, h in zip(iso["pg_inside"], iso["pg_host"])]
    print("| measure | isolated | shared (before) | difference |")
    print("|---|---|---|---|")
    ce = statistics.median(iso["create_exec"]) - statistics.median(shared["create_exec"])
    print(f"| sandbox create -> exec, p50 (ms) | {spread(iso['create_exec'], '{:.1f}')} | "
          f"{spread(shared['create_exec'], '{:.1f}')} | {ce:+.1f} ms (target <= +10) |")
    rt = statistics.median(iso["router"]) - statistics.median(shared["router"])
    print(f"| router request to an instance, per request (us) | {spread(iso['router'], '{:.0f}')} | "
          f"{spread(shared['router'], '{:.0f}')} | {rt:+.0f} us (target <= +100) |")
    print()
    print("| pgbench -S, 10 clients, pooled URL | tps |")
    print("|---|---|")
    print(f"| inside a sandbox | {spread(iso['pg_inside'], '{:.0f}')} |")
    print(f"| from the host | {spread(iso['pg_host'], '{:.0f}')} |")
    print(f"| inside / host, per alternated pair | {spread(ratios, '{:.2f}')} (target >= 0.8) |")


if __name__ == "__main__":
    main()
