"""Low-rank adapters (LoRA) on the stacked backbone's linear layers.

An adapted weight is `W + (alpha / rank) * B @ A`. `B` starts at zero, so an adapted model equals its
base model until the first update. Adapters wrap `Linear` leaves of the stacked block pytree, so `A` and
`B` carry the same leading layer axis and run inside the same `lax.scan`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from mistral_cl.errors import InputError
from mistral_cl.layers import Linear
from mistral_cl.model import Mistral

# Where each target lives in the stacked backbone.
TARGETS: dict[str, Callable[[Mistral], Linear]] = {
    "wq": lambda m: m.layers.attention.wq,
    "wk": lambda m: m.layers.attention.wk,
    "wv": lambda m: m.layers.attention.wv,
    "wo": lambda m: m.layers.attention.wo,
    "w1": lambda m: m.layers.feed_forward.w1,
    "w2": lambda m: m.layers.feed_forward.w2,
    "w3": lambda m: m.layers.feed_forward.w3,
}
TARGET_ALIASES = {"q": "wq", "k": "wk", "v": "wv", "o": "wo", "gate": "w1", "down": "w2", "up": "w3"}


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """Rank, scale numerator and which projections get adapters (`wq..wo`, `w1..w3`)."""

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("wq", "wk", "wv", "wo")

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or self.rank <= 0:
            raise InputError(f"LoRA rank must be a positive integer, got {self.rank!r}")
        if self.alpha <= 0:
            raise InputError(f"LoRA alpha must be positive, got {self.alpha!r}")
        targets = tuple(TARGET_ALIASES.get(t, t) for t in self.targets)
        unknown = [t for t in targets if t not in TARGETS]
        if unknown or not targets:
            raise InputError(
                f"unknown LoRA targets {unknown or list(self.targets)}; choose from {sorted(TARGETS)}"
            )
        object.__setattr__(self, "targets", targets)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


class LoRALinear(eqx.Module):
    """A frozen `Linear` plus a trainable low-rank update; `a`/`b` may carry leading layer axes."""

    base: Linear
    a: Float[Array, "*layers rank in"]
    b: Float[Array, "*layers out rank"]
    scale: float = eqx.field(static=True)

    def __call__(self, x: Float[Array, "*batch in"]) -> Float[Array, "*batch out"]:
        # 2-D matmuls over all leading axes, like `Linear`: the gradients of A and B are plain GEMMs.
        flat = x.reshape(-1, x.shape[-1])
        low = flat @ self.a.astype(x.dtype).T
        update = (low @ self.b.astype(x.dtype).T).reshape(*x.shape[:-1], -1)
        return self.base(x) + self.scale * update

    def merged(self) -> Linear:
        delta = self.scale * jnp.einsum("...or,...ri->...oi", self.b, self.a)
        return eqx.tree_at(lambda lin: lin.weight, self.base, self.base.weight + delta.astype(
            self.base.weight.dtype))


def add_lora(model: Mistral, config: LoRAConfig, *, key: PRNGKeyArray) -> Mistral:
    """Wraps each target projection of every layer in a `LoRALinear` (A random, B zero)."""
    for target, subkey in zip(config.targets, jax.random.split(key, len(config.targets)), strict=True):
        where = TARGETS[target]
        base = where(model)
        *layers, out_features, in_features = base.weight.shape
        bound = 1.0 / math.sqrt(in_features)
        a = jax.random.uniform(subkey, (*layers, config.rank, in_features), jnp.float32, -bound, bound)
        b = jnp.zeros((*layers, out_features, config.rank), jnp.float32)
        model = eqx.tree_at(where, model, LoRALinear(base, a, b, config.scale))
    return model


def _is_lora(x) -> bool:
    return isinstance(x, LoRALinear)


def merge_lora(tree):
    """Folds every adapter into its base weight; the result has plain `Linear`s and no adapters."""
    return jax.tree.map(lambda x: x.merged() if _is_lora(x) else x, tree, is_leaf=_is_lora)


def lora_filter(tree) -> object:
    """A boolean pytree shaped like `tree`: True exactly on adapter `a`/`b` arrays."""

    def mark(x):
        if _is_lora(x):
            return LoRALinear(jax.tree.map(lambda _: False, x.base), True, True, x.scale)
        return False

    return jax.tree.map(mark, tree, is_leaf=_is_lora)
