"""What a continual run measures: score matrices and their summaries.

`R[r, j]` is the score on task j's held-out test set after training round r (a round trains one task
for sequential strategies, every known task at once for `joint`). Every task is scored after every
round, so columns of tasks not yet learned show forward transfer. `before[j]` is the untrained
model's score on task j. `learned_at[j]` is the round that first trained task j (`j` for sequential
strategies, 0 for every task of `joint`). With T rounds and `last = T - 1`:

- ACC: mean over learned tasks of `R[last, j]`;
- BWT: mean over tasks learned before the last round of `R[last, j] - R[learned_at[j], j]`;
- FWT: mean over tasks learned after round 0 of `R[learned_at[j] - 1, j] - before[j]`;
- forgetting: mean over tasks learned before the last round of `max_{r < last} R[r, j] - R[last, j]`.

A summary that has no task to average over (BWT of a single round, FWT of `joint`) is NaN. Entries
never measured (rounds that ran before an ingested task existed) are NaN and are skipped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from jaxtyping import Float

SCORES: tuple[str, ...] = ("r2", "rmse", "mae")
SUMMARIES: tuple[str, ...] = ("acc", "bwt", "fwt", "forgetting")

Matrix = Float[np.ndarray, "rounds tasks"]


def _learned(matrix: Matrix, learned_at: Sequence[int] | None) -> np.ndarray:
    """Round that learned each column; by default column j is learned in round j."""
    rounds, tasks = matrix.shape
    if learned_at is None:
        learned_at = range(tasks)
    return np.asarray(learned_at, dtype=np.int64)[:tasks]


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def accuracy(matrix: Matrix, learned_at: Sequence[int] | None = None) -> float:
    """Mean score, after the last round, over every task learned so far."""
    last = matrix.shape[0] - 1
    learned = _learned(matrix, learned_at)
    return _mean([matrix[last, j] for j in range(len(learned)) if learned[j] <= last])


def backward_transfer(matrix: Matrix, learned_at: Sequence[int] | None = None) -> float:
    """How the last round changed earlier tasks' scores (negative: forgetting)."""
    last = matrix.shape[0] - 1
    learned = _learned(matrix, learned_at)
    return _mean([matrix[last, j] - matrix[learned[j], j]
                  for j in range(len(learned)) if learned[j] < last])


def forward_transfer(matrix: Matrix, before: Sequence[float],
                     learned_at: Sequence[int] | None = None) -> float:
    """How much earlier rounds improved a task before it was trained, against the untrained model."""
    last = matrix.shape[0] - 1
    learned = _learned(matrix, learned_at)
    return _mean([matrix[learned[j] - 1, j] - before[j]
                  for j in range(len(learned)) if 0 < learned[j] <= last])


def forgetting(matrix: Matrix, learned_at: Sequence[int] | None = None) -> float:
    """Mean drop from each earlier task's best score (over rounds before the last) to its last score."""
    last = matrix.shape[0] - 1
    learned = _learned(matrix, learned_at)
    drops = []
    for j in range(len(learned)):
        history = matrix[:last, j]
        if learned[j] < last and not np.all(np.isnan(history)):
            drops.append(float(np.nanmax(history)) - matrix[last, j])
    return _mean(drops)


def summarize(matrix: Matrix, before: Sequence[float],
              learned_at: Sequence[int] | None = None) -> dict[str, float]:
    """ACC, BWT, FWT and forgetting of one score matrix."""
    return {
        "acc": accuracy(matrix, learned_at),
        "bwt": backward_transfer(matrix, learned_at),
        "fwt": forward_transfer(matrix, before, learned_at),
        "forgetting": forgetting(matrix, learned_at),
    }


def _nan_to_none(matrix: np.ndarray) -> list:
    return [[None if math.isnan(v) else float(v) for v in row] for row in np.atleast_2d(matrix)]


def _none_to_nan(rows: list) -> np.ndarray:
    return np.array([[math.nan if v is None else v for v in row] for row in rows], dtype=np.float64)


@dataclasses.dataclass
class ScoreBoard:
    """Every score of a continual run so far: one matrix per score (rows: rounds, columns: tasks),
    the untrained model's scores, and the round that learned each task."""

    keys: list[str]
    before: dict[str, np.ndarray]
    learned_at: list[int] = dataclasses.field(default_factory=list)
    matrices: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in SCORES:
            self.matrices.setdefault(name, np.zeros((0, len(self.keys))))

    @property
    def rounds(self) -> int:
        return self.matrices["r2"].shape[0]

    def add_round(self, learned: Sequence[int], scores: Sequence[dict[str, float]]) -> None:
        """Record the scores on every task after a round that trained tasks `learned`."""
        if len(scores) != len(self.keys):
            raise ValueError(f"a round scores every task: got {len(scores)} for {len(self.keys)} tasks")
        for j in learned:
            if j == len(self.learned_at):
                self.learned_at.append(self.rounds)
        for name in SCORES:
            row = np.array([[s[name] for s in scores]], dtype=np.float64)
            self.matrices[name] = np.concatenate([self.matrices[name], row])

    def add_task(self, key: str, before: dict[str, float], latest: dict[str, float]) -> None:
        """A new column: the untrained and the latest model's scores; earlier rounds never saw it."""
        self.keys.append(key)
        for name in SCORES:
            column = np.full((self.rounds, 1), math.nan)
            if self.rounds:
                column[-1, 0] = latest[name]
            self.matrices[name] = np.concatenate([self.matrices[name], column], axis=1)
            self.before[name] = np.append(self.before[name], before[name])

    def summary(self) -> dict[str, Any]:
        """ACC/BWT/FWT/forgetting of every score, plus the final mean of each score."""
        out: dict[str, Any] = {"tasks": len(self.keys), "rounds": self.rounds}
        if not self.rounds:
            return out
        for name in SCORES:
            for what, value in summarize(self.matrices[name], self.before[name], self.learned_at).items():
                out[f"{name}_{what}"] = value
        return out

    def to_json(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "learned_at": list(self.learned_at),
                "before": {k: [float(x) for x in v] for k, v in self.before.items()},
                "matrices": {k: _nan_to_none(v) for k, v in self.matrices.items()}}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ScoreBoard:
        keys = list(raw["keys"])
        matrices = {k: _none_to_nan(v).reshape(-1, len(keys)) for k, v in raw["matrices"].items()}
        return cls(keys, {k: np.asarray(v, np.float64) for k, v in raw["before"].items()},
                   list(raw["learned_at"]), matrices)
