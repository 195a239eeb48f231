"""Small data and a micro model for the continual-learning tests (fast on two CPU cores)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mistral_cl.config import ModelConfig
from mistral_cl.data.sources import DataConfig, load_dataset
from mistral_cl.head import HeadConfig
from mistral_cl.predictor import AdaptationConfig
from mistral_cl.runs import RunConfig
from mistral_cl.train import TrainConfig

MICRO = ModelConfig(vocab_size=32000, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16,
                    hidden_dim=64, sliding_window=64)


def suzuki_tasks_csv(path: Path, keys: list[str], per_task: int = 30, levels: list[float] | None = None,
                     seed: int = 0) -> Path:
    """`per_task` Suzuki reactions of each reactant pair in `keys`, with a task column. With `levels`,
    task k's yields are replaced by `levels[k]` plus a little noise (for conflicting tasks)."""
    dataset = load_dataset("suzuki")
    rng = np.random.default_rng(seed)
    frames = []
    for k, key in enumerate(keys):
        rows = rng.choice(np.flatnonzero(dataset.tasks == key), per_task, replace=False)
        yields = dataset.yields[rows] if levels is None else levels[k] + rng.uniform(-0.03, 0.03, per_task)
        frames.append(pd.DataFrame({"rxn": dataset.smiles[rows], "yield": 100 * np.asarray(yields),
                                    "task": key}))
    pd.concat(frames).to_csv(path, index=False)
    return path


def micro_config(data: Path, *, mode: str = "full", epochs: int = 2, batch_size: int = 16,
                 learning_rate: float = 3e-3, seed: int = 0) -> RunConfig:
    return RunConfig(
        model=MICRO, head=HeadConfig(n_heads=2, mlp_dim=16), adaptation=AdaptationConfig(mode=mode),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed),
        data=DataConfig(source=str(data), task_columns=("task",)),
    )


SUBSTITUENTS = ("C", "O", "F", "Cl", "N", "CC", "OC", "C#N")


def coupling_tasks_csv(path: Path, levels: dict[str, float], seed: int = 0) -> Path:
    """Short synthetic Suzuki-like couplings (about 30 tokens, so tests run fast): one task per
    halide in `levels` (e.g. {"Br": 0.85, "I": 0.15}), 64 reactions each (alkyl chain of 1-8 carbons
    times 8 aryl substituents), yields at the task's level plus a little noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for halide, level in levels.items():
        for n in range(1, 9):
            for r in SUBSTITUENTS:
                chain = "C" * n
                rows.append({"rxn": f"{chain}{halide}.OB(O)c1ccc({r})cc1>>{chain}c1ccc({r})cc1",
                             "yield": round(100 * (level + rng.uniform(-0.03, 0.03)), 3),
                             "task": f"{halide}-coupling"})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def micro_setting(tmp_path: Path, levels: dict[str, float], strategies: str = "naive", **config):
    """A new micro continual run of `strategies` on `coupling_tasks_csv(levels)` (one batch width, an
    evaluation batch of 32): its directory and the `Setting` its strategies learn in."""
    from mistral_cl.continual import runner

    data = coupling_tasks_csv(tmp_path / "tasks.csv", levels)
    run_config = runner.with_continual(micro_config(data, **config), strategies, eval_batch_size=32,
                                       buckets=1)
    run = runner.ContinualRun.create(tmp_path / "run", run_config)
    return run.directory, run.setting


# The small stream of the mesh tests (test_continual_mesh.py), also the one on which every strategy is
# shown to learn in every mode (test_continual_strategies.py): the same programs, compiled once a session.
STATEFUL_STRATEGIES = ("replay", "replay-snapshot", "ewc", "lwf", "agem", "adapters")  # each has a state
# Two KV heads, so tensor parallelism of 2 splits whole heads.
MESH_MODEL = ModelConfig(vocab_size=32000, dim=32, n_layers=1, n_heads=2, n_kv_heads=2, head_dim=16,
                         hidden_dim=64, sliding_window=64)


def mesh_tasks_csv(path: Path) -> Path:
    """Three small coupling tasks of 24 reactions (16 train, 8 test: one batch of 16 per epoch), whose
    yields spread over most of the range within each task (so R^2 is well conditioned)."""
    rows = [{"rxn": f"{'C' * n}{halide}.OB(O)c1ccc({r})cc1>>{'C' * n}c1ccc({r})cc1",
             "yield": round(100 * (shift + 0.1 * k + 0.05 * n), 3), "task": f"{halide}-coupling"}
            for halide, shift in (("Br", 0.05), ("I", 0.1), ("Cl", 0.0))
            for n in range(1, 4) for k, r in enumerate(SUBSTITUENTS)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def mesh_config(data: Path, mode: str, strategies=STATEFUL_STRATEGIES) -> RunConfig:
    """A continual run of `strategies` on `mesh_tasks_csv`, two steps a round (the warm-up makes the
    first step's learning rate zero, the second trains)."""
    from mistral_cl.continual import runner

    config = RunConfig(
        model=MESH_MODEL, head=HeadConfig(n_heads=2, mlp_dim=16), adaptation=AdaptationConfig(mode=mode),
        train=TrainConfig(epochs=2, batch_size=16, learning_rate=3e-3),
        data=DataConfig(source=str(data), task_columns=("task",)), test_fraction=1 / 3,
    )
    return runner.with_continual(config, ",".join(strategies), memory="reservoir:24", eval_batch_size=16,
                                 buckets=1)


def score_matrices(run_dir: Path, strategies) -> dict[str, np.ndarray]:
    """The R² and RMSE matrices of each strategy of a finished continual run."""
    out = {}
    for spec in strategies:
        board = json.loads((run_dir / spec / "scores.json").read_text())
        for name in ("r2", "rmse"):
            out[f"{spec} {name}"] = np.asarray(board["matrices"][name], np.float64)
    return out


def assert_same_matrices(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    """Two runs' `score_matrices` agree (1e-5 relative, 1e-5 absolute): the same run on other devices
    or processes, whose reductions may add in another order. An R² near 0 of a task with a narrow
    spread of yields moves by a few 1e-6 that way (a two-process run of the demo's head, which
    encodes its molecule table on every device: 2e-6 on an R² of -0.07)."""
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5, err_msg=name)
