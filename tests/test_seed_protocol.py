"""The seed repository's protocol through the `continual` command: `--split global` and `--task-order seed`
reach the run directory, and a run is rebuilt with the split it was started with."""

import json

from continual_fixtures import coupling_tasks_csv, micro_config, suzuki_tasks_csv

from mistral_cl.cli import build_parser, run_config, task_order
from mistral_cl.continual import runner
from mistral_cl.runs import load_run_config


def test_the_command_line_reads_the_seed_order_random_k_and_the_global_split():
    args = build_parser().parse_args(["continual", "--split", "global", "--task-order", "seed"])
    assert args.split == "global" and task_order(args.task_order) == "seed"
    assert task_order("random:7") == "random:7"
    assert task_order("b, a") == ["b", "a"]
    assert run_config(args).split == "global"


def test_a_global_split_run_records_its_split_and_rebuilds_the_same_tasks(tmp_path):
    data = coupling_tasks_csv(tmp_path / "tasks.csv", {"Br": 0.7, "I": 0.3})
    config = runner.with_continual(micro_config(data), "naive", buckets=1, split="global")
    run_dir = runner.create_run(tmp_path / "run", config)
    assert load_run_config(run_dir).split == "global"
    stream = json.loads((run_dir / runner.STREAM_FILE).read_text())
    assert sum(t["test"] for t in stream["tasks"]) == 39  # ceil(0.3 * 128), shared unevenly
    pool = runner.ContinualRun.open(run_dir).pool  # raises if sizes differ
    assert [len(t) for t in pool.test] == [t["test"] for t in stream["tasks"]]


def test_the_seed_order_reaches_the_stream_of_a_run(tmp_path):
    keys = ["Cl-Q+BOH2-Ind", "BPin-Q+Br-Ind", "OTf-Q+BF3K-Ind"]
    data = suzuki_tasks_csv(tmp_path / "suzuki.csv", keys, per_task=10)
    args = build_parser().parse_args(["continual", "--data", str(data), "--task-columns", "task",
                                      "--model", "tiny", "--task-order", "seed", "--split", "global"])
    config = runner.with_continual(run_config(args), "naive", buckets=1, split=args.split)
    run_dir = runner.create_run(tmp_path / "run", config, task_order(args.task_order))
    stream = json.loads((run_dir / runner.STREAM_FILE).read_text())
    assert [t["key"] for t in stream["tasks"]] == ["BPin-Q+Br-Ind", "Cl-Q+BOH2-Ind", "OTf-Q+BF3K-Ind"]
