"""Specifications of benchmarks/continual.py's summary over seeds and its README section (no training)."""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import continual  # noqa: E402
import readme  # noqa: E402


def _row(strategy, acc, bwt):
    return {"strategy": strategy, "ACC": acc, "BWT": bwt, "FWT": None if strategy == "joint" else 0.5,
            "forgetting": None if strategy == "joint" else -bwt, "RMSE %": 18.0, "MAE %": 14.0,
            "wall s": 100.0, "CPU s": 150.0, "task-aware": False, "stores reactions": True}


PER_SEED = {
    0: [_row("joint", 0.20, None), _row("naive", -4.0, -5.0), _row("replay", 0.15, -0.10)],
    1: [_row("joint", 0.30, None), _row("naive", -3.0, -4.0), _row("replay", 0.00, -0.30)],
}


def test_mean_rows_average_each_score_and_give_its_sample_sd():
    rows = {r["strategy"]: r for r in continual.mean_rows(PER_SEED)}
    assert rows["replay"]["ACC"] == pytest.approx(0.075)
    assert rows["replay"]["ACC sd"] == pytest.approx(0.106066, rel=1e-4)
    assert rows["naive"]["BWT"] == pytest.approx(-4.5)
    assert rows["joint"]["BWT"] is None and "BWT sd" not in rows["joint"]
    assert rows["replay"]["stores reactions"] is True  # flags are kept, not averaged
    assert continual.mean_rows({0: PER_SEED[0]}) == PER_SEED[0]
    # A strategy added to one seed's run later may sit elsewhere in another's: rows pair by strategy.
    shuffled = {0: PER_SEED[0], 1: PER_SEED[1][::-1]}
    assert [r["strategy"] for r in continual.mean_rows(shuffled)] == [r["strategy"] for r in PER_SEED[0]]
    assert {r["strategy"]: r["ACC"] for r in continual.mean_rows(shuffled)} == pytest.approx(
        {s: r["ACC"] for s, r in rows.items()})


def test_a_compute_matched_joint_is_one_row_over_seeds_whose_budgets_differ():
    per_seed = {s: [{**_row("joint", 0.7, None), "strategy": f"joint:budget={1000 + s}",
                     "reactions": 1000 + s}] for s in (0, 1)}
    (row,) = continual.mean_rows(per_seed)
    assert row["strategy"] == "joint:budget=matched" and row["reactions"] == pytest.approx(1000.5)
    per_seed[1][0]["strategy"] = "replay"
    with pytest.raises(SystemExit, match="different strategies"):
        continual.mean_rows(per_seed)


def test_targets_are_judged_on_the_mean_rows():
    targets = continual.targets({r["strategy"]: r for r in continual.mean_rows(PER_SEED)})
    assert targets["naive BWT <= -0.10"]["met"]
    gap = targets["replay ACC within 0.03 of joint"]
    assert not gap["met"] and gap["joint_minus_replay"] == pytest.approx(0.175)
    assert not targets["replay BWT >= -0.03"]["met"]


def test_the_rmse_targets_are_judged_in_yield_points_and_leave_out_task_aware_rows():
    rows = {r["strategy"]: dict(r) for r in PER_SEED[0]}
    rows["naive"]["RMSE BWT"], rows["replay"]["RMSE BWT"] = 4.0, 0.4
    rows["ewc"] = {**_row("ewc", -2.0, -3.0), "RMSE BWT": 3.0, "stores reactions": False}
    rows["adapters"] = {**_row("adapters", 0.3, 0.0), "RMSE BWT": 0.0, "stores reactions": False,
                        "task-aware": True}
    targets = continual.targets(rows)
    assert not targets["naive RMSE-BWT >= +5 points"]["met"]
    assert targets["replay RMSE-BWT <= +0.5 points"]["met"]
    kept = targets["a strategy storing no reactions beats naive on RMSE-BWT"]
    assert kept["met"] and kept["best"] == "ewc"  # not adapters, which picks its adapter by task id
    assert "naive RMSE-BWT >= +5 points" not in continual.targets({r["strategy"]: r for r in PER_SEED[1]})
    assert not any("converged" in name for name in targets)  # no joint:epochs=auto row to judge by


def test_replay_is_judged_against_the_converged_joint_in_yield_points():
    rows = {r["strategy"]: dict(r) for r in PER_SEED[0]}
    rows["naive"]["RMSE BWT"] = 8.0
    rows["replay"]["RMSE %"] = 12.1
    rows["joint:epochs=auto"] = {**_row("joint", 0.7, None), "strategy": "joint:epochs=auto", "RMSE %": 11.5}
    near = continual.targets(rows)["replay RMSE within 0.5 points of the converged joint"]
    assert not near["met"] and near["replay_minus_joint"] == pytest.approx(0.6)
    rows["joint:epochs=auto"]["RMSE %"] = 11.7
    assert continual.targets(rows)["replay RMSE within 0.5 points of the converged joint"]["met"]
    # A variant of replay is judged the same way under its own name; replay's own verdict stands.
    rows["joint:epochs=auto"]["RMSE %"] = 11.0
    rows["replay:weight=tasks:epochs=40"] = {**_row("replay:weight=tasks:epochs=40", 0.7, 0.1),
                                             "RMSE %": 10.9, "RMSE BWT": 0.7}
    targets = continual.targets(rows)
    variant = "replay:weight=tasks:epochs=40 (variant)"
    assert targets[f"{variant} RMSE within 0.5 points of the converged joint"]["met"]
    assert targets[f"{variant} RMSE within 0.5 points of the converged joint"]["replay_minus_joint"] == \
        pytest.approx(-0.1)
    assert not targets[f"{variant} RMSE-BWT <= +0.5 points"]["met"]
    assert not targets["replay RMSE within 0.5 points of the converged joint"]["met"]


def test_the_memory_sweep_summarises_seeds_and_says_whether_a_memory_beats_the_forest(monkeypatch):
    import memory_sweep

    seeds = [{"RMSE %": 11.0 + s, "RMSE BWT": 0.1 * s, "ACC": 0.6, "wall s": 60.0, "CPU s": 90.0}
             for s in range(3)]
    summary = memory_sweep.summarise(seeds)
    assert summary["RMSE %"]["mean"] == pytest.approx(12.0) and summary["RMSE %"]["sd"] == pytest.approx(1.0)
    assert memory_spec_pairs() == [("100", "reservoir:100"), ("all", "all")]
    rows = [{"memory": "reservoir:100", "stored at most": 100, **summary},
            {"memory": "all", "stored at most": 4035, **memory_sweep.summarise(
                [{**s, "RMSE %": s["RMSE %"] - 2.0} for s in seeds])}]
    result = {"date": "2026-12-06", "git_commit": "abc", "machine": "test",
              "settings": {"command": "mistral-cl continual --strategies replay --memory M --seed N",
                           "seeds": [0, 1, 2]},
              "rows": rows, "forest": {"mean": 11.16, "sd": 0.26}}
    text = readme.memory_sweep_section(result)
    assert "| `replay` | `reservoir:100` | 100 | 12.00 ± 1.00 |" in text
    assert "At equal storage" not in text  # no forest with a bounded memory recorded
    with_forests = {**result, "forests": {"reservoir:100": {"mean": 12.5, "sd": 0.3}}}
    text = readme.memory_sweep_section(with_forests)
    assert "| 0.600 | 12.50 ± 0.30 |" in text
    assert "`reservoir:100`: `replay` 12.00, the forest with the same memory 12.50 (LLM lower)." in text
    assert "`replay` ends below it on the mean with memory `all`." in text
    assert ("the best such row, `replay` with `reservoir:100`, ends at 12.00 ± 1.00 points in 90 CPU s a "
            "run: the bar is **missed**.") in text

    # A sweep of another strategy replaces only its own rows, and rows keep strategy then memory order.
    variant = {"strategy": "replay:weight=tasks", "memory": "reservoir:100", "stored at most": 100,
               **memory_sweep.summarise([{**s, "RMSE %": 10.0} for s in seeds])}
    rows = memory_sweep.merged(rows, [variant])
    assert [(memory_sweep.strategy_of(r), r["memory"]) for r in rows] == [
        ("replay", "reservoir:100"), ("replay", "all"), ("replay:weight=tasks", "reservoir:100")]
    again = memory_sweep.merged(rows, [{**rows[1], "RMSE %": {"mean": 9.0, "sd": None}}])
    assert len(again) == 3 and again[1]["RMSE %"]["mean"] == 9.0
    text = readme.memory_sweep_section({**result, "rows": rows})
    assert ("`replay:weight=tasks` with `reservoir:100`, ends at 10.00 points in 90 CPU s a run: the bar is "
            "**met**.") in text
    assert "That row is task-aware" not in text

    # Options swept with a strategy are its own rows, named with them; a task-aware best row is said
    # to be one, beside the best row that is not.
    aware = [{**s, "RMSE %": 9.0 + 0.5 * k, "task-aware": True} for k, s in enumerate(seeds)]
    snapshot = {"strategy": "replay-snapshot", "options": ["--head-members", "3"],
                "memory": "reservoir:100", "stored at most": 100, **memory_sweep.summarise(aware),
                "per_seed": dict(enumerate(aware))}
    rows = memory_sweep.merged(rows, [snapshot])
    assert memory_sweep.strategy_of(rows[-1]) == "replay-snapshot --head-members 3" and len(rows) == 4
    text = readme.memory_sweep_section({**result, "rows": rows})
    assert ("the best such row, `replay-snapshot --head-members 3` with `reservoir:100`, ends at 9.50 ± "
            "0.50 points (95 % interval 8.26 to 10.74) in 90 CPU s a run: the bar is **met**.") in text
    assert "That row is task-aware" in text
    assert ("The best row that predicts without the task, `replay:weight=tasks` with `reservoir:100`, "
            "ends at 10.00 points") in text

    # A row run in another task order is judged against the forest of that order, never the sorted one.
    monkeypatch.setattr(readme, "_order_forests", lambda: {"sorted": {"mean": 11.16, "sd": 0.26},
                                                           "seed": {"mean": 9.0, "sd": 0.2}})
    other = {**snapshot, "options": ["--head-members", "3", "--task-order", "seed"], "order": "seed",
             **memory_sweep.summarise([{**s, "RMSE %": 9.2} for s in aware])}
    text = readme.memory_sweep_section({**result, "rows": memory_sweep.merged(rows, [other])})
    assert ("In the `seed` task order, the best such row, `replay-snapshot --head-members 3 --task-order "
            "seed` with `reservoir:100`, ends at 9.20 points, above the cumulative one-hot forest's 9.00 ± "
            "0.20 in that order.") in text
    assert "ends at 9.50 ± 0.50 points (95 % interval" in text  # the sorted order's verdict is its own


def memory_spec_pairs():
    import memory_sweep

    return [(m, memory_sweep.memory_spec(m)) for m in ("100", "all")]


def test_a_replay_variant_is_judged_beside_replay_under_its_own_name():
    rows = {r["strategy"]: r for r in PER_SEED[0] + [_row("replay:settle=5", 0.18, 0.02)]}
    targets = continual.targets(rows)
    assert not targets["replay ACC within 0.03 of joint"]["met"]  # the target: plain replay
    variant = targets["replay:settle=5 (variant) ACC within 0.03 of joint"]
    assert variant["met"] and variant["joint_minus_replay"] == pytest.approx(0.02)
    assert targets["replay:settle=5 (variant) BWT >= -0.03"]["met"]


def test_the_readme_section_shows_mean_and_sd_and_each_seeds_verdict():
    rows = continual.mean_rows(PER_SEED)
    result = {"date": "2026-11-24", "git_commit": "abc", "machine": "test",
              "settings": {"model": "tiny (random init)", "mode": "head", "seeds": [0, 1],
                           "train": {"epochs": 10, "batch_size": 16, "learning_rate": 3e-3},
                           "continual": {"memory": "all"}, "command": "mistral-cl continual --seed N"},
              "rows": rows, "targets": continual.targets({r["strategy"]: r for r in rows}),
              "targets_per_seed": {str(s): continual.targets({r["strategy"]: r for r in seed_rows})
                                   for s, seed_rows in PER_SEED.items()}}
    text = readme.continual_section(result)
    assert "| replay | 0.075 ± 0.106 | -0.200 ± 0.141 |" in text
    assert "mean ± sample sd over seeds 0, 1" in text
    assert "seed 0: naive BWT <= -0.10 met" in text


def test_a_variant_section_is_named_by_its_results_file_and_says_how_its_head_pools():
    rows = continual.mean_rows(PER_SEED)
    result = {"date": "2026-12-06", "git_commit": "abc", "machine": "test",
              "settings": {"model": "tiny (random init)", "mode": "head", "seeds": [0],
                           "head": {"pool": "molecules", "feature_layer": 0},
                           "train": {"epochs": 10, "batch_size": 16, "learning_rate": 1e-3},
                           "continual": {"memory": "all"}, "command": "mistral-cl continual --seed N"},
              "rows": rows, "targets": continual.targets({r["strategy"]: r for r in rows})}
    text = readme.continual_section(result, name="continual_molecules")
    assert "variant `continual_molecules` (`benchmarks/continual.py --results continual_molecules`)" in text
    assert "(results/continual_molecules_replay_r2_heatmap.png)" in text
    assert "pooling each molecule on its own" in text
    assert "pooling each molecule" not in readme.continual_section(
        {**result, "settings": {**result["settings"], "head": {"feature_layer": 0}}})
    assert "tasks in sorted order, each split 70/30," in text  # files from before these were recorded
    seed = readme.continual_section({**result, "settings": {**result["settings"], "task_order": "seed",
                                                            "split": "global"}})
    assert ("tasks in the seed paper's order (`--task-order seed`), held out by one 70/30 split of all "
            "reactions, then grouped by task (`--split global`)," in seed)


def test_a_run_that_measures_retention_shows_its_lm_loss_column_and_plot():
    rows = [{**row, "LM loss": 1.25 + i} for i, row in enumerate(continual.mean_rows({0: PER_SEED[0]}))]
    result = {"date": "2026-12-06", "git_commit": "abc", "machine": "test",
              "settings": {"model": "weights chem-small (shipped)", "mode": "lora", "seeds": [0],
                           "train": {"epochs": 10, "batch_size": 16, "learning_rate": 1e-3},
                           "continual": {"memory": "all"}, "command": "mistral-cl continual --mode lora"},
              "rows": rows, "targets": {},
              "retention": {"texts": 1000, "source": "heldout.txt", "pretrained_lm_loss": 0.8437}}
    text = readme.continual_section(result, name="continual_chem_small_lora")
    assert "| LM loss |" in text and "| 1.250 |" in text
    assert ("on 1000 held-out texts (`heldout.txt`) after the last round; the pretrained model scores "
            "0.844") in text
    assert "(results/continual_chem_small_lora_retention.png)" in text
    del result["retention"]
    assert "LM loss" not in readme.continual_section(result)


def test_the_benchmark_reads_the_task_order_from_the_command_options():
    assert continual.task_order_of(["--recipe", "seed", "--task-order", "seed"]) == "seed"
    assert continual.task_order_of(["--task-order=random:1"]) == "random:1"
    assert continual.task_order_of(["--recipe", "seed"]) == "sorted"


def test_resuming_with_more_strategies_adds_them_to_the_run_and_keeps_its_settings(tmp_path):
    from continual_fixtures import coupling_tasks_csv, micro_config

    from mistral_cl.continual import runner
    from mistral_cl.runs import load_run_config

    data = coupling_tasks_csv(tmp_path / "tasks.csv", {"Br": 0.8, "I": 0.2})
    config = runner.with_continual(micro_config(data), "naive,replay", memory="quota:4", test_fraction=0.25)
    run_dir = runner.create_run(tmp_path / "run", config)
    continual.add_strategies(run_dir, "joint,replay,replay:settle=1")
    after = load_run_config(run_dir)
    settings = runner.continual_settings(after)
    assert settings.strategies == ("joint", "replay", "replay:settle=1", "naive")
    assert dataclasses.replace(settings, strategies=("naive",)) == dataclasses.replace(
        runner.continual_settings(config), strategies=("naive",))
    assert after.test_fraction == 0.25
    assert after.train == config.train and after.model == config.model
    stamp = (run_dir / "run.json").stat().st_mtime_ns
    continual.add_strategies(run_dir, "naive")  # nothing new: run.json is not rewritten
    assert (run_dir / "run.json").stat().st_mtime_ns == stamp


def test_resuming_refuses_options_that_name_another_task_order_than_the_run_learned_in(tmp_path):
    import json

    from continual_fixtures import coupling_tasks_csv, micro_config

    from mistral_cl.continual import runner
    from mistral_cl.data.tasks import ordered_keys

    def keys_of(run_dir):
        return [task["key"] for task in json.loads((run_dir / "stream.json").read_text())["tasks"]]

    data = coupling_tasks_csv(tmp_path / "tasks.csv", {"Br": 0.8, "I": 0.2, "Cl": 0.5})
    run_dir = runner.create_run(tmp_path / "run", runner.with_continual(micro_config(data), "naive"))
    keys = keys_of(run_dir)
    assert keys == sorted(keys)
    continual.check_order(run_dir, "sorted")
    continual.check_order(run_dir, ",".join(keys))
    with pytest.raises(SystemExit, match="another order than --task-order"):
        continual.check_order(run_dir, ",".join(reversed(keys)))
    assert ordered_keys(keys, "random:2") == [keys[2], keys[0], keys[1]]
    with pytest.raises(SystemExit, match="--task-order random:2"):
        continual.check_order(run_dir, "random:2")
    with pytest.raises(SystemExit, match="unknown task key"):
        continual.check_order(run_dir, "Xx-coupling")
    # `random` without K is drawn from the run's own seed (3 here, a permutation that is not sorted)
    config = runner.with_continual(micro_config(data, seed=3), "naive")
    seeded = runner.create_run(tmp_path / "seeded", config, "random")
    assert keys_of(seeded) == ordered_keys(keys, "random", 3) != keys
    continual.check_order(seeded, "random")
    with pytest.raises(SystemExit, match="another order"):
        continual.check_order(seeded, "sorted")
    # a run of some of the tasks, in sorted order, is not the named order `sorted` of all of them
    subset = runner.create_run(tmp_path / "subset", runner.with_continual(micro_config(data), "naive"),
                               keys[:2])
    continual.check_order(subset, ",".join(keys[:2]))
    with pytest.raises(SystemExit, match="another order"):
        continual.check_order(subset, "sorted")


def test_a_second_stream_names_its_tasks_and_sets_its_best_row_beside_its_own_forest():
    rows = continual.mean_rows(PER_SEED)
    result = {"date": "2026-12-06", "git_commit": "abc", "machine": "test",
              "settings": {"data": "buchwald", "model": "tiny (random init)", "mode": "head", "seeds": [0],
                           "train": {"epochs": 10, "batch_size": 16, "learning_rate": 1e-3},
                           "continual": {"memory": "all"}, "command": "mistral-cl continual --data buchwald"},
              "rows": rows, "targets": continual.targets({r["strategy"]: r for r in rows})}
    text = readme.continual_section(result, name="continual_buchwald")
    assert "The 15 Buchwald–Hartwig aryl-halide tasks in sorted order" in text
    # classical.json records Buchwald-Hartwig forests: the best cumulative one is named, and the
    # best row here (RMSE 18.0, the fixture's) is above it.
    assert "The reference: the cumulative" in text and "ends above it at 18.00 points" in text
    assert "The reference" not in readme.continual_section({**result, "settings": {
        **result["settings"], "data": "suzuki"}})


def test_the_orders_summary_pools_every_order_and_seed_and_sets_the_forest_of_each_order_beside():
    import continual_orders

    def result(rmse_by_seed):
        return {"per_seed": {
            str(s): [{"strategy": "naive", "RMSE %": 30.0 + s, "RMSE BWT": 15.0, "ACC": -2.0},
                     {"strategy": "replay", "RMSE %": value, "RMSE BWT": -1.0, "ACC": 0.6}]
            for s, value in enumerate(rmse_by_seed)}}

    results = {"sorted": result([12.0, 13.0]), "seed": result([11.0, 12.0])}
    forest = {"data": "suzuki", "protocol": "cumulative", "features": "onehot",
              "rmse_acc": {"mean": 11.2}, "rmse_bwt": {"mean": -0.4}, "r2_acc": {"mean": 0.67}}
    classical = {"rows": [{**forest, "order": "sorted"}, {**forest, "order": "random:1"},
                          {**forest, "protocol": "naive", "order": "seed"}]}
    summary = continual_orders.summarise(results, classical)
    replay = summary["strategies"]["replay"]
    assert replay["runs"] == 4 and replay["pooled"]["RMSE %"]["mean"] == pytest.approx(12.0)
    assert replay["per_order"]["seed"]["RMSE %"]["mean"] == pytest.approx(11.5)
    low, high = replay["pooled"]["RMSE %"]["low"], replay["pooled"]["RMSE %"]["high"]
    assert low < 12.0 < high and high - 12.0 == pytest.approx(3.182446 * np.sqrt(2 / 3) / 2, rel=1e-5)
    # Only the cumulative forests of the orders that were run.
    assert summary["forests"] == {"onehot": {"sorted": {"RMSE %": {"mean": 11.2}, "RMSE BWT": {"mean": -0.4},
                                                        "ACC": {"mean": 0.67}}}}
    sources = {order: {"file": f"{order}.json", "git_commit": "abc"} for order in results}
    text = readme.continual_orders_section({**summary, "date": "2026-12-06", "git_commit": "abc",
                                            "machine": "test", "sources": sources})
    assert "| **replay** | all (4 runs) | 12.00 ± 0.82 |" in text
    assert "converged" not in text  # no joint:epochs=auto run to judge by

    # The converged joint's runs, in whichever orders have them, are every order's reference; a strategy
    # missing from an order is left out of the pooled rows.
    results["sorted"]["per_seed"]["0"].append({"strategy": "joint:epochs=auto", "RMSE %": 11.4, "ACC": 0.7})
    results["sorted"]["per_seed"]["1"].append({"strategy": "joint:epochs=auto", "RMSE %": 11.6, "ACC": 0.7})
    results["seed"]["per_seed"]["0"].append({"strategy": "replay:weight=tasks:epochs=40", "RMSE %": 11.0,
                                             "RMSE BWT": 0.0, "ACC": 0.7})
    summary = continual_orders.summarise(results, classical)
    assert summary["reference"]["RMSE %"]["mean"] == pytest.approx(11.5) and summary["reference"]["runs"] == 2
    assert summary["reference"]["orders"] == ["sorted"]
    assert set(summary["strategies"]) == {"naive", "replay"}
    assert summary["strategies"]["replay"]["minus_converged_joint"] == pytest.approx(0.5)
    assert summary["strategies"]["replay"]["within_half_a_point"]
    assert "minus_converged_joint" not in summary["strategies"]["naive"]
    text = readme.continual_orders_section({**summary, "date": "2026-12-06", "git_commit": "abc",
                                            "machine": "test", "sources": sources})
    assert ("ends at RMSE 11.50 ± 0.14. The pooled replay rows against it: `replay` +0.50 points "
            "(within") in text
    results["seed"]["per_seed"]["1"].append({"strategy": "joint:epochs=auto", "RMSE %": 11.2, "ACC": 0.7})
    reference = continual_orders.summarise(results, classical)["reference"]
    assert reference["orders"] == ["sorted", "seed"] and reference["runs"] == 3
    assert reference["RMSE %"]["mean"] == pytest.approx(11.4)


def test_the_bar_verdict_names_the_best_continual_row_and_the_best_storing_at_most_1000(tmp_path,
                                                                                        monkeypatch):
    import json

    monkeypatch.setattr(readme, "RESULTS", tmp_path)

    def stat(mean):
        return {"mean": mean, "sd": 0.1, "low": mean - 0.2, "high": mean + 0.2}

    bar = {"data": "suzuki", "features": "onehot", "protocol": "cumulative", "order": "sorted",
           "rmse_acc": stat(11.0), "r2_acc": stat(0.66), "rmse_bwt": stat(-0.4), "pooled_all_r2": stat(0.8),
           "wall_seconds": stat(40.0), "cpu_seconds": stat(10.0), "keys": {"0": list(range(15))},
           "reactions_fitted": stat(32000.0)}
    classical = {"settings": {"seeds": [0, 1, 2]}, "rows": [bar]}
    rows = [{"strategy": "replay:weight=tasks:epochs=40", "RMSE %": 10.5, "RMSE % sd": 0.4, "ACC": 0.7,
             "wall s": 400.0, "CPU s": 380.0, "task-aware": False},
            {"strategy": "adapters", "RMSE %": 9.0, "ACC": 0.8, "wall s": 40.0, "CPU s": 40.0,
             "task-aware": True}]
    (tmp_path / "continual.json").write_text(json.dumps({"rows": rows, "settings": {
        "continual": {"memory": "all"}, "head": {"pool": "molecules", "context": "molecule"}}}))
    sweep = {"rows": [{"strategy": "replay", "memory": "reservoir:1000", "stored at most": 1000,
                       "RMSE %": {"mean": 13.4, "sd": 0.5}},
                      {"strategy": "replay", "memory": "all", "stored at most": 4035,
                       "RMSE %": {"mean": 10.0, "sd": 0.5}}]}
    (tmp_path / "continual_memory_sweep.json").write_text(json.dumps(sweep))
    text = " ".join(readme._classical_verdict(classical))
    assert ("`replay:weight=tasks:epochs=40` (MHAR head encoding each molecule on its own, replay memory "
            "`all`") in text
    assert ("ends at 10.50 ± 0.40 points (per-task R² ACC 0.700) in 400 s (380 CPU s): it **beats** the "
            "forest") in text
    assert ("the best such row (`results/continual_memory_sweep.json`), `replay` with `reservoir:1000`, "
            "ends at 13.40 ± 0.50 points: the bar is **missed**.") in text


def test_the_zero_shot_view_pairs_each_pretrained_variant_with_the_random_model_on_the_same_seeds():
    def rows(naive, replay):
        return [{"strategy": "naive", "zero-shot R²": naive, "zero-shot RMSE": 30.0},
                {"strategy": "replay", "zero-shot R²": replay, "zero-shot RMSE": 20.0 - replay},
                {"strategy": "joint", "zero-shot R²": None, "zero-shot RMSE": None}]

    reference = {"per_seed": {"0": rows(-3.0, -1.0), "1": rows(-3.5, -0.5), "2": rows(-2.0, -0.9)}}
    three = {"per_seed": {"0": rows(-2.0, -0.8), "1": rows(-4.0, -0.6), "2": rows(-2.5, -0.7)},
             "settings": {"mode": "head", "head": {"feature_layer": 0}}}
    one = {"per_seed": None, "rows": rows(-1.0, -2.0),
           "settings": {"mode": "lora", "head": {"feature_layer": None}, "seeds": [1]}}
    variants = {"three": three, "one": one}
    got = {(r["name"], r["strategy"]): r for r in readme.zero_shot_rows(reference, variants)}
    assert set(got) == {("three", "naive"), ("three", "replay"), ("one", "naive"), ("one", "replay")}
    replay = got["three", "replay"]
    assert replay["r2"] == pytest.approx(-0.7) and replay["r2 random"] == pytest.approx(-0.8)
    assert replay["higher"] and replay["per seed"] == 2 and replay["n"] == 3 and replay["layer"] == 0
    assert replay["rmse"] == pytest.approx(20.7) and replay["rmse random"] == pytest.approx(20.8)
    naive = got["three", "naive"]
    assert naive["r2"] == pytest.approx(-2.8333, abs=1e-4) and naive["per seed"] == 1
    assert not naive["higher"]  # a tie is not higher
    # a one-seed variant is paired with the reference's same seed only
    assert got["one", "replay"]["seeds"] == "1" and got["one", "replay"]["r2 random"] == pytest.approx(-0.5)
    assert not got["one", "replay"]["higher"] and got["one", "naive"]["higher"]


def test_the_zero_shot_verdict_is_judged_on_three_seeds_and_says_what_goes_the_other_way():
    def row(name, strategy, n, r2, r2_random, rmse, rmse_random, wins, rmse_wins):
        return {"variant": f"`{name}`", "name": name, "strategy": strategy, "n": n, "r2": r2,
                "r2 random": r2_random, "rmse": rmse, "rmse random": rmse_random, "higher": r2 > r2_random,
                "per seed": wins, "rmse per seed": rmse_wins}

    settled = row("l0", "replay", 3, -0.71, -0.84, 22.97, 23.73, 2, 2)
    thin = row("lora", "replay", 2, -1.28, -0.75, 24.66, 22.77, 0, 0)
    text = readme.zero_shot_verdict([settled, thin])
    assert "**met on the mean** by 1 of 1 rows" in text
    assert "R² -0.710 against -0.840, higher on 2 of 3 seeds" in text
    assert "RMSE is lower on the mean (22.97 against 23.73) and lower on 2 of 3 seeds" in text
    assert text.endswith("Variants with fewer seeds, not judged: 0 of 1 rows higher on the mean.")
    worse = row("l0", "naive", 3, -3.5, -3.38, 30.99, 30.64, 1, 1)
    assert "**missed**" in readme.zero_shot_verdict([worse])
    assert "not judged" in readme.zero_shot_verdict([thin]) and "**" not in readme.zero_shot_verdict([thin])


def test_only_results_on_the_main_tables_stream_and_memory_pair_with_it():
    reference = {"settings": {"data": "suzuki", "task_order": "sorted", "split": "task", "tasks": 15,
                              "continual": {"test_fraction": 0.3, "memory": "all"}}}
    same = {"settings": {**reference["settings"], "model": "weights chem-small (shipped)"}}
    assert readme._same_stream(same, reference)
    for key, value in (("task_order", "random:1"), ("split", "global"), ("data", "buchwald")):
        assert not readme._same_stream({"settings": {**same["settings"], key: value}}, reference)
    bounded = {"settings": {**same["settings"],
                            "continual": {"test_fraction": 0.3, "memory": "reservoir:1000"}}}
    assert not readme._same_stream(bounded, reference)


def test_a_score_missing_in_one_seed_gets_no_mean():
    per_seed = {0: [{**_row("replay", 0.1, 0.0), "zero-shot R²": -0.5}],
                1: [{**_row("replay", 0.2, 0.0), "zero-shot R²": None}]}
    (row,) = continual.mean_rows(per_seed)
    assert row["zero-shot R²"] is None and "zero-shot R² sd" not in row
    assert row["ACC"] == pytest.approx(0.15)
