"""Connection pooler benchmark (issue 17).

Drives the real release binary (MDS_BIN, default target/release/mds) with
its managed PostgreSQL and its pooler (pgbouncer), one tenant database
(`pgbench -i`, scale BENCH_SCALE), and measures in one run, rounds
alternating between the pooled URL (DATABASE_URL) and the direct one
(DATABASE_URL_UNPOOLED) of the same binding:

1. `pgbench -S -c 10 -j 2 -T T` (read-only, simple protocol) pooled
   against direct. Target: ratio pooled / direct at least 0.8. Also the
   CPU pgbouncer uses meanwhile (/proc/PID/stat) and how busy the whole
   machine is (/proc/stat) in each run.
2. The same at 500 clients: the pooled run must finish with no
   connection error; the direct one meets the role's connection limit
   (`--tenant-connection-limit`, 20) and what it answers is reported.
3. New connection plus `SELECT 1`, per second: `pgbench -C -f select1.sql
   -c 4 -j 2 -T T` (libpq, a full SCRAM exchange per connection, the
   client's PBKDF2 included), pooled against direct. Target: pooled at
   least 3x. And the same with a raw-protocol asyncio client that
   computes the salted password once (4 connections at a time), which
   leaves out the client's PBKDF2 and so shows the server side alone.
4. kill -9 of the pooler until a query through DATABASE_URL works again
   (the issue asks for 1 s).

Prints Markdown for BENCHMARKS.md. Run it with scripts/bench pooler.
BENCH_ROUNDS (3), BENCH_SECONDS (15), BENCH_SCALE (10).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import platform
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import httpx

import common
from common import BEGAN, BIN, say, spread
import psycopg

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "15"))
SCALE = int(os.environ.get("BENCH_SCALE", "10"))
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))

class Server(common.Server):
    def pooler_pids(self) -> list[int]:
        ini = Path(os.path.realpath(self.data_dir)) / "engines" / "pooler" / "pgbouncer.ini"
        out = subprocess.run(["pgrep", "-f", str(ini)], capture_output=True, text=True).stdout
        return sorted(int(p) for p in out.split())


# -- CPU ----------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / TICK, sum(values) / TICK


class CpuWatch:
    """Cores used by the pooler, and the machine's busy share, over a span."""

    def __init__(self, pooler: int | None) -> None:
        self.pooler = pooler
        self.began = time.monotonic()
        self.pooler0 = process_cpu(pooler) if pooler else 0.0
        self.machine0 = machine_cpu()

    def done(self) -> tuple[float | None, float]:
        wall = time.monotonic() - self.began
        busy, total = machine_cpu()
        share = (busy - self.machine0[0]) / max(total - self.machine0[1], 1e-9)
        cores = (process_cpu(self.pooler) - self.pooler0) / wall if self.pooler else None
        return cores, share


# -- pgbench ------------------------------------------------------------------


def pgbench(url: str, *args: str) -> dict:
    """One pgbench run: tps, failures, and what went wrong if it did."""
    done = subprocess.run([str(PG_BIN / "pgbench"), "-n", *args, url], capture_output=True, text=True)
    out = done.stdout + done.stderr
    tps = re.search(r"tps = ([\d.]+)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    aborted = re.search(r"(\d+) of \d+ clients? aborted|aborted in command|client \d+ aborted", out)
    errors = [line.strip() for line in out.splitlines()
              if "FATAL" in line or "error" in line.lower() or "aborted" in line]
    connect = re.search(r"average connection time = ([\d.]+) ms", out)
    return {
        "rc": done.returncode,
        "tps": float(tps.group(1)) if tps else None,
        "failed": int(failed.group(1)) if failed else None,
        "aborted": bool(aborted) or done.returncode != 0,
        "errors": errors,
        "connect_ms": float(connect.group(1)) if connect else None,
    }


# -- a raw-protocol client: connect, SCRAM, SELECT 1, terminate ----------------


def message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


async def read(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readexactly(5)
    body = await reader.readexactly(struct.unpack("!I", head[1:])[0] - 4)
    if head[:1] == b"E":
        raise ConnectionError(body.replace(b"\0", b" ").decode(errors="replace"))
    return head[:1], body


async def connect_select_1(port: int, user: str, password: str, salted: dict) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        startup = struct.pack("!I", 196608) + b"user\0" + user.encode() + b"\0database\0" + user.encode() + b"\0\0"
        writer.write(struct.pack("!I", len(startup) + 4) + startup)
        await read(reader)
        nonce = base64.b64encode(os.urandom(18)).decode()
        bare = f"n=,r={nonce}"
        first = f"n,,{bare}".encode()
        writer.write(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first))
        _, body = await read(reader)
        server_first = body[4:].decode()
        attrs = dict(part.split("=", 1) for part in server_first.split(","))
        key = (base64.b64decode(attrs["s"]), int(attrs["i"]))
        if key not in salted:
            salted[key] = hashlib.pbkdf2_hmac("sha256", password.encode(), *key)
        client_key = hmac.new(salted[key], b"Client Key", hashlib.sha256).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        signed = f"{bare},{server_first},{without_proof}".encode()
        signature = hmac.new(hashlib.sha256(client_key).digest(), signed, hashlib.sha256).digest()
        proof = base64.b64encode(bytes(x ^ y for x, y in zip(client_key, signature))).decode()
        writer.write(message(b"p", f"{without_proof},p={proof}".encode()))
        kind = b""
        while kind != b"Z":
            kind, _ = await read(reader)
        writer.write(message(b"Q", b"SELECT 1\0"))
        kind = b""
        while kind != b"Z":
            kind, _ = await read(reader)
        writer.write(message(b"X", b""))
    finally:
        writer.close()


async def connect_loop(url: str, seconds: float, concurrency: int = 4) -> tuple[float, int]:
    """Connections (each with a SELECT 1) per second, and failures."""
    parts = urlsplit(url)
    salted: dict = {}
    done = failed = 0
    stop = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done, failed
        while time.monotonic() < stop:
            try:
                await connect_select_1(parts.port, parts.username, parts.password, salted)
                done += 1
            except (OSError, ConnectionError, asyncio.IncompleteReadError):
                failed += 1

    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.monotonic() - began), failed


# -- the run ------------------------------------------------------------------


def main() -> None:
    if not Path(BIN).is_file():
        sys.exit(f"{BIN} is missing: cargo build --release --bin mds")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    root = Path(tempfile.mkdtemp(prefix="mds-bench-pooler-"))
    root.chmod(0o711)
    say(f"root {root}")
    server = Server(root)
    say(f"mds at {server.url}")
    pid = server.api("POST", "/projects", json={"name": f"pooler-{uuid.uuid4().hex[:6]}"})["id"]
    service = server.api("POST", f"/projects/{pid}/data-services?wait=true", json={"type": "postgres"})
    pool = next(b["pool"] for b in service["bindings"] if b["environment"] == "production")
    # The pgbouncer this server runs (MDS_PGBOUNCER picks another).
    info = next(line for line in httpx.get(f"{server.url}/metrics", timeout=30).text.splitlines()
                if line.startswith("mds_pooler_info"))
    bouncer_version = re.search(r'version="([^"]*)"', info).group(1)
    env = server.env(pid)
    pooled, direct = env["DATABASE_URL"], env["DATABASE_URL_UNPOOLED"]
    if pooled == direct:
        sys.exit("DATABASE_URL is not pooled")
    say(f"pool {pool['mode']} size {pool['size']}; pooled port {urlsplit(pooled).port}, "
        f"direct port {urlsplit(direct).port}")
    subprocess.run([str(PG_BIN / "pgbench"), "-i", "-q", "-s", str(SCALE), direct], check=True, capture_output=True)
    script = root / "select1.sql"
    script.write_text("SELECT 1;\n")

    results: dict[str, list[float]] = {}
    notes: list[str] = []

    def put(name: str, value: float | None) -> None:
        if value is not None:
            results.setdefault(name, []).append(value)

    read_only = ["-S", "-j", "2", "-T", str(SECONDS)]
    direct_500: list[dict] = []
    pooled_500: list[dict] = []
    for r in range(ROUNDS):
        # 1. 10 clients.
        [bouncer] = server.pooler_pids()
        watch = CpuWatch(bouncer)
        p = pgbench(pooled, *read_only, "-c", "10")
        cores, busy_pooled = watch.done()
        watch = CpuWatch(None)
        d = pgbench(direct, *read_only, "-c", "10")
        _, busy_direct = watch.done()
        put("s10_pooler_cores", cores)
        put("s10_busy_pooled", busy_pooled)
        put("s10_busy_direct", busy_direct)
        put("s10_pooled", p["tps"])
        put("s10_direct", d["tps"])
        if p["tps"] and d["tps"]:
            put("s10_ratio", p["tps"] / d["tps"])
        say(f"1/{r}: -S -c 10 pooled {p['tps']} direct {d['tps']} {p['errors'][:2]} {d['errors'][:2]}; "
            f"pgbouncer {cores:.2f} cores, machine busy {busy_pooled:.0%} pooled / {busy_direct:.0%} direct")
        # 2. 500 clients.
        p = pgbench(pooled, *read_only, "-c", "500")
        d = pgbench(direct, *read_only, "-c", "500")
        pooled_500.append(p)
        direct_500.append(d)
        put("s500_pooled", p["tps"])
        put("s500_direct", d["tps"])
        say(f"2/{r}: -S -c 500 pooled tps {p['tps']} rc {p['rc']} failed {p['failed']} {p['errors'][:2]}; "
            f"direct tps {d['tps']} rc {d['rc']} {d['errors'][:2]}")
        # 3. A new connection per SELECT 1.
        connect = ["-C", "-f", str(script), "-c", "4", "-j", "2", "-T", str(SECONDS)]
        p = pgbench(pooled, *connect)
        d = pgbench(direct, *connect)
        put("c_pooled", p["tps"])
        put("c_direct", d["tps"])
        put("c_pooled_ms", p["connect_ms"])
        put("c_direct_ms", d["connect_ms"])
        if p["tps"] and d["tps"]:
            put("c_ratio", p["tps"] / d["tps"])
        rp, fp = asyncio.run(connect_loop(pooled, SECONDS))
        rd, fd = asyncio.run(connect_loop(direct, SECONDS))
        put("raw_pooled", rp)
        put("raw_direct", rd)
        put("raw_ratio", rp / rd if rd else None)
        if fp or fd:
            notes.append(f"round {r}: the raw connect loop failed {fp} pooled and {fd} direct connections")
        say(f"3/{r}: pgbench -C pooled {p['tps']} ({p['connect_ms']} ms) direct {d['tps']} ({d['connect_ms']} ms); "
            f"raw loop pooled {rp:.0f}/s direct {rd:.0f}/s")
        # 4. kill -9 of the pooler.
        [before] = server.pooler_pids()
        os.kill(before, signal.SIGKILL)
        began = time.monotonic()
        restarted = None
        while True:
            if restarted is None and [p for p in server.pooler_pids() if p != before]:
                restarted = time.monotonic() - began
            try:
                with psycopg.connect(pooled, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                break
            except psycopg.OperationalError:
                if time.monotonic() - began > 60:
                    sys.exit("the pooler did not come back within 60 s")
                time.sleep(0.01)
        put("kill_query", time.monotonic() - began)
        put("kill_process", restarted)
        say(f"4/{r}: pooler back after {results['kill_query'][-1]:.3f} s (process after {restarted})")

    server.stop()

    # -- report ---------------------------------------------------------------
    def outcome(runs: list[dict]) -> str:
        bad = [x for x in runs if x["rc"] != 0 or (x["failed"] or 0) > 0]
        if not bad:
            return f"all {len(runs)} runs completed, 0 failed transactions"
        first = next((e for x in bad for e in x["errors"]), "no message")
        return f"{len(bad)} of {len(runs)} runs failed: `{first[:160]}`"

    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    pg_version = subprocess.run([str(PG_BIN / "postgres"), "--version"], capture_output=True, text=True).stdout.strip()
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, kernel {platform.release()}, {pg_version}, {bouncer_version}, {rustc}; "
          f"mds at {commit}; pool {pool['mode']} size {pool['size']}; {ROUNDS} rounds of {SECONDS} s; "
          f"scale {SCALE}; {datetime.now(timezone.utc):%Y-%m-%d}; load average at the end {load[0]:.1f}; "
          f"run took {time.monotonic() - BEGAN:.0f} s")
    print()
    print("| measurement | median (min-max) |")
    print("|---|---|")
    print(f"| 1. `pgbench -S -c 10 -j 2`, direct (DATABASE_URL_UNPOOLED), TPS | {spread(results.get('s10_direct', []), '{:,.0f}')} |")
    print(f"| 1. the same through the pooler (DATABASE_URL), TPS | {spread(results.get('s10_pooled', []), '{:,.0f}')} |")
    print(f"| 1. ratio pooled / direct | **{spread(results.get('s10_ratio', []), '{:.2f}')}** |")
    print(f"| 1. pgbouncer's CPU during the pooled run, cores | {spread(results.get('s10_pooler_cores', []), '{:.2f}')} |")
    print(f"| 1. the machine's CPU busy, pooled run / direct run | {spread(results.get('s10_busy_pooled', []), '{:.0%}')} / {spread(results.get('s10_busy_direct', []), '{:.0%}')} |")
    print(f"| 2. `pgbench -S -c 500 -j 2` through the pooler, TPS | {spread(results.get('s500_pooled', []), '{:,.0f}')} |")
    print(f"| 2. its outcome | {outcome(pooled_500)} |")
    print(f"| 2. the same direct, outcome | {outcome(direct_500)} |")
    print(f"| 3. `pgbench -C -f select1.sql -c 4 -j 2`, direct, connections/s | {spread(results.get('c_direct', []), '{:,.0f}')} |")
    print(f"| 3. the same through the pooler, connections/s | {spread(results.get('c_pooled', []), '{:,.0f}')} |")
    print(f"| 3. pgbench's average connection time, direct / pooled | {spread(results.get('c_direct_ms', []), '{:.2f} ms')} / {spread(results.get('c_pooled_ms', []), '{:.2f} ms')} |")
    print(f"| 3. ratio pooled / direct (pgbench -C) | **{spread(results.get('c_ratio', []), '{:.2f}')}** |")
    print(f"| 3. raw-protocol loop, salted password computed once, direct, connections/s | {spread(results.get('raw_direct', []), '{:,.0f}')} |")
    print(f"| 3. the same through the pooler, connections/s | {spread(results.get('raw_pooled', []), '{:,.0f}')} |")
    print(f"| 3. ratio pooled / direct (raw loop) | **{spread(results.get('raw_ratio', []), '{:.2f}')}** |")
    print(f"| 4. kill -9 of the pooler until a new process runs | {spread(results.get('kill_process', []), '{:.3f} s')} |")
    print(f"| 4. kill -9 of the pooler until a query through it works | **{spread(results.get('kill_query', []), '{:.3f} s')}** |")
    print()
    for n in notes:
        print(f"- {n}")
    for x in direct_500[:1]:
        print(f"- direct at 500 clients, pgbench said: {x['errors'][:3]}")
    shutil.rmtree(root, ignore_errors=True)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


if __name__ == "__main__":
    main()
