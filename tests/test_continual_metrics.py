"""ACC, BWT, FWT and forgetting of hand-made score matrices, and the score board that keeps them."""

import math

import numpy as np
import pytest

from mistral_cl.continual.metrics import (
    ScoreBoard,
    accuracy,
    backward_transfer,
    forgetting,
    forward_transfer,
    summarize,
)

# R[i, j]: score on task j after training task i.
R = np.array([[0.5, 0.1, 0.0],
              [0.3, 0.6, 0.2],
              [0.2, 0.4, 0.7]])
BEFORE = [0.0, -0.1, -0.2]


def test_accuracy_is_the_mean_of_the_last_row():
    assert accuracy(R) == pytest.approx((0.2 + 0.4 + 0.7) / 3)


def test_backward_transfer_compares_the_last_row_with_the_diagonal():
    assert backward_transfer(R) == pytest.approx(((0.2 - 0.5) + (0.4 - 0.6)) / 2)


def test_forward_transfer_compares_the_score_just_before_learning_with_the_untrained_model():
    assert forward_transfer(R, BEFORE) == pytest.approx(((0.1 + 0.1) + (0.2 + 0.2)) / 2)


def test_forgetting_is_the_mean_drop_from_the_best_earlier_score():
    assert forgetting(R) == pytest.approx(((0.5 - 0.2) + (0.6 - 0.4)) / 2)


def test_a_learner_that_never_changes_old_tasks_has_zero_bwt_and_forgetting():
    frozen = np.array([[0.5, 0.0], [0.5, 0.8]])
    assert backward_transfer(frozen) == 0.0 and forgetting(frozen) == 0.0


def test_partial_runs_summarise_only_the_tasks_learned_so_far():
    two_rounds = R[:2]
    assert accuracy(two_rounds) == pytest.approx((0.3 + 0.6) / 2)
    assert backward_transfer(two_rounds) == pytest.approx(0.3 - 0.5)
    assert forward_transfer(two_rounds, BEFORE) == pytest.approx(0.1 + 0.1)


def test_joint_training_has_one_round_and_only_an_accuracy():
    summary = summarize(np.array([[0.6, 0.7, 0.8]]), BEFORE, learned_at=[0, 0, 0])
    assert summary["acc"] == pytest.approx(0.7)
    assert all(math.isnan(summary[k]) for k in ("bwt", "fwt", "forgetting"))


def test_score_board_rounds_and_an_ingested_task_without_earlier_rows():
    zero = {"r2": 0.0, "rmse": 10.0, "mae": 5.0}
    board = ScoreBoard(["a", "b"], {k: np.full(2, v) for k, v in zero.items()})
    board.add_round([0], [{"r2": 0.5, "rmse": 1, "mae": 1}, {"r2": 0.1, "rmse": 2, "mae": 2}])
    board.add_round([1], [{"r2": 0.3, "rmse": 1, "mae": 1}, {"r2": 0.6, "rmse": 2, "mae": 2}])
    board.add_task("c", {"r2": -0.2, "rmse": 9, "mae": 9}, {"r2": 0.2, "rmse": 3, "mae": 3})
    board.add_round([2], [{"r2": 0.2, "rmse": 1, "mae": 1}, {"r2": 0.4, "rmse": 2, "mae": 2},
                          {"r2": 0.7, "rmse": 3, "mae": 3}])
    r2 = board.matrices["r2"]
    assert r2.shape == (3, 3) and math.isnan(r2[0, 2]) and r2[1, 2] == 0.2
    assert board.learned_at == [0, 1, 2]
    again = ScoreBoard.from_json(board.to_json())
    np.testing.assert_array_equal(again.matrices["r2"], r2)
    summary = board.summary()
    assert summary["r2_acc"] == pytest.approx(accuracy(R))
    assert summary["r2_fwt"] == pytest.approx(((0.1 - 0.0) + (0.2 + 0.2)) / 2)
    assert summary == again.summary()
