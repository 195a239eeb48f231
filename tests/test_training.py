"""Specifications of training on real data: a micro model fitted to real Suzuki reactions improves."""

import jax
import numpy as np
import pytest

from mistral_cl.config import ModelConfig
from mistral_cl.data.batching import encode_reactions
from mistral_cl.data.sources import load_dataset
from mistral_cl.data.tasks import random_split
from mistral_cl.head import HeadConfig
from mistral_cl.predictor import AdaptationConfig, build_yield_model, trainable_filter
from mistral_cl.scores import regression_scores
from mistral_cl.tokenizer import Tokenizer
from mistral_cl.train import TrainConfig, fit, predict

MICRO = ModelConfig(vocab_size=32000, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16,
                    hidden_dim=64, sliding_window=None, max_seq_len=512)
WIDTH = 224  # one batch width that holds every Suzuki reaction: a single compiled shape


@pytest.fixture(scope="module")
def few_suzuki_reactions():
    """300 reactions drawn at random from the Suzuki screen, split 70/30."""
    screen = load_dataset("suzuki")
    chosen = np.sort(np.random.default_rng(0).choice(len(screen), 300, replace=False))
    train, test = random_split(screen.subset(chosen), 0.3, seed=0)
    tokenizer = Tokenizer.default()
    return tuple(encode_reactions(part, tokenizer, buckets=(WIDTH,)) for part in (train, test))


def test_a_small_run_on_real_data_lowers_the_loss(few_suzuki_reactions):
    """A few dozen steps: the loss on the training reactions (evaluated without dropout, not the noisy
    per-epoch average) falls, and held-out R^2 rises. From random initialisation such a short run
    mostly learns the yield level; telling reactions apart takes hundreds of steps (see
    benchmarks/accuracy.py)."""
    train, test = few_suzuki_reactions
    model = build_yield_model(MICRO, HeadConfig(n_heads=2, mlp_dim=32, dropout=0.0),
                              AdaptationConfig(mode="full"), key=jax.random.key(0))
    # `fit` donates the model's buffers, so the untrained model is scored first.
    untrained_train = regression_scores(train.yields, predict(model, train))
    untrained_test = regression_scores(test.yields, predict(model, test))

    config = TrainConfig(epochs=6, batch_size=16, learning_rate=3e-3)
    result = fit(model, trainable_filter(model, "full"), train, config, progress=False)

    trained_train = regression_scores(train.yields, predict(result.model, train))
    trained_test = regression_scores(test.yields, predict(result.model, test))
    assert trained_train["rmse"] < 0.95 * untrained_train["rmse"]
    assert trained_test["r2"] > untrained_test["r2"] + 0.05
