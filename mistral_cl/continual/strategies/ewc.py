"""`ewc`: elastic weight consolidation (Kirkpatrick et al., 2017), stores no reactions.

After each task the diagonal Fisher information of the regression loss is estimated on the task's
training reactions. For a Gaussian likelihood that is the mean over reactions of the squared gradient
of the per-reaction squared error. Fishers add up over tasks, and later tasks minimise
`loss + lam / 2 * sum_k F_k (theta_k - theta*_k)^2`, with `theta*` the parameters after the latest
task. Only trainable parameters are anchored, so every mode makes sense; in `full` mode with a large
model the per-reaction gradients of one batch must fit in memory.

The squared error's Fisher is small: for the tiny model, the parameter change of a whole task of naive
fine-tuning costs only about 3e-6 in `sum_k F_k (delta theta_k)^2`, so `lam` must be of order 1e4 for
the pull to compete with a loss of about 0.05 (hence the default 3e4; rescale for other models).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

import sharding
from mistral_cl.continual.strategies.base import Setting, Strategy, StrategyState, copy_tree
from mistral_cl.data.batching import split_table, with_table
from mistral_cl.inference import BatchSource, forward
from mistral_cl.predictor import YieldModel
from mistral_cl.train import Objective, supervised_objective


@eqx.filter_jit
def _squared_gradients(trainable: YieldModel, frozen: YieldModel, batch: Any) -> YieldModel:
    """Sum over the batch's real rows of each row's squared gradient of its squared error."""

    each_row, table = split_table(batch)  # each row sees the whole molecule table

    def row_gradient(row):
        def error(params):
            pred = forward(eqx.combine(params, frozen), with_table(row, table))
            return jnp.sum(jnp.square(pred.astype(jnp.float32) - row.yields))

        return eqx.filter_grad(error)(trainable)

    rows = jax.tree.map(lambda x: x[:, None], each_row)
    grads = jax.vmap(row_gradient)(rows)
    return jax.tree.map(lambda g: jnp.tensordot(batch.weight, jnp.square(g), axes=1), grads)


def diagonal_fisher(setting: Setting, trainable: YieldModel, source: BatchSource) -> YieldModel:
    """Mean over `source`'s reactions of the squared per-reaction gradients (like `trainable`)."""
    total = None
    for batch in source.batches(setting.train.batch_size, shuffle=False):
        part = _squared_gradients(trainable, setting.frozen, sharding.feed(batch, setting.mesh))
        total = part if total is None else jax.tree.map(jnp.add, total, part)
    return jax.tree.map(lambda x: x / max(len(source), 1), total)


@dataclasses.dataclass(frozen=True)
class EWC(Strategy):
    """Quadratic pull towards the last task's parameters, weighted by the summed Fisher diagonals."""

    name: ClassVar[str] = "ewc"
    lam: float = 3e4

    def initial_state(self, setting: Setting) -> StrategyState:
        zeros = jax.tree.map(jnp.zeros_like, setting.initial)
        return StrategyState(arrays={"fisher": zeros, "anchor": copy_tree(setting.initial)})

    def state_like(self, setting: Setting, rounds_done: int) -> dict[str, Any]:
        return {"fisher": setting.initial, "anchor": setting.initial}

    def extra(self, setting: Setting, state: StrategyState) -> Any:
        return state.arrays

    def objective(self, setting: Setting) -> Objective:
        supervised = supervised_objective(setting.train.loss, setting.train.huber_delta)
        filter_spec, lam = setting.filter_spec, self.lam

        def objective(model, batches, key, extra):
            loss, metrics = supervised(model, batches, key, extra)
            params, _ = eqx.partition(model, filter_spec)
            terms = jax.tree.map(lambda p, f, a: jnp.sum(f * jnp.square(p.astype(jnp.float32) - a)),
                                 params, extra["fisher"], extra["anchor"])
            penalty = sum(jax.tree.leaves(terms), jnp.float32(0.0))
            total = loss + 0.5 * lam * penalty
            return total, dict(metrics, loss=total, ewc_penalty=penalty)

        return objective

    def end_round(self, setting: Setting, state: StrategyState, trainable: YieldModel,
                  tasks: Sequence[int], round_index: int) -> StrategyState:
        source = setting.pool.source(setting.pool.train_positions(tasks))
        fisher = jax.tree.map(jnp.add, state.arrays["fisher"], diagonal_fisher(setting, trainable, source))
        return StrategyState(arrays={"fisher": fisher, "anchor": copy_tree(trainable)}, values=state.values)
