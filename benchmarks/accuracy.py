"""Yield-prediction accuracy on the standard Suzuki–Miyaura protocol.

    python benchmarks/accuracy.py [--seeds 0,1,2] [TRAIN OPTIONS ...]
    python benchmarks/accuracy.py --table [--results FILE]

The protocol: all 5760 reactions of the Suzuki screen, a random 70/30 split per seed (seeds 0..9 in the
literature), one model trained from scratch on each training part and scored on its held-out part.
The model and its training are exactly those of `mistral-cl train` with its default options; any
option of that command (`--epochs 10`, `--lr 2e-3`, ...) may follow to measure a variant, and
`--shape dim=192,n_layers=3` changes the backbone shapes of the preset. Wall time per split counts
everything from building the model to the last held-out prediction, compilation included.

Writes benchmarks/results/accuracy.json (settings, machine, load average, one row per seed, mean and
sd) and prints the markdown table of benchmarks/README.md; `--table` prints that table again from the
JSON without training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jax

from mistral_cl import hostmem
from mistral_cl.cli import build_parser, run_config
from mistral_cl.config import ModelConfig
from mistral_cl.data.batching import EncodedReactions, encode_reactions
from mistral_cl.data.reactions import ReactionDataset
from mistral_cl.inference import predict
from mistral_cl.predictor import YieldModel
from mistral_cl.runs import RunConfig, tokenizer_for
from mistral_cl.scores import regression_scores
from mistral_cl.supervised import encode_split, fit_split, split_reactions

RESULTS = Path(__file__).resolve().parent / "results" / "accuracy.json"
METRICS = ("r2", "rmse", "mae")
# Published figures on the same protocol (random 70/30 splits of the 5760 reactions), for context.
REFERENCES = (
    ("Yield-BERT (Schwaller et al. 2021)", "0.815 ± 0.013"),
    ("one-hot random forest", "≈ 0.83"),
    ("best published", "≈ 0.89"),
)

EpochHook = Callable[[int, YieldModel], dict[str, float] | None]


# ------------------------------------------------------------------------------------ settings


def train_settings(options: Sequence[str] = (), shape: str | None = None) -> RunConfig:
    """The run configuration of `mistral-cl train OPTIONS`, with backbone `shape` overrides
    (`"dim=192,n_layers=3"`) applied to its model preset."""
    config = run_config(build_parser().parse_args(["train", "--data", "suzuki", *options]))
    if shape:
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, **parse_shape(shape)))
    return config


def parse_shape(text: str) -> dict[str, int]:
    """`"dim=192,n_layers=3"` -> {"dim": 192, "n_layers": 3}; names are ModelConfig fields."""
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    shape = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in fields or not value:
            raise ValueError(f"bad shape item {item!r}; expected NAME=INT with NAME in {sorted(fields)}")
        shape[name] = int(value)
    return shape


# ------------------------------------------------------------------------------------ protocol


@dataclasses.dataclass(frozen=True)
class SuzukiScreen:
    """The 5760 reactions, tokenized once (one set of batch widths for every split)."""

    dataset: ReactionDataset
    encoded: EncodedReactions

    @classmethod
    def load(cls, config: RunConfig) -> SuzukiScreen:
        dataset = config.data.read()
        return cls(dataset, encode_reactions(dataset, tokenizer_for(config)))

    def split(self, config: RunConfig) -> tuple[EncodedReactions, EncodedReactions]:
        """(train, test) of the run's split, as `mistral-cl train` makes it."""
        train, test = split_reactions(config, self.dataset)
        return encode_split(config, self.dataset, train, test, encoded=self.encoded)[:2]


def seeded(config: RunConfig, seed: int) -> RunConfig:
    """`config` with split, model and shuffling all seeded by `seed`."""
    return dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))


def run_split(
    screen: SuzukiScreen,
    config: RunConfig,
    seed: int,
    *,
    on_epoch_end: EpochHook | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train on split `seed` (the model and shuffling are seeded by it too) and score the held-out
    part: R^2, RMSE and MAE (yield %), wall and CPU seconds, and the load average when it ended.

    CPU seconds are this process's own (all threads): on a machine shared with other work they say
    more about the cost of a split than the wall time does."""
    config = seeded(config, seed)
    train, test = screen.split(config)
    batch = 2 * config.train.batch_size
    start, cpu_start = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="accuracy-") as scratch:
        # The model, its feature cache (head mode), its standardiser and its training are exactly
        # those of `mistral-cl train` (`supervised.fit_split`).
        result = fit_split(config, train, Path(scratch), progress=progress, description=f"seed {seed}",
                           on_epoch_end=on_epoch_end)
    scores = regression_scores(test.yields, predict(result.model, test, batch_size=batch))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    row = {"seed": seed, **scores, "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1),
           "n_train": len(train), "n_test": len(test), "final_loss": result.history[-1]["loss"],
           "load_average": [round(x, 2) for x in os.getloadavg()]}
    if on_epoch_end is not None:  # tracked: the held-out scores after every epoch
        row["history"] = result.history
    return row


def test_scores_hook(test: EncodedReactions, batch_size: int = 64) -> EpochHook:
    """An `on_epoch_end` that scores the held-out part after each epoch (for tuning, not timing)."""

    def hook(epoch: int, model: YieldModel) -> dict[str, float]:
        scores = regression_scores(test.yields, predict(model, test, batch_size=batch_size))
        return {f"test_{k}": v for k, v in scores.items()}

    return hook


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and sample sd (0 for a single row) of each metric and of the wall time."""
    out = {}
    for key in (*METRICS, "seconds", "cpu_seconds"):
        values = [row[key] for row in rows]
        out[key] = {"mean": statistics.fmean(values),
                    "sd": statistics.stdev(values) if len(values) > 1 else 0.0}
    return out


# ------------------------------------------------------------------------------------- reports


def machine() -> dict[str, Any]:
    import equinox
    import optax

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "devices": f"{jax.device_count()} x {jax.default_backend()}",
            "python": platform.python_version(), "jax": jax.__version__,
            "equinox": equinox.__version__, "optax": optax.__version__}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def markdown_table(results: dict[str, Any]) -> str:
    """The README table: one row per seed, then mean ± sd, then the published context figures."""
    lines = ["| split seed | R² | RMSE (%) | MAE (%) | wall time (min) | CPU time (min) "
             "| load average (1/5/15 min) |",
             "|---:|---:|---:|---:|---:|---:|:---|"]
    for row in results["rows"]:
        load = " / ".join(f"{x:.1f}" for x in row["load_average"])
        lines.append(f"| {row['seed']} | {row['r2']:.3f} | {row['rmse']:.2f} | {row['mae']:.2f} "
                     f"| {row['seconds'] / 60:.1f} | {row['cpu_seconds'] / 60:.1f} | {load} |")
    s = results["summary"]
    lines.append(f"| **mean ± sd** | **{s['r2']['mean']:.3f} ± {s['r2']['sd']:.3f}** "
                 f"| {s['rmse']['mean']:.2f} ± {s['rmse']['sd']:.2f} "
                 f"| {s['mae']['mean']:.2f} ± {s['mae']['sd']:.2f} "
                 f"| {s['seconds']['mean'] / 60:.1f} ± {s['seconds']['sd'] / 60:.1f} "
                 f"| {s['cpu_seconds']['mean'] / 60:.1f} ± {s['cpu_seconds']['sd'] / 60:.1f} | |")
    for name, r2 in REFERENCES:
        lines.append(f"| {name} | {r2} | | | | | |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Other options are passed to `mistral-cl train`.")
    parser.add_argument("--seeds", default="0,1,2", help="split seeds, comma-separated (default 0,1,2)")
    parser.add_argument("--shape", help="backbone shape overrides, e.g. dim=192,n_layers=3")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"JSON file (default {RESULTS})")
    parser.add_argument("--table", action="store_true", help="print the table of --results and stop")
    parser.add_argument("--track", action="store_true",
                        help="score the held-out part after every epoch (slower; for tuning)")
    args, train_options = parser.parse_known_args(argv)
    if args.table:
        print(markdown_table(json.loads(args.results.read_text())))
        return 0
    hostmem.configure()  # as `mistral-cl` does

    config = train_settings(train_options, args.shape)
    screen = SuzukiScreen.load(config)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        hook = test_scores_hook(screen.split(seeded(config, seed))[1]) if args.track else None
        rows.append(run_split(screen, config, seed, on_epoch_end=hook, progress=sys.stderr.isatty()))
        print(json.dumps(rows[-1]), flush=True)
    results = {
        "benchmark": "Suzuki–Miyaura yield prediction, random 70/30 splits of all 5760 reactions",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": machine(),
        "command": ["mistral-cl", "train", *train_options],
        "settings": config.to_dict(),
        "rows": rows,
        "summary": summary(rows),
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
