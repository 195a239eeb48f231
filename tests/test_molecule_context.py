"""A head whose context is the molecule (`HeadConfig.context="molecule"`): the molecule table of
encoded reactions, its packing into each batch, and that the packed step computes what encoding
every molecule on its own would."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

import sharding
from mistral_cl.config import ModelConfig
from mistral_cl.continual.strategies.base import stand_in
from mistral_cl.continual.strategies.ewc import _squared_gradients
from mistral_cl.data.batching import EncodedReactions, encode_reactions, match_parts, parts_shape
from mistral_cl.data.suzuki import read_suzuki_csv
from mistral_cl.errors import InputError
from mistral_cl.head import HeadConfig
from mistral_cl.inference import forward, pooled_batch, predict
from mistral_cl.predictor import AdaptationConfig, build_yield_model, trainable_filter
from mistral_cl.tokenizer import Tokenizer

CFG = ModelConfig(vocab_size=32000, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                  hidden_dim=64, sliding_window=6)
HEAD = HeadConfig(n_heads=2, mlp_dim=16, pool_heads=2, pool="molecules", context="molecule", dropout=0.0)


@pytest.fixture(scope="module")
def encoded() -> EncodedReactions:
    dataset = read_suzuki_csv()
    rows = np.random.default_rng(0).choice(len(dataset.smiles), 96, replace=False)
    return encode_reactions(dataset.subset(rows), Tokenizer.default())


def _molecules_of(encoded: EncodedReactions, row: int) -> list[tuple[int, ...]]:
    """A reaction's molecules read from its own tokens (`Tokenizer.molecules`), in text order."""
    ids = encoded.molecules[row]
    return [tuple(encoded.tokens[row][ids == m].tolist()) for m in range(1, int(ids.max()) + 1)]


def _table_molecules(encoded: EncodedReactions, row: int) -> list[tuple[int, ...]]:
    return [tuple(encoded.parts[i, : encoded.part_lengths[i]].tolist())
            for i in encoded.part_ids[row] if i >= 0]


def test_the_table_holds_each_distinct_molecule_once_and_every_reaction_finds_its_own(encoded):
    distinct = {m for row in range(len(encoded)) for m in _molecules_of(encoded, row)}
    assert len(encoded.parts) == len(distinct) < 70  # a screen: few molecules, many reactions
    for row in range(len(encoded)):
        assert _table_molecules(encoded, row) == _molecules_of(encoded, row)
    # Subsets keep the whole table; concat renumbers a molecule shared by both sides into one row.
    a, b = encoded.subset(np.arange(40, 96)), encoded.subset(np.arange(40))
    joined = EncodedReactions.concat([a, b])
    assert len(joined.parts) == len(encoded.parts)
    for row in range(len(joined)):
        assert _table_molecules(joined, row) == _molecules_of(encoded, (row + 40) % 96)


@pytest.mark.parametrize("batch_size", [4, 32])
def test_each_batch_packs_its_distinct_molecules_once_within_the_fixed_bound(encoded, batch_size):
    rows, width, table = parts_shape(encoded, batch_size)
    for batch in encoded.batches(batch_size, shuffle=True, seed=1):
        parts = batch.parts
        assert parts.tokens.shape == parts.segments.shape == (rows, width) and parts.lengths.shape == (table,)
        used = set(batch.slots[batch.slots >= 0].tolist())
        assert used == set(range(len(used)))  # table rows 0..n-1, each used, no other
        assert not parts.lengths[len(used):].any()
        packed = {}
        for u in range(len(used)):
            at = parts.segments == u + 1
            assert at.sum() == parts.lengths[u] and at.any(axis=1).sum() == 1  # one packed row, whole
            np.testing.assert_array_equal(parts.positions[at], np.arange(parts.lengths[u]))
            packed[u] = tuple(parts.tokens[at].tolist())
        assert len(set(packed.values())) == len(used)
        for r, row in enumerate(batch.index):
            assert [packed[u] for u in batch.slots[r] if u >= 0] == _molecules_of(encoded, row)


@eqx.filter_jit
def _alone(model, ids: jax.Array, mask: jax.Array) -> jax.Array:
    """Molecules' codes, each encoded as a sequence of its own (a row: no packing, no other
    molecule), right-padded (padding changes nothing, `test_model.py`)."""
    states = model.head.token_states(model.features(ids, mask), mask)
    return model.head.molecule_pool(states, mask, mask.astype(jnp.int32))


@pytest.mark.parametrize("feature_layer", [0, None], ids=["embeddings", "output"])
def test_a_reaction_is_the_sum_of_its_molecules_each_encoded_alone(encoded, feature_layer):
    model = build_yield_model(CFG, dataclasses.replace(HEAD, feature_layer=feature_layer),
                              AdaptationConfig(mode="full"), key=jax.random.key(0))
    batch = next(encoded.batches(8, shuffle=True, seed=3))
    pooled = np.asarray(pooled_batch(model, batch))
    molecules = sorted({m for row in batch.index for m in _molecules_of(encoded, row)})
    ids = np.zeros((len(molecules), 64), np.int32)
    for i, m in enumerate(molecules):
        ids[i, : len(m)] = m
    mask = np.arange(64)[None] < np.array([len(m) for m in molecules])[:, None]
    codes = dict(zip(molecules, np.asarray(_alone(model, ids, mask)), strict=True))
    for r, row in enumerate(batch.index):
        expected = sum(codes[m] for m in _molecules_of(encoded, row))
        np.testing.assert_allclose(pooled[r], expected, rtol=2e-4, atol=2e-5)
    # Padding the table to another batch's shape (replay pairs) changes no prediction.
    wider = next(encoded.batches(32, shuffle=False))._replace(parts=None)
    grown, _ = match_parts(batch, wider._replace(parts=next(encoded.batches(64, shuffle=False)).parts))
    np.testing.assert_allclose(forward(model, grown), forward(model, batch), rtol=1e-5)


def test_the_step_trains_and_strategies_that_tile_or_split_rows_keep_the_table_whole(encoded):
    model = build_yield_model(CFG, dataclasses.replace(HEAD, feature_layer=0), AdaptationConfig(mode="head"),
                              key=jax.random.key(0))
    batch = next(encoded.batches(4, shuffle=False))
    tiled = stand_in(batch, 12)
    assert tiled.parts is batch.parts and tiled.slots.shape == (12, batch.slots.shape[1])
    np.testing.assert_allclose(forward(model, tiled)[:4], forward(model, batch), rtol=1e-6)
    trainable, frozen = eqx.partition(model, trainable_filter(model, "head"))
    fisher = _squared_gradients(trainable, frozen, batch)  # per-row gradients share the table
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(fisher))
    assert sum(float(jnp.sum(x)) for x in jax.tree.leaves(fisher)) > 0


def test_on_a_mesh_every_device_gets_the_whole_table_and_predictions_match(encoded):
    model = build_yield_model(CFG, dataclasses.replace(HEAD, feature_layer=0), AdaptationConfig(mode="head"),
                              key=jax.random.key(0))
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2, 1), ("data", "fsdp", "tensor"))
    placed = sharding.feed(next(encoded.batches(8, shuffle=False)), mesh)
    assert placed.parts.tokens.sharding.is_fully_replicated
    assert not placed.slots.sharding.is_fully_replicated
    np.testing.assert_allclose(predict(model, encoded, 8, mesh=mesh), predict(model, encoded, 8),
                               rtol=1e-5, atol=1e-6)


def test_a_molecule_context_needs_the_molecule_pool_and_batches_with_a_table(encoded):
    with pytest.raises(InputError, match="needs pool 'molecules'"):
        HeadConfig(context="molecule")
    with pytest.raises(InputError, match="head context must be one of"):
        HeadConfig(pool="molecules", context="atom")
    model = build_yield_model(CFG, HEAD, AdaptationConfig(mode="head"), key=jax.random.key(0))
    batch = next(encoded.batches(4, shuffle=False))
    with pytest.raises(InputError, match="no molecule table"):
        forward(model, batch._replace(parts=None, slots=None))
