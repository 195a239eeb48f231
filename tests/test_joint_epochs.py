"""`joint:epochs=auto` trains the upper bound to convergence: its epochs are chosen on a validation
part held out from the training reactions (never the test set), the lowest point of the recorded
validation curve, and the round then trains on every training reaction for that many epochs."""

import json

import numpy as np
import pytest
from continual_fixtures import micro_setting

from mistral_cl.continual import learner, runner
from mistral_cl.continual.strategies import build_strategy
from mistral_cl.errors import InputError


def test_the_validation_part_is_carved_from_training_reactions_never_from_test_ones(tmp_path):
    _, setting = micro_setting(tmp_path, {"Br": 0.8, "I": 0.2, "Cl": 0.5})
    pool = setting.pool
    trial, held = learner.validation_split(pool, [0, 1], 0.2, seed=0)
    assert sorted(held) == [0, 1]
    tests = set(pool.test_positions([0, 1, 2]).tolist())
    for task in (0, 1):
        assert len(held[task]) == round(0.2 * len(pool.train[task]))
        assert set(held[task]) <= set(pool.train[task]) and not set(held[task]) & tests
        assert set(trial.train[task]) | set(held[task]) == set(pool.train[task])
        assert not set(trial.train[task]) & set(held[task])
    np.testing.assert_array_equal(trial.train[2], pool.train[2])  # a task not in the round is untouched
    assert all(np.array_equal(a, b) for a, b in zip(trial.test, pool.test, strict=True))
    again, held_again = learner.validation_split(pool, [0, 1], 0.2, seed=0)
    assert all(np.array_equal(held[t], held_again[t]) for t in held)  # seeded: a resume draws the same


def test_joint_auto_trains_for_the_epoch_count_with_the_lowest_validation_rmse(tmp_path):
    run_dir, _ = micro_setting(tmp_path, {"Br": 0.8, "I": 0.2}, strategies="joint:epochs=auto:max_epochs=5",
                               mode="head", learning_rate=3e-2)
    rows = runner.run_all(run_dir, show=False)
    directory = run_dir / "joint_epochs=auto_max_epochs=5"
    (record,) = json.loads((directory / "rounds.json").read_text())
    curve = record["validation_rmse"]
    assert len(curve) == 5 and all(np.isfinite(curve))
    assert record["epochs"] == int(np.argmin(curve)) + 1  # the round trained that many epochs
    assert json.loads((directory / "summary.json").read_text())["epochs_chosen"] == [record["epochs"]]
    # Its compute includes the trial: 5 epochs on 80 % of the training reactions, then the round.
    sizes = [task["train"] for task in json.loads((run_dir / runner.STREAM_FILE).read_text())["tasks"]]
    train, held = sum(sizes), sum(round(0.2 * n) for n in sizes)
    assert record["validation_reactions"] == held
    assert record["trial_reactions"] == 5 * (train - held)
    assert record["reactions"] == record["trial_reactions"] + record["epochs"] * train == rows[0]["reactions"]


def test_joint_epochs_are_checked():
    assert build_strategy("joint").spec == "joint"
    assert build_strategy("joint:epochs=30").spec == "joint:epochs=30"
    for bad in ("joint:epochs=many", "joint:epochs=0", "joint:epochs=auto:validation=1.0",
                "joint:epochs=auto:max_epochs=0"):
        with pytest.raises(InputError):
            build_strategy(bad)
