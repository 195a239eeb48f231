"""`mistral-cl continual`, `ingest` and `report`: continual runs and their directories.

    runs/NAME/
      run.json              model, head, adaptation, optimisation, data and continual settings
      stream.json           the tasks in learning order (key, train/test sizes, where they came from)
                            and `arrivals`: the task count after the stream and after each ingest
      before.json           the untrained model's R^2/RMSE/MAE on every task (for FWT)
      ingested/             the reactions of every ingested task, with their train/test split
      base/                 the frozen half of the model (head and lora modes)
      comparison.csv/json   one row per strategy: ACC, BWT, FWT, forgetting, wall time
      <strategy>/           one directory per strategy:
        checkpoints/        after every round (see `learner.py`)
        r2_matrix.csv ...   rmse_matrix.csv, mae_matrix.csv: row "before", then one row per round
        summary.json        ACC, BWT, FWT, forgetting of every score (deterministic: no timings)
        timing.json         wall seconds of every round
        r2_heatmap.png, rmse_heatmap.png, r2_per_task.png

A run is resumed by running the same loop again: each strategy continues from its latest checkpoint.
Ingesting a task appends it to stream.json (after checking everything about the new file) and runs
the loop again, which trains the new round of every strategy.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import re
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np
import pandas as pd

from mistral_cl import checkpoint, report
from mistral_cl.continual.buffer import MemoryPolicy
from mistral_cl.continual.learner import CHECKPOINTS, Progress, evaluate, run_strategy
from mistral_cl.continual.metrics import SCORES, ScoreBoard
from mistral_cl.continual.pool import TaskPool
from mistral_cl.continual.strategies import Setting, Strategy, StrategyState, build_strategy, parse_strategies
from mistral_cl.continual.strategies.naive import Naive
from mistral_cl.data.reactions import ReactionDataset, read_csv
from mistral_cl.data.tasks import Task, TaskStream, split_by_task
from mistral_cl.errors import InputError
from mistral_cl.predictor import trainable_filter
from mistral_cl.runs import (
    RunConfig,
    initial_model,
    load_run_config,
    save_frozen,
    save_run_config,
    write_json,
)
from mistral_cl.supervised import fresh_run_dir, read_data, run_config, tokenizer_for
from mistral_cl.train import standardize_head

STREAM_FILE = "stream.json"
BEFORE_FILE = "before.json"
INGESTED = "ingested"
EVAL_BATCH_SIZE = 128
BUCKETS = 2
SMILES_NAMES = ("rxn", "reaction", "reaction_smiles", "rxn_smiles", "smiles")
YIELD_NAMES = ("yield", "yield_percent", "yield (%)", "yield_%", "measured_yield")


# ------------------------------------------------------------------------------------ settings


def continual_settings(config: RunConfig) -> dict[str, Any]:
    settings = config.extra.get("continual")
    if config.extra.get("kind") != "continual" or not settings:
        raise InputError("not a continual run", hint="pass a directory written by `mistral-cl continual`")
    return settings


def strategy_directory(run_dir: Path, strategy: Strategy) -> Path:
    return Path(run_dir) / re.sub(r"[^\w.=+-]+", "_", strategy.spec)


def task_order(text: str) -> str | list[str]:
    """`sorted`, `random`, `random:K`, `seed` or an explicit comma-separated list of task keys."""
    if text in ("sorted", "random", "seed") or re.fullmatch(r"random:\d+", text):
        return text
    return [key.strip() for key in text.split(",") if key.strip()]


# ------------------------------------------------------------------------------- the task pool


def ingested_task(path: Path, key: str) -> Task:
    """A task written by `ingest` (reactions, yields as fractions, and their split)."""
    frame = pd.read_csv(path, dtype={"rxn": str, "yield": np.float64, "split": str}, keep_default_na=False)
    data = ReactionDataset.build(frame["rxn"], frame["yield"], [key] * len(frame),
                                 np.arange(len(frame)) + 2, str(path))
    return Task(key, 0, data.subset(np.flatnonzero(frame["split"] == "train")),
                data.subset(np.flatnonzero(frame["split"] == "test")))


def build_pool(run_dir: Path, config: RunConfig, stream: dict[str, Any]) -> TaskPool:
    """The run's reactions, rebuilt from its data spec, split seed and ingested files."""
    settings = continual_settings(config)
    first = stream["arrivals"][0]
    keys = [task["key"] for task in stream["tasks"]]
    tasks = TaskStream.from_dataset(read_data(config.data), order=keys[:first],
                                    test_fraction=settings["test_fraction"], split_seed=config.train.seed,
                                    split=settings.get("split", "task"))
    tokenizer = tokenizer_for(config)
    pool = TaskPool.from_tasks(tasks.tasks, tokenizer, settings["buckets"])
    for task in stream["tasks"][first:]:
        pool = pool.with_task(ingested_task(Path(run_dir) / task["source"], task["key"]), tokenizer)
    sizes = [(len(a), len(b)) for a, b in zip(pool.train, pool.test, strict=True)]
    if sizes != [(t["train"], t["test"]) for t in stream["tasks"]]:
        raise InputError("the run's data changed since it started (task sizes differ)", file=str(run_dir),
                         hint=f"restore the data it was started with: {config.data}")
    return pool


def stream_record(pool: TaskPool, sources: list[str], arrivals: list[int]) -> dict[str, Any]:
    return {"tasks": [{"key": k, "train": len(tr), "test": len(te), "source": s}
                      for k, tr, te, s in zip(pool.keys, pool.train, pool.test, sources, strict=True)],
            "arrivals": arrivals}


# ------------------------------------------------------------------------------------ the run


def make_setting(run_dir: Path, config: RunConfig, pool: TaskPool) -> Setting:
    """The model (from the run's seed), its frozen half, and the pool in the form the mode needs."""
    settings = continual_settings(config)
    model = initial_model(config, jax.random.key(config.train.seed))
    save_frozen(run_dir, model, config)
    if config.adaptation.mode == "head":
        pool = pool.with_features(model.backbone, Path(run_dir) / "feature_cache",
                                  settings["eval_batch_size"], model.feature_layer)
    # The head's standardiser is initialised from the first task's training reactions: the only data a
    # learner has before its first step (the same for every strategy, so all start from one model).
    model = standardize_head(model, pool.source(pool.train[0]), seed=config.train.seed)
    filter_spec = trainable_filter(model, config.adaptation.mode)
    trainable, frozen = eqx.partition(model, filter_spec)
    return Setting(pool, config.train, config.adaptation.mode, filter_spec, frozen, trainable,
                   MemoryPolicy.parse(settings["memory"]))


def untrained_scores(run_dir: Path, setting: Setting, batch_size: int) -> dict[str, np.ndarray]:
    """The untrained model's scores on every task, computed once per task and kept in before.json."""
    path = Path(run_dir) / BEFORE_FILE
    saved = json.loads(path.read_text()) if path.exists() else {"keys": [], **{s: [] for s in SCORES}}
    missing = list(range(len(saved["keys"]), len(setting.pool)))
    if missing:
        scores = evaluate(Naive(), setting, StrategyState(), setting.initial, missing, batch_size)
        saved["keys"] += [setting.pool.keys[j] for j in missing]
        for name in SCORES:
            saved[name] += [s[name] for s in scores]
        write_json(path, saved)
    return {name: np.asarray(saved[name], np.float64) for name in SCORES}


def round_labels(board: ScoreBoard, strategy: Strategy, arrivals: list[int]) -> list[str]:
    plan = strategy.rounds(arrivals)
    return [board.keys[p[0]] if len(p) == 1 else f"all {len(p)} tasks" for p in plan[: board.rounds]]


def write_results(directory: Path, strategy: Strategy, progress: Progress, arrivals: list[int], *,
                  plots: bool) -> dict[str, Any]:
    """Matrices (CSV), summary.json, timing.json and, with `plots`, the heatmap and curves."""
    board = progress.board
    labels = round_labels(board, strategy, arrivals)
    for name in SCORES:
        rows = [{"after": "before", **dict(zip(board.keys, board.before[name].tolist(), strict=True))}]
        rows += [{"after": label, **dict(zip(board.keys, row.tolist(), strict=True))}
                 for label, row in zip(labels, board.matrices[name], strict=True)]
        report.write_csv(directory / f"{name}_matrix.csv", rows)
    summary = {"strategy": strategy.spec, "task_aware": strategy.task_aware, **board.summary()}
    write_json(directory / "summary.json", summary)
    write_json(directory / "timing.json", {"seconds": sum(progress.seconds), "rounds": progress.seconds,
                                           "cpu_seconds": sum(progress.cpu_seconds),
                                           "cpu_rounds": progress.cpu_seconds})
    write_json(directory / "scores.json", board.to_json())
    if plots:
        draw(directory, strategy.spec, board, labels)
    return summary


def draw(directory: Path, title: str, board: ScoreBoard, labels: list[str]) -> None:
    """Heatmaps of the R^2 and RMSE matrices (with the `before` row) and the per-task R^2 curves."""
    rows = ["before", *labels]
    for name, label, reverse, limits in (("r2", "R²", False, (-1.0, 1.0)),
                                         ("rmse", "RMSE (yield %)", True, None)):
        matrix = np.concatenate([board.before[name][None, :], board.matrices[name]])
        report.heatmap(matrix, rows, board.keys, directory / f"{name}_heatmap.png",
                       f"{title}: test {label}", label=label, reverse=reverse, limits=limits)
    report.task_curves(board.matrices["r2"], board.before["r2"], board.keys, board.learned_at,
                       directory / "r2_per_task.png", f"{title}: test R² of each task")


def comparison_row(strategy: Strategy, summary: dict[str, Any], seconds: float) -> dict[str, Any]:
    return {"strategy": strategy.spec, "ACC": summary.get("r2_acc", np.nan),
            "BWT": summary.get("r2_bwt", np.nan), "FWT": summary.get("r2_fwt", np.nan),
            "forgetting": summary.get("r2_forgetting", np.nan),
            "RMSE %": summary.get("rmse_acc", np.nan), "wall s": round(seconds, 1),
            "task-aware": "yes" if strategy.task_aware else "no"}


def run_all(run_dir: Path, *, stop_after: int | None = None, show: bool = True) -> list[dict[str, Any]]:
    """Bring every strategy of the run to the end of its stream; returns the comparison rows."""
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    settings = continual_settings(config)
    stream = json.loads((run_dir / STREAM_FILE).read_text())
    setting = make_setting(run_dir, config, build_pool(run_dir, config, stream))
    batch = settings["eval_batch_size"]
    before = untrained_scores(run_dir, setting, batch)
    arrivals = stream["arrivals"]
    rows = []
    for spec in settings["strategies"]:
        strategy = build_strategy(spec)
        directory = strategy_directory(run_dir, strategy)
        directory.mkdir(exist_ok=True)
        started = time.perf_counter()
        after_round = functools.partial(_round_done, directory, strategy, arrivals=arrivals, show=show)
        progress = run_strategy(strategy, setting, directory, arrivals, before, eval_batch_size=batch,
                                stop_after=stop_after, show=show, on_round=after_round)
        summary = write_results(directory, strategy, progress, arrivals, plots=True)
        rows.append(comparison_row(strategy, summary, sum(progress.seconds)))
        _log(show, f"{strategy.spec}: done in {time.perf_counter() - started:.0f} s this session")
    report.write_csv(run_dir / "comparison.csv", rows)
    write_json(run_dir / "comparison.json", rows)
    return rows


def _round_done(directory: Path, strategy: Strategy, progress: Progress, *, arrivals: list[int],
                show: bool) -> None:
    summary = write_results(directory, strategy, progress, arrivals, plots=False)
    board = progress.board
    learned = board.learned_at.index(board.rounds - 1) if board.rounds - 1 in board.learned_at else 0
    _log(show, f"{strategy.spec} round {board.rounds}: R² on {board.keys[learned]} "
               f"{board.matrices['r2'][-1, learned]:.3f}, ACC {summary['r2_acc']:.3f}, "
               f"{progress.seconds[-1]:.0f} s")


def _log(show: bool, line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line) if show else print(line, flush=True)


def print_table(rows: list[dict[str, Any]], run_dir: Path) -> None:
    print(report.format_table(rows))
    print(f"ACC/BWT/FWT/forgetting on test R²; RMSE % = mean test RMSE after the last round. "
          f"Results in {run_dir}/")


# ----------------------------------------------------------------------------------- commands


def with_continual(config: RunConfig, strategies: str, *, memory: str = "all", test_fraction: float = 0.3,
                   eval_batch_size: int = EVAL_BATCH_SIZE, buckets: int = BUCKETS,
                   split: str = "task") -> RunConfig:
    """`config` with the continual settings checked and recorded in its `extra`: strategy specs,
    replay memory policy, held-out share of each task, evaluation batch size, and the number of batch
    widths (each a compiled shape of every step: fewer compile faster, more pad less), and the split
    ('task' or 'global', see `data.tasks`)."""
    specs = [s.spec for s in parse_strategies(strategies, config.adaptation.mode)]
    continual = {"strategies": specs, "memory": str(MemoryPolicy.parse(memory)),
                 "test_fraction": test_fraction, "eval_batch_size": eval_batch_size, "buckets": buckets,
                 "split": split}
    return dataclasses.replace(config, extra={**config.extra, "kind": "continual", "continual": continual})


def create_run(out: str | Path, config: RunConfig, order: str | list[str] = "sorted") -> Path:
    """A new run directory with run.json and stream.json (the tasks in `order`)."""
    settings = continual_settings(config)
    stream = TaskStream.from_dataset(read_data(config.data), order=order,
                                     test_fraction=settings["test_fraction"],
                                     split_seed=config.train.seed, order_seed=config.train.seed,
                                     split=settings.get("split", "task"))
    if len(stream) < 2:
        raise InputError(f"a continual run needs at least 2 tasks, the data has {len(stream)}",
                         hint="name the columns that define a task with --task-columns")
    pool = TaskPool.from_tasks(stream.tasks, tokenizer_for(config), settings["buckets"])
    run_dir = fresh_run_dir(str(out))
    write_json(run_dir / STREAM_FILE, stream_record(pool, [str(config.data["data"])] * len(pool),
                                                    [len(pool)]))
    save_run_config(run_dir, config)
    return run_dir


def continual_command(args: argparse.Namespace) -> int:
    if args.resume:
        run_dir = Path(args.resume)
        continual_settings(load_run_config(run_dir))
    else:
        config = with_continual(run_config(args), args.strategies, memory=args.memory,
                                test_fraction=args.test_fraction, split=args.split)
        run_dir = create_run(args.out, config, task_order(args.task_order))
    rows = run_all(run_dir, show=not args.no_progress)
    print_table(rows, run_dir)
    return 0


def _column(header: list[str], given: str | None, names: tuple[str, ...], fallback: str) -> str:
    if given is not None:
        return given
    found = [c for c in header if c.strip().lower() in names]
    return found[0] if found else fallback


def read_new_task(path: Path, args: argparse.Namespace, key: str, test_fraction: float,
                  seed: int) -> Task:
    """The experiments of an ingest file as one task split 70/30 (by the run's test fraction);
    every problem of the file is an `InputError` (nothing is written before this returns)."""
    try:
        header = list(pd.read_csv(path, nrows=0, dtype=str).columns)
    except (FileNotFoundError, IsADirectoryError):
        raise InputError("file not found", file=str(path)) from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        header = []  # read_csv below reports the problem
    smiles = _column(header, args.smiles_column, SMILES_NAMES, "rxn")
    yields = _column(header, args.yield_column, YIELD_NAMES, "yield")
    dataset = read_csv(path, smiles_column=smiles, yield_column=yields, yield_unit=args.yield_unit)
    dataset = ReactionDataset.build(dataset.smiles, dataset.yields, [key] * len(dataset), dataset.rows,
                                    dataset.source)
    return split_by_task(dataset, test_fraction, seed)[0]


def ingest_command(args: argparse.Namespace) -> int:
    run_dir, path = Path(args.run), Path(args.file)
    config = load_run_config(run_dir)
    settings = continual_settings(config)
    stream = json.loads((run_dir / STREAM_FILE).read_text())
    key = args.task or path.stem
    if key in {t["key"] for t in stream["tasks"]}:
        raise InputError(f"the run already has a task named {key!r}", hint="name the new one with --task")
    task = read_new_task(path, args, key, settings["test_fraction"], config.train.seed)
    _check_finished(run_dir, settings, stream)

    number = len(stream["tasks"]) - stream["arrivals"][0] + 1
    source = f"{INGESTED}/{number:03d}-{re.sub(r'[^A-Za-z0-9_.+-]+', '_', key)}.csv"
    (run_dir / INGESTED).mkdir(exist_ok=True)
    report.write_csv(run_dir / source, [
        {"rxn": s, "yield": float(y), "split": split}
        for split, part in (("train", task.train), ("test", task.test))
        for s, y in zip(part.smiles, part.yields, strict=True)])
    stream["tasks"].append({"key": key, "train": len(task.train), "test": len(task.test), "source": source})
    stream["arrivals"].append(len(stream["tasks"]))
    write_json(run_dir / STREAM_FILE, stream)
    print(f"ingested {len(task.train) + len(task.test)} reactions as task {key!r} "
          f"({len(task.train)} train / {len(task.test)} test)")
    rows = run_all(run_dir, show=not args.no_progress)
    print_table(rows, run_dir)
    return 0


def _check_finished(run_dir: Path, settings: dict[str, Any], stream: dict[str, Any]) -> None:
    for spec in settings["strategies"]:
        strategy = build_strategy(spec)
        done = checkpoint.latest_step(strategy_directory(run_dir, strategy) / CHECKPOINTS) or 0
        if done < len(strategy.rounds(stream["arrivals"])):
            raise InputError(f"strategy {spec!r} has not finished its tasks", file=str(run_dir),
                             hint=f"finish it first: mistral-cl continual --resume {run_dir}")


def report_command(args: argparse.Namespace) -> int:
    run_dir = Path(args.run)
    config = load_run_config(run_dir)
    settings = continual_settings(config)
    arrivals = json.loads((run_dir / STREAM_FILE).read_text())["arrivals"]
    rows = []
    for spec in settings["strategies"]:
        strategy = build_strategy(spec)
        directory = strategy_directory(run_dir, strategy)
        if not (directory / "scores.json").exists():
            continue
        board = ScoreBoard.from_json(json.loads((directory / "scores.json").read_text()))
        draw(directory, strategy.spec, board, round_labels(board, strategy, arrivals))
        timing = json.loads((directory / "timing.json").read_text())
        summary = json.loads((directory / "summary.json").read_text())
        rows.append(comparison_row(strategy, summary, timing["seconds"]))
    print_table(rows, run_dir)
    return 0
