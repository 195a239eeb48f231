"""The Mistral decoder backbone: token ids in, final hidden states out (no language-model head)."""

from __future__ import annotations

import dataclasses
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from mistral_cl.attention import Attention, AttentionMask, attention_mask, segment_mask
from mistral_cl.config import ModelConfig
from mistral_cl.errors import InputError
from mistral_cl.layers import Embedding, Linear, RMSNorm

Remat = Literal["none", "full", "dots"]

# What the backward pass may keep from the forward pass of each block. "full" keeps only the block
# inputs (least memory, one extra forward); "dots" keeps matmul outputs without batch dimensions,
# recomputing the cheap elementwise work; "none" keeps everything (fastest while it fits).
_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}

# Stacks this shallow run unrolled. Under the loop, the backward pass reads each saved activation from a
# zero-initialised [n_layers, ...] stack, sliced per layer: a quarter of the tiny model's CPU train step.
# Deeper stacks keep the loop, so compile time does not grow with depth.
_UNROLL_UP_TO = 4


class FeedForward(eqx.Module):
    """SwiGLU: `w2(silu(w1 x) * w3 x)`."""

    w1: Linear
    w2: Linear
    w3: Linear

    def __init__(self, dim: int, hidden_dim: int, *, key: PRNGKeyArray, dtype=jnp.float32) -> None:
        k1, k2, k3 = jax.random.split(key, 3)
        self.w1 = Linear(dim, hidden_dim, key=k1, dtype=dtype)
        self.w2 = Linear(hidden_dim, dim, key=k2, dtype=dtype)
        self.w3 = Linear(dim, hidden_dim, key=k3, dtype=dtype)

    def __call__(self, x: Float[Array, "*batch dim"]) -> Float[Array, "*batch dim"]:
        return self.w2(jax.nn.silu(self.w1(x)) * self.w3(x))


class Block(eqx.Module):
    """Pre-norm transformer block: attention then SwiGLU, each added to the residual stream."""

    attention_norm: RMSNorm
    attention: Attention
    ffn_norm: RMSNorm
    feed_forward: FeedForward

    def __init__(self, config: ModelConfig, *, key: PRNGKeyArray, dtype=jnp.float32) -> None:
        ka, kf = jax.random.split(key)
        self.attention_norm = RMSNorm(config.dim, config.norm_eps, dtype)
        self.attention = Attention(
            config.dim, config.n_heads, config.n_kv_heads, config.head_dim, config.rope_theta,
            key=ka, dtype=dtype,
        )
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps, dtype)
        self.feed_forward = FeedForward(config.dim, config.hidden_dim, key=kf, dtype=dtype)

    def __call__(
        self,
        x: Float[Array, "batch seq dim"],
        positions: Int[Array, "batch seq"],
        mask: AttentionMask,
    ) -> Float[Array, "batch seq dim"]:
        h = x + self.attention(self.attention_norm(x), positions, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class Mistral(eqx.Module):
    """Embeddings, `n_layers` blocks stored as one stacked pytree, and a final RMSNorm.

    Every leaf of `layers` has a leading axis of length `n_layers`; the blocks run under `lax.scan`, so
    compile time does not grow with depth and sharding specs carry a leading `None` for that axis.
    Stacks of at most four layers are unrolled, which is faster and still compiles quickly.
    """

    tok_embeddings: Embedding
    layers: Block
    norm: RMSNorm
    config: ModelConfig = eqx.field(static=True)
    remat: Remat = eqx.field(static=True)

    def __init__(
        self,
        config: ModelConfig,
        *,
        key: PRNGKeyArray,
        dtype: jnp.dtype = jnp.float32,
        remat: Remat = "none",
    ) -> None:
        if remat not in ("none", *_REMAT_POLICIES):
            raise ValueError(f"remat must be one of none, {', '.join(_REMAT_POLICIES)}; got {remat!r}")
        ke, kl = jax.random.split(key)
        self.tok_embeddings = Embedding(config.vocab_size, config.dim, key=ke, dtype=dtype)
        keys = jax.random.split(kl, config.n_layers)
        self.layers = eqx.filter_vmap(lambda k: Block(config, key=k, dtype=dtype))(keys)
        self.norm = RMSNorm(config.dim, config.norm_eps, dtype)
        self.config = config
        self.remat = remat

    def with_remat(self, remat: Remat) -> Mistral:
        """The same weights with another rematerialisation policy (a static setting, not a leaf)."""
        if remat not in ("none", *_REMAT_POLICIES):
            raise ValueError(f"remat must be one of none, {', '.join(_REMAT_POLICIES)}; got {remat!r}")
        new = object.__new__(Mistral)
        for field in dataclasses.fields(self):
            object.__setattr__(new, field.name, getattr(self, field.name))
        object.__setattr__(new, "remat", remat)
        return new

    def __call__(
        self,
        tokens: Int[Array, "batch seq"],
        mask: Bool[Array, "batch seq"],
        *,
        depth: int | None = None,
        segments: Int[Array, "batch seq"] | None = None,
        positions: Int[Array, "batch seq"] | None = None,
    ) -> Float[Array, "batch seq dim"]:
        """Hidden states of every position; padding positions (`mask == False`) never affect real ones.

        Positions count real tokens only, so left- and right-padded batches give the same states.
        The sliding window, by contrast, counts array slots, as transformers does: a query sees the
        `sliding_window` slots up to its own, masked or not. Padding at either end never matters, but a
        mask with holes in the middle of a sequence is not the same as removing those tokens: the
        window then reaches fewer real tokens back than it would in the shortened sequence.
        `depth` counts the blocks to run, as transformers numbers `hidden_states`: 0 is the token
        embeddings, k < n_layers the residual stream after block k (no final norm), and None or
        n_layers the whole model's normalised output.
        `segments` and `positions` (together) run packed rows: several sequences per row, each token
        seeing only earlier tokens of its own segment (id > 0), at the given positions within it
        (`data.batching.Parts`).
        """
        depth = check_depth(depth, self.config.n_layers)
        mask = mask.astype(bool)
        x = self.tok_embeddings(tokens)
        if depth == 0:
            return x
        if segments is None:
            positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
            attn_mask = attention_mask(mask, causal=True, window=self.config.sliding_window)
        else:
            attn_mask = segment_mask(segments, causal=True, window=self.config.sliding_window)
        layers, static = eqx.partition(self.layers, eqx.is_array)
        if depth < self.config.n_layers:
            layers = jax.tree.map(lambda leaf: leaf[:depth], layers)

        def step(x, layer):
            block = eqx.combine(layer, static)
            return block(x, positions, attn_mask), None

        if self.remat != "none":
            step = jax.checkpoint(step, policy=_REMAT_POLICIES[self.remat])
        x, _ = jax.lax.scan(step, x, layers, unroll=depth <= _UNROLL_UP_TO)
        return self.norm(x) if depth == self.config.n_layers else x


def check_depth(depth: int | None, n_layers: int) -> int:
    """`depth` as a block count in [0, n_layers] (None: all of them), or an InputError."""
    if depth is None:
        return n_layers
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= n_layers:
        raise InputError(
            f"feature layer {depth!r} is not a layer of this backbone",
            hint=f"choose 0 (the token embeddings) to {n_layers} (the final output, the default)",
        )
    return depth
