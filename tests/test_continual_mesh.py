"""One engine at every scale: a continual run on a device mesh ends with the
scores of the same run on one device, and a run resumed on another mesh continues exactly.

Eight simulated CPU devices (conftest.py). Every strategy that keeps state of its own (replay's
memory, EWC's Fisher and anchor, LwF's teacher, A-GEM's reference batches, one adapter or snapshot
per task) runs on a mesh in both modes and meets both meshes: in `full` mode on 1x8x1 (data split
over fsdp, weights sharded ZeRO-3) or 2x2x2 (data, fsdp and tensor parallelism at once); in `lora`
mode all six start on 1x8x1 and are resumed on 2x2x2 after the first task, which checks the scores
of both meshes and the move between them in one run. Each step compiles once per strategy, mode and
mesh, which is what these tests cost.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from continual_fixtures import (
    STATEFUL_STRATEGIES,
    assert_same_matrices,
    mesh_config,
    mesh_tasks_csv,
    score_matrices,
)

import sharding
from mistral_cl.continual.runner import ContinualRun
from mistral_cl.data.sources import DataConfig

ROOT = Path(__file__).resolve().parents[1]
# Which strategies run on which mesh in `full` mode: each on one of them, and both meshes used. In
# `lora` mode the resumed run takes all six over both meshes (MESHES_OF_THE_RESUMED_RUN).
ON_MESH = {("1x8x1", "full"): ("replay", "lwf", "adapters"),
           ("2x2x2", "full"): ("ewc", "agem", "replay-snapshot")}
MESHES_OF_THE_RESUMED_RUN = ("1x8x1", "2x2x2")


def _matrices(run_dir: Path, strategies=STATEFUL_STRATEGIES) -> dict[str, np.ndarray]:
    return score_matrices(run_dir, strategies)


def _matrices_of(matrices: dict[str, np.ndarray], strategies) -> dict[str, np.ndarray]:
    return {name: m for name, m in matrices.items() if name.split()[0] in strategies}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return mesh_tasks_csv(tmp_path_factory.mktemp("data") / "tasks.csv")


@pytest.fixture(scope="module")
def one_device(tmp_path_factory, data) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for mode in ("lora", "full"):
        run = ContinualRun.create(tmp_path_factory.mktemp(mode) / "run", mesh_config(data, mode))
        run.train(show=False)
        out[mode] = _matrices(run.directory)
    return out


def test_every_strategy_learns_the_stream_on_one_device_in_lora_and_full_mode(one_device):
    # (In head mode: test_continual_strategies.py.)
    for mode, matrices in one_device.items():
        assert sorted({name.split()[0] for name in matrices}) == sorted(STATEFUL_STRATEGIES), mode
        for name, matrix in matrices.items():
            assert matrix.shape == (3, 3) and np.isfinite(matrix).all(), (mode, name)


def _on_eight_devices(run: ContinualRun) -> bool:
    """Whether the trainable half really lives on the mesh, spread over its eight devices."""
    return all(len(x.sharding.device_set) == 8 for x in jax.tree.leaves(run.setting.initial))


def test_the_mesh_runs_cover_every_strategy_in_both_modes_and_on_both_meshes():
    full = [s for group in ON_MESH.values() for s in group]
    assert sorted(full) == sorted(STATEFUL_STRATEGIES)
    assert {mesh for mesh, _ in ON_MESH} == set(MESHES_OF_THE_RESUMED_RUN) == {"1x8x1", "2x2x2"}


@pytest.mark.parametrize(("mesh", "mode"), list(ON_MESH))
def test_a_continual_run_on_a_mesh_scores_like_one_device(tmp_path, data, one_device, mode, mesh):
    strategies = ON_MESH[mesh, mode]
    run = ContinualRun.create(tmp_path / "run", mesh_config(data, mode, strategies),
                              mesh=sharding.make_mesh(mesh))
    run.train(show=False)
    assert_same_matrices(_matrices(run.directory, strategies), _matrices_of(one_device[mode], strategies))
    assert _on_eight_devices(run)


def test_a_run_resumed_on_another_mesh_ends_as_if_never_interrupted(tmp_path, data, one_device):
    config = mesh_config(data, "lora")
    before, after = MESHES_OF_THE_RESUMED_RUN
    first = ContinualRun.create(tmp_path / "run", config, mesh=sharding.make_mesh(before))
    first.train(stop_after=1, show=False)  # as if stopped after the first task
    assert _on_eight_devices(first)
    resumed = ContinualRun.open(first.directory, sharding.make_mesh(after))
    resumed.train(show=False)
    assert _on_eight_devices(resumed)
    # The first row of each matrix was scored on the first mesh, the others on the second.
    assert_same_matrices(_matrices(first.directory), one_device["lora"])


def test_a_fresh_run_reads_its_data_once(tmp_path, data, monkeypatch):
    reads = []
    original = DataConfig.read
    monkeypatch.setattr(DataConfig, "read", lambda self: reads.append(self) or original(self))
    run = ContinualRun.create(tmp_path / "run", mesh_config(data, "full", ("naive",)))
    run.train(show=False)
    assert len(reads) == 1


def test_a_process_other_than_the_first_writes_no_table_or_plot(tmp_path, data, monkeypatch):
    monkeypatch.setattr(sharding, "is_reporting_process", lambda: False)  # as if process 1 of a job
    run = ContinualRun.create(tmp_path / "run", mesh_config(data, "full", ("naive",)))
    run.train(show=False)
    written = {p.name for p in run.directory.rglob("*") if p.is_file()}
    reports = {"run.json", "stream.json", "before.json", "summary.json", "scores.json", "comparison.json"}
    assert not {n for n in written if n.endswith((".csv", ".png")) or n in reports}
    assert "manifest.json" in written  # the checkpoint is still written (by the process that owns it)
