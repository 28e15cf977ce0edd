"""Foundation benchmark (issue 2).

1. Cold start (fresh data dir: initdb, migrations, admin key) and warm start
   of `mds server`, each until GET /healthz answers 200.
2. GET /api/v1/projects/{id} at 64 connections with wrk, against GET
   /healthz in the same run (the raw baseline: same server, no auth, no
   database). Rounds alternate between the two so machine noise hits both.

Prints medians and spreads (min-max) as Markdown for BENCHMARKS.md.
Run it with scripts/bench foundation.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = os.environ.get("MDS_BIN", "target/release/mds")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
DURATION = os.environ.get("BENCH_DURATION", "10s")
CONNECTIONS = 64


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
            return r.status == 200
    except Exception:
        return False


def start(data_dir: Path) -> tuple[subprocess.Popen, str, float]:
    began = time.monotonic()
    proc = subprocess.Popen(
        [BIN, "server", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "MDS_LOG": "warn"},
    )
    url = ""
    while True:
        if proc.poll() is not None:
            sys.exit(f"mds exited with {proc.returncode}")
        if not url:
            try:
                info = json.loads((data_dir / "server.json").read_text())
                if info["pid"] == proc.pid:
                    url = info["url"]
            except (OSError, ValueError, KeyError):
                pass
        if url and healthy(url):
            return proc, url, time.monotonic() - began
        time.sleep(0.005)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def spread(values: list[float], fmt: str) -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def wrk(url: str, key: str | None) -> float:
    cmd = ["wrk", "-t", "2", "-c", str(CONNECTIONS), "-d", DURATION, "--latency"]
    if key:
        cmd += ["-H", f"Authorization: Bearer {key}"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        sys.exit(f"wrk saw errors:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="mds-bench-"))
    root.chmod(0o711)
    cold, warm = [], []
    for i in range(ROUNDS):
        data_dir = root / f"cold-{i}"
        proc, _, took = start(data_dir)
        cold.append(took)
        stop(proc)
        proc, _, took = start(data_dir)
        warm.append(took)
        stop(proc)

    data_dir = root / "load"
    proc, url, _ = start(data_dir)
    key = (data_dir / "admin-api-key").read_text().strip()
    req = urllib.request.Request(
        url + "/api/v1/projects", data=json.dumps({"name": "bench"}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        project_id = json.load(r)["data"]["id"]
    wrk(url + "/healthz", None)  # warm-up
    health, project, ratio = [], [], []
    for _ in range(ROUNDS):
        h = wrk(url + "/healthz", None)
        p = wrk(f"{url}/api/v1/projects/{project_id}", key)
        health.append(h)
        project.append(p)
        ratio.append(p / h)
    stop(proc)

    print(f"machine: {os.cpu_count()} cores; {ROUNDS} rounds; wrk {DURATION} at {CONNECTIONS} connections")
    print()
    print("| measurement | median (min-max) |")
    print("|---|---|")
    print(f"| cold start to /healthz 200 (initdb, migrations, admin key) | {spread(cold, '{:.2f} s')} |")
    print(f"| warm start to /healthz 200 | {spread(warm, '{:.2f} s')} |")
    print(f"| GET /healthz (baseline), req/s | {spread(health, '{:,.0f}')} |")
    print(f"| GET /api/v1/projects/{{id}}, req/s | {spread(project, '{:,.0f}')} |")
    print(f"| ratio project / healthz | {spread(ratio, '{:.2f}')} |")


if __name__ == "__main__":
    main()
