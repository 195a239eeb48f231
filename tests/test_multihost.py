"""The multi-host path, simulated: two processes of two CPU devices each, joined through 127.0.0.1.

`launch/local_multiprocess.sh` starts both processes of `tests/multihost_worker.py`; they build one
global (fsdp x tensor) mesh across the processes, each feeds only its half of every batch, and the
gradients cross processes through gloo collectives. The run must train exactly like one device.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import multihost_worker
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "launch" / "local_multiprocess.sh"


@pytest.fixture(scope="module")
def single_device_full() -> tuple[list[float], float]:
    return multihost_worker.train("full", mesh=None)


def _launch(tmp_path: Path, nproc: int, devices: int, *args: str) -> dict:
    assert shutil.which("bash"), "the launcher needs bash"
    out = tmp_path / "result.json"
    command = [str(LAUNCHER), str(nproc), str(devices), "--", sys.executable,
               str(ROOT / "tests" / "multihost_worker.py"), "--out", str(out), *args]
    run = subprocess.run(command, capture_output=True, text=True, timeout=540, cwd=ROOT,
                         env={**os.environ, "MISTRAL_CL_LOG_DIR": str(tmp_path)})
    assert run.returncode == 0, (
        f"the {nproc}-process run failed (it needs gloo CPU collectives: jax's "
        f"jax_cpu_collectives_implementation={jax.config.jax_cpu_collectives_implementation!r})\n"
        f"--- stdout ---\n{run.stdout[-4000:]}\n--- stderr ---\n{run.stderr[-6000:]}"
    )
    return json.loads(out.read_text())


def test_two_processes_train_exactly_like_one_device(tmp_path, single_device_full):
    result = _launch(tmp_path, 2, 2, "--mesh", "1x2x2", "--mode", "full")
    losses, checksum = single_device_full
    assert result["processes"] == 2
    assert "over 4 devices (2 processes)" in result["mesh"]
    np.testing.assert_allclose(result["losses"], losses, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result["checksum"], checksum, rtol=1e-5)


def test_a_failing_process_stops_the_launch_with_its_status(tmp_path):
    command = [str(LAUNCHER), "2", "1", "--", sys.executable, "-c",
               "import os, sys, time; pid = int(os.environ['MISTRAL_CL_PROCESS_ID']); "
               "sys.exit(3) if pid == 1 else time.sleep(60)"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert run.returncode == 3
    assert "stopped the others" in run.stderr
