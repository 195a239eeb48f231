"""`lwf`: learning without forgetting (Li & Hoiem, 2017), for regression; stores no reactions.

While learning a task, the model's predictions on the task's own inputs are also pulled towards those
of the model left by the previous task (passed to the step as `extra`): loss = regression loss +
`lam` * mean squared difference to the previous model's predictions. The first task has no previous
model (its pull weighs 0). Every mode makes sense; in `head` mode the previous head runs on the cached
features.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from mistral_cl.continual.strategies.base import Setting, Strategy, StrategyState, copy_tree
from mistral_cl.inference import forward
from mistral_cl.predictor import YieldModel, cast_floating
from mistral_cl.train import COMPUTE_DTYPES, Objective, regression_loss


@dataclasses.dataclass(frozen=True)
class LwF(Strategy):
    """Regression loss plus distillation towards the previous model on the current inputs."""

    name: ClassVar[str] = "lwf"
    lam: float = 1.0

    def initial_state(self, setting: Setting) -> StrategyState:
        return StrategyState(arrays={"previous": copy_tree(setting.initial)}, values={"teacher": False})

    def state_like(self, setting: Setting, rounds_done: int) -> dict[str, Any]:
        return {"previous": setting.initial}

    def extra(self, setting: Setting, state: StrategyState) -> Any:
        weight = self.lam if state.values["teacher"] else 0.0
        return {"previous": state.arrays["previous"], "weight": jnp.float32(weight)}

    def objective(self, setting: Setting) -> Objective:
        kind, delta, filter_spec = setting.train.loss, setting.train.huber_delta, setting.filter_spec
        dtype = COMPUTE_DTYPES[setting.train.compute_dtype]

        def objective(model, batches, key, extra):
            batch = batches[0]
            pred = forward(model, batch, key=key)
            loss = regression_loss(pred, batch.yields, batch.weight, kind, delta)
            _, frozen = eqx.partition(model, filter_spec)
            teacher = eqx.combine(cast_floating(extra["previous"], dtype), frozen)
            target = jax.lax.stop_gradient(forward(teacher, batch))
            distill = regression_loss(pred, target, batch.weight)
            total = loss + extra["weight"] * distill
            return total, {"loss": total, "task_loss": loss, "distill_loss": distill}

        return objective

    def end_round(self, setting: Setting, state: StrategyState, trainable: YieldModel,
                  tasks: Sequence[int], round_index: int) -> StrategyState:
        return StrategyState(arrays={"previous": copy_tree(trainable)}, values={"teacher": True})
