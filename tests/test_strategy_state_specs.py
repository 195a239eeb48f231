"""Where a continual strategy's state lives on the mesh (`sharding.strategy_state_specs`), on eight
simulated CPU devices (see conftest.py), with the tiny model of `multihost_worker.py`."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec
from multihost_worker import HEAD, TINY, synthetic_batch

import sharding
from mistral_cl.continual.strategies import Setting, StrategyState, build_strategy
from mistral_cl.errors import InputError
from mistral_cl.lora import LoRAConfig
from mistral_cl.predictor import AdaptationConfig, build_yield_model, trainable_filter
from mistral_cl.train import TrainConfig, make_optimizer, make_train_step

LORA = LoRAConfig(rank=4, targets=("wq", "wo", "w1", "w2"))


def _setting(mode: str) -> Setting:
    model = build_yield_model(TINY, HEAD, AdaptationConfig(mode=mode, lora=LORA), key=jax.random.key(0))
    filter_spec = trainable_filter(model, mode)
    trainable, frozen = eqx.partition(model, filter_spec)
    return Setting(pool=None, train=TrainConfig(learning_rate=1e-2), mode=mode,  # type: ignore[arg-type]
                   filter_spec=filter_spec, frozen=frozen, initial=trainable)


def _shifted(tree, seed: int, scale: float, positive: bool = False):
    """`tree` plus seeded noise (its absolute value when `positive`), so state arrays matter."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noise = [scale * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
    if positive:
        return jax.tree.unflatten(treedef, [jnp.abs(n) for n in noise])
    return jax.tree.unflatten(treedef, [x + n for x, n in zip(leaves, noise, strict=True)])


def _state(name: str, setting: Setting) -> StrategyState:
    """The state a strategy reads after a round, with arrays that move the loss."""
    if name == "ewc":
        return StrategyState({"fisher": _shifted(setting.initial, 1, 1.0, positive=True),
                              "anchor": _shifted(setting.initial, 2, 0.05)})
    return StrategyState({"previous": _shifted(setting.initial, 3, 0.05)}, {"teacher": True})


def test_ewc_fisher_and_anchor_are_laid_out_like_the_parameters_they_shadow():
    mesh = sharding.make_mesh("2x2x2")
    setting = _setting("full")
    extra = build_strategy("ewc").extra(setting, _state("ewc", setting))
    trainable_specs = sharding.model_specs(setting.initial, mesh)
    specs = sharding.strategy_state_specs(extra, trainable_specs, mesh)
    assert specs == {"fisher": trainable_specs, "anchor": trainable_specs}
    wq = specs["fisher"].backbone.layers.attention.wq.weight
    assert wq == PartitionSpec(None, "tensor", "fsdp")


def test_lwf_teacher_mirrors_the_trainable_half_and_its_weight_is_replicated():
    setting = _setting("lora")
    extra = build_strategy("lwf").extra(setting, _state("lwf", setting))
    trainable_specs = sharding.model_specs(setting.initial)
    specs = sharding.strategy_state_specs(extra, trainable_specs)
    assert specs == {"previous": trainable_specs, "weight": PartitionSpec()}


def test_a_replay_weight_is_replicated_and_a_remembered_batch_is_split_by_rows_where_it_divides():
    mesh = sharding.make_mesh("2x4x1")
    state = {"memory_tokens": jnp.zeros((16, 8), jnp.int32), "memory_yields": jnp.zeros((12,)),
             "weight": jnp.float32(1.0)}
    specs = sharding.strategy_state_specs(state, sharding.model_specs(_setting("lora").initial), mesh)
    assert specs == {"memory_tokens": PartitionSpec(("data", "fsdp"), None),
                     "memory_yields": PartitionSpec(),  # 12 rows over 8 batch shards: replicated
                     "weight": PartitionSpec()}


def test_a_mirrored_state_the_mesh_cannot_divide_is_an_input_error():
    mesh = sharding.make_mesh("1x8x1")
    setting = _setting("full")
    specs = sharding.model_specs(setting.initial)
    odd = jax.tree.map(lambda x: jnp.zeros((*x.shape[:-1], x.shape[-1] + 1)) if x.ndim == 2 else x,
                       setting.initial)
    with pytest.raises(InputError, match="strategy state fisher"):
        sharding.strategy_state_specs({"fisher": odd}, specs, mesh)


def _steps(name: str, mode: str, mesh=None, steps: int = 2) -> tuple[list[dict], object]:
    """Metrics of `steps` train steps of the strategy's step, on `mesh` (state placed by its specs) or
    on one device, and the trained half."""
    setting = _setting(mode)
    strategy = build_strategy(name)
    extra = strategy.extra(setting, _state(name, setting))
    optimizer = make_optimizer(setting.train, 100)
    trainable, frozen = setting.initial, setting.frozen
    constrain = None
    if mesh is not None:
        trainable, frozen = sharding.place(trainable, mesh), sharding.place(frozen, mesh)
        specs = sharding.strategy_state_specs(extra, sharding.model_specs(trainable, mesh), mesh)
        extra = jax.device_put(extra, sharding.shardings(specs, mesh))
        opt_state = sharding.sharded_opt_init(optimizer, trainable, mesh)
        constrain = sharding.state_constraint(mesh)
    else:
        opt_state = optimizer.init(eqx.filter(trainable, eqx.is_array))
    step = make_train_step(optimizer, strategy.objective(setting),
                           grad_transform=strategy.grad_transform(setting), constrain=constrain)
    history = []
    for i in range(steps):
        batch = synthetic_batch(i)
        if mesh is not None:
            batch = sharding.place_batch(batch, mesh)
        trainable, opt_state, metrics = step(trainable, frozen, opt_state, (batch,),
                                             jax.random.fold_in(jax.random.key(1), i), extra)
        history.append({k: float(v) for k, v in metrics.items()})
    return history, trainable


@pytest.mark.parametrize(("name", "mode", "spec"), [("ewc", "full", "2x2x2"), ("lwf", "lora", "1x8x1")])
def test_a_strategy_step_with_its_state_on_a_mesh_equals_the_single_device_step(name, mode, spec):
    got, trained = _steps(name, mode, sharding.make_mesh(spec))
    want, reference = _steps(name, mode)
    penalty = "ewc_penalty" if name == "ewc" else "distill_loss"
    assert all(m[penalty] > 0 for m in want)  # the state moves the loss
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        np.testing.assert_allclose([g[k] for k in g], [w[k] for k in g], rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
