"""Backups benchmark (issue 16).

Drives the real release binary (MDS_BIN, default target/release/mds) with
its managed PostgreSQL and measures, in one run, against raw baselines
taken in the same run:

1. A restore point (`POST .../restore-points`) of a ~1 GB database against
   a bare `pg_dump -Fc` of the same database to a local file, with the
   binding's own DATABASE_URL.
2. Its restore (`POST .../restores`, that point, confirm) against a bare
   `pg_restore --clean --if-exists --no-owner --no-acl --single-transaction
   --exit-on-error` of the bare dump into the same tenant database, with
   the tenant's own URL.
3. A restore point of a bucket of 10,000 small objects: its time, and the
   repository's growth against the index file it writes.
4. pgbench TPS (`-c 4 -j 2 -T 20`, scale 10) on a raw PostgreSQL 15
   cluster with mds's archive_command against the same cluster settings
   without archiving; and on a tenant database of mds for context.
5. Point-in-time recovery of a ~100 MB database on an engine holding
   ~1.1 GB, after a base backup taken once the data is loaded (the server
   is restarted with a base-backup schedule that makes one due at once),
   with the time split into phases from the server log and a /proc
   sampler (which client programs run when).

Prints Markdown for BENCHMARKS.md. Run it with scripts/bench backups.
Sizes: BENCH_BIG_MB (1024), BENCH_SMALL_MB (100), BENCH_OBJECTS (10000),
BENCH_ROUNDS (3), BENCH_PGBENCH_SECONDS (20).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx

import common
from common import BEGAN, BIN, say, spread
import psycopg

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
BIG_MB = int(os.environ.get("BENCH_BIG_MB", "1024"))
SMALL_MB = int(os.environ.get("BENCH_SMALL_MB", "100"))
OBJECTS = int(os.environ.get("BENCH_OBJECTS", "10000"))
PGBENCH_SECONDS = int(os.environ.get("BENCH_PGBENCH_SECONDS", "20"))
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))

# -- the server ---------------------------------------------------------------


class Server(common.Server):
    api_timeout = 3600

    def project(self, name: str, kind: str) -> str:
        pid = self.api("POST", "/projects", json={"name": f"{name}-{uuid.uuid4().hex[:6]}"})["id"]
        self.api("POST", f"/projects/{pid}/data-services?wait=true", json={"type": kind})
        return pid

    def events(self, message: str) -> list[float]:
        """Wall-clock times of log lines whose message is `message`."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if message in line:
                m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", line)
                if m:
                    stamp = m.group(1)[:26]
                    found.append(datetime.fromisoformat(stamp).replace(tzinfo=timezone.utc).timestamp())
        return found


# -- which client programs run when -------------------------------------------


class Sampler:
    """Polls /proc every 50 ms for pg_dump, pg_restore, pg_basebackup and
    the scratch postgres; keeps [first seen, last seen] per pid (wall clock)."""

    WATCH = ("pg_dump", "pg_restore", "pg_basebackup")

    def __init__(self) -> None:
        self.seen: dict[int, list] = {}
        # The server's DIR/backup-work: when each PITR scratch dir appears
        # (the WAL flush is over) and when its cluster/data gets its first
        # file (the segments are fetched, the base backup's untar begins).
        self.work: Path | None = None
        self.scratch: dict[str, list] = {}
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            now = time.time()
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                pid = int(entry.name)
                if pid in self.seen:
                    self.seen[pid][1] = now
                    continue
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                name = os.path.basename(argv[0].decode(errors="replace")) if argv else ""
                text = " ".join(a.decode(errors="replace") for a in argv)
                if name in self.WATCH or (name == "postgres" and "mds-scratch" in text):
                    self.seen[pid] = [now, now, name, text]
            if self.work is not None:
                try:
                    for d in os.listdir(self.work):
                        if d.startswith("pitr-"):
                            entry = self.scratch.setdefault(d, [now, None])
                            if entry[1] is None:
                                try:
                                    if os.listdir(self.work / d / "cluster" / "data"):
                                        entry[1] = now
                                except OSError:
                                    pass
                except OSError:
                    pass
            time.sleep(0.05)

    def intervals(self, name: str, since: float, until: float) -> list[tuple[float, float, str]]:
        return sorted((a, b, t) for a, b, n, t in list(self.seen.values())
                      if n == name and b >= since and a <= until)

    def close(self) -> None:
        self.stop_flag.set()
        self.thread.join()


# -- data ---------------------------------------------------------------------


def load_table(url: str, megabytes: int) -> tuple[int, int]:
    """A table `big` of about `megabytes` MB with its primary key, made
    server-side with generate_series; returns (rows, database bytes)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE big (id bigint PRIMARY KEY, payload text, n int, at timestamptz)")
        sample = 200_000
        conn.execute(
            "INSERT INTO big SELECT g, md5(g::text) || md5((g * 7)::text), g %% 1000, now() "
            "FROM generate_series(1, %s) g", (sample,))
        per_row = conn.execute("SELECT pg_total_relation_size('big')").fetchone()[0] / sample
        total = max(sample, int(megabytes * 1024 * 1024 / per_row))
        done = sample
        while done < total:
            chunk = min(2_000_000, total - done)
            conn.execute(
                "INSERT INTO big SELECT g, md5(g::text) || md5((g * 7)::text), g %% 1000, now() "
                "FROM generate_series(%s, %s) g", (done + 1, done + chunk))
            done += chunk
        conn.execute("VACUUM (ANALYZE) big")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        table = conn.execute("SELECT pg_total_relation_size('big')").fetchone()[0]
    say(f"loaded {total:,} rows: table+indexes {table / 2**20:.0f} MiB, database {size / 2**20:.0f} MiB")
    return total, table


def busy() -> list[str]:
    """pg_dump / pg_restore / pg_basebackup processes alive now."""
    names = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                argv0 = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            name = os.path.basename(argv0.decode(errors="replace"))
            if name in Sampler.WATCH:
                names.append(name)
    return names


def quiet(server: "Server", newest_point: str | None = None) -> None:
    """Drills the newest point now (else the server's scheduled drill, due
    within 30 s of any new point, would restore it during the next
    measurement), then waits until no dump, restore or base backup runs."""
    if newest_point:
        server.api("POST", f"/restore-points/{newest_point}/verify")
    calm_since = time.monotonic()
    deadline = time.monotonic() + 600
    while time.monotonic() - calm_since < 1.5 and time.monotonic() < deadline:
        if busy():
            calm_since = time.monotonic()
        time.sleep(0.1)


def count(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM big").fetchone()[0]


def du(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def timed(cmd: list[str], **kw) -> float:
    began = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    took = time.monotonic() - began
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {done.stderr[-2000:]}")
    return took


# -- 4: raw clusters for pgbench ----------------------------------------------


class RawCluster:
    def __init__(self, root: Path, name: str, archive: bool) -> None:
        self.dir = root / name
        self.dir.mkdir()
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.staging = self.dir / "staging"
        self.staging.mkdir()
        shutil.chown(self.staging, "postgres", "postgres")
        self.staging.chmod(0o700)
        self.password = uuid.uuid4().hex
        pw = self.dir / "pw"
        pw.write_text(self.password + "\n")
        shutil.chown(pw, "postgres", "postgres")
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(self.data),
                        "-U", "postgres", f"--pwfile={pw}", "--auth=scram-sha-256", "--encoding=UTF8",
                        "--locale=C"], check=True, capture_output=True)
        with socket_free() as port:
            self.port = port
        settings = ["listen_addresses=127.0.0.1", "unix_socket_directories=", "max_connections=300",
                    "password_encryption=scram-sha-256"]
        if archive:
            # mds_engines::archive_command, verbatim, with this staging dir;
            # archive_timeout as mds's default --wal-archive-timeout.
            d = f"'{self.staging}'"
            command = (f"f=%f; d={d}; if [ -e \"$d/$f\" ]; then cmp -s %p \"$d/$f\"; "
                       f"else cp %p \"$d/$f.partial\" && sync \"$d/$f.partial\" "
                       f"&& mv -f \"$d/$f.partial\" \"$d/$f\" && sync \"$d\"; fi")
            settings += ["archive_mode=on", "archive_timeout=60", f"archive_command={command}"]
        else:
            settings += ["archive_mode=off"]
        args = ["runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"), "-D", str(self.data),
                "-p", str(self.port)]
        for s in settings:
            args += ["-c", s]
        self.log = open(self.dir / "postgres.log", "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.url = f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        self.url = self.url.rsplit("/", 1)[0] + "/bench"

    def drain(self) -> None:
        """What mds's shipper does to staging, minus the repository."""
        for f in self.staging.iterdir():
            if not f.name.endswith(".partial"):
                f.unlink(missing_ok=True)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(self.data),
                        "-m", "fast", "stop"], capture_output=True)
        self.proc.wait(timeout=60)
        self.log.close()


class socket_free:
    def __enter__(self) -> int:
        import socket
        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        return self.s.getsockname()[1]

    def __exit__(self, *a) -> None:
        self.s.close()


def pgbench(url: str, init: bool = False) -> float:
    if init:
        subprocess.run([str(PG_BIN / "pgbench"), "-i", "-q", "-s", "10", url], check=True, capture_output=True)
        return 0.0
    out = subprocess.run([str(PG_BIN / "pgbench"), "-c", "4", "-j", "2", "-T", str(PGBENCH_SECONDS), url],
                         check=True, capture_output=True, text=True).stdout
    return float(re.search(r"tps = ([\d.]+)", out).group(1))


# -- phases of a restore --------------------------------------------------------


def phases(server: Server, sampler: Sampler, began: float, ended: float) -> dict[str, float]:
    """Seconds per phase of one restore request [began, ended] (wall clock)."""
    out: dict[str, float] = {}
    undo = [t for t in server.events("took a restore point") if began <= t <= ended]
    recovering = [t for t in server.events("recovering a base backup") if began <= t <= ended]
    restores = sampler.intervals("pg_restore", began, ended)
    undo_at = undo[0] if undo else None
    if undo_at:
        out["undo restore point"] = undo_at - began
    scratch = sorted(v for v in sampler.scratch.values() if began <= v[0] <= ended)
    if recovering and undo_at and scratch and scratch[0][1]:
        out["WAL switch + ship (flush)"] = scratch[0][0] - undo_at
        out["WAL segments read from the repository"] = scratch[0][1] - scratch[0][0]
        out["base backup read + untar"] = recovering[0] - scratch[0][1]
    elif recovering and undo_at:
        out["WAL flush, segments + base backup read, untar"] = recovering[0] - undo_at
    if restores:
        start, end = restores[-1][0], restores[-1][1]
        if recovering:
            out["replay to promotion (scratch cluster)"] = start - recovering[0]
        elif undo_at:
            out["repository open, fresh database"] = start - undo_at
        out["pg_dump \\| pg_restore" if recovering else "pg_restore (from the repository)"] = end - start
        out["check (row counts, checksums), swap, clean-up"] = ended - end
    return out


# -- the run ------------------------------------------------------------------


def main() -> None:
    if not Path(BIN).is_file():
        sys.exit(f"{BIN} is missing: cargo build --release --bin mds")
    root = Path(tempfile.mkdtemp(prefix="mds-bench-backups-"))
    root.chmod(0o711)
    say(f"root {root}")
    results: dict[str, list[float]] = {}
    notes: list[str] = []

    def put(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    sampler = Sampler()
    server = Server(root)
    sampler.work = server.data_dir / "backup-work"
    say(f"mds at {server.url}")

    big = server.project("big", "postgres")
    small = server.project("small", "postgres")
    bucket_project = server.project("bucket", "storage")
    big_url = server.env(big)["DATABASE_URL"]
    small_url = server.env(small)["DATABASE_URL"]
    big_rows, big_bytes = load_table(big_url, BIG_MB)
    small_rows, small_bytes = load_table(small_url, SMALL_MB)
    notes.append(f"big database: {big_rows:,} rows, table+index {big_bytes / 2**20:.0f} MiB; "
                 f"small: {small_rows:,} rows, {small_bytes / 2**20:.0f} MiB")

    quiet(server)
    # 1. Restore point against pg_dump -Fc.
    dump = root / "bare.dump"
    points = []
    for r in range(ROUNDS):
        bare = timed([str(PG_BIN / "pg_dump"), "-Fc", "-f", str(dump), "-d", big_url])
        began = time.monotonic()
        point = server.api("POST", f"/projects/{big}/environments/production/restore-points", json={})
        took = time.monotonic() - began
        assert point["state"] == "complete", point
        points.append(point)
        drill0 = time.monotonic()
        quiet(server, point["id"])
        put("drill", time.monotonic() - drill0)
        put("dump_bare", bare)
        put("dump_mds", took)
        put("dump_ratio", took / bare)
        say(f"1/{r}: pg_dump {bare:.1f}s, restore point {took:.1f}s ({took / bare:.2f}x); "
            f"dump {dump.stat().st_size / 2**20:.0f} MiB, point {point.get('size_bytes', 0) / 2**20:.0f} MiB")
    notes.append(f"bare dump {dump.stat().st_size / 2**20:.0f} MiB; restore point "
                 f"{points[-1].get('size_bytes', 0) / 2**20:.0f} MiB in the repository (sealed)")

    # 2. Restore against pg_restore.
    restore_phases: list[dict[str, float]] = []
    for r in range(ROUNDS):
        bare = timed([str(PG_BIN / "pg_restore"), "--clean", "--if-exists", "--no-owner", "--no-acl",
                      "--single-transaction", "--exit-on-error", "-d", big_url, str(dump)])
        assert count(big_url) == big_rows
        wall0, began = time.time(), time.monotonic()
        result = server.api("POST", f"/projects/{big}/environments/production/restores",
                            json={"confirm": True, "restore_point": points[r]["id"]})
        took = time.monotonic() - began
        wall1 = time.time()
        assert count(big_url) == big_rows
        quiet(server, result["undo_restore_point"])
        put("restore_bare", bare)
        put("restore_mds", took)
        put("restore_ratio", took / bare)
        restore_phases.append(phases(server, sampler, wall0, wall1))
        say(f"2/{r}: pg_restore {bare:.1f}s, restore {took:.1f}s ({took / bare:.2f}x) {restore_phases[-1]}; "
            f"{result['restored'][0]['checked']}")

    # 3. Bucket of small objects.
    env = server.env(bucket_project)
    took = common.fill_bucket(env, OBJECTS, 1024)
    say(f"3: put {OBJECTS} objects of 1 KiB in {took:.1f}s")
    repo = server.data_dir / "backups"
    for r in range(ROUNDS):
        before_all = du(repo)
        before_points = du(repo / "restore-points") if (repo / "restore-points").exists() else 0
        began = time.monotonic()
        point = server.api("POST", f"/projects/{bucket_project}/environments/production/restore-points", json={})
        took = time.monotonic() - began
        grown_all = du(repo) - before_all
        quiet(server, point["id"])
        grown_points = du(repo / "restore-points") - before_points
        files = sorted((f.name, f.stat().st_size) for f in (repo / "restore-points" / point["id"]).rglob("*")
                       if f.is_file())
        index = sum(size for name, size in files if name.endswith(".index.json"))
        put("bucket_point", took)
        put("bucket_index", index)
        put("bucket_grown_points", grown_points)
        put("bucket_grown_other", grown_points - index)
        put("bucket_grown_all", grown_all)
        say(f"3/{r}: bucket point {took:.3f}s; files {files}; restore-points grew {grown_points} B, "
            f"whole repository {grown_all} B")

    # 4. pgbench: raw PostgreSQL 15 with and without mds's archive_command; mds for context.
    on = RawCluster(root, "raw-archive-on", True)
    off = RawCluster(root, "raw-archive-off", False)
    pgb = server.project("pgbench", "postgres")
    pgb_url = server.env(pgb)["DATABASE_URL"]
    try:
        for url in (on.url, off.url, pgb_url):
            pgbench(url, init=True)
        for r in range(ROUNDS):
            tps_on = pgbench(on.url)
            on.drain()
            tps_off = pgbench(off.url)
            tps_mds = pgbench(pgb_url)
            put("tps_on", tps_on)
            put("tps_off", tps_off)
            put("tps_mds", tps_mds)
            put("tps_ratio", tps_on / tps_off)
            put("tps_mds_ratio", tps_mds / tps_off)
            say(f"4/{r}: tps archive on {tps_on:.0f}, off {tps_off:.0f} ({tps_on / tps_off:.2f}), mds {tps_mds:.0f}")
    finally:
        on.stop()
        off.stop()

    # 5. PITR: a base backup after the load, then restores to a moment.
    window_start = server.api("GET", f"/projects/{small}/backups")["pitr"]["window_start"]
    say(f"5: window starts {window_start}; restarting for a fresh base backup")
    server.stop()
    first = datetime.fromisoformat(window_start.replace("Z", "+00:00")).timestamp()
    # Due at once (the newest base backup is older), not again during this phase.
    every = max(1, int(time.time() - first) - 5)
    if every < 600:
        notes.append(f"PITR phase ran with --base-backup-schedule {every}s: a second base backup may "
                     "have run during it")
    server = Server(root, "--base-backup-schedule", f"{every}s", log_name="mds-pitr.log")
    began = time.monotonic()
    while not server.events("took a base backup"):
        if time.monotonic() - began > 900:
            sys.exit("no base backup within 15 min")
        time.sleep(0.5)
    bb = server.events("took a base backup")[0]
    base_line = [l for l in server.log_path.read_text().splitlines() if "took a base backup" in l][0]
    say(f"5: base backup after {time.monotonic() - began:.1f}s: {base_line}")
    notes.append(f"base backup after the load: {base_line.split('took a base backup')[-1].strip()}")
    small_url = server.env(small)["DATABASE_URL"]
    pitr_phases: list[dict[str, float]] = []
    for r in range(ROUNDS):
        with psycopg.connect(small_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS marks (round int, at timestamptz DEFAULT clock_timestamp())")
            conn.execute("INSERT INTO marks (round) VALUES (%s)", (r,))
            conn.execute("UPDATE big SET n = n + 1 WHERE id %% 100 = %s", (r,))
            moment = conn.execute("SELECT clock_timestamp()").fetchone()[0]
            time.sleep(1.1)
            conn.execute("INSERT INTO marks (round) VALUES (%s)", (100 + r,))
        wall0, began = time.time(), time.monotonic()
        try:
            result = server.api("POST", f"/projects/{small}/environments/production/restores",
                                json={"confirm": True, "to_time": moment.isoformat()})
        except RuntimeError as e:
            say(f"5/{r}: PITR FAILED after {time.monotonic() - began:.1f}s: {e}")
            notes.append(f"PITR round {r} FAILED after {time.monotonic() - began:.1f} s: {e}")
            quiet(server)
            continue
        took = time.monotonic() - began
        wall1 = time.time()
        quiet(server, result["undo_restore_point"])
        with psycopg.connect(small_url) as conn:
            marks = [m[0] for m in conn.execute("SELECT round FROM marks ORDER BY round").fetchall()]
        assert r in marks and 100 + r not in marks, marks
        put("pitr", took)
        pitr_phases.append(phases(server, sampler, wall0, wall1))
        say(f"5/{r}: PITR {took:.1f}s {pitr_phases[-1]} from {result['restored'][0]['from']}")
    segments = len(list((server.data_dir / "backups" / "wal").glob("*")))
    notes.append(f"{segments} WAL files in the repository at the end")
    server.stop()
    sampler.close()

    # -- report ---------------------------------------------------------------
    def ph(rows: list[dict[str, float]]) -> list[str]:
        names = list(dict.fromkeys(k for p in rows for k in p))
        return [f"| &nbsp;&nbsp;{n} | {spread([p[n] for p in rows if n in p], '{:.1f} s')} |" for n in names]

    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    pg_version = subprocess.run([str(PG_BIN / "postgres"), "--version"], capture_output=True, text=True).stdout.strip()
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {os.cpu_count()} cores, kernel {platform.release()}, {pg_version}, {rustc}; mds at {commit}; "
          f"{ROUNDS} rounds; {datetime.now(timezone.utc):%Y-%m-%d}; run took {time.monotonic() - BEGAN:.0f} s")
    print()
    print("| measurement | median (min-max) |")
    print("|---|---|")
    print(f"| 1. bare `pg_dump -Fc` of the ~{BIG_MB} MB database to a local file | {spread(results['dump_bare'], '{:.1f} s')} |")
    print(f"| 1. restore point of it (`POST .../restore-points`) | {spread(results['dump_mds'], '{:.1f} s')} |")
    print(f"| 1. (untimed in the ratio) drill of that point, `POST /restore-points/{{id}}/verify` | {spread(results['drill'], '{:.1f} s')} |")
    print(f"| 1. ratio restore point / pg_dump | {spread(results['dump_ratio'], '{:.2f}')} |")
    print(f"| 2. bare `pg_restore --clean --single-transaction` of that dump, tenant URL | {spread(results['restore_bare'], '{:.1f} s')} |")
    print(f"| 2. restore of the point (`POST .../restores`) | {spread(results['restore_mds'], '{:.1f} s')} |")
    for line in ph(restore_phases):
        print(line)
    print(f"| 2. ratio restore / pg_restore | {spread(results['restore_ratio'], '{:.2f}')} |")
    print(f"| 3. restore point of a bucket of {OBJECTS:,} objects (1 KiB) | {spread(results['bucket_point'], '{:.3f} s')} |")
    print(f"| 3. its index file (sealed), bytes | {spread(results['bucket_index'], '{:,.0f}')} |")
    print(f"| 3. growth of `backups/restore-points`, bytes | {spread(results['bucket_grown_points'], '{:,.0f}')} |")
    print(f"| 3. of which not the index (object content + manifest), bytes | {spread(results['bucket_grown_other'], '{:,.0f}')} |")
    print(f"| 3. growth of the whole repository (`du -sb DIR/backups`, WAL shipped meanwhile included), bytes | {spread(results['bucket_grown_all'], '{:,.0f}')} |")
    print(f"| 4. pgbench TPS, raw PG 15, archive_mode=on (mds's archive_command) | {spread(results['tps_on'], '{:,.0f}')} |")
    print(f"| 4. pgbench TPS, raw PG 15, archive_mode=off | {spread(results['tps_off'], '{:,.0f}')} |")
    print(f"| 4. ratio on / off | {spread(results['tps_ratio'], '{:.2f}')} |")
    print(f"| 4. pgbench TPS, tenant database of mds (context) | {spread(results['tps_mds'], '{:,.0f}')} |")
    print(f"| 4. ratio mds tenant / raw off (context) | {spread(results['tps_mds_ratio'], '{:.2f}')} |")
    print(f"| 5. PITR of the ~{SMALL_MB} MB database (`to_time`) | {spread(results['pitr'], '{:.1f} s')} |")
    for line in ph(pitr_phases):
        print(line)
    print()
    for n in notes:
        print(f"- {n}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
