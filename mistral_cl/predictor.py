"""The yield model (backbone + MHAR head, with optional LoRA adapters) and its adaptation modes.

What trains is chosen by a boolean filter pytree, never by mutating modules:
- `head`: only the head; the backbone is frozen (its features can be cached, see `features.py`);
- `lora`: the head and the LoRA adapters; base weights are frozen;
- `full`: every parameter.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from mistral_cl.config import ModelConfig
from mistral_cl.errors import InputError
from mistral_cl.head import HeadConfig, HeadEnsemble, MHARHead, build_head
from mistral_cl.lora import LoRAConfig, add_lora, lora_filter
from mistral_cl.model import Mistral, Remat, check_depth

Mode = Literal["head", "lora", "full"]
MODES: tuple[str, ...] = ("head", "lora", "full")


@dataclasses.dataclass(frozen=True)
class AdaptationConfig:
    """How the backbone is adapted; `lora` is used only in `lora` mode."""

    mode: Mode = "full"
    lora: LoRAConfig = dataclasses.field(default_factory=LoRAConfig)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"unknown adaptation mode {self.mode!r}; choose one of {', '.join(MODES)}")


class YieldModel(eqx.Module):
    """Reaction tokens in, predicted yields in [0, 1] out ([members, batch] for a head ensemble).

    The head reads the backbone's hidden states after `feature_layer` blocks (None: the final,
    normalised output). Blocks past it never run, so in `head` mode they cost nothing; an earlier
    layer suits a backbone whose later layers carry little of what the head needs (a randomly
    initialised one scrambles the token identities that a reaction's yield depends on).
    """

    backbone: Mistral
    head: MHARHead | HeadEnsemble
    feature_layer: int | None = eqx.field(static=True, default=None)

    def features(
        self, tokens: Int[Array, "batch seq"], mask: Bool[Array, "batch seq"], *,
        segments: Int[Array, "batch seq"] | None = None, positions: Int[Array, "batch seq"] | None = None,
    ) -> Float[Array, "batch seq dim"]:
        """The token states the head reads (of packed rows with `segments` and `positions`, see
        `Mistral.__call__`)."""
        return self.backbone(tokens, mask, depth=self.feature_layer, segments=segments, positions=positions)

    def caches_features(self, mode: str) -> bool:
        """Whether training in `mode` reads cached backbone features instead of running the backbone:
        only the head trains (`head` mode) and it reads whole reactions. A head whose context is the
        molecule reads each batch's molecule table, which the frozen backbone encodes in the step."""
        return mode == "head" and self.head.context == "reaction"

    def __call__(
        self,
        tokens: Int[Array, "batch seq"],
        mask: Bool[Array, "batch seq"],
        *,
        key: PRNGKeyArray | None = None,
        molecules: Int[Array, "batch seq"] | None = None,
    ) -> Float[Array, "*members batch"]:
        return self.head(self.features(tokens, mask), mask, key=key, molecules=molecules)


def build_yield_model(
    model_config: ModelConfig,
    head_config: HeadConfig,
    adaptation: AdaptationConfig,
    *,
    key: PRNGKeyArray,
    backbone: Mistral | None = None,
    remat: Remat = "none",
) -> YieldModel:
    """A fresh head on `backbone` (random-initialised when None), with adapters in `lora` mode."""
    k_backbone, k_head, k_lora = jax.random.split(key, 3)
    if backbone is None:
        backbone = Mistral(model_config, key=k_backbone, remat=remat)
    elif backbone.config != model_config:
        raise InputError(
            "the loaded backbone does not match the requested model config",
            hint="choose the `model` preset that matches the `weights`, or leave `model` unset to read it"
            " from the weights",
        )
    check_depth(head_config.feature_layer, model_config.n_layers)
    if adaptation.mode == "lora":
        backbone = add_lora(backbone, adaptation.lora, key=k_lora)
    head = build_head(model_config.dim, head_config, key=k_head)
    return YieldModel(backbone, head, head_config.feature_layer)


def is_parameter(x) -> bool:
    """A floating array, or the `ShapeDtypeStruct` of one (abstract models are filtered alike)."""
    if isinstance(x, jax.ShapeDtypeStruct):
        return jnp.issubdtype(x.dtype, jnp.inexact)
    return eqx.is_inexact_array(x)


def trainable_filter(model: YieldModel, mode: Mode) -> YieldModel:
    """Boolean pytree shaped like `model`: True where a parameter trains in `mode`."""
    head = jax.tree.map(is_parameter, model.head)
    if mode == "full":
        backbone = jax.tree.map(is_parameter, model.backbone)
    elif mode == "lora":
        backbone = lora_filter(model.backbone)
    elif mode == "head":
        backbone = jax.tree.map(lambda _: False, model.backbone)
    else:
        raise InputError(f"unknown adaptation mode {mode!r}; choose one of {', '.join(MODES)}")
    return YieldModel(backbone, head, model.feature_layer)


def cast_floating(tree, dtype: jnp.dtype):
    """The same pytree with every floating array cast to `dtype` (integer arrays and keys untouched)."""
    return jax.tree.map(
        lambda x: x.astype(dtype) if eqx.is_inexact_array(x) and x.dtype != dtype else x, tree
    )
