"""The PyTorch model of the throughput benchmark computes what the JAX yield model computes.

transformers' `MistralModel` + PEFT-style LoRA + a PyTorch MHAR head, loaded with the JAX model's
weights, must give the same predictions and the same gradients, and train the same parameters in each
adaptation mode: only then does timing one against the other compare like with like.
"""

import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hf_fixtures import GQA

from mistral_cl.head import HeadConfig
from mistral_cl.predictor import MODES, AdaptationConfig, build_yield_model, trainable_filter
from mistral_cl.train import regression_loss

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import torch_reference  # noqa: E402

BACKENDS = torch_reference.available_lora_backends()
LENGTHS = [150, 97, 24, 3]  # right-padded; beyond the sliding window of 8 and the CPU query blocks


def randomized(model, key):
    """Every weight random, norm gains and LoRA B included, so that no part can hide behind an
    identity or a zero (a default head barely moves its sigmoid off 0.5)."""
    leaves, treedef = jax.tree.flatten(model)
    keys = jax.random.split(key, len(leaves))

    def draw(x, k):
        if not eqx.is_inexact_array(x):
            return x
        z = jax.random.normal(k, x.shape, x.dtype)
        return z / x.shape[-1] ** 0.5 if x.ndim >= 2 else 1.0 + 0.2 * z

    return jax.tree.unflatten(treedef, [draw(x, k) for x, k in zip(leaves, keys, strict=True)])


def yield_model(mode):
    model = build_yield_model(GQA, HeadConfig(mlp_dim=32, dropout=0.0), AdaptationConfig(mode=mode),
                              key=jax.random.key(0))
    model = randomized(model, jax.random.key(1))
    if mode == "lora":  # updates small next to the base weights, as after training
        small = lambda m: [m.backbone.layers.attention.wq.b, m.backbone.layers.attention.wv.b]
        model = eqx.tree_at(small, model, [0.1 * b for b in small(model)])
    return model


def batch():
    rng = np.random.default_rng(0)
    width = max(LENGTHS)
    mask = np.arange(width)[None] < np.asarray(LENGTHS)[:, None]
    tokens = np.where(mask, rng.integers(1, GQA.vocab_size, (len(LENGTHS), width)), 0).astype(np.int32)
    yields = rng.random(len(LENGTHS)).astype(np.float32)
    return tokens, mask, yields, np.ones(len(LENGTHS), np.float32)


def as_torch(*arrays):
    return [torch.as_tensor(a, dtype=torch.long if a.dtype == np.int32 else None) for a in arrays]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
def test_torch_reference_predicts_what_the_jax_model_predicts(mode, backend):
    model = yield_model(mode)
    reference = torch_reference.from_jax(model, GQA, lora_backend=backend).eval()
    tokens, mask, _, _ = batch()
    ours = np.asarray(model(jnp.asarray(tokens), jnp.asarray(mask)))
    with torch.no_grad():
        theirs = reference(*as_torch(tokens, mask)).numpy()
    assert np.ptp(ours) > 0.01  # predictions that depend on the input, not a saturated constant
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_torch_reference_gradients_equal_jax_gradients(mode):
    model = yield_model(mode)
    reference = torch_reference.from_jax(model, GQA).eval()
    tokens, mask, yields, weight = batch()
    trainable, frozen = eqx.partition(model, trainable_filter(model, mode))

    def loss(trainable):
        pred = eqx.combine(trainable, frozen)(jnp.asarray(tokens), jnp.asarray(mask))
        return regression_loss(pred, jnp.asarray(yields), jnp.asarray(weight))

    grads = eqx.filter_grad(loss)(trainable)
    torch_reference.trainable_parameters(reference, mode)
    t_tokens, t_mask, t_yields, t_weight = as_torch(tokens, mask, yields, weight)
    torch_reference.regression_loss(reference(t_tokens, t_mask), t_yields, t_weight).backward()
    head, layers = reference.head, reference.backbone.layers
    pairs = {"head.ffn_in": (grads.head.ffn_in.weight, head.ffn_in.weight),
             "head.wq": (grads.head.attention.wq.weight, head.attention.q.weight)}
    ours = grads.backbone.layers
    for i, layer in enumerate(layers):
        if mode == "lora":
            a, _ = torch_reference.lora_matrices(layer.self_attn.q_proj)
            _, b = torch_reference.lora_matrices(layer.self_attn.v_proj)
            pairs |= {f"{i}.wq.a": (ours.attention.wq.a[i], a.weight),
                      f"{i}.wv.b": (ours.attention.wv.b[i], b.weight)}
        else:
            pairs |= {f"{i}.wk": (ours.attention.wk.weight[i], layer.self_attn.k_proj.weight),
                      f"{i}.w2": (ours.feed_forward.w2.weight[i], layer.mlp.down_proj.weight)}
    if mode == "full":
        pairs["embeddings"] = (grads.backbone.tok_embeddings.weight, reference.backbone.embed_tokens.weight)
    for name, (jax_grad, param) in pairs.items():
        scale = float(np.max(np.abs(jax_grad)))
        assert scale > 0, name
        np.testing.assert_allclose(param.grad.numpy() / scale, np.asarray(jax_grad) / scale, atol=1e-5,
                                   err_msg=name)


@pytest.mark.parametrize("mode", MODES)
def test_torch_reference_trains_the_parameters_the_jax_mode_trains(mode):
    model = yield_model(mode)
    reference = torch_reference.from_jax(model, GQA)
    trainable = eqx.filter(model, trainable_filter(model, mode))
    count = sum(x.size for x in jax.tree.leaves(eqx.filter(trainable, eqx.is_array)))
    assert sum(p.numel() for p in torch_reference.trainable_parameters(reference, mode)) == count
