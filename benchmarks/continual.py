"""Every continual-learning strategy on the Suzuki-Miyaura stream, with the main job's settings.

    python benchmarks/continual.py [--strategies joint,naive,...] [--seeds 0,1,2] [--out DIR] [--resume]
                                   [--match-joint replay] [--results NAME] [-- OPTIONS]

Runs `mistral-cl continual` (the `tiny` model, random init, the command's default mode (head), epochs,
learning rate and batch size, the 15 reactant-pair tasks in sorted order) for every strategy
plus `joint`, in one run directory (resumable: rerun with `--resume`; strategies in `--strategies`
that the run lacks are added to it and run). Anything after `--` is passed
to `mistral-cl continual` (e.g. `-- --epochs 4`). Prints the table and writes
benchmarks/results/continual.json (date, machine, commit, load average, settings, every row, the
targets and whether they were met) and one R^2 heatmap per strategy under benchmarks/results/.

`--seeds 0,1,2` repeats the whole run with each seed (model initialisation, each task's 70/30
split, shuffling and memory draws; the task order stays sorted) in `DIR/seed-N`, and the table gives
the mean and sample sd over seeds; the targets are judged on the means. One seed's R^2-based scores
move by tenths between seeds, because a few tasks have a narrow spread of yields.

Wall time is what the strategy took in this process (compiles included). The machine is shared, so
the CPU seconds of the process are recorded as well: they inflate less under contention. `reactions`
is the compute that does not depend on the machine: the reactions every strategy's steps processed
(forward and backward), current and remembered rows alike, summed over its rounds.

`--recollect` runs nothing: it rebuilds the rows of an existing results file from its finished run
directories (e.g. after a column was added), keeping the date, commit and load of the run.

`--match-joint SPEC` adds the compute-matched reference: once SPEC (e.g. `replay`) has finished in a
seed's run, its recorded `reactions` (its summary.json) become the budget of a `joint:budget=R` row
trained in the same run, so `joint` processes as many reactions as SPEC did.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mistral_cl import hostmem, report
from mistral_cl.cli import parse_args, run_config, task_order
from mistral_cl.continual import runner
from mistral_cl.continual.runner import ContinualRun
from mistral_cl.continual.strategies import build_strategy
from mistral_cl.data.tasks import ordered_keys
from mistral_cl.errors import InputError
from mistral_cl.models import weights_name
from mistral_cl.runs import load_run_config, save_run_config

RESULTS = Path(__file__).resolve().parent / "results"
STRATEGIES = "joint,naive,replay,replay:settle=5,replay-avg-grad,ewc,lwf,agem,adapters"
# Given with their sd over seeds.
SCORES = ("ACC", "BWT", "FWT", "forgetting", "RMSE %", "RMSE BWT", "RMSE forgetting", "MAE %", "pooled R²",
          "zero-shot R²", "zero-shot RMSE")


class LoadSampler:
    """The 1-minute load average, sampled every `every` seconds while a benchmark runs."""

    def __init__(self, every: float = 15.0) -> None:
        self.samples: list[float] = [os.getloadavg()[0]]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        while not self.stop.wait(every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, float]:
        return {"before": self.samples[0], "after": self.samples[-1],
                "mean": float(np.mean(self.samples)), "max": float(np.max(self.samples))}


def targets(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The issue's targets, each with the figures it was judged on."""
    out: dict[str, dict[str, Any]] = {}
    if "naive" in rows:
        out["naive BWT <= -0.10"] = {"met": rows["naive"]["BWT"] <= -0.10, "naive_BWT": rows["naive"]["BWT"]}
    # The targets are on `replay` itself; its variants (`replay:settle=5`) are judged the same
    # way for comparison, each named as a variant.
    replays = {spec: "replay" if spec == "replay" else f"{spec} (variant)"
               for spec in rows if spec.split(":")[0] == "replay"}
    for spec, name in replays.items() if "joint" in rows else ():
        gap = rows["joint"]["ACC"] - rows[spec]["ACC"]
        out[f"{name} ACC within 0.03 of joint"] = {"met": gap <= 0.03, "joint_minus_replay": gap}
        bwt = rows[spec]["BWT"]
        out[f"{name} BWT >= -0.03"] = {"met": bwt >= -0.03, "replay_BWT": bwt}
    free = [s for s in rows if s.split(":")[0] in ("ewc", "lwf")]
    if free and "naive" in rows:
        best = max(free, key=lambda s: rows[s]["BWT"])
        out["ewc or lwf beats naive on BWT"] = {"met": rows[best]["BWT"] > rows["naive"]["BWT"],
                                                "best": best, "BWT": rows[best]["BWT"]}
    # Issue #19's targets on errors in yield points (where the rows record them).
    if rows.get("naive", {}).get("RMSE BWT") is not None:
        out["naive RMSE-BWT >= +5 points"] = {"met": rows["naive"]["RMSE BWT"] >= 5,
                                              "naive_RMSE_BWT": rows["naive"]["RMSE BWT"]}
        converged = rows.get("joint:epochs=auto", {}).get("RMSE %")
        for spec, name in replays.items():
            if rows[spec].get("RMSE BWT") is not None:
                out[f"{name} RMSE-BWT <= +0.5 points"] = {"met": rows[spec]["RMSE BWT"] <= 0.5,
                                                          "replay_RMSE_BWT": rows[spec]["RMSE BWT"]}
            if converged is not None:
                gap = rows[spec]["RMSE %"] - converged
                out[f"{name} RMSE within 0.5 points of the converged joint"] = {
                    "met": gap <= 0.5, "replay_minus_joint": gap}
        kept = [s for s, r in rows.items() if not r.get("stores reactions") and s != "naive"
                and not r.get("task-aware") and r.get("RMSE BWT") is not None]
        if kept:
            best = min(kept, key=lambda s: rows[s]["RMSE BWT"])
            out["a strategy storing no reactions beats naive on RMSE-BWT"] = {
                "met": rows[best]["RMSE BWT"] < rows["naive"]["RMSE BWT"], "best": best,
                "RMSE_BWT": rows[best]["RMSE BWT"]}
    return {k: {**v, "met": bool(v["met"])} for k, v in out.items()}


def collect(run_dir: Path) -> list[dict[str, Any]]:
    """One row per strategy from its summary and timing files."""
    settings = runner.continual_settings(load_run_config(run_dir))
    rows = []
    for spec in settings.strategies:
        strategy = build_strategy(spec)
        directory = runner.strategy_directory(run_dir, strategy)
        summary = json.loads((directory / "summary.json").read_text())
        timing = json.loads((directory / "timing.json").read_text())
        rounds_file = directory / "rounds.json"
        rounds = json.loads(rounds_file.read_text()) if rounds_file.exists() else []
        lm_loss = rounds[-1].get("lm_loss") if rounds else None
        rows.append({
            "strategy": strategy.spec, "ACC": summary["r2_acc"], "BWT": summary.get("r2_bwt"),
            "FWT": summary.get("r2_fwt"), "forgetting": summary.get("r2_forgetting"),
            "RMSE %": summary["rmse_acc"], "RMSE BWT": summary.get("rmse_bwt"),
            "RMSE forgetting": summary.get("rmse_forgetting"), "MAE %": summary["mae_acc"],
            "pooled R²": summary.get("pooled_all_r2"), "zero-shot R²": summary.get("r2_zero_shot"),
            "zero-shot RMSE": summary.get("rmse_zero_shot"), "reactions": summary.get("reactions"),
            "epochs chosen": (summary.get("epochs_chosen") or [None])[-1],
            "wall s": round(timing["seconds"], 1), "CPU s": round(timing.get("cpu_seconds", float("nan")), 1),
            "task-aware": strategy.task_aware, "stores reactions": strategy.stores_data,
            **({"LM loss": lm_loss} if lm_loss is not None else {}),
        })
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
            for row in rows]


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "jax": jax.__version__, "devices": f"{jax.device_count()} x {jax.devices()[0].platform}"}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _row_key(strategy: str) -> str:
    """What pairs rows across seeds: the strategy, a compute-matched joint whatever its budget."""
    return "joint:budget=" if strategy.startswith("joint:budget=") else strategy


def in_order_of(reference: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` ordered as the strategies of `reference` (a strategy added to one seed's run later
    may sit elsewhere in another's); unchanged where the two hold different strategies."""
    order = {_row_key(r["strategy"]): i for i, r in enumerate(reference)}
    if sorted(order) != sorted(_row_key(r["strategy"]) for r in rows):
        return rows
    return sorted(rows, key=lambda r: order[_row_key(r["strategy"])])


def mean_rows(per_seed: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per strategy: the mean over seeds of every number, and `NAME sd` (sample sd) beside
    each score. With a single seed the rows are that seed's and no sd is given."""
    seeds = list(per_seed)
    if len(seeds) == 1:
        return per_seed[seeds[0]]
    per_seed = {seed: in_order_of(per_seed[seeds[0]], rows) for seed, rows in per_seed.items()}
    out = []
    for i, first in enumerate(per_seed[seeds[0]]):
        row = dict(first)
        names = {per_seed[s][i]["strategy"] for s in seeds}
        if len(names) > 1:  # only a compute-matched joint differs, by its budget: each seed's own count
            if len({_row_key(name) for name in names}) > 1:
                raise SystemExit(f"the seeds' runs hold different strategies at row {i}: {sorted(names)}")
            row["strategy"] = "joint:budget=matched"
        for key, value in first.items():
            if isinstance(value, float | int) and not isinstance(value, bool):
                values = [per_seed[s][i].get(key) for s in seeds]
                if any(v is None for v in values):  # not recorded in every seed: no mean to give
                    row[key] = None
                    continue
                row[key] = float(np.mean(values))
                if key in SCORES:
                    row[f"{key} sd"] = float(np.std(values, ddof=1))
        out.append(row)
    return out


def add_strategies(run_dir: Path, strategies: str) -> None:
    """Records in `run_dir`'s run.json the strategies of `strategies` that it lacks (each strategy
    trains in its own directory from the same settings, so the others are untouched)."""
    config = load_run_config(run_dir)
    settings = runner.continual_settings(config)
    recorded = settings.strategies
    wanted = runner.continual_settings(runner.with_continual(
        config, strategies, memory=settings.memory, eval_batch_size=settings.eval_batch_size,
        buckets=settings.buckets, split=config.split, carry_optimizer=settings.carry_optimizer)).strategies
    if any(spec not in recorded for spec in wanted):
        order = (*wanted, *(spec for spec in recorded if spec not in wanted))
        save_run_config(run_dir, dataclasses.replace(config, continual=dataclasses.replace(
            settings, strategies=order)))


def run_seed(args: argparse.Namespace, run_dir: Path, seed: int | None) -> tuple[list[dict[str, Any]], Any]:
    """Runs (or resumes) every strategy in `run_dir`; the rows and the run's configuration."""
    options = [*args.options, *(["--seed", str(seed)] if seed is not None else [])]
    cli = parse_args(["continual", "--strategies", args.strategies, "--out", str(run_dir), "--no-progress",
                      *options])
    if args.resume and run_dir.exists():
        check_order(run_dir, cli.task_order)
        add_strategies(run_dir, cli.strategies)
        run = ContinualRun.open(run_dir)
    else:
        run = ContinualRun.create(run_dir, run_config(cli), task_order(cli.task_order))
    run.train(show=False)  # what `mistral-cl continual` runs
    if args.match_joint:
        add_strategies(run_dir, f"joint:budget={reactions_of(run_dir, args.match_joint)}")
        ContinualRun.open(run_dir).train(show=False)
    return collect(run_dir), load_run_config(run_dir)


def check_order(run_dir: Path, order: str) -> None:
    """Stops a `--resume` whose options name another task order than the run learned in: the run
    would go on in its own order, and the results would record the options' order. A named order
    (`sorted`, `random:K`, ...) covers every task of the run's data; a list, the tasks it names."""
    stream = json.loads((run_dir / runner.STREAM_FILE).read_text())
    # the stream as created: tasks ingested later come in their own order, after it
    recorded = [task["key"] for task in stream["tasks"][: stream["arrivals"][0]]]
    config = load_run_config(run_dir)
    wanted = task_order(order)
    keys = config.data.read().task_keys() if isinstance(wanted, str) else recorded
    try:
        expected = ordered_keys(keys, wanted, config.train.seed)
    except InputError as err:
        raise SystemExit(f"--task-order {order}: {err}") from None
    if expected != recorded:
        raise SystemExit(f"{run_dir} learned its tasks in another order than --task-order {order}; pass "
                         "the run's own --task-order after -- when resuming it")


def seed_directory(out: Path, seed: int | None) -> Path:
    """The run directory of `seed` under `--out` (`out` itself for a run without `--seeds`)."""
    return out if seed is None else out / f"seed-{seed}"


def record_retention(result: dict[str, Any], run_dir: Path, name: str) -> None:
    """For a run that fine-tunes pretrained weights (`--mode lora/full`): what its retention was
    measured on, and the pretrained model's loss, into `result`; its plot beside the results."""
    retention = run_dir / "retention.json"
    if retention.exists():
        kept = json.loads(retention.read_text())
        result["retention"] = {key: kept[key] for key in ("texts", "source", "pretrained_lm_loss")}
        parts = Path(kept["source"]).parts  # the package's own held-out texts, named without the checkout
        if "mistral_cl" in parts:
            result["retention"]["source"] = "/".join(parts[parts.index("mistral_cl"):])
        shutil.copyfile(run_dir / "retention.png", RESULTS / f"{name}_retention.png")


def recollect(out: Path, seeds: list[int | None], path: Path) -> int:
    """`--recollect`: the rows, per-seed rows and targets of `path` rebuilt from the finished runs."""
    result = json.loads(path.read_text())
    per_seed = {seed: collect(seed_directory(out, seed)) for seed in seeds}
    rows = mean_rows(per_seed)
    if [r["strategy"] for r in rows] != [r["strategy"] for r in result["rows"]]:
        raise SystemExit(f"{out} holds strategies {[r['strategy'] for r in rows]}, {path} records "
                         f"{[r['strategy'] for r in result['rows']]}")
    result.update(rows=rows, targets=targets({r["strategy"]: r for r in rows}))
    result["settings"]["data"] = load_run_config(seed_directory(out, seeds[0])).data.source
    record_retention(result, seed_directory(out, seeds[0]), path.stem)
    if len(per_seed) > 1:
        result.update(per_seed={str(s): r for s, r in per_seed.items()},
                      targets_per_seed={str(s): targets({x["strategy"]: x for x in r})
                                        for s, r in per_seed.items()})
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(report.format_table(rows))
    return 0


def task_order_of(options: list[str]) -> str:
    """The task order that `mistral-cl continual` options ask for, as the command reads them."""
    return parse_args(["continual", *options]).task_order


def reactions_of(run_dir: Path, spec: str) -> int:
    """The reactions processed by the finished strategy `spec` of the run in `run_dir`: the budget of a
    compute-matched `joint`."""
    summary = runner.strategy_directory(run_dir, build_strategy(spec)) / "summary.json"
    if not summary.exists() or "reactions" not in json.loads(summary.read_text()):
        raise SystemExit(f"--match-joint {spec}: {spec} has no recorded reactions in {run_dir}; add it to "
                         f"--strategies (runs from before compute was counted must be run again)")
    return int(json.loads(summary.read_text())["reactions"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", default=STRATEGIES)
    parser.add_argument("--seeds", help="comma-separated seeds: one run each, then mean and sd "
                                        "(default: one run with the command's --seed)")
    parser.add_argument("--out", default="runs/benchmark-continual", help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue the run directory --out")
    parser.add_argument("--match-joint", metavar="SPEC",
                        help="add joint:budget=R, R the reactions processed by SPEC (e.g. replay) in the run")
    parser.add_argument("--results", default="continual", metavar="NAME",
                        help="write benchmarks/results/NAME.json and NAME_*_r2_heatmap.png (default "
                             "continual; another name records a variant beside the main table)")
    parser.add_argument("--recollect", action="store_true",
                        help="run nothing: rebuild the rows and targets of results/NAME.json from the "
                             "finished run directories under --out (after a change of the recorded "
                             "columns), keeping the file's date, commit, machine and load average")
    parser.add_argument("options", nargs="*", help="options for `mistral-cl continual` (after --)")
    args = parser.parse_args(argv)
    hostmem.configure()  # as `mistral-cl` does
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [None]
    if args.recollect:
        return recollect(Path(args.out), seeds, RESULTS / f"{args.results}.json")
    out = Path(args.out)
    started, commit = datetime.now(UTC).isoformat(timespec="seconds"), git_commit()
    per_seed: dict[int, list[dict[str, Any]]] = {}
    first = None
    with LoadSampler() as load:
        for seed in seeds:
            run_dir = seed_directory(out, seed)
            rows, config = run_seed(args, run_dir, seed)
            per_seed[config.train.seed] = rows
            first = first or config
            if seed is not None:
                print(report.format_table(rows))
    run_dir = seed_directory(out, seeds[0])
    rows = mean_rows(per_seed)
    by_name = {row["strategy"]: row for row in rows}
    command = "mistral-cl continual " + " ".join(args.options)
    result = {
        "benchmark": "continual learning of the Suzuki-Miyaura stream: R^2-based ACC/BWT/FWT/forgetting",
        "date": started, "git_commit": commit, "machine": machine(),
        "load_average_1min": load.summary(),
        "settings": {"data": first.data.source,
                     "model": (f"weights {weights_name(first.weights)}" if first.weights
                               else "tiny (random init)"),
                     "mode": first.adaptation.mode,
                     "head": dataclasses.asdict(first.head), "train": dataclasses.asdict(first.train),
                     "continual": {**dataclasses.asdict(first.continual),
                                   "test_fraction": first.test_fraction},
                     "tasks": json.loads((run_dir / runner.STREAM_FILE).read_text())["arrivals"][-1],
                     "task_order": task_order_of(args.options),
                     "split": first.split,
                     "command": command.strip() + ("" if seeds[0] is None else " --seed N"),
                     "seeds": list(per_seed)},
        "rows": rows,
        "per_seed": ({str(seed): seed_rows for seed, seed_rows in per_seed.items()}
                     if len(per_seed) > 1 else None),
        "targets": targets(by_name),
        "targets_per_seed": ({str(seed): targets({r["strategy"]: r for r in seed_rows})
                              for seed, seed_rows in per_seed.items()} if len(per_seed) > 1 else None),
    }
    RESULTS.mkdir(exist_ok=True)
    record_retention(result, run_dir, args.results)
    (RESULTS / f"{args.results}.json").write_text(json.dumps(result, indent=2) + "\n")
    # The heatmaps of the first seed, named by the table's rows (a compute-matched joint is
    # `joint:budget=matched` there, whatever its budget in this seed).
    for row, own in zip(rows, per_seed[first.train.seed], strict=True):
        heatmap = runner.strategy_directory(run_dir, build_strategy(own["strategy"])) / "r2_heatmap.png"
        name = row["strategy"].replace(":", "_")
        shutil.copyfile(heatmap, RESULTS / f"{args.results}_{name}_r2_heatmap.png")
    if len(per_seed) > 1:
        print(f"mean over seeds {list(per_seed)}:")
    print(report.format_table(rows))
    for name, target in result["targets"].items():
        print(f"{'met   ' if target['met'] else 'MISSED'} {name}: "
              + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in target.items() if k != "met"))
    print(f"wrote {RESULTS / f'{args.results}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
