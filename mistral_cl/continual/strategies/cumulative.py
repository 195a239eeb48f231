"""`cumulative`: after every task, retrain from scratch on every task seen so far.

The reference a continual learner is measured against when storing everything and paying for it:
round i starts again from the untrained trainable half and trains on the training sets of tasks
0..i (as many epochs as any round), so its model never depends on the order in which it met the
tasks, only on which tasks it has met. It keeps every reaction (`stores_data`) and its compute grows
with the square of the number of tasks: round i processes i + 1 tasks' reactions per epoch.

Its score matrix has one row per task, like a sequential strategy's, so its BWT shows how much
adding tasks to one model costs the earlier ones. Every mode makes sense. The learning-rate schedule
is the run's, as long as its longest round (the last): earlier, shorter rounds stop part-way along it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

from mistral_cl.continual.strategies.base import Setting, Strategy, StrategyState, copy_tree
from mistral_cl.predictor import YieldModel
from mistral_cl.train import BatchSource


@dataclasses.dataclass(frozen=True)
class Cumulative(Strategy):
    """One round per task, each from the untrained model on every task learned so far."""

    name: ClassVar[str] = "cumulative"
    stores_data: ClassVar[bool] = True
    restarts: ClassVar[bool] = True

    def begin_round(self, setting: Setting, state: StrategyState, trainable: YieldModel) -> YieldModel:
        return copy_tree(setting.initial)  # own buffers: the step donates what it trains

    def round_source(self, setting: Setting, tasks: Sequence[int]) -> BatchSource:
        seen = list(range(max(tasks) + 1))
        return setting.pool.source(setting.pool.train_positions(seen))
