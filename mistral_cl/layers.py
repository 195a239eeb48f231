"""Building blocks shared by the backbone and the regression head.

Weights follow `eqx.nn.Linear`'s `(out, in)` layout, but modules act on arrays with any leading batch
axes, so a whole `[batch, seq, dim]` activation is one matmul rather than a vmap of matrix-vector
products. Modules hold parameters in whatever dtype they were given; the training step casts the
floating tree to the compute dtype, and numerically sensitive parts (norms, rotary angles) upcast to
float32 internally.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray


class Linear(eqx.Module):
    """A bias-free (or biased) affine map; `weight` is `(out, in)`."""

    weight: Float[Array, "out in"]
    bias: Float[Array, " out"] | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        key: PRNGKeyArray,
        use_bias: bool = False,
        std: float = 0.02,
        dtype: jnp.dtype = jnp.float32,
    ) -> None:
        self.weight = std * jax.random.normal(key, (out_features, in_features), dtype)
        self.bias = jnp.zeros((out_features,), dtype) if use_bias else None

    def __call__(self, x: Float[Array, "*batch in"]) -> Float[Array, "*batch out"]:
        # One 2-D matmul over all leading axes: its weight gradient is then a single plain GEMM
        # (XLA:CPU handles dots with several contracting batch axes far less well).
        lead = x.shape[:-1]
        y = (x.reshape(-1, x.shape[-1]) @ self.weight.astype(x.dtype).T).reshape(*lead, -1)
        if self.bias is not None:
            y = y + self.bias.astype(y.dtype)
        return y


class Embedding(eqx.Module):
    """Token id -> vector lookup table `(vocab, dim)`."""

    weight: Float[Array, "vocab dim"]

    def __init__(
        self, vocab_size: int, dim: int, *, key: PRNGKeyArray, std: float = 0.02,
        dtype: jnp.dtype = jnp.float32,
    ) -> None:
        self.weight = std * jax.random.normal(key, (vocab_size, dim), dtype)

    def __call__(self, tokens: Int[Array, "*batch"]) -> Float[Array, "*batch dim"]:
        return jnp.take(self.weight, tokens, axis=0)


class RMSNorm(eqx.Module):
    """Root-mean-square normalisation with a learned per-channel gain, computed in float32."""

    weight: Float[Array, " dim"]
    eps: float = eqx.field(static=True)

    def __init__(self, dim: int, eps: float = 1e-5, dtype: jnp.dtype = jnp.float32) -> None:
        self.weight = jnp.ones((dim,), dtype)
        self.eps = eps

    def __call__(self, x: Float[Array, "*batch dim"]) -> Float[Array, "*batch dim"]:
        x32 = x.astype(jnp.float32)
        scale = jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return (x32 * scale * self.weight.astype(jnp.float32)).astype(x.dtype)


def apply_rope(
    x: Float[Array, "batch seq heads head_dim"], positions: Int[Array, "batch seq"], theta: float
) -> Float[Array, "batch seq heads head_dim"]:
    """Rotary position embedding in the "rotate half" convention used by Hugging Face checkpoints.

    Mistral's own `consolidated` checkpoints use the interleaved convention; `weights.py` permutes their
    query/key projections on load so that one convention serves both.
    """
    head_dim = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [b, t, head_dim/2]
    cos = jnp.concatenate([jnp.cos(angles)] * 2, axis=-1)[:, :, None, :]
    sin = jnp.concatenate([jnp.sin(angles)] * 2, axis=-1)[:, :, None, :]
    x32 = x.astype(jnp.float32)
    half = head_dim // 2
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    return (x32 * cos + rotated * sin).astype(x.dtype)
