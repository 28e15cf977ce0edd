"""Previews-with-data benchmark (issue 18).

Runs the real release binary (MDS_BIN, default target/release/mds) on a raw
PostgreSQL 15 cluster given with --postgres-url. The bench then holds the
superuser URL of the same cluster that mds uses, so both sides of each
comparison run on one cluster in one run:

1. Branching a ~1 GB database (`POST .../environments` with
   `source_environment`, `data_policy: copy`, until `ready`) against a bare
   `CREATE DATABASE ... TEMPLATE` of the checked copy it clones. The source's
   point is drilled first, so branches use it, as a user's would. The first
   branch also builds that copy (a pg_restore), and is reported apart.
2. Branching a bucket of 10,000 objects of 40 KiB (above the inline limit,
   so every chunk is a blob file): POST to `ready`, and how many bytes the
   blob directory grew.

Prints Markdown for BENCHMARKS.md. Run it with scripts/bench previews.
Sizes: BENCH_BIG_MB (1024), BENCH_OBJECTS (10000), BENCH_ROUNDS (3).
"""

from __future__ import annotations

import atexit
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import boto3
import psycopg

from backups import RawCluster, Server, du, load_table
import common
from common import BIN, say, spread

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
BIG_MB = int(os.environ.get("BENCH_BIG_MB", "1024"))
OBJECTS = int(os.environ.get("BENCH_OBJECTS", "10000"))


def branch(server: Server, pid: str, name: str) -> float:
    """Seconds from the create request to `ready`."""
    began = time.monotonic()
    server.api("POST", f"/projects/{pid}/environments",
               json={"name": name, "source_environment": "production", "data_policy": "copy"})
    while True:
        env = server.api("GET", f"/projects/{pid}/environments/{quote(name, safe='')}")
        if env["data"]["state"] != "copying":
            break
        time.sleep(0.02)
    took = time.monotonic() - began
    if env["data"]["state"] != "ready":
        raise RuntimeError(f"{name}: {env['data']}")
    return took


def verified_point(server: Server, pid: str) -> str:
    point = server.api("POST", f"/projects/{pid}/environments/production/restore-points", json={})
    checked = server.api("POST", f"/restore-points/{point['id']}/verify")
    if checked["verification"]["state"] != "passed":
        raise RuntimeError(f"the drill failed: {checked}")
    return point["id"]


def main() -> None:
    if not Path(BIN).is_file():
        sys.exit(f"{BIN} is missing: cargo build --release --bin mds")
    root = Path(tempfile.mkdtemp(prefix="mds-bench-previews-"))
    root.chmod(0o711)
    results: dict[str, list[float]] = {}

    def put(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    cluster = RawCluster(root, "engine", archive=False)
    # Stopped however the bench ends (a failed check would leave it running).
    atexit.register(cluster.stop)
    admin_url = cluster.url.rsplit("/", 1)[0] + "/postgres"
    server = Server(root, "--postgres-url", admin_url)
    say(f"mds at {server.url} on the raw cluster at port {cluster.port}")

    # 1: a 1 GB database.
    big = server.project("big", "postgres")
    rows, size = load_table(server.env(big)["DATABASE_URL"], BIG_MB)
    point = verified_point(server, big)
    say(f"1: point {point} drilled")
    first = branch(server, big, "preview/first")
    say(f"1: first branch (builds the template copy) {first:.1f}s")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        templates = [r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'mds\\_tmpl\\_%'").fetchall()]
        assert len(templates) == 1, templates
        template = templates[0]
        for r in range(ROUNDS):
            put("branch", branch(server, big, f"preview/r{r}"))
            began = time.monotonic()
            conn.execute(f'CREATE DATABASE "bare_{r}" TEMPLATE "{template}"')
            put("bare", time.monotonic() - began)
            conn.execute(f'DROP DATABASE "bare_{r}"')
            say(f"1: round {r}: branch {results['branch'][-1]:.1f}s, bare {results['bare'][-1]:.1f}s")
    with psycopg.connect(server.env(big, "preview/r0")["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT count(*) FROM big").fetchone()[0] == rows

    # 2: a bucket of 10,000 objects.
    bucket_project = server.project("bucket", "storage")
    env = server.env(bucket_project)
    took = common.fill_bucket(env, OBJECTS, 40 << 10)
    say(f"2: put {OBJECTS} objects of 40 KiB in {took:.1f}s")
    verified_point(server, bucket_project)
    blobs = server.data_dir / "storage"
    for r in range(ROUNDS):
        before = du(blobs)
        put("bucket_branch", branch(server, bucket_project, f"preview/b{r}"))
        put("bucket_grown", du(blobs) - before)
        preview = server.env(bucket_project, f"preview/b{r}")
        listed = boto3.client(
            "s3", endpoint_url=preview["AWS_ENDPOINT_URL_S3"], aws_access_key_id=preview["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=preview["AWS_SECRET_ACCESS_KEY"], region_name=preview["AWS_REGION"],
        ).list_objects_v2(Bucket=preview["STORAGE_BUCKET"])["KeyCount"]
        assert listed == min(OBJECTS, 1000)  # the first page
        say(f"2: round {r}: {results['bucket_branch'][-1]:.2f}s, blobs grew {results['bucket_grown'][-1]} bytes")

    server.stop()
    cluster.stop()
    ratio = [b / r for b, r in zip(results["branch"], results["bare"])]
    print(f"""
### Previews with data (issue 18)

Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; shared and noisy.
Command: `scripts/bench previews` (BENCH_BIG_MB={BIG_MB}, BENCH_OBJECTS={OBJECTS}, {ROUNDS} rounds).
mds on a raw PostgreSQL 15 cluster (`--postgres-url`), so the bare baseline runs on the same cluster.
Database: {rows:,} rows, table+index {size / 2**20:.0f} MiB. Median (min-max).

| | time | ratio (branch / bare) | target |
|---|---|---|---|
| branch of the database, POST to `ready` | {spread(results['branch'], '{:.2f} s')} | {spread(ratio, '{:.2f}')} | ≤ 1.2 |
| bare `CREATE DATABASE ... TEMPLATE` of the same copy | {spread(results['bare'], '{:.2f} s')} | | |
| first branch of a point (builds its checked template copy) | {first:.1f} s | | |
| branch of a bucket of {OBJECTS:,} objects, POST to `ready` | {spread(results['bucket_branch'], '{:.2f} s')} | | < 1 s |
| blob bytes added by a bucket branch | {spread(results['bucket_grown'], '{:.0f}')} | | 0 |
""")


if __name__ == "__main__":
    main()
