"""A head ensemble: independent MHAR heads on the same features, fitted each on its own loss."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mistral_cl.errors import InputError
from mistral_cl.head import HeadConfig, HeadEnsemble, MHARHead
from mistral_cl.inference import predict_batch
from mistral_cl.train import regression_loss, supervised_objective

CONFIG = HeadConfig(n_heads=2, members=3, mlp_dim=16)


def _member(ensemble: HeadEnsemble, i: int) -> MHARHead:
    member = ensemble.member(i)
    assert isinstance(member, MHARHead)
    return member


def _features(lengths, width=12, dim=32):
    hidden = jax.random.normal(jax.random.key(5), (len(lengths), width, dim))
    mask = jnp.arange(width)[None, :] < jnp.asarray(lengths)[:, None]
    return hidden, mask


def test_each_member_is_a_differently_initialised_head_and_predicts_alone():
    ensemble = HeadEnsemble(32, CONFIG, key=jax.random.key(0))
    hidden, mask = _features([12, 7, 3])
    pred = ensemble(hidden, mask)
    assert pred.shape == (3, 3)
    for i in range(3):
        np.testing.assert_allclose(pred[i], _member(ensemble, i)(hidden, mask), rtol=1e-6)
    assert not np.allclose(pred[0], pred[1])
    # Padding never changes an ensemble's prediction either.
    alone = ensemble(hidden[1:2, :7], mask[1:2, :7])
    np.testing.assert_allclose(pred[:, 1], alone[:, 0], rtol=1e-5)


def test_training_loss_is_the_mean_of_member_losses_and_prediction_the_mean_of_members():
    ensemble = HeadEnsemble(32, CONFIG, key=jax.random.key(0))
    hidden, mask = _features([12, 7, 3, 9])
    target, weight = jnp.array([0.1, 0.5, 0.9, 0.3]), jnp.array([1.0, 1.0, 1.0, 0.0])
    pred = ensemble(hidden, mask)
    members = [regression_loss(pred[i], target, weight) for i in range(3)]
    np.testing.assert_allclose(regression_loss(pred, target, weight), np.mean(members), rtol=1e-6)

    class Model(eqx.Module):
        head: HeadEnsemble

    class FeatureBatch(eqx.Module):
        features: jax.Array
        mask: jax.Array
        yields: jax.Array
        weight: jax.Array

    model, batch = Model(ensemble), FeatureBatch(hidden, mask, target, weight)
    np.testing.assert_allclose(predict_batch(model, batch), pred.mean(axis=0), rtol=1e-6)
    # The gradient of member i comes from member i's loss alone: members are fitted independently.
    grads = eqx.filter_grad(lambda m: supervised_objective()(m, (batch,), jax.random.key(1), None)[0])(model)
    alone = eqx.filter_grad(lambda head: regression_loss(
        head(hidden, mask, key=jax.random.split(jax.random.key(1), 3)[0]), target, weight) / 3)(
        _member(ensemble, 0))
    got = _member(grads.head, 0)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(alone), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-7)


def test_members_must_be_positive():
    with pytest.raises(InputError, match="members"):
        HeadConfig(n_heads=2, members=0)


def test_each_pooling_head_weighs_tokens_on_its_own_and_pools_its_own_slice():
    head = MHARHead(32, HeadConfig(n_heads=2, pool_heads=4, mlp_dim=16, dropout=0.0),
                    key=jax.random.key(3))
    hidden, mask = _features([12, 7])
    # Pooling head 0 scores tokens by their feature 0; the other three score every token alike, so
    # they average their slices.
    weight = jnp.zeros_like(head.pool.weight).at[0, 0].set(1.0)
    head = eqx.tree_at(lambda h: h.pool.weight, head, weight)
    x = head.token_states(hidden, mask)
    pooled = head.attention_pool(x, mask)
    for row, length in enumerate([12, 7]):
        w0 = jax.nn.softmax(x[row, :length, 0])
        np.testing.assert_allclose(pooled[row, :8], w0 @ x[row, :length, :8], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(pooled[row, 8:], x[row, :length, 8:].mean(axis=0), rtol=1e-5, atol=1e-6)


def test_pool_heads_must_divide_the_width():
    with pytest.raises(InputError, match="pool_heads"):
        MHARHead(32, HeadConfig(n_heads=2, pool_heads=5), key=jax.random.key(0))
