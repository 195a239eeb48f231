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
    pooled_round,
    pooled_scores,
    summarize,
    zero_shot,
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


# E[i, j]: RMSE (yield points) on task j after training task i; lower is better.
E = np.array([[8.0, 20.0, 25.0],
              [14.0, 6.0, 22.0],
              [11.0, 9.0, 5.0]])
E_BEFORE = [30.0, 28.0, 26.0]


def test_error_bwt_is_positive_when_earlier_tasks_got_worse():
    assert backward_transfer(E) == pytest.approx(((11 - 8) + (9 - 6)) / 2)


def test_error_forgetting_is_the_rise_from_the_lowest_error_since_learning():
    assert forgetting(E, lower_is_better=True) == pytest.approx(((11 - 8) + (9 - 6)) / 2)
    recovered = np.array([[8.0, 20.0], [4.0, 6.0], [5.0, 6.5]])  # task 0 improved after learning
    assert forgetting(recovered, lower_is_better=True) == pytest.approx(((5 - 4) + (6.5 - 6)) / 2)


def test_error_fwt_is_negative_when_earlier_tasks_lowered_the_zero_shot_error():
    assert zero_shot(E) == pytest.approx((20 + 22) / 2)
    assert forward_transfer(E, E_BEFORE) == pytest.approx(((20 - 28) + (22 - 26)) / 2)


def test_forgetting_ignores_rounds_before_the_task_was_learned():
    lucky = np.array([[0.1, 0.9], [0.5, 0.2], [0.4, 0.1]])  # task 1 scored 0.9 by chance, untrained
    assert forgetting(lucky) == pytest.approx(((0.5 - 0.4) + (0.2 - 0.1)) / 2)


def test_summarize_gives_error_forgetting_the_error_sign():
    summary = summarize(E, E_BEFORE, lower_is_better=True)
    assert summary["acc"] == pytest.approx((11 + 9 + 5) / 3)
    assert summary["bwt"] == summary["forgetting"] == pytest.approx(3.0)


def test_pooled_scores_treat_the_tasks_test_sets_as_one_set():
    truths = [np.array([0.1, 0.3]), np.array([0.8, 0.9]), np.array([0.5])]
    preds = [np.array([0.2, 0.3]), np.array([0.7, 0.9]), np.array([0.0])]
    pooled = pooled_scores(truths, preds, [0, 1])
    assert pooled["rmse"] == pytest.approx(100 * np.sqrt((0.01 + 0.0 + 0.01 + 0.0) / 4))
    assert pooled["mae"] == pytest.approx(100 * 0.2 / 4)
    y = np.array([0.1, 0.3, 0.8, 0.9])
    assert pooled["r2"] == pytest.approx(1 - 0.02 / np.sum((y - y.mean()) ** 2))
    # Each task alone has a poor R^2 (0.5 and 0.0), pooled the levels are told apart.
    assert pooled["r2"] > 0.9
    assert all(math.isnan(v) for v in pooled_scores(truths, preds, []).values())


def test_pooled_round_scores_the_seen_tasks_and_every_task():
    truths = [np.array([0.1, 0.3]), np.array([0.8, 0.9]), np.array([0.5])]
    preds = [np.array([0.2, 0.3]), np.array([0.7, 0.9]), np.array([0.0])]
    pooled = pooled_round(truths, preds, seen=[0])
    assert pooled["seen_rmse"] == pytest.approx(100 * np.sqrt(0.01 / 2))
    assert pooled["all_rmse"] == pytest.approx(pooled_scores(truths, preds, [0, 1, 2])["rmse"])


def test_score_board_keeps_pooled_scores_per_round_and_old_boards_still_load():
    zero = {"r2": 0.0, "rmse": 10.0, "mae": 5.0}
    board = ScoreBoard(["a", "b"], {k: np.full(2, v) for k, v in zero.items()})
    scores = [{"r2": 0.5, "rmse": 1, "mae": 1}, {"r2": 0.1, "rmse": 2, "mae": 2}]
    assert board.seen_after([0]) == [0]
    board.add_round([0], scores, {"seen_rmse": 1.0, "all_rmse": 1.5, "all_r2": 0.7})
    assert board.seen_after([1]) == [0, 1]
    board.add_round([1], scores, {"seen_rmse": 1.2, "all_rmse": 1.2, "all_r2": 0.8})
    np.testing.assert_array_equal(board.pooled["seen_rmse"], [1.0, 1.2])
    assert math.isnan(board.pooled["seen_r2"][1])
    summary = board.summary()
    assert summary["pooled_all_rmse"] == 1.2 and summary["pooled_all_r2"] == 0.8
    assert "pooled_seen_r2" not in summary
    assert ScoreBoard.from_json(board.to_json()).summary() == summary
    old = board.to_json()
    del old["pooled"]
    again = ScoreBoard.from_json(old)
    assert again.pooled["all_rmse"].shape == (2,) and "pooled_all_rmse" not in again.summary()
    again.add_round([], scores)
    assert again.pooled["all_rmse"].shape == (3,)


def test_summary_keeps_the_keys_others_read():
    board = ScoreBoard(["a"], {"r2": np.zeros(1), "rmse": np.zeros(1), "mae": np.zeros(1)})
    board.add_round([0], [{"r2": 0.5, "rmse": 1.0, "mae": 1.0}])
    assert {"r2_acc", "r2_bwt", "r2_fwt", "r2_forgetting", "rmse_acc", "mae_acc", "rmse_bwt",
            "rmse_forgetting", "rmse_zero_shot"} <= set(board.summary())
