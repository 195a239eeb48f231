"""What each strategy promises: naive forgets a conflicting task, replay keeps it, adapters never
change an earlier task's predictions, replay-snapshot averages a task's snapshot with the current
model, A-GEM's step never raises the memory loss to first order, and
EWC's Fisher is the mean squared per-reaction gradient."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from continual_fixtures import (
    STATEFUL_STRATEGIES,
    coupling_tasks_csv,
    mesh_config,
    mesh_tasks_csv,
    micro_config,
    micro_setting,
)
from optax.tree_utils import tree_vdot

from mistral_cl.continual import learner, runner
from mistral_cl.continual.buffer import MemoryPolicy
from mistral_cl.continual.learner import run_strategy
from mistral_cl.continual.strategies import STRATEGIES, build_strategy, parse_strategies
from mistral_cl.continual.strategies.base import StrategyState
from mistral_cl.continual.strategies.ewc import EWC, diagonal_fisher
from mistral_cl.errors import InputError
from mistral_cl.inference import forward, predict, predict_mean
from mistral_cl.scores import regression_scores
from mistral_cl.train import regression_loss


def _setting(tmp_path, levels, **config):
    return micro_setting(tmp_path, levels, "naive", **config)


def test_naive_forgets_a_conflicting_task_and_replay_remembers_it(tmp_path):
    # Same couplings, opposite yields: only the halide tells the tasks apart.
    data = coupling_tasks_csv(tmp_path / "conflict.csv", {"Br": 0.85, "I": 0.15})
    config = runner.with_continual(micro_config(data, epochs=40, learning_rate=3e-3), "naive,replay",
                                   eval_batch_size=32, buckets=1)
    run_dir = runner.create_run(tmp_path / "run", config)
    runner.run_all(run_dir, show=False)
    rmse = {s: np.asarray(runner.json.loads((run_dir / s / "scores.json").read_text())["matrices"]["rmse"])
            for s in ("naive", "replay")}
    for matrix in rmse.values():
        assert matrix[0, 0] < 10  # both learn the first task (yield % error)
    assert rmse["naive"][1, 0] > rmse["naive"][0, 0] + 40  # ... naive then forgets it
    # Replay keeps most of it and learns the second. How much of the first it keeps depends on the
    # seed in this micro setting: a round on one constant yield level lets the micro model lose the
    # feature that tells Br from I, and the next round must find it again. Over seeds 0-2 and
    # remembered batches of 8 to 64 reactions, its error on the first task ended between 2 and 35
    # points (naive's: about 70), so the test asks for less than half of naive's.
    assert rmse["replay"][1, 0] < 0.5 * rmse["naive"][1, 0] and rmse["replay"][1, 1] < 30


def test_replay_weight_tasks_counts_every_remembered_task_like_the_current_one(tmp_path):
    _, setting = _setting(tmp_path, {"Br": 0.8, "I": 0.2, "Cl": 0.5})
    paper, balanced = build_strategy("replay"), build_strategy("replay:weight=tasks")
    state = balanced.initial_state(setting)
    assert float(balanced.extra(setting, state)) == 1.0  # empty memory: the paper's loss
    for task in (0, 1):
        state = balanced.end_round(setting, state, setting.initial, [task], task)
    assert float(balanced.extra(setting, state)) == 2.0 and float(paper.extra(setting, state)) == 1.0
    pool, model = setting.pool, setting.model(setting.initial)
    batches = (next(pool.source(pool.train[2]).batches(16, shuffle=False)),
               next(pool.source(pool.train_positions([0, 1])).batches(16, shuffle=False)))
    for strategy, k in ((paper, 1.0), (balanced, 2.0)):
        loss, parts = strategy.objective(setting)(model, batches, jax.random.key(0), jnp.float32(k))
        current, replayed = float(parts["current_loss"]), float(parts["replay_loss"])
        assert current != replayed
        np.testing.assert_allclose(float(loss), 2 * (current + k * replayed) / (1 + k), rtol=1e-6)
    for bad in ("replay:weight=0", "replay:weight=-1", "replay-avg-grad:weight=many", "agem:weight=tasks"):
        with pytest.raises(InputError):
            build_strategy(bad)


def test_adapters_never_change_an_earlier_tasks_predictions(tmp_path):
    run_dir, setting = _setting(tmp_path, {"Br": 0.8, "I": 0.2}, mode="lora", epochs=2)
    adapters = build_strategy("adapters")
    before = {k: np.zeros(2) for k in ("r2", "rmse", "mae")}

    def first_task_predictions(progress):
        groups = adapters.predictors(setting, progress.state, progress.trainable, 2)
        ((model,), _), = [(m, g) for m, g in groups if g == [0]]
        return predict(setting.model(model), setting.pool.source(setting.pool.test[0]), 32)

    directory = run_dir / "adapters"
    directory.mkdir()
    after_first = run_strategy(adapters, setting, directory, [2], before, eval_batch_size=32, stop_after=1)
    after_second = run_strategy(adapters, setting, directory, [2], before, eval_batch_size=32)
    assert after_second.rounds_done == 2
    np.testing.assert_array_equal(first_task_predictions(after_first), first_task_predictions(after_second))
    r2 = after_second.board.matrices["r2"]
    assert r2[0, 0] == r2[1, 0]


def test_replay_snapshot_predicts_a_learned_task_with_the_mean_of_its_snapshot_and_the_current(tmp_path):
    run_dir, setting = _setting(tmp_path, {"Br": 0.8, "I": 0.2}, epochs=2)
    snapshot, replay = (build_strategy(f"{name}:memory_batch=8") for name in ("replay-snapshot", "replay"))
    assert snapshot.task_aware and not replay.task_aware
    before = {k: np.zeros(2) for k in ("r2", "rmse", "mae")}
    runs = {}
    for strategy in (snapshot, replay):
        directory = run_dir / strategy.name
        directory.mkdir()
        runs[strategy.name] = [run_strategy(strategy, setting, directory, [2], before, eval_batch_size=32,
                                            stop_after=stop) for stop in (1, None)]
    (first, final), replay_final = runs["replay-snapshot"], runs["replay"][1]
    # Training is replay's: the same trainable half after every round.
    for a, b in zip(jax.tree.leaves(final.trainable), jax.tree.leaves(replay_final.trainable), strict=True):
        np.testing.assert_array_equal(a, b)
    assert set(final.state.arrays) == {"task_0000", "task_0001"}  # restored from the checkpoint after round 1
    groups = dict((tuple(g), m) for m, g in snapshot.predictors(setting, final.state, final.trainable, 2))
    assert len(groups[(0,)]) == 2 and len(groups[(1,)]) == 2
    source = setting.pool.source(setting.pool.test[0])
    kept, current = (predict(setting.model(t), source, 32) for t in (first.trainable, final.trainable))
    assert not np.allclose(kept, current)
    mean = predict_mean([setting.model(t) for t in groups[(0,)]], source, 32)
    np.testing.assert_allclose(mean, (kept.astype(np.float64) + current) / 2, rtol=1e-6)
    truth = setting.pool.encoded.yields[setting.pool.test[0]]
    assert final.board.matrices["rmse"][1, 0] == pytest.approx(regression_scores(truth, mean)["rmse"])
    assert final.board.matrices["rmse"][1, 0] != replay_final.board.matrices["rmse"][1, 0]
    # The task learned last is predicted by its snapshot, which is the current model: replay's score.
    assert final.board.matrices["rmse"][1, 1] == pytest.approx(replay_final.board.matrices["rmse"][1, 1])
    # Before the second task is learned, the current model alone predicts it.
    assert [g for _, g in snapshot.predictors(setting, first.state, first.trainable, 2)] == [[0], [1]]
    assert len(snapshot.predictors(setting, first.state, first.trainable, 2)[1][0]) == 1


def test_agem_step_never_raises_the_memory_loss_to_first_order(tmp_path):
    _, setting = _setting(tmp_path, {"Br": 0.8, "I": 0.2})
    agem = build_strategy("agem")
    project = eqx.filter_jit(agem.grad_transform(setting))
    pool = setting.pool
    current = next(pool.source(pool.train[1]).batches(16, shuffle=False))
    memory = next(pool.source(pool.train[0]).batches(16, shuffle=False))
    trainable, frozen = setting.initial, setting.frozen

    def loss(params, batch):
        model = eqx.combine(params, frozen)
        return regression_loss(forward(model, batch), batch.yields, batch.weight)

    gradient = eqx.filter_jit(eqx.filter_grad(loss))
    grads, reference = gradient(trainable, current), gradient(trainable, memory)
    # Remove twice the memory direction: a gradient that surely conflicts with the memory's.
    along = tree_vdot(grads, reference) / tree_vdot(reference, reference)
    flipped = jax.tree.map(lambda g, r: g - 2 * along * r, grads, reference)
    for g in (grads, flipped):
        projected = project(g, trainable, frozen, (current, memory), jax.random.key(0), None)
        assert float(tree_vdot(projected, reference)) >= -1e-6 * float(tree_vdot(g, g))
    agreeing = jax.tree.map(lambda r: 2 * r, reference)
    unchanged = project(agreeing, trainable, frozen, (current, memory), jax.random.key(0), None)
    assert all(jnp.array_equal(a, b) for a, b in zip(jax.tree.leaves(agreeing), jax.tree.leaves(unchanged),
                                                     strict=True))


def test_ewc_fisher_is_the_mean_squared_gradient_of_each_reactions_squared_error(tmp_path):
    _, setting = _setting(tmp_path, {"Br": 0.8, "I": 0.2}, batch_size=8)
    source = setting.pool.source(setting.pool.train[0][:12])  # two batches, the second with fillers
    fisher = diagonal_fisher(setting, setting.initial, source)

    def error(params, batch, row):
        pred = forward(eqx.combine(params, setting.frozen), batch)
        return jnp.square(pred[row] - batch.yields[row])

    gradient = eqx.filter_jit(eqx.filter_grad(error))
    expected = jax.tree.map(jnp.zeros_like, setting.initial)
    for batch in source.batches(8, shuffle=False):
        for row in np.flatnonzero(batch.weight):
            grad = gradient(setting.initial, batch, jnp.int32(row))
            expected = jax.tree.map(lambda e, g: e + jnp.square(g) / 12, expected, grad)
    for got, want in zip(jax.tree.leaves(fisher), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-12)
    state = EWC(lam=5.0).end_round(setting, EWC().initial_state(setting), setting.initial, [0], 0)
    assert isinstance(state, StrategyState) and set(state.arrays) == {"fisher", "anchor"}


def test_strategies_are_named_with_their_settings_and_checked_against_the_mode():
    assert set(STRATEGIES) == {"joint", "cumulative", "naive", "replay", "replay-avg-grad", "replay-snapshot",
                               "ewc", "lwf", "agem", "adapters"}
    ewc = build_strategy("ewc:lam=300")
    assert ewc.lam == 300.0 and ewc.spec == "ewc:lam=300.0" and build_strategy(ewc.spec) == ewc
    assert [s.spec for s in parse_strategies("naive, replay,adapters", "lora")] == [
        "naive", "replay", "adapters"]
    for bad in ("nope", "ewc:strength=3", "ewc:lam=high", "naive,naive", ""):
        with pytest.raises(InputError):
            parse_strategies(bad, "full")


@pytest.mark.slow
def test_every_strategy_learns_a_three_task_stream_in_head_mode(tmp_path):
    # The stream and settings of the mesh tests, whose one-device runs show the same in `lora` and
    # `full` mode (test_continual_mesh.py).
    data = mesh_tasks_csv(tmp_path / "tasks.csv")
    run_dir = runner.create_run(tmp_path / "run", mesh_config(data, "head"))
    rows = runner.run_all(run_dir, show=False)
    assert [row["strategy"] for row in rows] == list(STATEFUL_STRATEGIES)
    for row in rows:
        scores = runner.json.loads((run_dir / row["strategy"] / "scores.json").read_text())
        assert np.isfinite(np.array(scores["matrices"]["r2"], dtype=float)).all()
        assert len(scores["matrices"]["r2"]) == 3


def test_a_round_with_ema_ends_with_the_moving_average_of_its_weights(tmp_path):
    strategy = build_strategy("naive")

    def round_weights(ema):
        directory = tmp_path / f"ema-{ema}"
        directory.mkdir()
        _, setting = _setting(directory, {"Br": 0.8, "I": 0.2}, mode="head")
        setting = dataclasses.replace(setting, train=dataclasses.replace(setting.train, ema=ema))
        progress = learner.start(strategy, setting, {})
        optimizer, step = learner.build_step(strategy, setting, 16)
        trained = learner.train_round(strategy, setting, progress, [0], optimizer, step).trainable
        return np.concatenate([np.ravel(x) for x in jax.tree.leaves(trained)])

    plain = round_weights(None)
    np.testing.assert_allclose(round_weights(1e-9), plain, rtol=1e-5, atol=1e-7)
    assert not np.allclose(round_weights(0.9), plain)


def test_replay_settling_epochs_draw_both_batches_from_every_task_seen(tmp_path):
    _, setting = _setting(tmp_path, {"Br": 0.8, "I": 0.2, "Cl": 0.5}, epochs=3)
    strategy = build_strategy("replay:settle=1")
    assert strategy.spec == "replay:settle=1"
    state = strategy.initial_state(setting)
    for task in (0, 1):
        state = strategy.end_round(setting, state, setting.initial, [task], task)

    def tasks_drawn(epoch):
        steps = list(strategy.steps(setting, state, [2], 2, epoch))
        def real_tasks(batches):
            return {int(t) for batch in batches for t in np.asarray(batch.task)[batch.weight > 0]}

        return len(steps), real_tasks(b for b, _ in steps), real_tasks(b for _, b in steps)

    plain_steps, current, remembered = tasks_drawn(0)
    assert (current, remembered) == ({2}, {0, 1})
    settle_steps, first, second = tasks_drawn(2)  # the last of 3 epochs settles
    assert settle_steps == plain_steps and first == second == {0, 1, 2}
    with pytest.raises(InputError, match="settle"):
        build_strategy("replay:settle=-1")


def test_replay_distill_replays_a_blend_of_measured_yields_and_predictions_kept_at_storage(tmp_path):
    _, setting = _setting(tmp_path, {"Br": 0.8, "I": 0.2, "Cl": 0.5})
    setting = dataclasses.replace(setting, memory=MemoryPolicy.parse("reservoir:20"))
    pool, model = setting.pool, setting.model(setting.initial)
    for share in (1.0, 0.25):
        strategy = build_strategy(f"replay:distill={share}")
        state = strategy.initial_state(setting)
        first = strategy.steps(setting, state, [0], 0, 0)  # no memory yet: weight-0 stand-ins
        assert all(remembered.weight.sum() == 0 for _, remembered in first)
        for task in (0, 1):
            state = strategy.end_round(setting, state, setting.initial, [task], task)
        runner.json.dumps(state.values)  # checkpoint metadata
        kept = np.asarray(state.values["memory"]["positions"])
        assert len(state.values["predicted"]) == len(kept)  # one prediction per remembered reaction
        assert len(kept) == 20 and set(pool.encoded.task[kept]) == {0, 1}
        # The untrained model's predictions, made when each task ended (nothing trained in between).
        predicted = predict(model, pool.source(kept), 32)
        np.testing.assert_allclose(state.values["predicted"], predicted, rtol=1e-5, atol=1e-6)
        expected = share * predicted + (1 - share) * pool.encoded.yields[kept]
        seen = {}
        for _, remembered in strategy.steps(setting, state, [2], 2, 0):
            real = remembered.weight > 0
            seen.update(zip(np.asarray(kept)[np.asarray(remembered.index)[real]],
                            np.asarray(remembered.yields)[real], strict=True))
        assert seen and all(np.isclose(y, expected[list(kept).index(p)], atol=1e-6) for p, y in seen.items())
    plain = build_strategy("replay")
    assert "predicted" not in plain.end_round(setting, plain.initial_state(setting), setting.initial, [0],
                                              0).values
    for bad in ("1.5", "-0.1", "nan", "half"):
        with pytest.raises(InputError, match="distill"):
            build_strategy(f"replay:distill={bad}")


def test_replay_epochs_set_the_length_of_every_round_and_where_settling_begins(tmp_path):
    _, setting = _setting(tmp_path, {"Br": 0.8, "I": 0.2, "Cl": 0.5}, epochs=3)
    assert build_strategy("replay").round_epochs(setting, [0]) == 3
    strategy = build_strategy("replay:epochs=5:settle=1")
    assert strategy.spec == "replay:settle=1:epochs=5"
    assert strategy.round_epochs(setting, [1]) == 5
    state = strategy.end_round(setting, strategy.initial_state(setting), setting.initial, [0], 0)

    def current_tasks(epoch):
        return {int(t) for batch, _ in strategy.steps(setting, state, [1], 1, epoch)
                for t in np.asarray(batch.task)[batch.weight > 0]}

    # The run's 3 epochs would make epoch 2 the settling one; with 5, only epoch 4 settles.
    assert current_tasks(2) == {1} and current_tasks(4) == {0, 1}
    for bad in ("0", "many"):
        with pytest.raises(InputError, match="epochs"):
            build_strategy(f"replay:epochs={bad}")


@pytest.mark.parametrize("name", ["replay", "agem"])
def test_memory_batch_sets_the_size_of_every_remembered_batch(tmp_path, name):
    _, setting = _setting(tmp_path, {"Br": 0.8, "I": 0.2, "Cl": 0.5})
    strategy = build_strategy(f"{name}:memory_batch=24")
    state = strategy.initial_state(setting)
    for task in (0, 1):
        state = strategy.end_round(setting, state, setting.initial, [task], task)
    assert build_strategy(name).memory_batch == {"replay": 64, "agem": 0}[name]
    default = list(build_strategy(f"{name}:memory_batch=0").steps(setting, state, [2], 2, 0))
    steps = list(strategy.steps(setting, state, [2], 2, 0))
    assert len(steps) == len(default)  # the current task sets the number of steps
    for (current, remembered), (_, plain) in zip(steps, default, strict=True):
        assert current.weight.shape == plain.weight.shape == (setting.train.batch_size,)
        assert remembered.weight.shape == (24,) and remembered.mask.shape[1] == current.mask.shape[1]
        assert set(np.asarray(remembered.task)[remembered.weight > 0]) <= {0, 1}
    # The first round has no memory: its remembered batches have the same shape, weight 0 and the
    # current batch's rows, so the step compiled there serves every later round.
    initial = strategy.initial_state(setting)
    for current, remembered in strategy.steps(setting, initial, [0], 0, 0):
        assert remembered.weight.shape == (24,) and not remembered.weight.any()
        assert remembered.mask.shape == (24, current.mask.shape[1])
        assert set(np.asarray(remembered.index)) == set(np.asarray(current.index))
    with pytest.raises(InputError, match="memory_batch"):
        build_strategy(f"{name}:memory_batch=-1")
