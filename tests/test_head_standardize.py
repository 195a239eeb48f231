"""The head's pooled-vector standardiser: a data-dependent initialisation, and runs written before it."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mistral_cl.config import ModelConfig
from mistral_cl.head import HeadConfig, HeadEnsemble, MHARHead
from mistral_cl.predictor import AdaptationConfig, build_yield_model
from mistral_cl.runs import RunConfig, load_run_config
from mistral_cl.train import standardize_head

MICRO = ModelConfig(vocab_size=64, dim=32, n_layers=1, n_heads=4, n_kv_heads=2, head_dim=8,
                    hidden_dim=64, sliding_window=16, max_seq_len=64)


def _features(n=40, width=10, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, width + 1, n)
    mask = np.arange(width)[None] < lengths[:, None]
    # A large part shared by every reaction and small per-reaction differences, as in a screen.
    hidden = 3.0 + 0.05 * rng.standard_normal((n, width, dim))
    return jnp.asarray(hidden, jnp.float32), jnp.asarray(mask)


def _standardized_pooled(head: MHARHead, hidden, mask):
    return (head.pooled(hidden, mask) - head.pool_shift) * head.pool_scale


def test_standardized_head_sees_pooled_vectors_with_zero_mean_and_unit_variance():
    head = MHARHead(32, HeadConfig(n_heads=2, mlp_dim=16, dropout=0.0), key=jax.random.key(0))
    hidden, mask = _features()
    raw = head.pooled(hidden, mask)
    assert float(jnp.min(jnp.std(raw, axis=0))) < 0.1  # what the MLP would otherwise see
    fitted = head.standardized(raw)
    z = _standardized_pooled(fitted, hidden, mask)
    np.testing.assert_allclose(jnp.mean(z, axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(jnp.std(z, axis=0), 1.0, rtol=1e-3)
    # Only the standardiser changed, and the prediction with it.
    same = lambda h: [h.attention, h.pool, h.mlp_in, h.mlp_hidden, h.mlp_out]
    assert eqx.tree_equal(same(head), same(fitted))
    assert not np.allclose(head(hidden, mask), fitted(hidden, mask))


def test_a_constant_channel_gets_a_bounded_scale():
    head = MHARHead(32, HeadConfig(n_heads=2, mlp_dim=16), key=jax.random.key(0))
    pooled = jax.random.normal(jax.random.key(1), (50, 32)).at[:, 3].set(7.0)
    fitted = head.standardized(pooled)
    assert np.all(np.isfinite(fitted.pool_scale))
    assert float(fitted.pool_scale[3]) <= 1e3 / float(jnp.max(jnp.std(pooled, axis=0))) * 1.0001


def test_standardize_head_uses_the_models_own_pooled_vectors_member_by_member():
    model = build_yield_model(MICRO, HeadConfig(n_heads=2, members=2, mlp_dim=16),
                              AdaptationConfig(mode="head"), key=jax.random.key(0))
    hidden, mask = _features()

    class Source:  # cached features, batched as `CachedFeatures` batches them
        def __len__(self):
            return hidden.shape[0]

        def batches(self, batch_size, *, shuffle, seed=0):
            order = np.random.default_rng(seed).permutation(len(self)) if shuffle else np.arange(len(self))
            for start in range(0, len(self), batch_size):
                rows = order[start:start + batch_size]
                yield _Batch(hidden[rows], mask[rows], np.ones(len(rows), np.float32))

    fitted = standardize_head(model, Source(), batch_size=16, max_reactions=1000)
    assert isinstance(fitted.head, HeadEnsemble)
    for i in range(2):
        z = _standardized_pooled(fitted.head.member(i), hidden, mask)
        np.testing.assert_allclose(jnp.std(z, axis=0), 1.0, rtol=1e-3)
    assert not np.allclose(fitted.head.member(0).pool_scale, fitted.head.member(1).pool_scale)
    assert eqx.tree_equal(fitted.backbone, model.backbone)


class _Batch(eqx.Module):
    features: jax.Array
    mask: jax.Array
    weight: np.ndarray


def test_without_standardisation_the_model_is_returned_as_is():
    model = build_yield_model(MICRO, HeadConfig(n_heads=2, mlp_dim=16, standardize=False),
                              AdaptationConfig(mode="head"), key=jax.random.key(0))
    assert not model.head.standardizes and model.head.pool_shift is None
    assert standardize_head(model, None) is model


@pytest.mark.parametrize("layers", [1, 3])
def test_mlp_layers_sets_the_number_of_hidden_layers(layers):
    head = MHARHead(32, HeadConfig(n_heads=2, mlp_dim=16, mlp_layers=layers), key=jax.random.key(0))
    assert len(head.mlp_hidden) == layers - 1
    hidden, mask = _features(n=4)
    assert head(hidden, mask, key=jax.random.key(1)).shape == (4,)


def test_a_run_written_before_the_new_head_settings_keeps_its_old_head(tmp_path):
    config = RunConfig(model=MICRO, head=HeadConfig(n_heads=2))
    raw = config.to_dict()
    del raw["head"]["mlp_layers"], raw["head"]["standardize"]
    (tmp_path / "run.json").write_text(json.dumps(raw))
    head = load_run_config(tmp_path).head
    assert (head.mlp_layers, head.standardize) == (1, False)
    assert (HeadConfig().mlp_layers, HeadConfig().standardize) == (2, True)  # new runs
