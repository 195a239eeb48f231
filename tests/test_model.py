import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mistral_cl.config import ModelConfig
from mistral_cl.errors import InputError
from mistral_cl.head import HeadConfig, MHARHead
from mistral_cl.lora import LoRAConfig, LoRALinear, merge_lora
from mistral_cl.model import Mistral
from mistral_cl.predictor import AdaptationConfig, YieldModel, build_yield_model, trainable_filter

CFG = ModelConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                  hidden_dim=64, sliding_window=6)


def _batch(lengths, total, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, CFG.vocab_size, (len(lengths), total)).astype(np.int32)
    mask = np.arange(total)[None] < np.asarray(lengths)[:, None]
    return jnp.asarray(np.where(mask, tokens, 0)), jnp.asarray(mask)


def _trained_like(model, seed=1):
    """Random non-zero values everywhere (so LoRA B != 0 and the head is not at its init)."""
    leaves, treedef = jax.tree.flatten(model)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(treedef, [
        x + 0.05 * jax.random.normal(k, x.shape, x.dtype) if eqx.is_inexact_array(x) else x
        for x, k in zip(leaves, keys, strict=True)])


@pytest.mark.parametrize("remat", ["none", "full", "dots"])
def test_padding_never_changes_hidden_states_of_real_tokens(remat):
    model = Mistral(CFG, key=jax.random.key(0), remat=remat)
    tokens, mask = _batch([13], 13)
    alone = model(tokens, mask)
    padded_tokens = jnp.concatenate([tokens, jnp.full((1, 7), 3, jnp.int32)], axis=1)
    right = model(padded_tokens, jnp.arange(20)[None] < 13)
    left = model(jnp.roll(padded_tokens, 7, axis=1), jnp.arange(20)[None] >= 7)
    np.testing.assert_allclose(right[:, :13], alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(left[:, 7:], alone, rtol=1e-5, atol=1e-6)


def test_mean_pooled_states_average_real_tokens_only():
    from mistral_cl.features import mean_pooled_states

    model = Mistral(CFG, key=jax.random.key(0))
    tokens, mask = _batch([5, 9], 9)
    pooled = mean_pooled_states(model, tokens, mask, 1)
    hidden = model(tokens, mask, depth=1)
    np.testing.assert_allclose(pooled[0], hidden[0, :5].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled[1], hidden[1].mean(0), rtol=1e-5, atol=1e-6)
    # a bf16 backbone's states are averaged in float32, and a row with no real token gives zeros
    half = jax.tree.map(lambda x: x.astype(jnp.bfloat16) if eqx.is_inexact_array(x) else x, model)
    pooled = mean_pooled_states(half, tokens, mask.at[1].set(False), 1)
    assert pooled.dtype == jnp.float32
    states = np.asarray(half(tokens, mask, depth=1)[0, :5], np.float64)
    np.testing.assert_allclose(pooled[0], states.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pooled[1], 0.0)


def test_sliding_window_limits_how_far_back_a_token_sees():
    model = Mistral(CFG, key=jax.random.key(0))
    tokens, mask = _batch([12], 12)
    changed = tokens.at[0, 0].set((tokens[0, 0] + 1) % CFG.vocab_size)
    a, b = model(tokens, mask), model(changed, mask)
    # Two layers of window 6 reach back 2 * (6 - 1) = 10 positions, so position 11 cannot see token 0.
    assert not np.allclose(a[0, 10], b[0, 10])
    np.testing.assert_array_equal(a[0, 11], b[0, 11])


def test_a_mask_with_holes_is_not_the_same_as_removing_those_tokens():
    # The window counts array slots, as transformers does: with slots 3-6 masked, slot 11 sees slots
    # 6-11 (5 real tokens), while the shortened sequence lets the same token see 6 real ones.
    model = Mistral(CFG, key=jax.random.key(0))
    tokens, mask = _batch([12], 12)
    holed = model(tokens, mask.at[0, 3:7].set(False))
    kept = np.r_[0:3, 7:12]
    removed = model(tokens[:, kept], jnp.ones((1, len(kept)), bool))
    np.testing.assert_allclose(holed[0, :3], removed[0, :3], rtol=1e-5, atol=1e-6)  # before the hole
    assert not np.allclose(holed[0, 11], removed[0, -1], atol=1e-3)


@pytest.mark.parametrize(("mode", "pool_heads"), [("head", 1), ("lora", 1), ("full", 1), ("head", 4)])
def test_padding_never_changes_a_prediction(mode, pool_heads):
    model = build_yield_model(CFG, HeadConfig(n_heads=2, mlp_dim=16, pool_heads=pool_heads),
                              AdaptationConfig(mode=mode), key=jax.random.key(0))
    model = _trained_like(model)
    tokens, mask = _batch([9, 5, 14], 14)
    batched = model(tokens, mask)
    for row, length in enumerate([9, 5, 14]):
        alone = model(tokens[row:row + 1, :length], mask[row:row + 1, :length])
        np.testing.assert_allclose(batched[row], alone[0], rtol=1e-5)


def test_dropout_is_active_only_with_a_key_and_differs_between_keys():
    model = build_yield_model(CFG, HeadConfig(n_heads=2, mlp_dim=16, dropout=0.5),
                              AdaptationConfig(mode="head"), key=jax.random.key(0))
    tokens, mask = _batch([9, 5], 9)
    assert np.array_equal(model(tokens, mask), model(tokens, mask))
    a = model(tokens, mask, key=jax.random.key(1))
    b = model(tokens, mask, key=jax.random.key(2))
    assert not np.allclose(a, b)


def test_lora_at_step_zero_equals_the_frozen_model():
    base = Mistral(CFG, key=jax.random.key(0))
    plain = build_yield_model(CFG, HeadConfig(n_heads=2), AdaptationConfig(mode="head"),
                              key=jax.random.key(5), backbone=base)
    adapted = build_yield_model(CFG, HeadConfig(n_heads=2), AdaptationConfig(mode="lora"),
                                key=jax.random.key(5), backbone=base)
    tokens, mask = _batch([9, 5], 9)
    np.testing.assert_array_equal(plain(tokens, mask), adapted(tokens, mask))


def test_merged_lora_equals_unmerged():
    adaptation = AdaptationConfig(mode="lora", lora=LoRAConfig(rank=4, targets=("q", "k", "v", "o",
                                                                                 "w1", "w2", "w3")))
    model = _trained_like(build_yield_model(CFG, HeadConfig(n_heads=2), adaptation, key=jax.random.key(0)))
    merged = YieldModel(merge_lora(model.backbone), model.head)
    assert not any(isinstance(x, LoRALinear) for x in jax.tree.leaves(
        merged, is_leaf=lambda x: isinstance(x, LoRALinear)))
    tokens, mask = _batch([9, 5], 9)
    np.testing.assert_allclose(merged(tokens, mask), model(tokens, mask), rtol=1e-5)


def test_trainable_filter_selects_exactly_what_each_mode_trains():
    model = build_yield_model(CFG, HeadConfig(n_heads=2), AdaptationConfig(mode="lora"),
                              key=jax.random.key(0))
    count = lambda tree: sum(x.size for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array)))
    head = count(model.head)
    lora, _ = eqx.partition(model, trainable_filter(model, "lora"))
    expected_lora = sum(x.a.size + x.b.size for x in jax.tree.leaves(
        model.backbone, is_leaf=lambda x: isinstance(x, LoRALinear)) if isinstance(x, LoRALinear))
    assert count(lora) == head + expected_lora
    only_head, _ = eqx.partition(model, trainable_filter(model, "head"))
    assert count(only_head) == head
    everything, _ = eqx.partition(model, trainable_filter(model, "full"))
    assert count(everything) == count(model)


def _molecules(mask):
    """Molecule ids like `Tokenizer.molecules`: BOS 0, then molecules of three tokens, padding 0."""
    positions = np.arange(mask.shape[1])[None]
    return jnp.asarray(np.where(np.asarray(mask) & (positions > 0), (positions - 1) // 3 + 1, 0), jnp.int16)


@pytest.mark.parametrize("mode", ["head", "full"])
def test_padding_never_changes_a_prediction_of_a_head_that_pools_molecules(mode):
    model = build_yield_model(CFG, HeadConfig(n_heads=2, mlp_dim=16, pool_heads=2, pool="molecules"),
                              AdaptationConfig(mode=mode), key=jax.random.key(0))
    model = _trained_like(model)
    tokens, mask = _batch([9, 5, 14], 14)
    batched = model(tokens, mask, molecules=_molecules(mask))
    for row, length in enumerate([9, 5, 14]):
        alone = model(tokens[row:row + 1, :length], mask[row:row + 1, :length],
                      molecules=_molecules(mask[row:row + 1, :length]))
        np.testing.assert_allclose(batched[row], alone[0], rtol=1e-5)


def test_molecule_pool_sums_one_code_per_molecule_whatever_their_numbering():
    head = _trained_like(MHARHead(32, HeadConfig(n_heads=2, pool_heads=2, pool="molecules"),
                                  key=jax.random.key(0)))
    x = jax.random.normal(jax.random.key(1), (2, 9, 32))
    mask = jnp.asarray(np.arange(9)[None] < np.array([[9], [7]]))
    molecules = jnp.asarray([[0, 1, 1, 0, 2, 2, 2, 3, 3], [0, 1, 1, 0, 2, 2, 2, 0, 0]], jnp.int16)
    pooled = head.molecule_pool(x, mask, molecules)
    # By hand: each pooling head's softmax over one molecule's tokens weighs its slice of the width.
    for row in range(2):
        codes = []
        for m in range(1, 4):
            tokens = np.flatnonzero(np.asarray((molecules[row] == m) & mask[row]))
            if not len(tokens):
                continue
            weights = jax.nn.softmax(head.pool(x[row, tokens]), axis=0)  # [tokens, pool heads]
            slices = x[row, tokens].reshape(len(tokens), 2, 16)
            vector = jnp.einsum("tp,tpd->pd", weights, slices).reshape(32)
            codes.append(jax.nn.silu(head.molecule(vector)))
        np.testing.assert_allclose(pooled[row], sum(codes), rtol=1e-5, atol=1e-6)
    swapped = jnp.where(molecules == 1, 3, jnp.where(molecules == 3, 1, molecules)).astype(jnp.int16)
    np.testing.assert_allclose(head.molecule_pool(x, mask, swapped), pooled, rtol=1e-6, atol=1e-6)
    grads = jax.grad(lambda x: head(x, mask, molecules=molecules).sum())(x)
    assert bool(jnp.isfinite(grads).all())


def test_a_head_that_pools_molecules_refuses_batches_without_them():
    head = MHARHead(32, HeadConfig(n_heads=2, pool="molecules"), key=jax.random.key(0))
    with pytest.raises(InputError, match="carry no molecule ids"):
        head(jnp.zeros((1, 4, 32)), jnp.ones((1, 4), bool))
    with pytest.raises(InputError, match="head pool must be one of"):
        HeadConfig(pool="atoms")


def test_a_head_without_its_token_block_pools_the_backbone_states_as_they_are():
    config = HeadConfig(n_heads=2, mlp_dim=16, pool_heads=2, pool="molecules", token_block=False)
    fresh = MHARHead(32, config, key=jax.random.key(0))
    assert fresh.attention is None and fresh.ffn_in is None
    with_block = MHARHead(32, dataclasses.replace(config, token_block=True), key=jax.random.key(0))
    for layer in ("pool", "molecule", "mlp_in", "mlp_out"):  # the other layers start the same
        np.testing.assert_array_equal(getattr(fresh, layer).weight, getattr(with_block, layer).weight)
    head = _trained_like(fresh)
    x = jax.random.normal(jax.random.key(1), (2, 9, 32))
    mask = jnp.asarray(np.arange(9)[None] < np.array([[9], [7]]))
    molecules = jnp.asarray([[0, 1, 1, 0, 2, 2, 2, 3, 3], [0, 1, 1, 0, 2, 2, 2, 0, 0]], jnp.int16)
    np.testing.assert_array_equal(head.pooled(x, mask, molecules=molecules),
                                  head.molecule_pool(x, mask, molecules))
    # Padding still changes nothing, and the head trains (finite gradients for every leaf it has).
    wide = [jnp.pad(a, ((0, 0), (0, 3)) + ((0, 0),) * (a.ndim - 2)) for a in (x, mask, molecules)]
    np.testing.assert_allclose(head(wide[0], wide[1], molecules=wide[2]), head(x, mask, molecules=molecules),
                               rtol=1e-6)
    grads = eqx.filter_grad(lambda h: jnp.sum(h(x, mask, molecules=molecules)))(head)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
