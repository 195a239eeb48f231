"""Compute accounting: every round records the reactions its steps processed (current and remembered
rows, by the batches' weights), and the results carry their sum beside wall and CPU seconds; a
compute-matched `joint` trains for a given budget of processed reactions."""

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from continual_fixtures import coupling_tasks_csv, micro_config, micro_setting

from mistral_cl.continual import learner, runner
from mistral_cl.continual.strategies import build_strategy
from mistral_cl.errors import InputError
from mistral_cl.runs import load_run_config, save_run_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import continual  # noqa: E402

BEFORE = {k: np.zeros(3) for k in ("r2", "rmse", "mae")}


def _run(strategy, setting, folder):
    folder.mkdir()
    return learner.run_strategy(strategy, setting, folder, [3], BEFORE, eval_batch_size=32)


def test_rounds_count_the_current_and_remembered_reactions_they_processed(tmp_path):
    run_dir, setting = micro_setting(tmp_path, {"Br": 0.8, "I": 0.2, "Cl": 0.5}, mode="head", epochs=2)
    train = [len(positions) for positions in setting.pool.train]
    epochs, batch = setting.train.epochs, setting.train.batch_size
    naive = _run(build_strategy("naive"), setting, run_dir / "naive")
    assert [r["reactions"] for r in naive.records] == [epochs * n for n in train]
    assert [r["steps"] for r in naive.records] == [epochs * math.ceil(n / batch) for n in train]
    # A remembered batch as large as a task's training set (all three are the same size): every
    # remembered batch is full, whatever the memory holds.
    assert len(set(train)) == 1
    remembered = train[0]
    replay = _run(build_strategy(f"replay:memory_batch={remembered}:weight=1"), setting, run_dir / "replay")
    expected = [epochs * train[0]]  # the first round's remembered batch has weight 0: nothing to recall
    expected += [epochs * (n + math.ceil(n / batch) * remembered) for n in train[1:]]
    assert [r["reactions"] for r in replay.records] == expected
    summary = runner.compute_summary(replay.records)
    assert summary == {"reactions": sum(expected)}
    row = runner.comparison_row(build_strategy("replay"), summary, sum(replay.seconds),
                                sum(replay.cpu_seconds))
    assert row["reactions"] == sum(expected) and row["CPU s"] >= 0 and row["wall s"] > 0

    # joint, compute-matched to replay: as many processed reactions, to within one batch.
    every = sum(train)
    joint = _run(build_strategy(f"joint:budget={sum(expected)}"), setting, run_dir / "joint")
    (record,) = joint.records
    assert sum(expected) <= record["reactions"] < sum(expected) + batch
    assert record["epochs"] == math.ceil(sum(expected) / every)
    for bad in ("joint:budget=-1", "joint:budget=100:epochs=3"):
        with pytest.raises(InputError, match="budget"):
            build_strategy(bad)


def test_the_run_writes_reactions_and_seconds_per_round_and_in_the_table(tmp_path):
    run_dir, _ = micro_setting(tmp_path, {"Br": 0.8, "I": 0.2}, strategies="naive", mode="head", epochs=1)
    config = load_run_config(run_dir)  # a carried optimizer survives the strategies added below
    save_run_config(run_dir, dataclasses.replace(config, continual=dataclasses.replace(
        config.continual, carry_optimizer=True)))
    rows = runner.run_all(run_dir, show=False)
    rounds = json.loads((run_dir / "naive" / "rounds.json").read_text())
    summary = json.loads((run_dir / "naive" / "summary.json").read_text())
    assert [r["round"] for r in rounds] == ["Br-coupling", "I-coupling"]
    assert all(r["wall_s"] > 0 and r["cpu_s"] > 0 and r["epochs"] == 1 for r in rounds)
    assert summary["reactions"] == sum(r["reactions"] for r in rounds) == rows[0]["reactions"]
    reported = runner.ContinualRun.open(run_dir).results()
    assert reported[0]["reactions"] == summary["reactions"] and reported[0]["CPU s"] > 0

    # benchmarks/continual.py --match-joint naive: the finished row's count becomes joint's budget.
    budget = continual.reactions_of(run_dir, "naive")
    assert budget == summary["reactions"]
    continual.add_strategies(run_dir, f"joint:budget={budget}")
    assert load_run_config(run_dir).continual.carry_optimizer
    rows = runner.run_all(run_dir, show=False)
    joint = next(row for row in rows if row["strategy"] == f"joint:budget={budget}")
    assert budget <= joint["reactions"] < budget + 16


def test_strategies_added_by_the_benchmark_keep_the_runs_split(tmp_path):
    data = coupling_tasks_csv(tmp_path / "tasks.csv", {"Br": 0.7, "I": 0.3})
    run_dir = runner.create_run(tmp_path / "run", runner.with_continual(micro_config(data), "naive",
                                                                        split="global"))
    continual.add_strategies(run_dir, "joint:budget=100")
    config = load_run_config(run_dir)
    assert config.split == "global" and config.continual.strategies == ("joint:budget=100", "naive")
