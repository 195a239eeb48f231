"""The classical reference rows (benchmarks/classical.py): forests on one-hot components and DRFP
fingerprints fit, score every task after every round, and show forgetting only when they should."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from continual_fixtures import coupling_tasks_csv

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import classical  # noqa: E402
import sklearn  # noqa: E402,F401  (the test extra installs scikit-learn)

from mistral_cl.data.sources import load_dataset  # noqa: E402
from mistral_cl.data.tasks import TaskStream  # noqa: E402


@pytest.fixture(scope="module")
def conflicting(tmp_path_factory):
    """Two tasks of short couplings whose yields sit at 85 % and 15 %."""
    path = coupling_tasks_csv(tmp_path_factory.mktemp("data") / "tasks.csv", {"Br": 0.85, "I": 0.15})
    return load_dataset(path, task_columns=["task"])


def small_forest(seed):
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(n_estimators=10, random_state=seed, n_jobs=1)


def test_one_hot_has_a_column_per_component_value_and_none_is_a_value():
    table = [{"ligand": "XPhos", "base": "none"}, {"ligand": "SPhos", "base": "KOH"}]
    x = classical.one_hot(table)
    assert x.shape == (2, 4) and x.sum(axis=1).tolist() == [2, 2]
    assert not np.array_equal(x[0], x[1])


def test_suzuki_one_hot_is_five_components_of_the_screen_and_tells_every_reaction_apart():
    suzuki = load_dataset("suzuki")
    x = classical.one_hot_features(suzuki, "suzuki")
    assert x.shape == (5760, 7 + 4 + 12 + 8 + 4)  # quinolines, indazoles, ligands+none, bases+none, solvents
    assert np.all(x.sum(axis=1) == 5) and len(np.unique(x, axis=0)) == 5760


def test_other_data_is_one_hot_over_its_molecules():
    assert classical.molecule_components("CBr.[K+].[K+].O>>CO") == {"CBr": "1", "O": "1", "[K+]": "2"}


def test_forests_on_one_hot_data_fit_and_score_every_task_after_every_round(conflicting):
    stream = TaskStream.from_dataset(conflicting, test_fraction=0.25)
    featurize = classical.Featurized.of(conflicting, classical.one_hot_features(conflicting, "csv"))
    naive = classical.run_reference(stream, featurize, "naive", seed=0, make_model=small_forest)
    cumulative = classical.run_reference(stream, featurize, "cumulative", seed=0, make_model=small_forest)
    for run in (naive, cumulative):
        assert run.board.matrices["rmse"].shape == (2, 2) and run.board.learned_at == [0, 1]
        assert run.reactions_scored == 2 * 32 and run.wall_seconds > 0 and run.cpu_seconds > 0
    assert naive.reactions_fitted == 48 + 48 and cumulative.reactions_fitted == 48 + 96
    naive_summary, cumulative_summary = naive.board.summary(), cumulative.board.summary()
    # The naive forest predicts the second task's level (15 %) for the first task (85 %).
    assert naive_summary["rmse_bwt"] > 50 and naive_summary["rmse_zero_shot"] > 50
    assert abs(cumulative_summary["rmse_bwt"]) < 3 and cumulative_summary["rmse_acc"] < 5
    assert cumulative_summary["pooled_all_r2"] > 0.95 and naive_summary["pooled_all_r2"] < 0
    assert math.isnan(cumulative_summary["rmse_fwt"])  # no untrained forest


def test_a_forest_with_a_bounded_memory_fits_the_current_task_and_what_the_policy_kept(conflicting):
    stream = TaskStream.from_dataset(conflicting, test_fraction=0.25)
    featurize = classical.Featurized.of(conflicting, classical.one_hot_features(conflicting, "csv"))
    runs = {protocol: classical.run_reference(stream, featurize, protocol, seed=0, make_model=small_forest)
            for protocol in ("naive", "memory:reservoir:10", "memory:all")}
    assert runs["memory:reservoir:10"].reactions_fitted == 48 + (48 + 10)
    assert runs["memory:all"].reactions_fitted == 48 + (48 + 48)  # what `cumulative` fits
    # Ten remembered reactions of the first task (85 %) keep much of its level; all of them keep it.
    naive, kept, every = (runs[p].board.summary()["rmse_bwt"]
                          for p in ("naive", "memory:reservoir:10", "memory:all"))
    assert naive > 50 and kept < naive / 2 and abs(every) < 3


def test_an_unknown_protocol_is_refused_before_anything_runs(capsys):
    for protocol in ("greedy", "memory:reservoir:0", "memory:"):
        with pytest.raises(SystemExit) as stop:
            classical.main(["--protocols", f"naive,{protocol}"])
        assert stop.value.code == 2
        assert "protocol" in capsys.readouterr().err or protocol.startswith("memory:r")


def test_interval_is_the_mean_sd_and_t_interval_over_seeds():
    stat = classical.interval([1.0, 2.0, 3.0, math.nan])
    assert (stat["mean"], stat["sd"], stat["n"]) == (2.0, 1.0, 3)
    assert stat["high"] - stat["mean"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)


def test_the_seed_order_is_run_for_the_suzuki_pairs_only(conflicting):
    orders = ["sorted", "seed", "random:1"]
    assert classical.orders_for(conflicting, orders) == ["sorted", "random:1"]
    assert classical.orders_for(load_dataset("suzuki"), orders) == orders


def test_the_benchmark_writes_every_row_and_takes_recorded_rows_over(conflicting, tmp_path, monkeypatch):
    monkeypatch.setattr(classical, "load_dataset", lambda name: conflicting)
    out = tmp_path / "classical.json"
    argv = ["--data", "toy", "--seeds", "0,1", "--orders", "sorted,seed", "--features", "onehot", "--out",
            str(out)]
    assert classical.main(argv) == 0
    result = classical.json.loads(out.read_text())
    assert [(r["protocol"], r["order"]) for r in result["rows"]] == [("naive", "sorted"),
                                                                     ("cumulative", "sorted")]
    naive = result["rows"][0]
    assert naive["rmse_bwt"]["n"] == 2 and naive["rmse_bwt"]["low"] < naive["rmse_bwt"]["mean"]
    boards = classical.json.loads((tmp_path / "classical_boards.json").read_text())["runs"]
    assert len(boards[0]["boards"]["0"]["pooled"]["all_rmse"]) == 2

    def refuse(*args, **kwargs):
        raise AssertionError("a recorded row was computed again")

    monkeypatch.setattr(classical, "run_reference", refuse)
    assert classical.main(argv) == 0
    assert classical.json.loads(out.read_text())["rows"] == result["rows"]
    with pytest.raises(AssertionError, match="computed again"):
        classical.main([*argv[:3], "0,1,2", *argv[4:]])  # other seeds: a new row
