"""Multi-Head Attention Regression (MHAR) head: token states in, one yield in [0, 1] out.

RoPE self-attention -> x = RMSNorm(x + MHA(x)) -> SiLU feed-forward -> x = RMSNorm(x + FFN(x)) ->
masked attention pooling -> (per-channel standardisation) -> SiLU MLP (`mlp_layers` hidden layers) ->
sigmoid. With `HeadConfig.pool="molecules"` the pooling is done per molecule of the reaction and the
molecules' vectors are summed (see `MHARHead.molecule_pool`). The standardiser's shift and scale
are set from training reactions before the first step (`MHARHead.standardized`, driven by
`train.standardize_head`).

`HeadConfig.members > 1` builds a `HeadEnsemble`: that many independently initialised MHAR heads on
the same backbone features, trained side by side (each on its own loss) and averaged at prediction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from mistral_cl.attention import Attention, attention_mask, segment_mask
from mistral_cl.errors import InputError
from mistral_cl.layers import Linear, RMSNorm

POOLS = ("reaction", "molecules")
CONTEXTS = ("reaction", "molecule")


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """Shapes of the regression head; `ffn_dim=None` means the backbone width.

    `mlp_layers`: hidden SiLU layers of the MLP after the pooling. `standardize`: a trainable
    per-channel shift and scale of the pooled vector, initialised from data (`MHARHead.standardized`).
    `feature_layer`: which of the backbone's hidden states the head reads, numbered as transformers'
    `hidden_states` (0: the token embeddings; None: the final output). See `YieldModel`.
    `pool`: "reaction" pools all tokens of the reaction into one vector; "molecules" pools each
    molecule's tokens on its own and sums the molecules' vectors after a SiLU layer
    (`MHARHead.molecule_pool`).
    `token_block`: whether the head runs its own transformer block (RoPE self-attention and a SiLU
    feed-forward) over the tokens before pooling. Without it the pools read the backbone's states
    as they are, and a step costs a small part as much: the block's projections of every token are
    most of a head step's work.
    `molecule_dropout`: the share of training reactions also trained with one molecule read as a
    placeholder, and molecules never trained on read as it at prediction (`data.unseen`; 0: off).
    `context`: what a token's state is computed from. "reaction": the whole reaction's text (the
    backbone reads the reaction SMILES, the head's attention spans all of it). "molecule" (with
    `pool="molecules"`): the molecule alone. The backbone and the head's block see each molecule on
    its own, so a molecule has one code wherever it occurs, and a batch encodes each of its
    distinct molecules once (`Batch.parts`) instead of every reaction's full text: a screen's batch
    of 64 reactions holds a few dozen distinct molecules. With pretrained weights read at depth,
    the backbone then sees no neighbouring molecules, a different model from "reaction"'s.
    """

    n_heads: int = 4
    members: int = 1
    pool_heads: int = 1
    ffn_dim: int | None = None
    mlp_dim: int = 256
    mlp_layers: int = 2
    standardize: bool = True
    feature_layer: int | None = None
    pool: str = "reaction"
    token_block: bool = True
    context: str = "reaction"
    dropout: float = 0.1
    molecule_dropout: float = 0.0
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if not isinstance(self.members, int) or self.members <= 0:
            raise InputError(f"head members must be a positive number of heads, got {self.members!r}")
        if self.pool not in POOLS:
            raise InputError(f"head pool must be one of {', '.join(POOLS)}, got {self.pool!r}",
                             hint="e.g. --head-pool molecules")
        if self.context not in CONTEXTS:
            raise InputError(f"head context must be one of {', '.join(CONTEXTS)}, got {self.context!r}",
                             hint="e.g. --head-context molecule")
        if not 0.0 <= self.molecule_dropout <= 1.0:
            raise InputError(f"head molecule_dropout must be a share in [0, 1], got {self.molecule_dropout}",
                             hint="e.g. --molecule-dropout 0.5")
        if self.context == "molecule" and self.pool != "molecules":
            raise InputError("a head that encodes each molecule on its own pools molecules: "
                             f"context 'molecule' needs pool 'molecules', got {self.pool!r}",
                             hint="add --head-pool molecules")

    def check(self, dim: int) -> None:
        if self.n_heads <= 0 or dim % self.n_heads:
            raise InputError(
                f"head n_heads={self.n_heads} must be positive and divide the backbone width {dim}"
            )
        if self.pool_heads <= 0 or dim % self.pool_heads:
            raise InputError(
                f"head pool_heads={self.pool_heads} must be positive and divide the backbone width {dim}"
            )
        if not isinstance(self.mlp_layers, int) or self.mlp_layers <= 0:
            raise InputError(f"head mlp_layers must be a positive number of layers, got {self.mlp_layers!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"head dropout must be in [0, 1), got {self.dropout}")


def _dropout(x: Array, rate: float, key: PRNGKeyArray | None) -> Array:
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def no_molecule_table() -> InputError:
    """The error for a batch without a molecule table reaching a head whose context is the molecule."""
    return InputError("this head encodes each molecule on its own, but the batch has no molecule table",
                      hint="encode the reactions with `encode_reactions`, which builds it")


class MHARHead(eqx.Module):
    """RoPE self-attention and a SiLU feed-forward (post-norm residuals), attention pooling, SiLU MLP.

    The head sees the whole reaction at once (no causal mask); padding is excluded from attention and
    from pooling, so it never changes a prediction.
    """

    attention: Attention | None
    attention_norm: RMSNorm | None
    ffn_in: Linear | None
    ffn_out: Linear | None
    ffn_norm: RMSNorm | None
    pool: Linear
    molecule: Linear | None
    pool_shift: Float[Array, " dim"] | None
    pool_scale: Float[Array, " dim"] | None
    mlp_in: Linear
    mlp_hidden: tuple[Linear, ...]
    mlp_out: Linear
    dropout: float = eqx.field(static=True)
    context: str = eqx.field(static=True, default="reaction")

    def __init__(self, dim: int, config: HeadConfig, *, key: PRNGKeyArray) -> None:
        config.check(dim)
        ka, k1, k2, kp, k3, k4 = jax.random.split(key, 6)
        # The same keys whether or not the block exists, so the other layers start the same.
        if config.token_block:
            self.attention = Attention(
                dim, config.n_heads, config.n_heads, dim // config.n_heads, config.rope_theta, key=ka
            )
            self.attention_norm = RMSNorm(dim, config.norm_eps)
            ffn_dim = config.ffn_dim or dim
            self.ffn_in = Linear(dim, ffn_dim, key=k1, use_bias=True)
            self.ffn_out = Linear(ffn_dim, dim, key=k2, use_bias=True)
            self.ffn_norm = RMSNorm(dim, config.norm_eps)
        else:
            self.attention = self.attention_norm = self.ffn_in = self.ffn_out = self.ffn_norm = None
        self.pool = Linear(dim, config.pool_heads, key=kp)
        self.molecule = (Linear(dim, dim, key=jax.random.fold_in(key, 2), use_bias=True)
                         if config.pool == "molecules" else None)
        # The identity until `standardized` sets them from data (see there).
        self.pool_shift = jnp.zeros((dim,)) if config.standardize else None
        self.pool_scale = jnp.ones((dim,)) if config.standardize else None
        self.mlp_in = Linear(dim, config.mlp_dim, key=k3, use_bias=True)
        self.mlp_hidden = tuple(
            Linear(config.mlp_dim, config.mlp_dim, key=k, use_bias=True)
            for k in jax.random.split(jax.random.fold_in(key, 1), config.mlp_layers - 1)
        )
        self.mlp_out = Linear(config.mlp_dim, 1, key=k4, use_bias=True)
        self.dropout = config.dropout
        self.context = config.context

    def __call__(
        self,
        hidden: Float[Array, "batch seq dim"],
        mask: Bool[Array, "batch seq"],
        *,
        key: PRNGKeyArray | None = None,
        molecules: Int[Array, "batch seq"] | None = None,
        parts: PartsInput | None = None,
    ) -> Float[Array, " batch"]:
        """Predicted yields in [0, 1]. `key=None` is evaluation (no dropout). `molecules`: each
        token's molecule (`Tokenizer.molecules`), needed by a head that pools molecules. A head
        whose context is the molecule reads `parts` instead: `hidden` and `mask` are then the
        states of a batch's distinct molecules, packed (see `PartsInput`)."""
        n_keys = 2 + len(self.mlp_hidden) + 1
        keys = [None] * n_keys if key is None else list(jax.random.split(key, n_keys))
        h = self.pooled(hidden, mask, keys=keys[:2], molecules=molecules, parts=parts)
        if self.pool_shift is not None:
            h = (h - self.pool_shift.astype(h.dtype)) * self.pool_scale.astype(h.dtype)
        for layer, layer_key in zip((self.mlp_in, *self.mlp_hidden), keys[2:], strict=True):
            h = _dropout(jax.nn.silu(layer(h)), self.dropout, layer_key)
        return jax.nn.sigmoid(self.mlp_out(h)[..., 0].astype(jnp.float32))

    @property
    def standardizes(self) -> bool:
        """Whether the pooled vector is standardised before the MLP (`HeadConfig.standardize`)."""
        return self.pool_shift is not None

    def pooled(
        self,
        hidden: Float[Array, "batch seq dim"],
        mask: Bool[Array, "batch seq"],
        *,
        keys: Sequence[PRNGKeyArray | None] = (None, None),
        molecules: Int[Array, "batch seq"] | None = None,
        parts: PartsInput | None = None,
    ) -> Float[Array, "batch dim"]:
        """The reaction vector the MLP reads, before standardisation."""
        if self.context == "molecule":
            if parts is None:
                raise no_molecule_table()
            states = self.token_states(hidden, mask, keys=keys, parts=parts)
            return self.parts_pool(states, parts)
        states = self.token_states(hidden, mask, keys=keys)
        if self.molecule is None:
            return self.attention_pool(states, mask)
        if molecules is None:
            raise InputError("this head pools molecules, but its batches carry no molecule ids",
                             hint="encode the reactions with `encode_reactions`, which records them")
        return self.molecule_pool(states, mask, molecules)

    def standardized(self, pooled: Float[Array, "reactions dim"]) -> MHARHead:
        """This head with its standardiser set from `pooled` (this head's `pooled` vectors of some
        training reactions): a data-dependent initialisation after which every channel of those
        vectors has mean 0 and variance 1.

        Most tokens of a reaction screen are the same in every reaction (catalyst, water, the
        product's scaffold), so pooled vectors differ from one reaction to the next by a small part of
        their size, and by very different amounts per channel. Standardised, those differences reach
        the MLP at unit scale from the first step. Shift and scale stay trainable.

        (A full ZCA whitening did better for an MLP on fixed mean-pooled backbone features, R^2 0.83
        against 0.78 on split 0 in 30 epochs, but worse in this head, whose token layers train and
        overfit along the amplified low-variance directions: 0.754 against 0.765.)
        """
        if self.pool_shift is None:
            return self
        pooled = pooled.astype(jnp.float32)
        mean, std = jnp.mean(pooled, axis=0), jnp.std(pooled, axis=0)
        scale = 1.0 / jnp.maximum(std, 1e-3 * jnp.max(std) + 1e-12)
        return eqx.tree_at(lambda h: (h.pool_shift, h.pool_scale), self, (mean, scale))

    def token_states(
        self,
        hidden: Float[Array, "batch seq dim"],
        mask: Bool[Array, "batch seq"],
        *,
        keys: Sequence[PRNGKeyArray | None] = (None, None),
        parts: PartsInput | None = None,
    ) -> Float[Array, "batch seq dim"]:
        """The token block: x = RMSNorm(x + MHA(x)), x = RMSNorm(x + FFN(x)); the states as they are
        for a head without it (`HeadConfig.token_block=False`). With `parts`, the rows are packed
        molecules, and each token attends within its own molecule, at its position in it."""
        if self.attention is None:
            return hidden
        mask = mask.astype(bool)
        if parts is None:
            positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
            visible = attention_mask(mask, causal=False, window=None)
        else:
            positions, visible = parts.positions, segment_mask(parts.segments)
        x = hidden
        attn = self.attention(x, positions, visible)
        x = self.attention_norm(x + _dropout(attn, self.dropout, keys[0]))
        ffn = self.ffn_out(jax.nn.silu(self.ffn_in(x)))
        return self.ffn_norm(x + _dropout(ffn, self.dropout, keys[1]))

    def attention_pool(
        self, x: Float[Array, "batch seq dim"], mask: Bool[Array, "batch seq"]
    ) -> Float[Array, "batch dim"]:
        """Masked attention pooling: each pooling head weighs the real tokens with its own softmax and
        pools its own slice of the width (one head pools the whole width)."""
        scores = self.pool(x).astype(jnp.float32)
        scores = jnp.where(mask.astype(bool)[..., None], scores, -jnp.inf)
        weights = jax.nn.softmax(scores, axis=1)
        batch, seq, dim = x.shape
        pool_heads = weights.shape[-1]
        slices = x.reshape(batch, seq, pool_heads, dim // pool_heads)
        return jnp.einsum("btp,btpd->bpd", weights.astype(x.dtype), slices).reshape(batch, dim)

    def molecule_pool(
        self, x: Float[Array, "batch seq dim"], mask: Bool[Array, "batch seq"],
        molecules: Int[Array, "batch seq"],
    ) -> Float[Array, "batch dim"]:
        """Attention pooling within each molecule, then sum over molecules of SiLU(W v + b).

        A screen's reactions share most of their text, so a pool over the whole reaction averages
        which ligand, base or solvent a vial holds into a small part of one vector. Here each
        molecule gets its own vector (each pooling head's softmax runs over that molecule's tokens
        only), a SiLU layer maps it, and the reaction is the sum: like one-hot components, a sum of
        one code per molecule, whatever the order or number of molecules in the SMILES. Tokens of
        molecule 0 (BOS, bare separators) and padding are left out of the pool; they still take
        part in the self-attention before it.
        """
        batch, seq, dim = x.shape
        member = mask.astype(bool) & (molecules > 0)
        ids = jnp.where(member, molecules, 0).astype(jnp.int32)  # segment 0 collects the rest
        scores = self.pool(x).astype(jnp.float32)
        slices = x.reshape(batch, seq, scores.shape[-1], dim // scores.shape[-1])
        pooled, present = jax.vmap(lambda *a: _segment_pool(*a, seq))(scores, slices, ids, member)
        coded = jax.nn.silu(self.molecule(pooled))
        return jnp.sum(jnp.where(present[..., None], coded, 0.0), axis=1).astype(x.dtype)

    def parts_pool(self, x: Float[Array, "rows width dim"], parts: PartsInput) -> Float[Array, "batch dim"]:
        """`molecule_pool` for a head whose context is the molecule: each molecule of the packed
        table pooled and coded once, and each reaction the sum of its molecules' codes."""
        rows, width, dim = x.shape
        scores = self.pool(x).astype(jnp.float32).reshape(rows * width, -1)
        slices = x.reshape(rows * width, scores.shape[-1], dim // scores.shape[-1])
        segments = parts.segments.reshape(-1).astype(jnp.int32)
        n = parts.lengths.shape[0]
        pooled, _ = _segment_pool(scores, slices, segments, segments > 0, n + 1)
        coded = jax.nn.silu(self.molecule(pooled[1:]))  # segment s holds table row s - 1
        slots = parts.slots
        taken = jnp.where((slots >= 0)[..., None], coded[jnp.maximum(slots, 0)], 0.0)
        return jnp.sum(taken, axis=1).astype(x.dtype)


class PartsInput(NamedTuple):
    """What a head whose context is the molecule reads beside the packed states: each token's
    molecule (`segments` int [R, W]: table row + 1, 0 for padding) and position within it
    (`positions`), the table's molecule lengths (`lengths` [U], which fixes its size), and each
    reaction's molecules as table rows (`slots` int [B, K], -1 for none)."""

    segments: Int[Array, "rows width"]
    positions: Int[Array, "rows width"]
    lengths: Int[Array, " table"]
    slots: Int[Array, "batch molecules"]


def _segment_pool(scores: Float[Array, "seq heads"], slices: Float[Array, "seq heads part"],
                  ids: Int[Array, " seq"], member: Bool[Array, " seq"], n: int
                  ) -> tuple[Float[Array, "n dim"], Bool[Array, " n"]]:
    """Attention pooling of the tokens of each segment (`ids` < `n`; tokens not `member` left
    out): a softmax per (segment, pooling head) over the segment's tokens. Returns the pooled
    vectors [n, heads * part] and which segments hold a token."""
    # The shift is only for range, so it gets no gradient.
    top = jax.lax.stop_gradient(jax.ops.segment_max(jnp.where(member[:, None], scores, -jnp.inf), ids, n))
    shift = jnp.where(member[:, None], top[ids], 0.0)
    e = jnp.where(member[:, None], jnp.exp(jnp.where(member[:, None], scores, 0.0) - shift), 0.0)
    total = jax.ops.segment_sum(e, ids, n)
    weights = e / jnp.where(total > 0, total, 1.0)[ids]
    pooled = jax.ops.segment_sum(weights[..., None].astype(slices.dtype) * slices, ids, n)
    # A segment's top token adds exp(0) = 1 to its total; a segment with no member gathers zeros.
    return pooled.reshape(n, -1), total[:, 0] > 0


class HeadEnsemble(eqx.Module):
    """`n` MHAR heads stored as one stacked pytree (every leaf has a leading axis of length `n`): one
    step trains all of them, each with its own initialisation and dropout.

    Returns one prediction per member, [n, batch]. The losses average the members' losses, so each
    member is fitted on its own (a deep ensemble, not one wide model); `point_prediction` averages
    them into the ensemble's prediction. Only global-norm gradient clipping sees them together.
    The members run one after another inside the traced function rather than under `vmap`: XLA:CPU
    ran the batched matmuls of `vmap` slower (3 members, batch 16 x 176 tokens, dim 128: 169 ms per
    train step under `vmap`, 128 ms unrolled, against 47 ms for one head).
    """

    members: MHARHead
    n: int = eqx.field(static=True)

    def __init__(self, dim: int, config: HeadConfig, *, key: PRNGKeyArray) -> None:
        config.check(dim)
        self.members = eqx.filter_vmap(lambda k: MHARHead(dim, config, key=k))(
            jax.random.split(key, config.members))
        self.n = config.members

    @property
    def standardizes(self) -> bool:
        return self.members.standardizes

    @property
    def context(self) -> str:
        """What a token's state is computed from (`HeadConfig.context`), the same for every member."""
        return self.members.context

    def pooled(
        self, hidden: Float[Array, "batch seq dim"], mask: Bool[Array, "batch seq"],
        *, molecules: Int[Array, "batch seq"] | None = None, parts: PartsInput | None = None,
    ) -> Float[Array, "members batch dim"]:
        return jnp.stack([self.member(i).pooled(hidden, mask, molecules=molecules, parts=parts)
                          for i in range(self.n)])

    def standardized(self, pooled: Float[Array, "members reactions dim"]) -> HeadEnsemble:
        """Every member standardised on its own pooled vectors (see `MHARHead.standardized`)."""
        members = eqx.filter_vmap(lambda m, p: m.standardized(p))(self.members, pooled)
        return eqx.tree_at(lambda e: e.members, self, members)

    def member(self, i: int) -> MHARHead:
        return jax.tree.map(lambda x: x[i] if eqx.is_array(x) else x, self.members)

    def __call__(
        self,
        hidden: Float[Array, "batch seq dim"],
        mask: Bool[Array, "batch seq"],
        *,
        key: PRNGKeyArray | None = None,
        molecules: Int[Array, "batch seq"] | None = None,
        parts: PartsInput | None = None,
    ) -> Float[Array, "members batch"]:
        keys = [None] * self.n if key is None else list(jax.random.split(key, self.n))
        return jnp.stack([self.member(i)(hidden, mask, key=keys[i], molecules=molecules, parts=parts)
                          for i in range(self.n)])


def build_head(dim: int, config: HeadConfig, *, key: PRNGKeyArray) -> MHARHead | HeadEnsemble:
    """One MHAR head, or an ensemble of `config.members` of them."""
    return MHARHead(dim, config, key=key) if config.members == 1 else HeadEnsemble(dim, config, key=key)


def point_prediction(pred: Float[Array, "*members batch"]) -> Float[Array, " batch"]:
    """The yield predicted per reaction: a single head's output, or the mean of an ensemble's."""
    return pred if pred.ndim == 1 else jnp.mean(pred, axis=0)
