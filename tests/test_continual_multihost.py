"""One engine across processes: `mistral-cl continual --distributed`, launched as two processes of
two simulated CPU devices each (`launch/local_multiprocess.sh`), ends with the scores of the same run
on one device, and only process 0 reports.

The run is `replay` in `full` mode: the backbone, head and optimizer state sharded ZeRO-3 over both
processes, and the host-side part that multi-host adds to a strategy (each process draws the same
remembered batch and feeds its own slice of both batches). Strategies with arrays of their own (EWC's
Fisher and anchor, ...) live on a mesh through the same sharded pytrees and checkpoints as the model's
weights; test_continual_mesh.py runs each of them on a mesh in one process. Each strategy costs a
compile in every process, so one is run here.

Kept apart from test_continual_mesh.py so that the two costliest continual test files can run on
different xdist workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from continual_fixtures import MESH_MODEL, assert_same_matrices, mesh_tasks_csv, score_matrices

from mistral_cl.cli import build_parser, run_config
from mistral_cl.continual.runner import ContinualRun

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data(tmp_path) -> Path:
    return mesh_tasks_csv(tmp_path / "tasks.csv")


def test_two_processes_run_the_continual_command_like_one(tmp_path, data):
    micro = tmp_path / "micro.json"
    micro.write_text(json.dumps(MESH_MODEL.to_hf_config()))
    options = ["--data", str(data), "--task-columns", "task", "--model", str(micro), "--mode", "full",
               "--strategies", "replay", "--memory", "reservoir:24", "--epochs", "2",
               "--batch-size", "16", "--lr", "3e-3", "--test-fraction", str(1 / 3), "--head-heads", "2",
               "--no-progress"]
    single = tmp_path / "single"
    config = run_config(build_parser().parse_args(["continual", *options]))
    ContinualRun.create(single, config).train(show=False)
    out = tmp_path / "two"
    launch = subprocess.run([str(ROOT / "launch" / "local_multiprocess.sh"), "2", "2", "continual",
                             "--distributed", "--mesh", "1x4x1", "--out", str(out), *options],
                            capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env={**os.environ, "MISTRAL_CL_LOG_DIR": str(tmp_path / "logs"),
                                 "PYTHON": sys.executable})
    assert launch.returncode == 0, launch.stderr[-4000:]
    assert "replay" in launch.stdout and "ACC" in launch.stdout  # process 0 printed the table
    other = (tmp_path / "logs" / "process_1.log").read_text()
    assert "ACC" not in other  # process 1 printed none
    assert_same_matrices(score_matrices(out, ("replay",)), score_matrices(single, ("replay",)))
