"""`adapters`: one set of trainable parameters per task, chosen by task id at prediction time.

Each task starts from the untrained trainable half and its result is kept as that task's own: in
`lora` mode a LoRA adapter and head per task, in `head` mode a head per task on the frozen backbone,
in `full` mode a whole model per task (independent models: costly for large backbones). A task is
predicted with its own parameters, or the untrained ones before it is learned, so earlier tasks'
predictions never change: no forgetting by construction, and no forward transfer either. It is
**task-aware**: prediction needs the task id, which the other strategies do not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

from mistral_cl.continual.strategies.base import (
    Members,
    Setting,
    Strategy,
    StrategyState,
    copy_tree,
    learned_and_unseen,
    per_task_like,
    task_slot,
)
from mistral_cl.predictor import YieldModel


@dataclasses.dataclass(frozen=True)
class Adapters(Strategy):
    """A fresh trainable half per task, stored when the task ends."""

    name: ClassVar[str] = "adapters"
    task_aware: ClassVar[bool] = True
    restarts: ClassVar[bool] = True

    def state_like(self, setting: Setting, rounds_done: int) -> dict[str, Any]:
        return per_task_like(setting, rounds_done)

    def begin_round(self, setting: Setting, state: StrategyState, trainable: YieldModel) -> YieldModel:
        return copy_tree(setting.initial)

    def end_round(self, setting: Setting, state: StrategyState, trainable: YieldModel,
                  tasks: Sequence[int], round_index: int) -> StrategyState:
        arrays = dict(state.arrays)
        for task in tasks:
            arrays[task_slot(task)] = copy_tree(trainable)
        return StrategyState(arrays=arrays, values=state.values)

    def predictors(self, setting: Setting, state: StrategyState, trainable: YieldModel,
                   n_tasks: int) -> list[tuple[Members, list[int]]]:
        learned, unseen = learned_and_unseen(state, n_tasks)
        groups = [((state.arrays[task_slot(task)],), [task]) for task in learned]
        return groups + ([((setting.initial,), unseen)] if unseen else [])
