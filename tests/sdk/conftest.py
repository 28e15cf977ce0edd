"""Starts the real mds binary (MDS_BIN) with a fresh data dir and its
managed PostgreSQL, for the official MIOSA SDK to talk to."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


class Server:
    def __init__(self, *extra_args: str) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="mds-sdk-")
        self.root = Path(self.tmp.name)
        # As root, the managed postgres runs as an unprivileged user that
        # must be able to pass through this directory.
        self.root.chmod(0o711)
        self.data_dir = self.root / "data"
        binary = os.environ.get("MDS_BIN", str(REPO / "target" / "debug" / "mds"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MDS_", "MIOSA_"))}
        env["MDS_LOG"] = "warn"
        self.log = open(self.root / "mds.log", "wb")
        self.proc = subprocess.Popen(
            [
                binary,
                "server",
                "--data-dir",
                str(self.data_dir),
                "--listen",
                "127.0.0.1:0",
                *extra_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.url = self._wait_ready()
        self.admin_key = (self.data_dir / "admin-api-key").read_text().strip()

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mds exited: {self.read_log()}")
            try:
                info = json.loads((self.data_dir / "server.json").read_text())
                if info.get("pid") == self.proc.pid:
                    if httpx.get(info["url"] + "/healthz", timeout=2).status_code == 200:
                        return info["url"]
            except (OSError, ValueError, httpx.HTTPError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"mds not ready: {self.read_log()}")

    def read_log(self) -> str:
        return (self.root / "mds.log").read_text(errors="replace")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.log.close()
            self.tmp.cleanup()


def resolved(mds, project_id: str, environment: str) -> dict[str, str]:
    """What a process of (project, environment) gets at boot, revealed."""
    answer = httpx.get(
        f"{mds.url}/api/v1/projects/{project_id}/env",
        params={"env": environment, "reveal": "true"},
        headers={"Authorization": f"Bearer {mds.admin_key}"},
    ).json()
    return {v["name"]: v["value"] for v in answer["data"]["variables"]}


@pytest.fixture(scope="session")
def mds():
    server = Server()
    yield server
    server.stop()


@pytest.fixture()
def client(mds):
    from miosa import Miosa

    # The SDK appends /api/v1 to a bare host, as it does for the hosted API.
    return Miosa(api_key=mds.admin_key, base_url=mds.url, max_retries=0)
