"""What a continual run measures: score matrices, pooled scores, and their summaries.

`R[r, j]` is the score on task j's held-out test set after training round r (a round trains one task
for sequential strategies, every known task at once for `joint`). Every task is scored after every
round, so columns of tasks not yet learned show forward transfer. `before[j]` is the untrained
model's score on task j. `learned_at[j]` is the round that first trained task j (`j` for sequential
strategies, 0 for every task of `joint`). With T rounds and `last = T - 1`:

- ACC: mean over learned tasks of `R[last, j]`;
- BWT: mean over tasks learned before the last round of `R[last, j] - R[learned_at[j], j]`;
- FWT: mean over tasks learned after round 0 of `R[learned_at[j] - 1, j] - before[j]`;
- zero-shot: mean over tasks learned after round 0 of `R[learned_at[j] - 1, j]`, the score on each
  next task just before it is trained (needs no untrained model, so classical rows have it too);
- forgetting: mean over tasks learned before the last round of the change from the task's best
  score in rounds `learned_at[j] .. last - 1` to `R[last, j]`.

**Sign conventions.** Every transfer figure is "later minus earlier" of the score it summarises.
For R² (higher is better) a negative BWT means forgetting, and forgetting is `best - last` (positive:
forgot). For the errors, RMSE and MAE in yield points (lower is better), the same differences are
changes of error: BWT > 0 means the error of earlier tasks grew since they were learned (forgetting),
FWT < 0 means earlier tasks lowered a task's error before it was trained, and forgetting is
`last - lowest` (positive: forgot). So `rmse_bwt = +5` reads "earlier tasks are predicted 5 yield
points worse at the end than just after they were learned".

A summary that has no task to average over (BWT of a single round, FWT of `joint`) is NaN. Entries
never measured (rounds that ran before an ingested task existed) are NaN and are skipped.

**Pooled scores** (the seed paper's "Overall") score the test reactions of several tasks as one set:
after every round, over the tasks learned so far (`seen`) and over every task of the stream (`all`).
Unlike the mean of per-task scores, a pooled R² credits a model for telling tasks' yield levels apart.
They need predictions, not per-task scores, so the caller computes them with `pooled_round` and hands
them to `ScoreBoard.add_round`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from jaxtyping import Float

from mistral_cl.scores import regression_scores

SCORES: tuple[str, ...] = ("r2", "rmse", "mae")
ERRORS: tuple[str, ...] = ("rmse", "mae")  # lower is better, in yield points
SUMMARIES: tuple[str, ...] = ("acc", "bwt", "fwt", "zero_shot", "forgetting")
POOLS: tuple[str, ...] = ("seen", "all")
POOLED: tuple[str, ...] = tuple(f"{pool}_{name}" for pool in POOLS for name in SCORES)

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
    """Mean change of earlier tasks' scores from just after learning them to the last round
    (R²: negative is forgetting; errors: positive is forgetting)."""
    last = matrix.shape[0] - 1
    learned = _learned(matrix, learned_at)
    return _mean([matrix[last, j] - matrix[learned[j], j]
                  for j in range(len(learned)) if learned[j] < last])


def zero_shot(matrix: Matrix, learned_at: Sequence[int] | None = None) -> float:
    """Mean score of each task just before the round that learned it (tasks learned after round 0)."""
    last = matrix.shape[0] - 1
    learned = _learned(matrix, learned_at)
    return _mean([matrix[learned[j] - 1, j] for j in range(len(learned)) if 0 < learned[j] <= last])


def forward_transfer(matrix: Matrix, before: Sequence[float],
                     learned_at: Sequence[int] | None = None) -> float:
    """Mean change of each task's score, from the untrained model to just before the task is trained
    (R²: positive helps; errors: negative helps)."""
    last = matrix.shape[0] - 1
    learned = _learned(matrix, learned_at)
    return _mean([matrix[learned[j] - 1, j] - before[j]
                  for j in range(len(learned)) if 0 < learned[j] <= last])


def forgetting(matrix: Matrix, learned_at: Sequence[int] | None = None, *,
               lower_is_better: bool = False) -> float:
    """Mean loss of each earlier task from its best score since it was learned (rounds before the
    last) to its last score; positive means forgotten, for scores and errors alike."""
    last = matrix.shape[0] - 1
    learned = _learned(matrix, learned_at)
    losses = []
    for j in range(len(learned)):
        history = matrix[learned[j]:last, j] if learned[j] < last else np.array([])
        if np.all(np.isnan(history)):
            continue
        if lower_is_better:
            losses.append(matrix[last, j] - float(np.nanmin(history)))
        else:
            losses.append(float(np.nanmax(history)) - matrix[last, j])
    return _mean(losses)


def summarize(matrix: Matrix, before: Sequence[float], learned_at: Sequence[int] | None = None, *,
              lower_is_better: bool = False) -> dict[str, float]:
    """ACC, BWT, FWT, zero-shot score and forgetting of one score matrix (`lower_is_better` for
    errors: it decides only which earlier score counts as the best, for forgetting)."""
    return {
        "acc": accuracy(matrix, learned_at),
        "bwt": backward_transfer(matrix, learned_at),
        "fwt": forward_transfer(matrix, before, learned_at),
        "zero_shot": zero_shot(matrix, learned_at),
        "forgetting": forgetting(matrix, learned_at, lower_is_better=lower_is_better),
    }


def pooled_scores(truths_by_task: Sequence[np.ndarray] | Mapping[int, np.ndarray],
                  preds_by_task: Sequence[np.ndarray] | Mapping[int, np.ndarray],
                  tasks: Iterable[int]) -> dict[str, float]:
    """R², RMSE and MAE (yield points) of the test reactions of `tasks` taken as one set.

    truths_by_task[j], preds_by_task[j]: measured and predicted yields (fractions) of task j's test
    reactions. No task: every score is NaN.
    """
    tasks = list(tasks)
    if not tasks:
        return {name: math.nan for name in SCORES}
    truth = np.concatenate([np.asarray(truths_by_task[j], np.float64).ravel() for j in tasks])
    predicted = np.concatenate([np.asarray(preds_by_task[j], np.float64).ravel() for j in tasks])
    return regression_scores(truth, predicted)


def pooled_round(truths_by_task: Sequence[np.ndarray] | Mapping[int, np.ndarray],
                 preds_by_task: Sequence[np.ndarray] | Mapping[int, np.ndarray],
                 seen: Iterable[int]) -> dict[str, float]:
    """The pooled scores of one round, keyed as `ScoreBoard.add_round` takes them: `seen_r2`, ...
    over the tasks in `seen` (see `ScoreBoard.seen_after`), `all_r2`, ... over every task given."""
    every = range(len(truths_by_task))
    out = {}
    for pool, tasks in (("seen", seen), ("all", every)):
        out.update({f"{pool}_{name}": v for name, v in pooled_scores(truths_by_task, preds_by_task,
                                                                      tasks).items()})
    return out


def _nan_to_none(matrix: np.ndarray) -> list:
    return [[None if math.isnan(v) else float(v) for v in row] for row in np.atleast_2d(matrix)]


def _none_to_nan(rows: list) -> np.ndarray:
    return np.array([[math.nan if v is None else v for v in row] for row in rows], dtype=np.float64)


@dataclasses.dataclass
class ScoreBoard:
    """Every score of a continual run so far: one matrix per score (rows: rounds, columns: tasks),
    the untrained model's scores, the round that learned each task, and the pooled scores of every
    round (`pooled["seen_r2"][r]` ..., NaN where the caller gave none)."""

    keys: list[str]
    before: dict[str, np.ndarray]
    learned_at: list[int] = dataclasses.field(default_factory=list)
    matrices: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    pooled: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in SCORES:
            self.matrices.setdefault(name, np.zeros((0, len(self.keys))))
        for name in POOLED:
            self.pooled.setdefault(name, np.full(self.rounds, math.nan))

    @property
    def rounds(self) -> int:
        return self.matrices["r2"].shape[0]

    def seen_after(self, learned: Sequence[int]) -> list[int]:
        """The tasks learned once a round that trains `learned` is done: the pool `seen` of
        `pooled_round` for that round."""
        return sorted(set(range(len(self.learned_at))) | set(learned))

    def add_round(self, learned: Sequence[int], scores: Sequence[dict[str, float]],
                  pooled: Mapping[str, float] | None = None) -> None:
        """Record the scores on every task after a round that trained tasks `learned`, and the
        round's pooled scores (from `pooled_round`; missing ones are NaN)."""
        if len(scores) != len(self.keys):
            raise ValueError(f"a round scores every task: got {len(scores)} for {len(self.keys)} tasks")
        for j in learned:
            if j == len(self.learned_at):
                self.learned_at.append(self.rounds)
        for name in POOLED:
            value = math.nan if pooled is None else pooled.get(name, math.nan)
            self.pooled[name] = np.append(self.pooled[name], value)
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
        """`{score}_{summary}` for every score and summary (e.g. `r2_acc`, `rmse_bwt`), and
        `pooled_{pool}_{score}` of the last round (e.g. `pooled_all_rmse`) where it was recorded."""
        out: dict[str, Any] = {"tasks": len(self.keys), "rounds": self.rounds}
        if not self.rounds:
            return out
        for name in SCORES:
            summary = summarize(self.matrices[name], self.before[name], self.learned_at,
                                lower_is_better=name in ERRORS)
            for what, value in summary.items():
                out[f"{name}_{what}"] = value
        for name in POOLED:
            if not math.isnan(self.pooled[name][-1]):
                out[f"pooled_{name}"] = float(self.pooled[name][-1])
        return out

    def to_json(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "learned_at": list(self.learned_at),
                "before": {k: [float(x) for x in v] for k, v in self.before.items()},
                "matrices": {k: _nan_to_none(v) for k, v in self.matrices.items()},
                "pooled": {k: _nan_to_none(v)[0] for k, v in self.pooled.items()}}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ScoreBoard:
        """A board written by `to_json` (boards written before pooled scores existed get NaN)."""
        keys = list(raw["keys"])
        matrices = {k: _none_to_nan(v).reshape(-1, len(keys)) for k, v in raw["matrices"].items()}
        pooled = {k: _none_to_nan([v]).ravel() for k, v in raw.get("pooled", {}).items()}
        return cls(keys, {k: np.asarray(v, np.float64) for k, v in raw["before"].items()},
                   list(raw["learned_at"]), matrices, pooled)
