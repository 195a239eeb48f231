"""Specifications of training on real data: a micro model fitted to real Suzuki reactions improves."""

import jax
import numpy as np
import pytest

from mistral_cl.config import ModelConfig
from mistral_cl.data.batching import encode_reactions
from mistral_cl.data.sources import load_dataset
from mistral_cl.data.tasks import random_split
from mistral_cl.errors import InputError
from mistral_cl.head import HeadConfig
from mistral_cl.inference import predict
from mistral_cl.predictor import AdaptationConfig, build_yield_model, trainable_filter
from mistral_cl.scores import regression_scores
from mistral_cl.tokenizer import Tokenizer
from mistral_cl.train import TrainConfig, ema_update, fit

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


def test_ema_update_moves_each_weight_towards_the_current_one():
    average = {"w": np.full(3, 2.0, np.float32), "frozen": None}
    current = {"w": np.full(3, 4.0, np.float32), "frozen": None}
    out = ema_update(average, current, 0.75)
    np.testing.assert_allclose(out["w"], 2.5)
    assert out["frozen"] is None


def test_fit_with_ema_returns_the_moving_average_of_the_weights(few_suzuki_reactions):
    train, _ = few_suzuki_reactions

    def head_model():
        return build_yield_model(MICRO, HeadConfig(n_heads=2, mlp_dim=32), AdaptationConfig(mode="head"),
                                 key=jax.random.key(0))

    def flat(head):
        return np.concatenate([np.ravel(x) for x in jax.tree.leaves(head)])

    def trained(ema):
        model = head_model()
        config = TrainConfig(epochs=1, batch_size=32, learning_rate=3e-3, ema=ema)
        return flat(fit(model, trainable_filter(model, "head"), train, config, progress=False).model.head)

    plain, initial = trained(None), flat(head_model().head)
    # A vanishing decay keeps only the latest weights; a slow one stays between them and the start.
    np.testing.assert_allclose(trained(1e-9), plain, rtol=1e-5, atol=1e-7)
    slow = trained(0.9)
    assert np.linalg.norm(slow - initial) < np.linalg.norm(plain - initial)
    assert not np.allclose(slow, plain)


def test_ema_decay_must_lie_between_zero_and_one():
    with pytest.raises(InputError, match="EMA decay"):
        TrainConfig(ema=1.0)


@pytest.mark.parametrize("kind", ["adamw", "adafactor"])
def test_weight_decay_shrinks_a_weight_by_lr_times_the_decay_with_either_optimizer(kind):
    # With no gradient, a step is the decay alone: lr * weight_decay of each weight, as AdamW
    # defines it. (optax.adafactor's own `weight_decay_rate` would shrink it by 1 % at any rate.)
    import jax.numpy as jnp

    from mistral_cl.train import make_optimizer

    config = TrainConfig(learning_rate=1e-3, weight_decay=0.01, optimizer=kind, schedule="constant")
    params = {"w": jnp.full((256, 256), 2.0), "b": jnp.full((8,), -1.0)}
    optimizer = make_optimizer(config, total_steps=10)
    updates, _ = optimizer.update(jax.tree.map(jnp.zeros_like, params), optimizer.init(params), params)
    for name, value in params.items():
        np.testing.assert_allclose(updates[name], -1e-5 * value, rtol=1e-5)


def test_adafactor_takes_steps_relative_to_each_weights_scale():
    import jax.numpy as jnp

    from mistral_cl.train import make_optimizer

    config = TrainConfig(learning_rate=1e-2, weight_decay=0.0, optimizer="adafactor", schedule="constant")
    optimizer = make_optimizer(config, total_steps=10)
    gradient = jnp.ones((4, 4))
    for scale in (1.0, 10.0):
        params = {"w": jnp.full((4, 4), scale)}
        updates, _ = optimizer.update({"w": gradient}, optimizer.init(params), params)
        np.testing.assert_allclose(updates["w"], -1e-2 * scale, rtol=1e-4)
