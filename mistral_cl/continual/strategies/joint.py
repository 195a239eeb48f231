"""`joint`: every task's training data at once, the upper bound of a continual learner.

One round trains on the union of all tasks' training sets, so its score matrix has one row: the scores
after training on everything. ACC is the mean of that row; BWT, FWT and forgetting are undefined (NaN),
as nothing is learned in sequence. An ingested task adds a round that trains on all tasks known by
then, continuing from the current model. Every mode makes sense.

How long the round trains decides whether `joint` is an upper bound at all (at the run's 10 epochs
it was under-trained, and replay, which processes five times the reactions, beat it):

- `joint` (`epochs=run`): the run's epochs, like a sequential round;
- `joint:epochs=N`: N epochs;
- `joint:epochs=auto`: trained to convergence, its epoch count chosen on validation. A trial run
  holds out a `validation` share (default 0.2) of every task's *training* reactions (the test sets are
  never seen), trains on the rest for up to `max_epochs` epochs (default 60) and records the mean
  per-task validation RMSE after each; the round then trains again, from the same start and on all
  training reactions, for the epoch count with the lowest validation RMSE. Retraining, rather than
  keeping the trial's best weights, gives `joint` every training reaction, as every other row has, and
  a schedule that ends where its epochs end; the price is the trial's compute, which the round's
  count of processed reactions includes. The choice and the validation curve are in the strategy's
  rounds.json and its summary (`epochs_chosen`);
- `joint:budget=R`: compute-matched, trained for R processed reactions (forward and backward; within
  one batch): ceil(R / n) epochs of the n training reactions, the last one cut short. R is the count
  a finished run of another strategy records, e.g. replay's `reactions` in its summary.json (or the
  comparison table); `benchmarks/continual.py --match-joint replay` reads it and adds the row.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import ClassVar

from mistral_cl.continual.strategies.base import EpochChoice, Setting, Steps, Strategy, StrategyState
from mistral_cl.errors import InputError


@dataclasses.dataclass(frozen=True)
class Joint(Strategy):
    """One round per arrival of data, each on every task known by then, for `epochs` (`run`, a
    number, or `auto`: chosen on validation) or for a `budget` of processed reactions."""

    name: ClassVar[str] = "joint"
    stores_data: ClassVar[bool] = True
    epochs: str = "run"
    max_epochs: int = 60
    validation: float = 0.2
    budget: int = 0

    def __post_init__(self) -> None:
        hint = "e.g. `continual.strategies=joint:epochs=auto` or `joint:budget=200000`"
        if self.epochs not in ("run", "auto") and not (self.epochs.isdigit() and int(self.epochs) > 0):
            raise InputError(f"joint: epochs must be run, auto or a positive number, got {self.epochs!r}",
                             hint=hint)
        if self.max_epochs <= 0 or not 0.0 < self.validation < 1.0:
            raise InputError(f"joint: max_epochs must be positive and validation strictly between 0 and 1, "
                             f"got {self.max_epochs} and {self.validation}", hint=hint)
        if self.budget < 0 or (self.budget and self.epochs != "run"):
            raise InputError(f"joint: budget must be a number of reactions >= 0 and excludes epochs, got "
                             f"budget={self.budget}, epochs={self.epochs}", hint=hint)

    def rounds(self, arrivals: Sequence[int]) -> list[list[int]]:
        return [list(range(known)) for known in arrivals]

    def round_epochs(self, setting: Setting, tasks: Sequence[int]) -> int:
        if self.budget:
            return max(1, math.ceil(self.budget / len(self.round_source(setting, tasks))))
        if self.epochs == "run":
            return setting.train.epochs
        return self.max_epochs if self.epochs == "auto" else int(self.epochs)

    def epoch_choice(self) -> EpochChoice | None:
        return EpochChoice(self.validation, self.max_epochs) if self.epochs == "auto" else None

    def steps(self, setting: Setting, state: StrategyState, tasks: Sequence[int], round_index: int,
              epoch: int) -> Steps:
        steps = super().steps(setting, state, tasks, round_index, epoch)
        if not self.budget:
            yield from steps
            return
        left = self.budget - epoch * len(self.round_source(setting, tasks))
        for inputs in steps:
            if left <= 0:
                return
            left -= int(inputs[0].weight.sum())
            yield inputs
