"""`agem`: averaged gradient episodic memory (Chaudhry et al., 2019).

Each step computes the current task's gradient `g` and a reference gradient `g_ref` on a batch of the
replay memory (same memory policies and pairing as `replay`). When they conflict (`g . g_ref < 0`),
`g` is projected onto the half-space where the memory loss does not increase to first order:
`g - (g . g_ref / g_ref . g_ref) g_ref`. Only the projected gradient reaches the optimizer; the memory
loss itself is never minimised. Every mode makes sense.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from mistral_cl.continual.strategies.base import Setting
from mistral_cl.continual.strategies.replay import Rehearsal
from mistral_cl.inference import forward
from mistral_cl.predictor import cast_floating
from mistral_cl.train import COMPUTE_DTYPES, GradientTransform, regression_loss


def _dot(a, b) -> jax.Array:
    """The dot product of two gradient pytrees, leaf by leaf without flattening: a flattened (raveled)
    sharded leaf would be gathered whole on every device (49 GiB more per device for Mistral-7B's full
    fine-tuning on 8 devices, benchmarks/memory.py), an elementwise product stays sharded."""
    return sum((jnp.sum(x * y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)),
               jnp.float32(0.0))


@dataclasses.dataclass(frozen=True)
class AGEM(Rehearsal):
    """The current task's loss (the base objective), with its gradient projected away from the
    memory's."""

    name: ClassVar[str] = "agem"

    def grad_transform(self, setting: Setting) -> GradientTransform:
        kind, delta = setting.train.loss, setting.train.huber_delta
        dtype = COMPUTE_DTYPES[setting.train.compute_dtype]

        def memory_loss(trainable, frozen, batch):
            model = cast_floating(eqx.combine(trainable, frozen), dtype)
            return regression_loss(forward(model, batch), batch.yields, batch.weight, kind, delta)

        def project(grads, trainable, frozen, batches, key, extra):
            reference = eqx.filter_grad(memory_loss)(trainable, frozen, batches[1])
            dot = _dot(grads, reference)
            norm = _dot(reference, reference)
            scale = jnp.where(dot < 0, dot / jnp.maximum(norm, 1e-30), 0.0)
            return jax.tree.map(lambda g, r: g - scale * r, grads, reference)

        return project
