"""Classical reference rows of the continual benchmark: random forests retrained after every task.

    python benchmarks/classical.py [--data suzuki,buchwald] [--seeds 0,1,2]
                                   [--orders sorted,seed,random:1,random:2] [--features onehot,drfp]
                                   [--protocols naive,cumulative,memory:POLICY] [--cache DIR] [--out FILE]

Not strategies of the LLM: the bar a continual learner has to clear. A scikit-learn random forest
(100 trees, its defaults) reads one of two representations of a reaction:
- `onehot`: one column per (component, chemical). For the Suzuki screen the components are the
  quinoline, indazole, ligand (or none), base (or none) and solvent (`suzuki_conditions`); for any
  other data each molecule of the reaction is a component (for Buchwald–Hartwig, whose six molecules
  are one per role, that is the one-hot of aryl halide, amine, catalyst, ligand, base and additive);
- `drfp`: the 2048-bit DRFP fingerprint of the reaction SMILES (`drfp` package, radius 3);
- `molecules` (not run by default): every molecule a component, for any data. On the Suzuki screen it
  is a weaker encoding than `onehot`: "no ligand" and "no base" are not columns of their own, and water
  or potassium belong to several chemicals.
Protocols, over exactly the tasks the LLM benchmark sees (`TaskStream.from_dataset`, the same
test fraction, split seed = run seed, the same orders):
- `naive`: after each task, a forest trained on that task's training reactions only;
- `cumulative`: after each task, a forest trained from scratch on every task seen so far;
- `memory:POLICY` (not run by default; e.g. `memory:reservoir:1000`): after each task, a forest trained
  from scratch on that task's training reactions and a memory of earlier ones kept by the replay
  strategies' own policy (`all`, `reservoir:N`, `quota:N`; `mistral_cl.continual.buffer`), with draws
  seeded as theirs are. It is the forest at the LLM's storage: `memory:reservoir:1000` stores what
  `replay --memory reservoir:1000` does, so the memory sweep can set the two side by side.
After every round every task's test set is scored, so each row has the LLM rows' matrices (R², RMSE,
MAE per round x task), their summaries and pooled scores (`mistral_cl.continual.metrics`). There is
no untrained forest, so FWT is NaN and the zero-shot error stands for forward transfer.

Compute: `reactions fitted` counts each training reaction once per forest that is fitted on it
(the LLM rows count forward + backward passes); wall and CPU seconds cover fitting and scoring; the
one-off featurisation (DRFP: minutes) is recorded apart, per dataset.

Writes benchmarks/results/classical.json: date, machine, commit, load average, settings, one row
per (data, features, protocol, order) with mean, sd and 95 % t-interval over seeds (each row with the
date, commit and load average of its own computation: the file is rewritten after every row, and
rows already in it, or in `--reuse` files, are taken over instead of rerun); and
benchmarks/results/classical_boards.json: every run's score board (matrices and pooled scores of
every round).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mistral_cl.continual.buffer import MemoryPolicy, ReplayMemory
from mistral_cl.continual.metrics import ScoreBoard, pooled_round
from mistral_cl.continual.strategies.base import seed_for
from mistral_cl.data.reactions import ReactionDataset
from mistral_cl.data.smiles import reaction_components
from mistral_cl.data.sources import load_dataset
from mistral_cl.data.suzuki_components import seed_label, suzuki_conditions
from mistral_cl.data.tasks import TaskStream
from mistral_cl.scores import regression_scores

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CACHE = HERE.parent / "runs" / "classical-cache"
PROTOCOLS: tuple[str, ...] = ("naive", "cumulative")  # the default ones; `memory:POLICY` on request
FEATURES: tuple[str, ...] = ("onehot", "drfp")  # the default ones; `molecules` on request
DRFP_BITS = 2048
N_TREES = 100
COUNTS: tuple[str, ...] = ("tasks", "rounds")  # summary entries that are not figures

Components = Callable[[str], dict[str, str] | None]


def molecule_components(reaction: str) -> dict[str, str]:
    """Every molecule of the reactants and agents as a component, valued by its count."""
    counts: dict[str, int] = {}
    reactants, agents, _ = reaction_components(reaction)
    for molecule in (*reactants, *agents):
        counts[molecule] = counts.get(molecule, 0) + 1
    return {molecule: str(count) for molecule, count in counts.items()}


COMPONENTS: dict[str, Components] = {"suzuki": suzuki_conditions, "suzuki-xlsx": suzuki_conditions}


def one_hot(table: Sequence[dict[str, str]]) -> np.ndarray:
    """One column per (component, value) that occurs in `table` (one dict per reaction), 1 where the
    reaction has that value; a component a reaction lacks is all zeros."""
    columns = sorted({item for row in table for item in row.items()})
    index = {item: k for k, item in enumerate(columns)}
    out = np.zeros((len(table), len(columns)), np.float32)
    for r, row in enumerate(table):
        out[r, [index[item] for item in row.items()]] = 1.0
    return out


def one_hot_features(dataset: ReactionDataset, data: str, components: Components | None = None
                     ) -> np.ndarray:
    """The one-hot components of every reaction of `dataset` (named `data`; by default its
    components are those of `COMPONENTS`, else its molecules)."""
    components = components or COMPONENTS.get(data, molecule_components)
    table = [components(smiles) for smiles in dataset.smiles]
    missing = [smiles for smiles, row in zip(dataset.smiles, table, strict=True) if row is None]
    if missing:
        raise ValueError(f"{len(missing)} reaction(s) of {data} are not made of its known chemicals, "
                         f"e.g. {missing[0]}")
    return one_hot(table)


def _drfp_cache(dataset: ReactionDataset, cache: Path | None) -> Path | None:
    digest = hashlib.sha256("\n".join([str(DRFP_BITS), *dataset.smiles]).encode()).hexdigest()[:16]
    return None if cache is None else Path(cache) / f"drfp-{digest}.npy"


def drfp_features(dataset: ReactionDataset, cache: Path | None = None) -> tuple[np.ndarray, float]:
    """DRFP fingerprints of every reaction, and the seconds computing them took (cached in `cache`
    under a hash of the SMILES, with those seconds beside them)."""
    from drfp import DrfpEncoder

    path = _drfp_cache(dataset, cache)
    if path is not None and path.exists():
        return np.load(path), json.loads(path.with_suffix(".json").read_text())["seconds"]
    started = time.perf_counter()
    fingerprints = np.asarray(DrfpEncoder.encode(list(dataset.smiles), n_folded_length=DRFP_BITS),
                              dtype=np.float32)
    seconds = time.perf_counter() - started
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, fingerprints)
        path.with_suffix(".json").write_text(json.dumps({"seconds": seconds}))
    return fingerprints, seconds


@dataclasses.dataclass(frozen=True)
class Featurized:
    """Feature vectors of a dataset's reactions, found by source row (unique within a dataset)."""

    features: np.ndarray
    position: dict[int, int]

    @classmethod
    def of(cls, dataset: ReactionDataset, features: np.ndarray) -> Featurized:
        position = {int(row): k for k, row in enumerate(dataset.rows)}
        if len(position) != len(dataset) or len(features) != len(dataset):
            raise ValueError("need one feature vector per reaction and unique source rows")
        return cls(features, position)

    def __call__(self, part: ReactionDataset) -> np.ndarray:
        return self.features[[self.position[int(row)] for row in part.rows]]


def default_forest(seed: int) -> Any:
    """A fresh scikit-learn random forest with its default settings, on one core."""
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(n_estimators=N_TREES, random_state=seed, n_jobs=1)


@dataclasses.dataclass
class ReferenceRun:
    """One classical run: its score board and what it cost."""

    board: ScoreBoard
    wall_seconds: float
    cpu_seconds: float
    reactions_fitted: int
    reactions_scored: int

    def figures(self) -> dict[str, float]:
        return {**self.board.summary(), "wall_seconds": self.wall_seconds,
                "cpu_seconds": self.cpu_seconds, "reactions_fitted": float(self.reactions_fitted)}


def memory_policy(protocol: str) -> MemoryPolicy | None:
    """The memory of a `memory:POLICY` protocol; None for `naive` and `cumulative`."""
    if protocol in PROTOCOLS:
        return None
    kind, _, policy = protocol.partition(":")
    if kind != "memory" or not policy:
        raise ValueError(f"unknown protocol {protocol!r}; use {', '.join(PROTOCOLS)} or memory:POLICY "
                         "(e.g. memory:reservoir:1000)")
    return MemoryPolicy.parse(policy)


def run_reference(stream: TaskStream, featurize: Callable[[ReactionDataset], np.ndarray], protocol: str,
                  seed: int, make_model: Callable[[int], Any] = default_forest) -> ReferenceRun:
    """After each task of `stream`, fit a fresh model (`naive`: on that task's training reactions;
    `cumulative`: on every task's so far; `memory:POLICY`: on that task's and the memory's) and score
    it on every task's test set."""
    policy = memory_policy(protocol)
    test_x = [featurize(task.test) for task in stream]
    truths = [np.asarray(task.test.yields, np.float64) for task in stream]
    train_x = [featurize(task.train) for task in stream]
    train_y = [np.asarray(task.train.yields, np.float64) for task in stream]
    # Memory positions index the training reactions of all tasks, concatenated in stream order.
    starts = np.cumsum([0, *(len(y) for y in train_y)])
    all_x, all_y = np.concatenate(train_x), np.concatenate(train_y)
    memory = ReplayMemory(policy) if policy is not None else None
    nan = np.full(len(stream), math.nan)
    board = ScoreBoard(list(stream.keys), {"r2": nan.copy(), "rmse": nan.copy(), "mae": nan.copy()})
    clock, cpu_clock = time.perf_counter(), time.process_time()
    fitted = scored = 0
    for r in range(len(stream)):
        if memory is not None:
            x = np.concatenate([train_x[r], all_x[memory.positions]])
            y = np.concatenate([train_y[r], all_y[memory.positions]])
            rng = np.random.default_rng(seed_for(seed, "memory", r))
            memory = memory.add_task(np.arange(starts[r], starts[r + 1]), rng)
        else:
            trained = [r] if protocol == "naive" else range(r + 1)
            x = np.concatenate([train_x[t] for t in trained])
            y = np.concatenate([train_y[t] for t in trained])
        model = make_model(seed).fit(x, y)
        predictions = [model.predict(features) for features in test_x]
        fitted += len(y)
        scored += sum(len(p) for p in predictions)
        scores = [regression_scores(t, p) for t, p in zip(truths, predictions, strict=True)]
        board.add_round([r], scores, pooled_round(truths, predictions, board.seen_after([r])))
    return ReferenceRun(board, time.perf_counter() - clock, time.process_time() - cpu_clock, fitted, scored)


def interval(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample sd and the 95 % t-interval of the mean over seeds (NaN values skipped)."""
    from scipy import stats

    values = np.asarray([v for v in values if v is not None and not math.isnan(v)], np.float64)
    if not len(values):
        return {"mean": math.nan, "sd": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    mean = float(values.mean())
    if len(values) < 2:
        return {"mean": mean, "sd": math.nan, "low": math.nan, "high": math.nan, "n": 1}
    sd = float(values.std(ddof=1))
    half = float(stats.t.ppf(0.975, len(values) - 1)) * sd / math.sqrt(len(values))
    return {"mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "n": len(values)}


def aggregate(runs: Sequence[ReferenceRun]) -> dict[str, dict[str, float]]:
    """Every figure of the runs (summaries, pooled scores, compute) over the seeds."""
    figures = [run.figures() for run in runs]
    names = sorted({name for f in figures for name in f if name not in COUNTS})
    return {name: interval([f.get(name, math.nan) for f in figures]) for name in names}


def _rounded(tree: Any) -> Any:
    if isinstance(tree, float):
        return None if math.isnan(tree) else round(tree, 5)
    if isinstance(tree, dict):
        return {k: _rounded(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_rounded(v) for v in tree]
    return tree


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def orders_for(dataset: ReactionDataset, orders: Sequence[str]) -> list[str]:
    """The orders that apply to `dataset`: the seed order exists for the Suzuki pairs only."""
    suzuki = all(seed_label(key) is not None for key in dataset.task_keys())
    return [order for order in orders if order != "seed" or suzuki]


ROW_KEY: tuple[str, ...] = ("data", "features", "protocol", "order")


@dataclasses.dataclass
class Record:
    """The rows computed or taken over so far, written out after every row (so an interrupted run
    keeps what it finished, and `--reuse` takes it over)."""

    out: Path
    header: dict[str, Any]
    rows: dict[tuple, dict[str, Any]] = dataclasses.field(default_factory=dict)
    boards: dict[tuple, dict[str, Any]] = dataclasses.field(default_factory=dict)
    featurisation: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

    def take_over(self, path: Path) -> None:
        """Every row of an earlier result file (and its boards file), unless already held."""
        if not path.exists():
            return
        earlier = json.loads(path.read_text())
        boards_file = path.with_name(f"{path.stem}_boards.json")
        boards = json.loads(boards_file.read_text())["runs"] if boards_file.exists() else []
        by_key = {tuple(b[k] for k in ROW_KEY): b for b in boards}
        for row in earlier["rows"]:
            key = tuple(row[k] for k in ROW_KEY)
            if key in by_key:
                self.rows.setdefault(key, row)
                self.boards.setdefault(key, by_key[key])
        for data, seconds in earlier.get("featurisation_seconds", {}).items():
            self.featurisation.setdefault(data, {}).update(
                {k: v for k, v in seconds.items() if k not in self.featurisation.get(data, {})})

    def held(self, key: tuple, seeds: Sequence[int]) -> bool:
        row = self.rows.get(key)
        return row is not None and sorted(row["keys"]) == sorted(str(s) for s in seeds)

    def add(self, row: dict[str, Any], boards: dict[str, Any]) -> None:
        key = tuple(row[k] for k in ROW_KEY)
        self.rows[key], self.boards[key] = row, boards
        self.write()

    def write(self) -> None:
        loads = [row["load_average_1min"] for row in self.rows.values() if "load_average_1min" in row]
        load = {"mean": float(np.mean(loads)), "max": float(np.max(loads))} if loads else {}
        # The rows may come from several commands: the settings list what the rows hold.
        held = {name: list(dict.fromkeys(row[key] for row in self.rows.values()))
                for name, key in (("orders", "order"), ("features", "features"), ("protocols", "protocol"))}
        header = {**self.header, "settings": {**self.header["settings"], **held}}
        result = {**header, "load_average": load,
                  "featurisation_seconds": self.featurisation, "rows": list(self.rows.values())}
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(_rounded(result), indent=1) + "\n")
        boards_file = self.out.with_name(f"{self.out.stem}_boards.json")
        boards_file.write_text(json.dumps(_rounded({"runs": list(self.boards.values())}),
                                          separators=(",", ":")) + "\n")


def featurize_all(data: str, dataset: ReactionDataset, name: str, args: argparse.Namespace,
                  record: Record) -> Featurized:
    """One representation of every reaction of `dataset`; the seconds it took go to `record`
    (for fingerprints read from the cache, the seconds of the run that computed them)."""
    started = time.perf_counter()
    if name == "drfp":
        matrix, seconds = drfp_features(dataset, args.cache)
    elif name in ("onehot", "molecules"):
        matrix = one_hot_features(dataset, data, molecule_components if name == "molecules" else None)
        seconds = time.perf_counter() - started
    else:
        raise SystemExit(f"unknown features {name!r}: use onehot, drfp or molecules")
    record.featurisation.setdefault(data, {})[name] = seconds
    print(f"{data}: {name} features {matrix.shape} in {seconds:.1f} s", flush=True)
    return Featurized.of(dataset, matrix)


def run_data(data: str, args: argparse.Namespace, record: Record, commit: str) -> None:
    """Every row of one dataset that `record` does not hold yet, each recorded when done."""
    dataset = load_dataset(data)
    featurizers: dict[str, Featurized] = {}
    for order in orders_for(dataset, args.orders):
        streams = {seed: TaskStream.from_dataset(dataset, order=order, test_fraction=args.test_fraction,
                                                 split_seed=seed, order_seed=seed) for seed in args.seeds}
        for name in args.features:
            for protocol in args.protocols:
                if record.held((data, name, protocol, order), args.seeds):
                    continue
                if name not in featurizers:
                    featurizers[name] = featurize_all(data, dataset, name, args, record)
                runs = {seed: run_reference(streams[seed], featurizers[name], protocol, seed)
                        for seed in args.seeds}
                row = {"data": data, "features": name, "protocol": protocol, "order": order,
                       "keys": {seed: streams[seed].keys for seed in args.seeds},
                       "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "git_commit": commit,
                       "load_average_1min": os.getloadavg()[0], **aggregate(list(runs.values()))}
                record.add(row, {key: row[key] for key in ROW_KEY}
                           | {"boards": {seed: run.board.to_json() for seed, run in runs.items()}})
                print(f"{data} {name} {protocol} {order}: RMSE ACC {row['rmse_acc']['mean']:.2f} "
                      f"± {row['rmse_acc']['sd']:.2f}, RMSE BWT {row['rmse_bwt']['mean']:+.2f}, "
                      f"R² ACC {row['r2_acc']['mean']:.3f} ± {row['r2_acc']['sd']:.3f}, "
                      f"{row['wall_seconds']['mean']:.1f} s", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="suzuki,buchwald")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--orders", default="sorted,seed,random:1,random:2")
    parser.add_argument("--features", default=",".join(FEATURES))
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--cache", type=Path, default=CACHE, help="where DRFP fingerprints are kept")
    parser.add_argument("--out", type=Path, default=RESULTS / "classical.json",
                        help="the rows; the score boards go beside it, in NAME_boards.json")
    parser.add_argument("--reuse", type=Path, nargs="*", default=[],
                        help="earlier result files whose rows (same seeds) are taken over, not rerun; "
                             "the rows already in --out always are")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    for name in ("data", "orders", "features", "protocols"):
        setattr(args, name, [part.strip() for part in getattr(args, name).split(",") if part.strip()])
    for protocol in args.protocols:
        try:
            memory_policy(protocol)
        except ValueError as error:  # InputError is one
            parser.error(str(error))
    commit = _git_commit()
    header = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
        "git_commit": commit,
        "command": " ".join(["python", "benchmarks/classical.py", *(argv or sys.argv[1:])]),
        "settings": {"seeds": args.seeds, "orders": args.orders, "features": args.features,
                     "protocols": args.protocols, "test_fraction": args.test_fraction,
                     "forest": {"n_estimators": N_TREES, "others": "scikit-learn defaults", "n_jobs": 1},
                     "drfp_bits": DRFP_BITS},
    }
    record = Record(args.out, header)
    for path in [args.out, *args.reuse]:
        record.take_over(path)
    for data in args.data:
        run_data(data, args, record, commit)
    record.write()
    print(f"wrote {args.out} and its boards ({len(record.rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
