"""`cumulative` retrains from the untrained model on every task seen so far, after every task."""

import equinox as eqx
import jax
import numpy as np
from continual_fixtures import coupling_tasks_csv, micro_config, micro_setting

from mistral_cl.continual import runner
from mistral_cl.continual.strategies import STRATEGIES, build_strategy
from mistral_cl.continual.strategies.base import StrategyState


def _setting(tmp_path, levels, **config):
    return micro_setting(tmp_path, levels, "cumulative", **config)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array))]


def test_each_round_restarts_from_the_untrained_model_on_every_task_seen(tmp_path):
    _, setting = _setting(tmp_path, {"Br": 0.8, "I": 0.2, "Cl": 0.5})
    cumulative = build_strategy("cumulative")
    assert STRATEGIES["cumulative"] is type(cumulative) and cumulative.stores_data
    assert cumulative.rounds([3]) == [[0], [1], [2]]
    pool, batch = setting.pool, setting.train.batch_size
    for last in range(3):
        seen = sum(len(pool.train[j]) for j in range(last + 1))
        assert cumulative.round_source(setting, [last]).count_batches(batch) == -(-seen // batch)
    trained = jax.tree.map(lambda x: x + 1.0 if eqx.is_inexact_array(x) else x, setting.initial)
    start = cumulative.begin_round(setting, StrategyState(), trained)
    for got, initial in zip(_leaves(start), _leaves(setting.initial), strict=True):
        np.testing.assert_array_equal(got, initial)


def test_cumulative_keeps_a_conflicting_first_task_that_naive_forgets(tmp_path):
    data = coupling_tasks_csv(tmp_path / "conflict.csv", {"Br": 0.85, "I": 0.15})
    config = runner.with_continual(micro_config(data, epochs=30, learning_rate=3e-3), "naive,cumulative",
                                   eval_batch_size=32, buckets=1)
    run_dir = runner.create_run(tmp_path / "run", config)
    runner.run_all(run_dir, show=False)
    rmse = {s: np.asarray(runner.json.loads((run_dir / s / "scores.json").read_text())["matrices"]["rmse"])
            for s in ("naive", "cumulative")}
    assert rmse["naive"][1, 0] > rmse["naive"][0, 0] + 40
    assert rmse["cumulative"][1, 0] < 0.5 * rmse["naive"][1, 0] and rmse["cumulative"][1, 1] < 15
