"""Credential rotation under load (issue 18).

A deployment (the test suite's app: each request INSERTs a row through
psql with the instance's DATABASE_URL) serves a steady stream of requests
from BENCH_CLIENTS threads while the environment's credentials are rotated
BENCH_ROUNDS times (grace 3 s, so each round's old login is revoked, and
its sessions ended, before the next). Counts every request that failed,
and compares latency inside the rotation windows with outside them.

The numbers that matter are counts, not times, so the binary may be the
debug one (MDS_BIN); the report says which. Prints Markdown for
BENCHMARKS.md. Run it with scripts/bench rotation.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "sdk"))
from test_deployments import APP  # noqa: E402  the one app the suite deploys

import common  # noqa: E402
from common import BIN, say, spread  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "4"))


def main() -> None:
    from miosa import Miosa

    root = Path(tempfile.mkdtemp(prefix="mds-bench-rotation-"))
    root.chmod(0o711)
    server = common.Server(root, "--expiry-check", "1s")
    client = Miosa(api_key=server.key, base_url=server.url, max_retries=0)
    project = client.projects.create(f"rot-{uuid.uuid4().hex[:6]}")
    pid = project["id"]
    server.api("POST", f"/projects/{pid}/data-services?wait=true", json={"type": "postgres"})
    import psycopg
    with psycopg.connect(server.env(pid)["DATABASE_URL"]) as conn:
        conn.execute("CREATE TABLE notes (body text)")
    sandbox = client.sandboxes.create(project_id=pid, metadata={"environment": "production"})
    for path, text in (("app.py", APP), ("VERSION", "v1")):
        done = sandbox.exec.run(f"cat > {path} <<'MDS_EOF'\n{text}\nMDS_EOF")
        assert done.exit_code == 0, done.stderr
    deployment = client.deployments.create(
        name=f"web-{uuid.uuid4().hex[:6]}", run_command="python3 app.py",
        metadata={"project_id": pid, "health_check_path": "/health", "health_check_grace_sec": 20})
    slug = client.deployments.publish(deployment.id, source_sandbox_id=sandbox.id).deployment.slug
    host = {"Host": f"{slug}.production.localhost"}
    say(f"serving {slug}; {CLIENTS} clients, {ROUNDS} rotations")

    seen: list[tuple[float, float, int]] = []  # (start, seconds, status; 0 = no answer)
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    status = http.get(f"{server.url}/write/{uuid.uuid4().hex[:8]}", headers=host).status_code
                except httpx.HTTPError:
                    status = 0
                seen.append((began, time.monotonic() - began, status))

    threads = [threading.Thread(target=hammer) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    windows: list[tuple[float, float]] = []
    took: list[float] = []
    try:
        time.sleep(3)
        for r in range(ROUNDS):
            began = time.monotonic()
            answer = server.api("POST", f"/projects/{pid}/environments/production/credentials/rotate",
                                json={"grace": "3s"})
            ended = time.monotonic()
            windows.append((began, ended))
            took.append(ended - began)
            say(f"round {r}: rotated to {answer['rotated'][0]['user']} in {ended - began:.1f}s, "
                f"{answer['restarted']} deployment restarted")
            time.sleep(6)  # the grace period ends, the old login goes
    finally:
        stop.set()
        for t in threads:
            t.join()
    failed = [s for s in seen if s[2] != 200]
    inside = [d * 1000 for b, d, _ in seen if any(w0 <= b <= w1 for w0, w1 in windows)]
    outside = [d * 1000 for b, d, _ in seen if not any(w0 <= b <= w1 for w0, w1 in windows)]
    with psycopg.connect(server.env(pid)["DATABASE_URL"]) as conn:
        rows = conn.execute("SELECT count(*) FROM notes").fetchone()[0]
    server.stop()

    def p99(values: list[float]) -> float:
        return statistics.quantiles(values, n=100)[98] if len(values) > 1 else float("nan")

    print(f"""
### Credential rotation under load (issue 18)

Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; shared and noisy.
Command: `scripts/bench rotation` (BENCH_ROUNDS={ROUNDS}, BENCH_CLIENTS={CLIENTS}); binary `{BIN}`.

| measurement | value |
|---|---|
| requests (each an INSERT through psql with the instance's DATABASE_URL) | {len(seen):,} |
| **failed requests** (not 200, or no answer) | **{len(failed)}** |
| rows written (one per successful request) | {rows:,} |
| rotation call (new login proved, switched, deployment restarted), s | {spread(took, '{:.1f}')} |
| latency p50 / p99 outside rotations, ms | {statistics.median(outside):.0f} / {p99(outside):.0f} |
| latency p50 / p99 during rotations, ms | {statistics.median(inside):.0f} / {p99(inside):.0f} |
""")
    if failed:
        sys.exit(f"{len(failed)} requests failed: {failed[:5]}")


if __name__ == "__main__":
    main()
