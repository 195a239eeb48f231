"""What each adaptation mode trains, and what it must leave alone."""

import equinox as eqx
import jax
import numpy as np
import pytest

from mistral_cl.config import ModelConfig
from mistral_cl.data.batching import encode_reactions
from mistral_cl.data.sources import load_dataset
from mistral_cl.features import cache_features
from mistral_cl.head import HeadConfig
from mistral_cl.inference import predict
from mistral_cl.predictor import AdaptationConfig, build_yield_model, trainable_filter
from mistral_cl.tokenizer import Tokenizer
from mistral_cl.train import TrainConfig, fit

MICRO = ModelConfig(vocab_size=32000, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16,
                    hidden_dim=64, sliding_window=64)


@pytest.fixture(scope="module")
def reactions():
    dataset = load_dataset("suzuki")
    encoded = encode_reactions(dataset, Tokenizer.default(), buckets=(224,))  # one shape: one compile
    return encoded.subset(np.random.default_rng(0).permutation(len(dataset))[:96])


def _frozen_arrays(model, mode):
    _, frozen = eqx.partition(model, trainable_filter(model, mode))
    return [np.asarray(x) for x in jax.tree.leaves(frozen)]


@pytest.mark.parametrize("mode", ["head", "lora"])
def test_frozen_weights_are_bit_identical_after_training(mode, reactions, tmp_path):
    model = build_yield_model(MICRO, HeadConfig(n_heads=2, mlp_dim=16), AdaptationConfig(mode=mode),
                              key=jax.random.key(0))
    before = _frozen_arrays(model, mode)
    source = reactions if mode != "head" else cache_features(model.backbone, reactions, tmp_path)
    config = TrainConfig(epochs=2, batch_size=32, learning_rate=3e-3)
    trained = fit(model, trainable_filter(model, mode), source, config, progress=False).model
    after = _frozen_arrays(trained, mode)
    assert len(before) == len(after) > 0
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    trainable_before, _ = eqx.partition(model, trainable_filter(model, mode))
    trainable_after, _ = eqx.partition(trained, trainable_filter(trained, mode))
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(trainable_before),
                                                         jax.tree.leaves(trainable_after), strict=True)]
    assert all(changed), "every trainable array should have moved"


@pytest.mark.parametrize("feature_layer", [None, 0])
def test_cached_features_equal_freshly_computed_ones(reactions, tmp_path, feature_layer):
    model = build_yield_model(MICRO, HeadConfig(n_heads=2, feature_layer=feature_layer),
                              AdaptationConfig(mode="head"), key=jax.random.key(0))
    cached = cache_features(model.backbone, reactions, tmp_path, depth=model.feature_layer)
    again = cache_features(model.backbone, reactions, tmp_path, depth=model.feature_layer)  # reopened
    assert again.store.shape == cached.store.shape
    assert len(list(tmp_path.iterdir())) == 1, "the second call must reuse the first one's cache"
    for batch in cached.batches(16, shuffle=True, seed=3):
        tokens = np.zeros(batch.mask.shape, np.int32)
        width = min(tokens.shape[1], reactions.tokens.shape[1])
        tokens[:, :width] = reactions.tokens[batch.index, :width]
        fresh = np.asarray(eqx.filter_jit(model.features)(tokens, batch.mask))
        np.testing.assert_allclose(batch.features[batch.mask], fresh[batch.mask], rtol=1e-5, atol=1e-6)
    # Head-mode predictions from the cache equal end-to-end predictions.
    np.testing.assert_allclose(predict(model, cached), predict(model, reactions), rtol=1e-5, atol=1e-6)


def test_another_feature_layer_never_reads_a_stale_cache(reactions, tmp_path):
    model = build_yield_model(MICRO, HeadConfig(n_heads=2), AdaptationConfig(mode="head"),
                              key=jax.random.key(0))
    output = cache_features(model.backbone, reactions, tmp_path)
    embeddings = cache_features(model.backbone, reactions, tmp_path, depth=0)
    assert len(list(tmp_path.iterdir())) == 2
    assert not np.allclose(output.in_memory, embeddings.in_memory)
    # The final layer named explicitly is the default's cache, not a third one.
    cache_features(model.backbone, reactions, tmp_path, depth=MICRO.n_layers)
    assert len(list(tmp_path.iterdir())) == 2


def test_other_weights_never_read_a_stale_cache(reactions, tmp_path):
    a = build_yield_model(MICRO, HeadConfig(n_heads=2), AdaptationConfig(mode="head"), key=jax.random.key(0))
    b = build_yield_model(MICRO, HeadConfig(n_heads=2), AdaptationConfig(mode="head"), key=jax.random.key(1))
    ca = cache_features(a.backbone, reactions, tmp_path)
    cb = cache_features(b.backbone, reactions, tmp_path)
    assert not np.allclose(ca.in_memory, cb.in_memory)
