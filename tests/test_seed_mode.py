"""The seed-faithful mode: one optimizer state carried through every round (checkpointed with it, so a
resumed run still ends exactly like an uninterrupted one), a constant learning rate, and the `seed`
recipe that `mistral-cl continual --recipe seed` starts from."""

import dataclasses
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from continual_fixtures import coupling_tasks_csv, micro_config, micro_setting

from mistral_cl.cli import parse_args, run_config
from mistral_cl.continual import learner, runner
from mistral_cl.continual.strategies import build_strategy
from mistral_cl.errors import InputError
from mistral_cl.recipes import RECIPES
from mistral_cl.train import TrainConfig, learning_rate_schedule, make_optimizer

RESULTS = ["summary.json", "scores.json", "r2_matrix.csv", "rmse_matrix.csv", "mae_matrix.csv"]


def _counts(opt_state) -> set[int]:
    """The step counters of an optax state (Adam's, the schedule's, ...)."""
    return {int(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(opt_state)
            if "count" in jax.tree_util.keystr(path)}


def _moment_norm(opt_state) -> float:
    return float(sum(jnp.sum(jnp.abs(leaf)) for path, leaf in jax.tree_util.tree_leaves_with_path(opt_state)
                     if "count" not in jax.tree_util.keystr(path) and eqx.is_inexact_array(leaf)))


def test_a_constant_schedule_gives_the_same_rate_at_every_step():
    constant = learning_rate_schedule(TrainConfig(learning_rate=2e-3, schedule="constant"), 100)
    rates = {float(constant(step)) for step in (0, 1, 5, 50, 99, 100, 10_000)}
    assert len(rates) == 1 and rates.pop() == pytest.approx(2e-3)
    cosine = learning_rate_schedule(TrainConfig(learning_rate=2e-3), 100)
    assert float(cosine(0)) == 0.0 and float(cosine(100)) == pytest.approx(2e-5)
    # Through the optimizer: the cosine's first step (rate 0) moves nothing, the constant one does.
    params, grads = {"w": jnp.ones(3)}, {"w": jnp.full(3, 0.5)}
    for schedule, moves in (("cosine", False), ("constant", True)):
        optimizer = make_optimizer(TrainConfig(schedule=schedule, clip_norm=None, weight_decay=0.0), 100)
        updates, _ = optimizer.update(grads, optimizer.init(params), params)
        assert bool(jnp.any(updates["w"] != 0)) == moves
    with pytest.raises(InputError, match="train.schedule"):
        TrainConfig(schedule="linear")


def test_a_carried_optimizer_state_goes_on_from_round_to_round(tmp_path):
    run_dir, setting = micro_setting(tmp_path, {"Br": 0.8, "I": 0.2}, mode="head")
    strategy = build_strategy("naive")
    before = {k: np.zeros(2) for k in ("r2", "rmse", "mae")}
    for carry in (False, True):
        directory = run_dir / f"carry-{carry}"
        directory.mkdir()
        carried = dataclasses.replace(setting, carry_optimizer=carry)
        first = learner.run_strategy(strategy, carried, directory, [2], before, eval_batch_size=32,
                                     stop_after=1)
        if not carry:
            assert first.opt_state is None  # nothing kept, nothing checkpointed: the next round restarts
            continue
        steps = first.records[0]["steps"]
        assert steps > 0 and _counts(first.opt_state) == {steps} and _moment_norm(first.opt_state) > 0
        # The checkpoint holds it (a fresh handle restores it), and round 2 starts from it: its step
        # count goes on from the first round's instead of starting again at 0.
        restored = learner.restore(strategy, carried, directory)
        assert _counts(restored.opt_state) == {steps}
        for a, b in zip(jax.tree.leaves(restored.opt_state), jax.tree.leaves(first.opt_state), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        second = learner.run_strategy(strategy, carried, directory, [2], before, eval_batch_size=32)
        assert _counts(second.opt_state) == {steps + second.records[1]["steps"]}


def _seed_like_config(data, carry: bool = True):
    config = micro_config(data, epochs=2)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, optimizer="adafactor",
                                                                    schedule="constant"))
    return runner.with_continual(config, "replay:memory_batch=0", memory="all", eval_batch_size=32,
                                 buckets=1, split="global", carry_optimizer=carry)


def test_a_resumed_run_with_a_carried_optimizer_ends_exactly_like_an_uninterrupted_one(tmp_path):
    data = coupling_tasks_csv(tmp_path / "tasks.csv", {"Br": 0.7, "I": 0.3, "Cl": 0.5})
    whole = runner.create_run(tmp_path / "whole", _seed_like_config(data))
    runner.run_all(whole, show=False)
    interrupted = runner.create_run(tmp_path / "interrupted", _seed_like_config(data))
    runner.run_all(interrupted, stop_after=1, show=False)  # as if killed after the first task
    runner.run_all(interrupted, show=False)  # a new handle: everything from the checkpoint
    spec = "replay_memory_batch=0"
    for name in RESULTS:
        assert (interrupted / spec / name).read_text() == (whole / spec / name).read_text(), name
    # The carried state matters: restarting the optimizer every round ends elsewhere.
    restarted = runner.create_run(tmp_path / "restarted", _seed_like_config(data, carry=False))
    runner.run_all(restarted, show=False)
    assert (restarted / spec / "scores.json").read_text() != (whole / spec / "scores.json").read_text()


def test_the_seed_recipe_has_the_seed_repositorys_settings_and_the_command_line_reads_it():
    seed = RECIPES["seed"]
    assert (seed.train.optimizer, seed.train.schedule, seed.split) == ("adafactor", "constant", "global")
    assert seed.continual.carry_optimizer and seed.continual.memory == "all"
    assert "replay:memory_batch=0" in seed.continual.strategies  # remembered batch = current batch
    assert build_strategy("replay:memory_batch=0").memory_batch == 0
    # Everything else is the demo's.
    demo = RECIPES["continual"]
    assert dataclasses.replace(seed.train, optimizer=demo.train.optimizer, schedule=demo.train.schedule) == (
        demo.train)
    assert (seed.mode, seed.head, seed.lora, seed.test_fraction) == (demo.mode, demo.head, demo.lora,
                                                                     demo.test_fraction)
    config = run_config(parse_args(["continual", "--recipe", "seed"]))
    assert config.train == seed.train and config.continual == seed.continual and config.split == "global"
    # Options still override the recipe they start from.
    config = run_config(parse_args(["continual", "--recipe", "seed", "--no-carry-optimizer",
                                    "--split", "task", "--schedule", "cosine"]))
    assert not config.continual.carry_optimizer and config.split == "task"
    assert config.train.schedule == "cosine" and config.train.optimizer == "adafactor"


def test_strategies_that_restart_the_model_every_round_refuse_a_carried_optimizer(capsys, tmp_path):
    config = micro_config(tmp_path / "unused.csv")
    for spec in ("cumulative", "adapters"):
        with pytest.raises(InputError, match="carry_optimizer"):
            runner.with_continual(config, f"naive,{spec}", carry_optimizer=True)
    from mistral_cl.cli import main

    assert main(["continual", "--recipe", "seed", "--strategies", "cumulative", "--out",
                 str(tmp_path / "run")]) == 2
    assert "--no-carry-optimizer" in capsys.readouterr().err


def test_run_json_keeps_the_new_settings_and_old_ones_load_with_the_defaults(tmp_path):
    data = coupling_tasks_csv(tmp_path / "tasks.csv", {"Br": 0.7, "I": 0.3})
    config = _seed_like_config(data)
    from mistral_cl.runs import RunConfig

    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    raw = config.to_dict()
    raw["train"].pop("schedule")
    raw["continual"].pop("carry_optimizer")
    old = RunConfig.from_dict(raw)
    assert old.train.schedule == "cosine" and not old.continual.carry_optimizer


def test_a_carried_optimizer_state_lives_on_the_mesh_and_resumes_on_another(tmp_path):
    import sharding
    from mistral_cl.config import ModelConfig
    from mistral_cl.continual.runner import ContinualRun

    data = coupling_tasks_csv(tmp_path / "tasks.csv", {"Br": 0.7, "I": 0.3})
    # Two KV heads, so tensor parallelism of 2 splits whole heads.
    model = ModelConfig(vocab_size=32000, dim=32, n_layers=1, n_heads=2, n_kv_heads=2, head_dim=16,
                        hidden_dim=64, sliding_window=64)
    config = dataclasses.replace(_seed_like_config(data), model=model)
    single = ContinualRun.create(tmp_path / "single", config)
    single.train(show=False)
    first = ContinualRun.create(tmp_path / "sharded", config, mesh=sharding.make_mesh("1x8x1"))
    first.train(stop_after=1, show=False)
    resumed = ContinualRun.open(first.directory, sharding.make_mesh("2x2x2"))
    strategy = resumed.strategies[0]
    directory = runner.strategy_directory(first.directory, strategy)
    placed = jax.tree.leaves(learner.restore(strategy, resumed.setting, directory).opt_state)
    assert any(len(leaf.sharding.device_set) == 8 for leaf in placed)  # restored onto the new mesh
    resumed.train(show=False)
    boards = [json.loads((run / directory.name / "scores.json").read_text())["matrices"]
              for run in (first.directory, single.directory)]
    for name in ("r2", "rmse"):
        got, want = (np.asarray(board[name], np.float64) for board in boards)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
