"""Meshes, partition specs and sharded steps, on eight simulated CPU devices (see conftest.py).

The tiny model is shaped so every test mesh divides it: 16 query and 8 KV heads (tensor up to 8),
width 32 (fsdp up to 8), vocabulary 64.
"""

from __future__ import annotations

import dataclasses
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec
from multihost_worker import BATCH, HEAD, STEPS, TINY, synthetic_batch

import sharding
from mistral_cl.config import ModelConfig
from mistral_cl.errors import InputError
from mistral_cl.lora import LoRAConfig
from mistral_cl.predictor import AdaptationConfig, build_yield_model, trainable_filter
from mistral_cl.recipes import RECIPES
from mistral_cl.train import (
    TrainConfig,
    make_optimizer,
    make_train_step,
    standardize_head,
    supervised_objective,
)

MESHES = ("8x1x1", "1x8x1", "1x1x8", "2x2x2")
# Adapters on a column-parallel (wq, w1) and a row-parallel (wo, w2) projection of each sublayer.
LORA = LoRAConfig(rank=4, targets=("wq", "wk", "wv", "wo", "w1", "w2"))


def _build(mode: str, config: ModelConfig = TINY):
    return build_yield_model(config, HEAD, AdaptationConfig(mode=mode, lora=LORA),
                             key=jax.random.key(0))


@functools.cache
def _model(mode: str):
    return _build(mode)


def _abstract(mode: str, config: ModelConfig = TINY):
    return eqx.filter_eval_shape(_build, mode, config)


def _optimizer(kind: str = "adamw") -> optax.GradientTransformation:
    return make_optimizer(TrainConfig(learning_rate=1e-3, optimizer=kind), 100)


def _train(mode: str, mesh=None):
    """Losses and the trained model after STEPS steps, on `mesh` or on one device."""
    model = jax.tree.map(jnp.copy, _model(mode))  # the step donates what it is given
    optimizer = _optimizer()
    if mesh is not None:
        model = sharding.place(model, mesh)
    trainable, frozen = eqx.partition(model, trainable_filter(model, mode))
    if mesh is None:
        opt_state = optimizer.init(eqx.filter(trainable, eqx.is_array))
        step = make_train_step(optimizer, supervised_objective())
    else:
        opt_state = sharding.sharded_opt_init(optimizer, trainable, mesh)
        step = make_train_step(optimizer, supervised_objective(),
                               constrain=sharding.state_constraint(mesh))
    losses = []
    for i in range(STEPS):
        batch = synthetic_batch(i)
        if mesh is not None:
            batch = sharding.place_batch(batch, mesh)
        key = jax.random.fold_in(jax.random.key(1), i)
        trainable, opt_state, metrics = step(trainable, frozen, opt_state, (batch,), key, None)
        losses.append(float(metrics["loss"]))
    return losses, trainable, opt_state


@functools.cache
def _single_device(mode: str):
    return _train(mode, None)


def _assert_laid_out(tree, specs, mesh) -> None:
    for leaf, spec in zip(jax.tree.leaves(tree), jax.tree.leaves(specs), strict=True):
        assert leaf.sharding.is_equivalent_to(NamedSharding(mesh, spec), leaf.ndim), (
            f"{leaf.shape}: {leaf.sharding} is not {spec}")


# ----------------------------------------------------------------------------------------- meshes
def test_mesh_has_the_three_auto_axes_over_every_device():
    mesh = sharding.make_mesh("2x2x2")
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert mesh.axis_types == (AxisType.Auto,) * 3
    assert set(mesh.devices.flat) == set(jax.devices())


@pytest.mark.parametrize("spec, shape", [("-1x1x1", (8, 1, 1)), ("1x-1x2", (1, 4, 2)),
                                         ("2x2x-1", (2, 2, 2))])
def test_minus_one_takes_the_remaining_devices(spec, shape):
    assert tuple(sharding.make_mesh(spec).shape.values()) == shape


def test_mesh_can_use_a_subset_of_devices():
    mesh = sharding.make_mesh("1x1x1", devices=jax.devices()[:1])
    assert mesh.devices.size == 1


@pytest.mark.parametrize("spec, words", [
    ("2x2", "3 sizes"),
    ("2x2x3", "needs 12 devices but 8"),
    ("-1x-1x2", "at most one axis"),
    ("ax1x1", "integers"),
    ("1.5x1x1", "integers"),
    ("0x8x1", "positive"),
    ("3x-1x1", "cannot be split"),
])
def test_bad_mesh_spec_is_an_input_error(spec, words):
    with pytest.raises(InputError, match=words):
        sharding.make_mesh(spec)


# ------------------------------------------------------------------------------------------ specs
@pytest.mark.parametrize("mode", ["head", "lora", "full"])
@pytest.mark.parametrize("kind", ["adamw", "adafactor"])
def test_every_leaf_of_model_and_optimizer_state_has_a_spec(mode, kind):
    model = _abstract(mode)
    trainable, _ = eqx.partition(model, trainable_filter(model, mode))
    opt_state = jax.eval_shape(_optimizer(kind).init, trainable)
    for tree, specs in [(model, sharding.model_specs(model)),
                        (opt_state, sharding.opt_state_specs(opt_state, trainable))]:
        leaves = jax.tree.leaves(tree)
        spec_leaves = jax.tree.leaves(specs)
        assert len(spec_leaves) == len(leaves)
        assert all(isinstance(s, PartitionSpec) for s in spec_leaves)
        assert all(len(s) <= x.ndim for s, x in zip(spec_leaves, leaves, strict=True))


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_the_head_of_every_recipe_has_a_spec_for_every_leaf(recipe):
    model = eqx.filter_eval_shape(lambda: build_yield_model(TINY, RECIPES[recipe].head, AdaptationConfig(
        mode="full"), key=jax.random.key(0)))
    specs = sharding.model_specs(model)  # raises on a weight without a rule
    assert len(jax.tree.leaves(specs.head)) == len(jax.tree.leaves(model.head))


def test_projections_are_column_and_row_parallel_and_the_batch_is_split_over_data_and_fsdp():
    specs = sharding.model_specs(_abstract("full"))
    attention, mlp = specs.backbone.layers.attention, specs.backbone.layers.feed_forward
    column, row = PartitionSpec(None, "tensor", "fsdp"), PartitionSpec(None, "fsdp", "tensor")
    for linear in (attention.wq, attention.wk, attention.wv, mlp.w1, mlp.w3):
        assert linear.weight == column
    for linear in (attention.wo, mlp.w2):
        assert linear.weight == row
    assert specs.backbone.tok_embeddings.weight == PartitionSpec("tensor", "fsdp")
    assert specs.backbone.layers.attention_norm.weight == PartitionSpec(None, None)
    assert sharding.batch_specs(synthetic_batch(0)).tokens == PartitionSpec(("data", "fsdp"), None)


def test_lora_adapters_follow_the_axes_of_their_base_weight():
    attention = sharding.model_specs(_abstract("lora")).backbone.layers.attention
    assert attention.wq.base.weight == PartitionSpec(None, "tensor", "fsdp")
    assert attention.wq.a == PartitionSpec(None, None, "fsdp")  # [L, r, in]
    assert attention.wq.b == PartitionSpec(None, "tensor", None)  # [L, out, r]
    assert attention.wo.a == PartitionSpec(None, None, "tensor")
    assert attention.wo.b == PartitionSpec(None, "fsdp", None)


def test_a_head_ensemble_keeps_its_members_axis_whole_and_shards_each_head_like_one_head():
    single = sharding.model_specs(_abstract("head")).head
    ensemble = eqx.filter_eval_shape(lambda: build_yield_model(
        TINY, dataclasses.replace(HEAD, members=3), AdaptationConfig(mode="head"), key=jax.random.key(0)))
    members = sharding.model_specs(ensemble).head.members
    assert members.attention.wq.weight == PartitionSpec(None, *single.attention.wq.weight)
    assert members.ffn_out.weight == PartitionSpec(None, *single.ffn_out.weight)
    assert members.mlp_in.bias == PartitionSpec(None, *single.mlp_in.bias)


def test_optimizer_moments_follow_their_parameter():
    model = _abstract("full")
    opt_state = jax.eval_shape(_optimizer("adamw").init, model)
    adam = opt_state[1][0]
    specs = sharding.opt_state_specs(opt_state, model)[1][0]
    assert specs.count == PartitionSpec()
    assert specs.mu.backbone.layers.attention.wo.weight == PartitionSpec(None, "fsdp", "tensor")
    assert jax.tree.structure(specs.nu) == jax.tree.structure(adam.nu)


def test_adafactor_factored_moments_keep_the_layout_of_the_axes_they_keep():
    config = ModelConfig(vocab_size=256, dim=256, n_layers=2, n_heads=8, n_kv_heads=8, head_dim=32,
                         hidden_dim=512)
    model = _abstract("full", config)
    opt_state = jax.eval_shape(_optimizer("adafactor").init, model)
    factored = opt_state[1][0]
    specs = sharding.opt_state_specs(opt_state, model)[1][0]
    w2 = factored.v_row.backbone.layers.feed_forward.w2.weight
    assert w2.shape == (2, 256)  # [L, out, in=512] without its largest axis
    assert specs.v_row.backbone.layers.feed_forward.w2.weight == PartitionSpec(None, "fsdp")
    assert specs.v.backbone.layers.feed_forward.w2.weight == PartitionSpec()  # a (1,) placeholder


def test_mesh_that_splits_kv_heads_names_the_weight_and_the_axis():
    config = ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=16, n_kv_heads=4, head_dim=8,
                         hidden_dim=64)
    mesh = sharding.make_mesh("1x1x8")
    with pytest.raises(InputError) as error:
        sharding.sharded_init(lambda: _build("full", config), mesh)
    message = str(error.value)
    assert "backbone.layers.attention.wk.weight" in message and "wv.weight" in message
    assert "4 heads" in message and "'tensor' of size 8" in message
    assert "wq.weight" not in message  # 16 query heads split 8 ways


def test_mesh_that_does_not_divide_the_width_names_the_weight_and_the_axis():
    config = ModelConfig(vocab_size=64, dim=36, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                         hidden_dim=64)
    with pytest.raises(InputError, match=r"tok_embeddings.weight \[64, 36\]: dimension 1 .*'fsdp'"):
        sharding.model_specs(_abstract("full", config), sharding.make_mesh("1x8x1"))


def test_batch_that_does_not_divide_over_data_and_fsdp_is_an_input_error():
    with pytest.raises(InputError, match="a batch of 6 rows cannot be split over the 4 batch shards"):
        sharding.place_batch(synthetic_batch(0, batch_size=6), sharding.make_mesh("2x2x2"))


def test_a_model_without_a_rule_for_some_weight_is_an_input_error():
    with pytest.raises(InputError, match="no sharding rule for model weight 'backbone.extra.weight'"):
        sharding.logical_axes("backbone.extra.weight")


# ------------------------------------------------------------------------------------- placement
def test_sharded_init_creates_every_weight_in_its_layout_with_the_same_values():
    mesh = sharding.make_mesh("2x2x2")
    model = sharding.sharded_init(lambda: _build("lora"), mesh)
    _assert_laid_out(model, sharding.model_specs(model), mesh)
    for sharded, plain in zip(jax.tree.leaves(model), jax.tree.leaves(_model("lora")), strict=True):
        np.testing.assert_allclose(sharded, plain, rtol=1e-6)  # jit may fuse `std * normal` differently


def test_one_process_feeds_every_row_of_the_batch():
    mesh = sharding.make_mesh("2x2x2")
    assert sharding.process_rows(BATCH, mesh) == slice(0, BATCH)
    placed = sharding.place_batch(synthetic_batch(0), mesh)
    assert placed.tokens.sharding.is_equivalent_to(
        NamedSharding(mesh, PartitionSpec(("data", "fsdp"))), 2)
    np.testing.assert_array_equal(sharding.to_host(placed.tokens), synthetic_batch(0).tokens)


# ---------------------------------------------------------------------------------- sharded steps
@pytest.mark.parametrize("mode", ["full", "lora"])
@pytest.mark.parametrize("spec", MESHES)
def test_sharded_steps_equal_single_device_steps(mode, spec):
    mesh = sharding.make_mesh(spec)
    losses, trainable, opt_state = _train(mode, mesh)
    ref_losses, ref_trainable, _ = _single_device(mode)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-5)
    for got, want in zip(jax.tree.leaves(trainable), jax.tree.leaves(ref_trainable), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The donated state comes back in the layout it went in with.
    _assert_laid_out(trainable, sharding.model_specs(trainable), mesh)
    _assert_laid_out(opt_state, sharding.opt_state_specs(opt_state, trainable), mesh)


class _Batches:
    """Token batches as a `BatchSource` serves them (only what `standardize_head` reads)."""

    def batches(self, batch_size, *, shuffle, seed=0):
        return (synthetic_batch(100 + i, batch_size) for i in range(3))


def test_head_standardisation_on_a_mesh_equals_one_device():
    mesh = sharding.make_mesh("2x2x2")
    plain = standardize_head(_model("lora"), _Batches(), batch_size=BATCH)
    placed = standardize_head(sharding.place(_model("lora"), mesh), _Batches(), batch_size=BATCH,
                              mesh=mesh)
    assert plain.head.standardizes
    for got, want in [(placed.head.pool_shift, plain.head.pool_shift),
                      (placed.head.pool_scale, plain.head.pool_scale)]:
        np.testing.assert_allclose(sharding.to_host(got), want, rtol=1e-4, atol=1e-5)
    _assert_laid_out(placed.head, sharding.model_specs(placed).head, mesh)


# ------------------------------------------------------------------------------------ distributed
@pytest.fixture
def no_cluster(monkeypatch):
    """An environment without a coordinator, SLURM or TPU variables; joining must not be attempted."""
    for name in ("MISTRAL_CL_COORDINATOR", "MISTRAL_CL_NUM_PROCESSES", "MISTRAL_CL_PROCESS_ID",
                 "MISTRAL_CL_LOCAL_DEVICE_IDS", *sharding.distributed._SLURM, *sharding.distributed._TPU):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sharding.distributed, "detected_cluster", lambda: None)

    def refuse(**kwargs):
        raise AssertionError(f"jax.distributed.initialize must not be called, got {kwargs}")

    monkeypatch.setattr(jax.distributed, "initialize", refuse)


def test_distributed_run_without_coordinator_or_cluster_is_an_input_error(no_cluster):
    with pytest.raises(InputError, match="no coordinator given and no TPU pod or SLURM job detected"):
        sharding.initialize()


def test_distributed_settings_name_what_is_missing(no_cluster, monkeypatch):
    monkeypatch.setenv("MISTRAL_CL_COORDINATOR", "10.0.0.1:1234")
    with pytest.raises(InputError, match=r"missing \['num_processes', 'process_id'\]"):
        sharding.initialize()
    with pytest.raises(InputError, match="process_id 2 must be in"):
        sharding.initialize(num_processes=2, process_id=2)
    with pytest.raises(InputError, match="MISTRAL_CL_NUM_PROCESSES must be an integer"):
        monkeypatch.setenv("MISTRAL_CL_NUM_PROCESSES", "two")
        sharding.initialize(process_id=0)


def test_a_single_process_is_the_reporting_process():
    assert sharding.is_reporting_process()
