"""Audit log benchmark (issue 18): what recording an event costs a write
route. Two servers of the same binary run side by side, one with the
audit log (the default) and one with `--audit false`; rounds alternate
between them. Each round sends BENCH_REQUESTS sequential `PUT
/projects/{p}/shared-variables` (one variable set, the `variable.set`
event) over one keep-alive connection and takes the p50 and p99 of the
client-side latency. Target: p50 with the log at most 5% above without.

Also checks that the audited server recorded one event per request and
that its chain verifies. Prints Markdown for BENCHMARKS.md. Run it with
scripts/bench audit. BENCH_ROUNDS (5), BENCH_REQUESTS (2000)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx

from common import BEGAN, BIN, Server, say, spread

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "2000"))


def round_trip(server: Server, pid: str, n: int) -> list[float]:
    """Latencies (ms) of n variable sets, one connection, one after another."""
    headers = {"Authorization": f"Bearer {server.key}"}
    out = []
    with httpx.Client(base_url=f"{server.url}/api/v1", headers=headers, timeout=30) as http:
        for i in range(n):
            body = {"env": "production", "variables": {"BENCH_VALUE": str(i)}}
            began = time.perf_counter()
            r = http.put(f"/projects/{pid}/shared-variables", json=body)
            out.append((time.perf_counter() - began) * 1000)
            if r.status_code != 200:
                raise RuntimeError(f"{r.status_code} {r.text}")
    return out


def main() -> None:
    servers = {}
    projects = {}
    for name, extra in (("audit on", ()), ("audit off", ("--audit", "false"))):
        root = Path(tempfile.mkdtemp(prefix="mds-bench-audit-"))
        root.chmod(0o711)
        servers[name] = Server(root, *extra)
        projects[name] = servers[name].api("POST", "/projects", json={"name": f"audit-{uuid.uuid4().hex[:6]}"})["id"]
        round_trip(servers[name], projects[name], 200)  # warm-up
        say(f"{name}: {servers[name].url}")
    p50 = {name: [] for name in servers}
    p99 = {name: [] for name in servers}
    for r in range(ROUNDS):
        for name in (servers if r % 2 == 0 else reversed(list(servers))):
            lat = sorted(round_trip(servers[name], projects[name], REQUESTS))
            p50[name].append(statistics.median(lat))
            p99[name].append(lat[int(len(lat) * 0.99) - 1])
            say(f"{r}: {name} p50 {p50[name][-1]:.3f} ms p99 {p99[name][-1]:.3f} ms")
    on = servers["audit on"]
    time.sleep(1)
    recorded = on.api("GET", "/audit-events", params={"action": "variable.set", "limit": 1000})["events"]
    verified = on.api("GET", "/audit-events/verify")
    expected = 200 + ROUNDS * REQUESTS
    for server in servers.values():
        server.stop()

    ratios = [a / b for a, b in zip(p50["audit on"], p50["audit off"])]
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {os.cpu_count()} cores, kernel {platform.release()}; mds at {commit} ({BIN}); "
          f"{ROUNDS} rounds of {REQUESTS} requests per server; {datetime.now(timezone.utc):%Y-%m-%d}; "
          f"load average at the end {os.getloadavg()[0]:.1f}; run took {time.monotonic() - BEGAN:.0f} s")
    print()
    print("| measurement | median (min-max) |")
    print("|---|---|")
    print(f"| `PUT shared-variables` p50, audit off, ms | {spread(p50['audit off'], '{:.3f}')} |")
    print(f"| the same, audit on, ms | {spread(p50['audit on'], '{:.3f}')} |")
    print(f"| ratio p50 on / off (target at most 1.05) | **{spread(ratios, '{:.3f}')}** |")
    print(f"| p99, off / on, ms | {spread(p99['audit off'], '{:.3f}')} / {spread(p99['audit on'], '{:.3f}')} |")
    print(f"| events recorded (variable.set), chain | {verified['events']} in the chain "
          f"(expected at least {expected}, last page {len(recorded)}); broken: {verified['broken']} |")


if __name__ == "__main__":
    main()
