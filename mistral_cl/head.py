"""Multi-Head Attention Regression (MHAR) head: token states in, one yield in [0, 1] out."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from mistral_cl.attention import Attention, attention_mask
from mistral_cl.errors import InputError
from mistral_cl.layers import Linear, RMSNorm


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """Shapes of the regression head; `ffn_dim=None` means the backbone width."""

    n_heads: int = 4
    ffn_dim: int | None = None
    mlp_dim: int = 256
    dropout: float = 0.1
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    def check(self, dim: int) -> None:
        if self.n_heads <= 0 or dim % self.n_heads:
            raise InputError(
                f"head n_heads={self.n_heads} must be positive and divide the backbone width {dim}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"head dropout must be in [0, 1), got {self.dropout}")


def _dropout(x: Array, rate: float, key: PRNGKeyArray | None) -> Array:
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class MHARHead(eqx.Module):
    """RoPE self-attention and a SiLU feed-forward (post-norm residuals), attention pooling, SiLU MLP.

    The head sees the whole reaction at once (no causal mask); padding is excluded from attention and
    from pooling, so it never changes a prediction.
    """

    attention: Attention
    attention_norm: RMSNorm
    ffn_in: Linear
    ffn_out: Linear
    ffn_norm: RMSNorm
    pool: Linear
    mlp_in: Linear
    mlp_out: Linear
    dropout: float = eqx.field(static=True)

    def __init__(self, dim: int, config: HeadConfig, *, key: PRNGKeyArray) -> None:
        config.check(dim)
        ka, k1, k2, kp, k3, k4 = jax.random.split(key, 6)
        head_dim = dim // config.n_heads
        self.attention = Attention(
            dim, config.n_heads, config.n_heads, head_dim, config.rope_theta, key=ka
        )
        self.attention_norm = RMSNorm(dim, config.norm_eps)
        ffn_dim = config.ffn_dim or dim
        self.ffn_in = Linear(dim, ffn_dim, key=k1, use_bias=True)
        self.ffn_out = Linear(ffn_dim, dim, key=k2, use_bias=True)
        self.ffn_norm = RMSNorm(dim, config.norm_eps)
        self.pool = Linear(dim, 1, key=kp)
        self.mlp_in = Linear(dim, config.mlp_dim, key=k3, use_bias=True)
        self.mlp_out = Linear(config.mlp_dim, 1, key=k4, use_bias=True)
        self.dropout = config.dropout

    def __call__(
        self,
        hidden: Float[Array, "batch seq dim"],
        mask: Bool[Array, "batch seq"],
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, " batch"]:
        """Predicted yields in [0, 1]. `key=None` is evaluation (no dropout)."""
        keys = [None] * 3 if key is None else list(jax.random.split(key, 3))
        mask = mask.astype(bool)
        positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
        x = hidden
        attn = self.attention(x, positions, attention_mask(mask, causal=False, window=None))
        x = self.attention_norm(x + _dropout(attn, self.dropout, keys[0]))
        ffn = self.ffn_out(jax.nn.silu(self.ffn_in(x)))
        x = self.ffn_norm(x + _dropout(ffn, self.dropout, keys[1]))

        scores = self.pool(x)[..., 0].astype(jnp.float32)
        scores = jnp.where(mask, scores, -jnp.inf)
        weights = jax.nn.softmax(scores, axis=-1)
        pooled = jnp.einsum("bt,btd->bd", weights.astype(x.dtype), x)

        h = _dropout(jax.nn.silu(self.mlp_in(pooled)), self.dropout, keys[2])
        return jax.nn.sigmoid(self.mlp_out(h)[..., 0].astype(jnp.float32))
