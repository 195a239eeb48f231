"""Continual runs and their directories: `ContinualRun` is the one handle every command and benchmark
uses to create, train, extend, report on and predict with a run.

    runs/NAME/
      run.json              model, head, adaptation, optimisation, data and continual settings
      stream.json           the tasks in learning order (key, train/test sizes, where they came from)
                            and `arrivals`: the task count after the stream and after each ingest
      before.json           the untrained model's R^2/RMSE/MAE on every task (for FWT)
      ingested/             the reactions of every ingested task, with their train/test split
      base/                 the frozen half of the model (head and lora modes)
      comparison.csv/json   one row per strategy: ACC, BWT, FWT, forgetting, reactions processed,
                            wall and CPU time
      <strategy>/           one directory per strategy:
        checkpoints/        after every round (see `learner.py`)
        r2_matrix.csv ...   rmse_matrix.csv, mae_matrix.csv: row "before", then one row per round
        summary.json        ACC, BWT, FWT, forgetting of every score, reactions processed and, where
                            rounds chose them on validation, their epochs (deterministic: no timings)
        timing.json         wall and CPU seconds of every round
        rounds.json         per round: epochs, steps, reactions processed (forward and backward:
                            current and remembered rows), what it chose, wall and CPU seconds
        r2_heatmap.png, rmse_heatmap.png, r2_per_task.png

A handle reads the run's data and tokenises it once, whether it created the run or opened it. A run
is resumed by training it again: each strategy continues from its latest checkpoint, on whatever mesh
the handle was opened with. Ingesting a task appends it to stream.json (after checking everything
about the new file) and the next training trains the new round of every strategy.

Several processes (`--distributed`) each hold a handle on the same directory: all of them compute,
each feeds its own rows of every batch and writes the checkpoint shards it owns, and process 0 alone
writes run.json, stream.json, tables and plots.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np
import pandas as pd
from jax.sharding import Mesh
from tqdm.auto import tqdm

import sharding
from mistral_cl import checkpoint, report
from mistral_cl.continual.buffer import MemoryPolicy
from mistral_cl.continual.learner import CHECKPOINTS, Progress, evaluate, round_steps, run_strategy
from mistral_cl.continual.metrics import SCORES, ScoreBoard
from mistral_cl.continual.pool import TaskPool
from mistral_cl.continual.retention import retention_for
from mistral_cl.continual.strategies import Setting, Strategy, StrategyState, build_strategy, parse_strategies
from mistral_cl.continual.strategies.naive import Naive
from mistral_cl.data.batching import encode_reactions
from mistral_cl.data.duplicates import DuplicatePolicy, not_in_run
from mistral_cl.data.reactions import ReactionDataset, reactions_from_table
from mistral_cl.data.sources import describe
from mistral_cl.data.tables import SMILES_NAMES, YIELD_NAMES, named_column, read_cells
from mistral_cl.data.tasks import Task, TaskOrder, TaskStream, split_by_task
from mistral_cl.errors import InputError, warn
from mistral_cl.predictor import trainable_filter
from mistral_cl.runlock import describe_holder, holder
from mistral_cl.runs import (
    ContinualConfig,
    RunConfig,
    fresh_run_dir,
    initial_model,
    load_run_config,
    save_frozen,
    save_run_config,
    tokenizer_for,
    write_json,
)
from mistral_cl.train import standardize_head

STREAM_FILE = "stream.json"
BEFORE_FILE = "before.json"
INGESTED = "ingested"


def with_continual(config: RunConfig, strategies: str | Sequence[str], *, memory: str = "all",
                   test_fraction: float | None = None, eval_batch_size: int | None = None,
                   buckets: int | None = None, split: str = "task", carry_optimizer: bool = False,
                   retention: str = "auto") -> RunConfig:
    """`config` as a continual run of `strategies` (comma-separated specs, or a list), each checked
    against the adaptation mode, with the replay memory policy, the other continual settings, and the
    split (`task`: within every task, or `global`, see `data.tasks`)."""
    text = strategies if isinstance(strategies, str) else ",".join(strategies)
    parsed = parse_strategies(text, config.adaptation.mode)
    restarting = [s.spec for s in parsed if s.restarts]
    if carry_optimizer and restarting:
        raise InputError(f"{', '.join(restarting)} start every round again from the untrained model, so an "
                         f"optimizer state carried over from the round before has nothing to go on with",
                         hint="set `continual.carry_optimizer=False`, or run those strategies in a run "
                              "of their own")
    defaults = ContinualConfig()
    continual = ContinualConfig(strategies=tuple(s.spec for s in parsed),
                                memory=str(MemoryPolicy.parse(memory)),
                                eval_batch_size=eval_batch_size or defaults.eval_batch_size,
                                buckets=buckets or defaults.buckets, carry_optimizer=carry_optimizer,
                                retention=retention)
    return dataclasses.replace(config, kind="continual", continual=continual, split=split,
                               test_fraction=config.test_fraction if test_fraction is None else test_fraction)


def strategy_directory(run_dir: Path, strategy: Strategy) -> Path:
    return Path(run_dir) / re.sub(r"[^\w.=+-]+", "_", strategy.spec)


def ingested_task(path: Path, key: str) -> Task:
    """A task written by `ingest` (reactions, yields as fractions, and their split)."""
    frame = pd.read_csv(path, dtype={"rxn": str, "yield": np.float64, "split": str}, keep_default_na=False)
    data = ReactionDataset.build(frame["rxn"], frame["yield"], [key] * len(frame),
                                 np.arange(len(frame)) + 2, str(path))
    return Task(key, 0, data.subset(np.flatnonzero(frame["split"] == "train")),
                data.subset(np.flatnonzero(frame["split"] == "test")))


def stream_record(pool: TaskPool, sources: list[str], arrivals: list[int]) -> dict[str, Any]:
    return {"tasks": [{"key": k, "train": len(tr), "test": len(te), "source": s}
                      for k, tr, te, s in zip(pool.keys, pool.train, pool.test, sources, strict=True)],
            "arrivals": arrivals}


@dataclasses.dataclass(frozen=True, eq=False)
class ContinualRun:
    """A continual run: its directory, settings, stream of tasks and reactions (read and tokenised
    once), and the device mesh its arrays live on (None: one device)."""

    directory: Path
    config: RunConfig
    stream: dict[str, Any]
    mesh: Mesh | None = None
    built_pool: TaskPool | None = None  # set by `create` and `with_task`; else built on first use
    read_data: ReactionDataset | None = None  # the reactions of `config.data`, once read

    # ------------------------------------------------------------------------------ opening

    @classmethod
    def create(cls, out: str | Path, config: RunConfig, order: TaskOrder = "sorted",
               mesh: Mesh | None = None, say: Callable[[str], None] = print) -> ContinualRun:
        """A new run in `out` (which must not hold one) of the tasks of `config.data` in `order`;
        `say` is told what was read (on process 0)."""
        settings = continual_settings(config)
        dataset = config.data.read()
        if sharding.is_reporting_process():
            say(describe(dataset, config.data))
        stream = TaskStream.from_dataset(dataset, order=order, test_fraction=config.test_fraction,
                                         split_seed=config.train.seed, order_seed=config.train.seed,
                                         split=config.split)
        if len(stream) < 2:
            raise InputError(f"a continual run needs at least 2 tasks, the data has {len(stream)}",
                             file=dataset.source, hint="name the columns that define a task "
                                                       "(`data.task_columns`)")
        pool = TaskPool.from_tasks(stream.tasks, tokenizer_for(config), settings.buckets,
                                   config.model.max_seq_len)
        record = stream_record(pool, [config.data.source] * len(pool), [len(pool)])
        directory = fresh_run_dir(out)  # only once the data is known to be good: no empty run is left
        if sharding.is_reporting_process():
            write_json(directory / STREAM_FILE, record)
            save_run_config(directory, config)
        sharding.barrier(f"created {directory}")
        return cls(directory, config, record, mesh, pool, dataset)

    @classmethod
    def open(cls, run_dir: str | Path, mesh: Mesh | None = None) -> ContinualRun:
        """The run in `run_dir`; its reactions are read when first needed."""
        directory = Path(run_dir)
        config = load_run_config(directory)
        continual_settings(config, directory)
        stream = json.loads((directory / STREAM_FILE).read_text())
        return cls(directory, config, stream, mesh)

    @property
    def dataset(self) -> ReactionDataset:
        """The reactions of the run's data settings (the stream before any ingest), read once."""
        if self.read_data is None:
            object.__setattr__(self, "read_data", self.config.data.read())
        assert self.read_data is not None
        return self.read_data

    @property
    def pool(self) -> TaskPool:
        """The run's reactions, tokenised once: rebuilt from its data settings, split seed and
        ingested files on first use."""
        if self.built_pool is None:
            object.__setattr__(self, "built_pool", self._read_pool())
        assert self.built_pool is not None
        return self.built_pool

    def _read_pool(self) -> TaskPool:
        directory, config, stream, settings = self.directory, self.config, self.stream, self.settings
        first = stream["arrivals"][0]
        keys = [task["key"] for task in stream["tasks"]]
        tasks = TaskStream.from_dataset(self.dataset, order=keys[:first], test_fraction=config.test_fraction,
                                        split_seed=config.train.seed, split=config.split)
        tokenizer, longest = tokenizer_for(config), config.model.max_seq_len
        pool = TaskPool.from_tasks(tasks.tasks, tokenizer, settings.buckets, longest)
        for task in stream["tasks"][first:]:
            pool = pool.with_task(ingested_task(directory / task["source"], task["key"]), tokenizer, longest)
        sizes = [(len(a), len(b)) for a, b in zip(pool.train, pool.test, strict=True)]
        if sizes != [(t["train"], t["test"]) for t in stream["tasks"]]:
            raise InputError("the run's data changed since it started (task sizes differ)",
                             file=str(directory), hint=f"restore the data it was started with: "
                                                       f"{config.data.source}")
        return pool

    @property
    def settings(self) -> ContinualConfig:
        return continual_settings(self.config, self.directory)

    @property
    def arrivals(self) -> list[int]:
        return list(self.stream["arrivals"])

    @property
    def strategies(self) -> list[Strategy]:
        return [build_strategy(spec) for spec in self.settings.strategies]

    @functools.cached_property
    def setting(self) -> Setting:
        """The model (from the run's seed) on the run's mesh, its frozen half (saved once), and the
        pool in the form the mode needs (cached backbone features in head mode)."""
        config, pool = self.config, self.pool
        model = initial_model(config, jax.random.key(config.train.seed), self.mesh)
        save_frozen(self.directory, model, config)
        if model.caches_features(config.adaptation.mode):
            pool = pool.with_features(model.backbone, self.directory / "feature_cache",
                                      self.settings.eval_batch_size, model.feature_layer, mesh=self.mesh)
        # The head's standardiser is initialised from the first task's training reactions: the only
        # data a learner has before its first step (the same for every strategy, so all start from one
        # model).
        model = standardize_head(model, pool.source(pool.train[0]), seed=config.train.seed, mesh=self.mesh)
        filter_spec = trainable_filter(model, config.adaptation.mode)
        trainable, frozen = eqx.partition(model, filter_spec)
        return Setting(pool, config.train, config.adaptation.mode, filter_spec, frozen, trainable,
                       MemoryPolicy.parse(self.settings.memory), self.mesh, self.settings.carry_optimizer,
                       retention_for(config))

    # ----------------------------------------------------------------------------- training

    def train(self, *, stop_after: int | None = None, show: bool = True) -> list[dict[str, Any]]:
        """Bring every strategy to the end of the stream (or `stop_after` rounds); returns the
        comparison rows (also written to comparison.csv/json)."""
        setting, arrivals = self.setting, self.arrivals
        before = self.untrained_scores()
        strategies = self.strategies
        remaining = [self._remaining_steps(strategy, stop_after) for strategy in strategies]
        rows = []
        with _compile_counter() as compiles, tqdm(total=sum(remaining), unit="step", dynamic_ncols=True,
                                                  disable=not (show and sharding.is_reporting_process()),
                                                  ) as bar:
            for k, strategy in enumerate(strategies, start=1):
                directory = strategy_directory(self.directory, strategy)
                if sharding.is_reporting_process():
                    directory.mkdir(exist_ok=True)
                started = time.perf_counter()
                after_round = functools.partial(self._round_done, directory, strategy, show=show)
                progress = run_strategy(strategy, setting, directory, arrivals, before,
                                        eval_batch_size=self.settings.eval_batch_size, stop_after=stop_after,
                                        bar=bar, label=f"{k}/{len(strategies)} {strategy.spec}",
                                        on_round=after_round)
                summary = self._write_results(directory, strategy, progress, plots=True)
                rows.append(comparison_row(strategy, summary, sum(progress.seconds),
                                           sum(progress.cpu_seconds)))
                _log(show, f"{strategy.spec}: done in {time.perf_counter() - started:.0f} s this session")
        _log(show, f"compiled {compiles.count} programs in {compiles.seconds:.0f} s")
        if setting.retention is not None:
            self._retention_report(setting)
        if sharding.is_reporting_process():
            report.write_csv(self.directory / "comparison.csv", rows)
            write_json(self.directory / "comparison.json", rows)
        return rows

    def _retention_report(self, setting: Setting) -> None:
        """retention.json and retention.png: each strategy's LM loss after every round, and the
        pretrained model's."""
        pretrained = setting.retention.loss(setting.model(setting.initial), setting.mesh)
        curves = {}
        for strategy in self.strategies:
            rounds = strategy_directory(self.directory, strategy) / "rounds.json"
            if rounds.exists():
                curves[strategy.spec] = [r.get("lm_loss") for r in json.loads(rounds.read_text())]
        if sharding.is_reporting_process():
            write_json(self.directory / "retention.json",
                       {"texts": len(setting.retention.texts), "source": setting.retention.source,
                        "pretrained_lm_loss": pretrained, "rounds": curves})
            report.retention_plot(curves, pretrained, self.directory / "retention.png")

    def _remaining_steps(self, strategy: Strategy, stop_after: int | None) -> int:
        plan = strategy.rounds(self.arrivals)
        done = checkpoint.latest_step(strategy_directory(self.directory, strategy) / CHECKPOINTS) or 0
        last = len(plan) if stop_after is None else min(len(plan), stop_after)
        return sum(round_steps(strategy, self.setting, tasks) for tasks in plan[done:last])

    def untrained_scores(self) -> dict[str, np.ndarray]:
        """The untrained model's scores on every task, computed once per task and kept in before.json."""
        setting = self.setting
        path = self.directory / BEFORE_FILE
        saved = json.loads(path.read_text()) if path.exists() else {"keys": [], **{s: [] for s in SCORES}}
        missing = list(range(len(saved["keys"]), len(setting.pool)))
        if missing:
            scores = evaluate(Naive(), setting, StrategyState(), setting.initial, missing,
                              self.settings.eval_batch_size)
            saved["keys"] += [setting.pool.keys[j] for j in missing]
            for name in SCORES:
                saved[name] += [s[name] for s in scores]
            if sharding.is_reporting_process():
                write_json(path, saved)
        return {name: np.asarray(saved[name], np.float64) for name in SCORES}

    def _round_done(self, directory: Path, strategy: Strategy, progress: Progress, *, show: bool) -> None:
        summary = self._write_results(directory, strategy, progress, plots=False)
        board = progress.board
        learned = board.learned_at.index(board.rounds - 1) if board.rounds - 1 in board.learned_at else 0
        _log(show, f"{strategy.spec} round {board.rounds}: R² on {board.keys[learned]} "
                   f"{board.matrices['r2'][-1, learned]:.3f}, ACC {summary['r2_acc']:.3f}, "
                   f"{progress.seconds[-1]:.0f} s")

    def _write_results(self, directory: Path, strategy: Strategy, progress: Progress, *,
                       plots: bool) -> dict[str, Any]:
        """Matrices (CSV), summary.json, timing.json and, with `plots`, the heatmap and curves; process
        0 writes them, every process gets the summary."""
        board = progress.board
        summary = {"strategy": strategy.spec, "task_aware": strategy.task_aware, **board.summary(),
                   **compute_summary(progress.records)}
        if not sharding.is_reporting_process():
            return summary
        labels = round_labels(board, strategy, self.arrivals)
        write_json(directory / "rounds.json", [
            {"round": label, **record, "wall_s": wall, "cpu_s": cpu} for label, record, wall, cpu in
            zip(labels, progress.records, progress.seconds, progress.cpu_seconds, strict=True)])
        for name in SCORES:
            rows = [{"after": "before", **dict(zip(board.keys, board.before[name].tolist(), strict=True))}]
            rows += [{"after": label, **dict(zip(board.keys, row.tolist(), strict=True))}
                     for label, row in zip(labels, board.matrices[name], strict=True)]
            report.write_csv(directory / f"{name}_matrix.csv", rows)
        write_json(directory / "summary.json", summary)
        write_json(directory / "timing.json", {"seconds": sum(progress.seconds), "rounds": progress.seconds,
                                               "cpu_seconds": sum(progress.cpu_seconds),
                                               "cpu_rounds": progress.cpu_seconds})
        write_json(directory / "scores.json", board.to_json())
        if plots:
            draw(directory, strategy.spec, board, labels)
        return summary

    # ------------------------------------------------------------------------------ growing

    def unfinished(self) -> list[str]:
        """The strategies that have not trained every round of the stream yet."""
        return [strategy.spec for strategy in self.strategies
                if (checkpoint.latest_step(strategy_directory(self.directory, strategy) / CHECKPOINTS) or 0)
                < len(strategy.rounds(self.arrivals))]

    def with_task(self, task: Task) -> ContinualRun:
        """The run with `task` appended to its stream: its reactions kept under ingested/ and
        stream.json extended (by process 0), ready for `train` to learn it. The run must be finished
        (see `unfinished`) and must not have a task of that name."""
        self.check_new_key(task.key)
        unfinished = self.unfinished()
        if unfinished:
            raise InputError(f"strategy {unfinished[0]!r} has not finished its tasks",
                             file=str(self.directory),
                             hint=f"finish it first: mistral-cl continual --resume {self.directory}")
        number = len(self.stream["tasks"]) - self.arrivals[0] + 1
        source = f"{INGESTED}/{number:03d}-{re.sub(r'[^A-Za-z0-9_.+-]+', '_', task.key)}.csv"
        stream = {"tasks": [*self.stream["tasks"], {"key": task.key, "train": len(task.train),
                                                    "test": len(task.test), "source": source}],
                  "arrivals": [*self.arrivals, len(self.stream["tasks"]) + 1]}
        if sharding.is_reporting_process():
            (self.directory / INGESTED).mkdir(exist_ok=True)
            report.write_csv(self.directory / source, [
                {"rxn": s, "yield": float(y), "split": split}
                for split, part in (("train", task.train), ("test", task.test))
                for s, y in zip(part.smiles, part.yields, strict=True)])
            write_json(self.directory / STREAM_FILE, stream)
        sharding.barrier(f"ingested {source}")
        new = ingested_task(self.directory / source, task.key)
        pool = self.pool.with_task(new, tokenizer_for(self.config), self.config.model.max_seq_len)
        return dataclasses.replace(self, stream=stream, built_pool=pool)

    def check_new_key(self, key: str) -> None:
        """A new task needs a new key; repeating an interrupted ingest needs a resume instead."""
        keys = [task["key"] for task in self.stream["tasks"]]
        if key not in keys:
            return
        if keys.index(key) == len(keys) - 1 and len(keys) > self.arrivals[0] and self.unfinished():
            raise InputError(f"task {key!r} is already in the run: an earlier ingest added it and was "
                             f"interrupted before every strategy had learned it", file=str(self.directory),
                             hint=f"finish that ingest with: mistral-cl continual --resume {self.directory} "
                                  f"(nothing needs ingesting again)")
        source = self.stream["tasks"][keys.index(key)]["source"]
        raise InputError(f"the run already has a task named {key!r} (from {source})",
                         file=str(self.directory), hint="to add another batch, give it a new name (`task`)")

    def new_task(self, path: str | Path, key: str, *, smiles_column: str | None = None,
                 yield_column: str | None = None, yield_unit: str | None = None,
                 duplicates: DuplicatePolicy = "error") -> tuple[Task, str]:
        """The experiments of a CSV file as the run's next task `key`, split like every task of the
        run, and a line saying how its yields were read. Yields are read in the run's own unit unless
        `yield_unit` says otherwise; a reaction the run already has is an error (with `duplicates`
        "first", it is left out). Every problem of the file is an `InputError`; nothing is written."""
        path = Path(path)
        self.check_new_key(key)
        unit, reason = (yield_unit, None) if yield_unit else (self.dataset.yield_unit, "the run's unit")
        frame = read_cells(path)
        header = [str(c) for c in frame.columns]
        batch = reactions_from_table(
            frame, file=str(path), smiles_column=named_column(header, smiles_column, SMILES_NAMES) or "rxn",
            yield_column=named_column(header, yield_column, YIELD_NAMES) or "yield", yield_unit=unit,
            unit_reason=reason, duplicates=duplicates)
        batch = dataclasses.replace(batch, tasks=np.full(len(batch), key, dtype=object))
        batch = batch.subset(not_in_run(batch.smiles, batch.rows, self.known_reactions(), policy=duplicates,
                                        file=str(path), column=batch.smiles_column))
        encode_reactions(batch, tokenizer_for(self.config), max_len=self.config.model.max_seq_len)
        task = split_by_task(batch, self.config.test_fraction, self.config.train.seed)[0]
        shown = {"percent": "percent", "fraction": "fractions"}[batch.yield_unit]
        return task, f"yields read as {shown}{f' ({reason})' if reason else ''}"

    def known_reactions(self) -> dict[str, str]:
        """Every reaction of the run (canonical SMILES) and the key of its task."""
        first = self.arrivals[0]
        keys = {task["key"] for task in self.stream["tasks"][:first]}
        data = self.dataset
        known = {s: k for s, k in zip(data.smiles, data.tasks, strict=True) if k in keys}
        for task in self.stream["tasks"][first:]:
            ingested = ingested_task(self.directory / task["source"], task["key"])
            known.update((s, task["key"]) for part in (ingested.train, ingested.test) for s in part.smiles)
        return known

    # -------------------------------------------------------------------------------- results

    def results(self) -> list[dict[str, Any]]:
        """The comparison rows of every strategy that has results, with its plots drawn again. A run
        with no finished round is an error; a run still short of its stream gets a warning."""
        rows, behind = [], []
        for strategy in self.strategies:
            directory = strategy_directory(self.directory, strategy)
            total = len(strategy.rounds(self.arrivals))
            if not (directory / "scores.json").exists():
                behind.append(f"{strategy.spec} (0 of {total} rounds)")
                continue
            board = ScoreBoard.from_json(json.loads((directory / "scores.json").read_text()))
            if board.rounds < total:
                behind.append(f"{strategy.spec} ({board.rounds} of {total} rounds)")
            draw(directory, strategy.spec, board, round_labels(board, strategy, self.arrivals))
            timing = json.loads((directory / "timing.json").read_text())
            summary = json.loads((directory / "summary.json").read_text())
            rows.append(comparison_row(strategy, summary, timing["seconds"], timing.get("cpu_seconds")))
        working = holder(self.directory)
        advice = (f"{describe_holder(working)} is training it; report again once it has ended" if working
                  else f"finish it with: mistral-cl continual --resume {self.directory}")
        if not rows:
            raise InputError("no strategy of this run has finished a round: there is nothing to report yet",
                             file=str(self.directory), hint=advice)
        if behind:
            warn(f"the run is unfinished: {', '.join(behind)}; the table shows the rounds done so far",
                 file=str(self.directory), hint=advice)
        return rows


def continual_settings(config: RunConfig, directory: Path | None = None) -> ContinualConfig:
    if config.continual is None:
        raise InputError("not a continual run", file=None if directory is None else str(directory),
                         hint="pass a directory written by `mistral-cl continual`")
    return config.continual


def round_labels(board: ScoreBoard, strategy: Strategy, arrivals: list[int]) -> list[str]:
    plan = strategy.rounds(arrivals)
    return [board.keys[p[0]] if len(p) == 1 else f"all {len(p)} tasks" for p in plan[: board.rounds]]


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


def compute_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`reactions`: the reactions processed (forward and backward) by every round so far (absent if a
    round ran before they were counted), and `epochs_chosen`, each round's, where rounds chose them
    on validation."""
    out: dict[str, Any] = {}
    if records and all("reactions" in record for record in records):
        out["reactions"] = int(sum(record["reactions"] for record in records))
    if any("validation_rmse" in record for record in records):
        out["epochs_chosen"] = [record.get("epochs") for record in records]
    if records and "lm_loss" in records[-1]:
        out["lm_loss"] = records[-1]["lm_loss"]
    return out


def comparison_row(strategy: Strategy, summary: dict[str, Any], seconds: float,
                   cpu_seconds: float | None = None) -> dict[str, Any]:
    return {"strategy": strategy.spec, "ACC": summary.get("r2_acc", np.nan),
            "BWT": summary.get("r2_bwt", np.nan), "FWT": summary.get("r2_fwt", np.nan),
            "forgetting": summary.get("r2_forgetting", np.nan),
            "RMSE %": summary.get("rmse_acc", np.nan), "reactions": summary.get("reactions", np.nan),
            **({"LM loss": round(summary["lm_loss"], 4)} if "lm_loss" in summary else {}),
            "wall s": round(seconds, 1), "CPU s": np.nan if cpu_seconds is None else round(cpu_seconds, 1),
            "task-aware": "yes" if strategy.task_aware else "no"}


def create_run(out: str | Path, config: RunConfig, order: TaskOrder = "sorted") -> Path:
    """A new run directory with run.json and stream.json (the tasks in `order`)."""
    return ContinualRun.create(out, config, order).directory


def run_all(run_dir: Path, *, stop_after: int | None = None, show: bool = True,
            mesh: Mesh | None = None) -> list[dict[str, Any]]:
    """Open the run in `run_dir` and bring every strategy to the end of its stream."""
    return ContinualRun.open(run_dir, mesh).train(stop_after=stop_after, show=show)


@dataclasses.dataclass
class _Compiles:
    count: int = 0
    seconds: float = 0.0


@contextlib.contextmanager
def _compile_counter() -> Iterator[_Compiles]:
    """Counts the XLA compilations (and their seconds) made inside the block."""
    from jax._src import monitoring  # the public jax.monitoring module has no unregister

    seen = _Compiles()

    def listen(event: str, seconds: float, **_: Any) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            seen.count += 1
            seen.seconds += seconds

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield seen
    finally:
        monitoring.unregister_event_duration_listener(listen)


def _log(show: bool, line: str) -> None:
    if not sharding.is_reporting_process():
        return
    tqdm.write(line) if show else print(line, flush=True)
