"""What the Python benches share: progress lines, median (min-max), and
the real mds server they drive (MDS_BIN, default target/release/mds), in a
data dir of its own, with the admin key it made."""

from __future__ import annotations

import atexit
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

BIN = os.environ.get("MDS_BIN", "target/release/mds")
BEGAN = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - BEGAN:7.1f}s] {message}", file=sys.stderr, flush=True)


def spread(values: list[float], fmt: str) -> str:
    if not values:
        return "n/a"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


class Server:
    """`mds server` on a loopback port, started with `extra` flags; ready
    once its own /healthz answers 200."""

    api_timeout = 600

    def __init__(self, root: Path, *extra: str, log_name: str = "mds.log") -> None:
        self.root = root
        self.data_dir = root / "data"
        self.log_path = root / log_name
        self.log = open(self.log_path, "wb")
        # The caller's mds settings stay out, except which pgbouncer to run.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MDS_", "MIOSA_")) or k == "MDS_PGBOUNCER"}
        env["MDS_LOG"] = "info"
        self.proc = subprocess.Popen(
            [BIN, "server", "--data-dir", str(self.data_dir), "--listen", "127.0.0.1:0", *extra],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + 120
        self.url = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"mds exited: {self.log_path.read_text(errors='replace')[-3000:]}")
            try:
                info = json.loads((self.data_dir / "server.json").read_text())
                if info.get("pid") == self.proc.pid and httpx.get(info["url"] + "/healthz", timeout=2).status_code == 200:
                    self.url = info["url"]
                    break
            except (OSError, ValueError, KeyError, httpx.HTTPError):
                pass
            time.sleep(0.05)
        if not self.url:
            sys.exit("mds not ready")
        self.key = (self.data_dir / "admin-api-key").read_text().strip()
        atexit.register(self.stop)

    def api(self, method: str, path: str, **kw) -> dict:
        r = httpx.request(method, f"{self.url}/api/v1{path}", headers={"Authorization": f"Bearer {self.key}"},
                          timeout=self.api_timeout, **kw)
        if r.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
        return r.json()["data"]

    def env(self, pid: str, environment: str = "production") -> dict[str, str]:
        data = self.api("GET", f"/projects/{pid}/env", params={"env": environment, "reveal": "true"})
        return {v["name"]: v["value"] for v in data["variables"]}

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.log.close()


def fill_bucket(env: dict[str, str], count: int, size: int, threads: int = 16) -> float:
    """Puts `count` random objects of `size` bytes (`objects/NNNNNN.bin`)
    into the binding's bucket with boto3, one client per thread; returns
    the seconds it took."""
    import concurrent.futures
    import threading

    import boto3
    from botocore.config import Config

    local = threading.local()

    def put_object(i: int) -> None:
        if not hasattr(local, "s3"):
            local.s3 = boto3.client(
                "s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_REGION"],
                config=Config(retries={"max_attempts": 3}, max_pool_connections=4))
        local.s3.put_object(Bucket=env["STORAGE_BUCKET"], Key=f"objects/{i:06d}.bin", Body=os.urandom(size))

    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(put_object, range(count)))
    return time.monotonic() - began
