"""One model fitted on one split of all tasks at once (the seed paper's baseline), and predictions of a
trained run, `train` or `continual`, for new reactions (what is read and written: `prediction.py`).

`fit_split` is the whole of training a model on a split: build it (on a mesh if given), cache the
frozen backbone's features in head mode, set the head's standardiser, and run the one training loop.
`mistral-cl train` and `benchmarks/accuracy.py` both call it, so they cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

import sharding
from mistral_cl import checkpoint, report
from mistral_cl.data import unseen
from mistral_cl.data.batching import EncodedReactions, encode_reactions
from mistral_cl.data.reactions import ReactionDataset
from mistral_cl.data.sources import describe
from mistral_cl.data.tables import spreadsheet_rows
from mistral_cl.data.tasks import random_split, split_by_task
from mistral_cl.errors import warn
from mistral_cl.features import cache_features
from mistral_cl.inference import BatchSource, predict, predict_mean
from mistral_cl.prediction import (
    PREDICTION_COLUMN,
    output_path,
    read_queries,
    restore_predictor,
    with_predictions,
)
from mistral_cl.predictor import YieldModel, trainable_filter
from mistral_cl.runs import (
    RunConfig,
    fresh_run_dir,
    initial_model,
    load_known_molecules,
    save_frozen,
    save_known_molecules,
    save_run_config,
    split_model,
    tokenizer_for,
)
from mistral_cl.scores import regression_scores
from mistral_cl.train import EpochHook, FitResult, fit, standardize_head


def training_source(model: YieldModel, config: RunConfig, data: EncodedReactions, cache_dir: Path,
                    mesh: Mesh | None = None) -> BatchSource:
    """What the step eats: token batches, or cached backbone features where the model reads them
    (`YieldModel.caches_features`)."""
    if not model.caches_features(config.adaptation.mode):
        return data
    return cache_features(model.backbone, data, Path(cache_dir) / "feature_cache",
                          batch_size=config.train.batch_size, depth=model.feature_layer, mesh=mesh)


def fit_split(config: RunConfig, train: EncodedReactions, cache_dir: Path, *, mesh: Mesh | None = None,
              progress: bool = True, description: str = "train", on_epoch_end: EpochHook | None = None,
              ) -> FitResult:
    """A model of `config` (seeded by `config.train.seed`) trained on `train`: built on `mesh`, its
    head's standardiser set from the training reactions (the run's batch size and seed), then fitted.
    In head mode the backbone's features are cached under `cache_dir`."""
    model = initial_model(config, jax.random.key(config.train.seed), mesh)
    source = training_source(model, config, train, cache_dir, mesh)
    model = standardize_head(model, source, batch_size=config.train.batch_size, seed=config.train.seed,
                             mesh=mesh)
    return fit(model, trainable_filter(model, config.adaptation.mode), source, config.train,
               progress=progress, description=description, on_epoch_end=on_epoch_end, mesh=mesh)


def split_reactions(config: RunConfig, dataset: ReactionDataset) -> tuple[ReactionDataset, ReactionDataset]:
    """(train, test) of a `train` run: one random split of all reactions, or a split within every
    task (`config.split`), seeded by `config.train.seed`."""
    if config.split == "random":
        return random_split(dataset, config.test_fraction, seed=config.train.seed)
    tasks = split_by_task(dataset, config.test_fraction, seed=config.train.seed)
    return ReactionDataset.concat([t.train for t in tasks]), ReactionDataset.concat([t.test for t in tasks])


@dataclasses.dataclass(frozen=True)
class ReadSplit:
    """A split as the model reads it: `train`, the training reactions followed by their copies with
    one molecule read as the placeholder; `test`, the test reactions with molecules outside `known`
    (the training molecules) read as it. Without `head.molecule_dropout`, the split as it is and
    `known=None`."""

    train: ReactionDataset
    test: ReactionDataset
    known: frozenset[str] | None


def read_split(config: RunConfig, train: ReactionDataset, test: ReactionDataset) -> ReadSplit:
    """How a model of `config` reads a (train, test) split (see `data.unseen`). The original
    training reactions keep their places at the front of `ReadSplit.train`."""
    rate = config.head.molecule_dropout
    if not rate:
        return ReadSplit(train, test, None)
    known = unseen.molecules_of(train)
    return ReadSplit(unseen.with_molecule_dropout(train, rate, config.train.seed), unseen.masked(test, known),
                     known)


def encode_split(config: RunConfig, dataset: ReactionDataset, train: ReactionDataset, test: ReactionDataset,
                 encoded: EncodedReactions | None = None
                 ) -> tuple[EncodedReactions, EncodedReactions, ReadSplit]:
    """(training, test) reactions of `dataset` tokenized as a model of `config` reads them, with
    batch widths chosen once from both, and the split as read. `encoded`: `dataset` already tokenized
    (as a benchmark keeps it for many splits), whose rows serve a split that is read as it is."""
    read = read_split(config, train, test)
    if read.known is None:
        if encoded is None:
            encoded = encode_reactions(dataset, tokenizer_for(config), max_len=config.model.max_seq_len)
        index = {s: i for i, s in enumerate(dataset.smiles)}
        train_data, test_data = (encoded.subset([index[s] for s in part.smiles]) for part in (train, test))
        return train_data, test_data, read
    encoded = encode_reactions(ReactionDataset.concat([read.train, read.test]), tokenizer_for(config),
                               max_len=config.model.max_seq_len)
    n = len(read.train)
    return encoded.subset(np.arange(n)), encoded.subset(n + np.arange(len(read.test))), read


@dataclasses.dataclass
class TrainedRun:
    """What `train_run` leaves besides its directory: the scores of both parts and the fit."""

    directory: Path
    train_scores: dict[str, float]
    test_scores: dict[str, float]
    result: FitResult


def train_run(config: RunConfig, out: str | Path, *, mesh: Mesh | None = None, progress: bool = True,
              say: Callable[[str], None] = print) -> TrainedRun:
    """`mistral-cl train`: fit one model on the training part of `config.data`, score both parts,
    and write the run directory `out` (run.json, checkpoint, metrics, predictions and plots); `say`
    is told what was read (on process 0)."""
    dataset = config.data.read()
    if sharding.is_reporting_process():
        say(describe(dataset, config.data))
    train_set, test_set = split_reactions(config, dataset)
    train_data, test_data, read = encode_split(config, dataset, train_set, test_set)
    run_dir = fresh_run_dir(out)  # only once the data is known to be good: no empty run is left
    if sharding.is_reporting_process():
        if read.known is not None:  # before run.json: a run.json never lacks the list it needs
            save_known_molecules(run_dir, read.known)
        save_run_config(run_dir, config)

    start = time.perf_counter()
    result = fit_split(config, train_data, run_dir, mesh=mesh, progress=progress,
                       description=f"train ({config.adaptation.mode})")
    save_frozen(run_dir, result.model, config)
    trainable, _ = split_model(result.model, config)
    checkpoint.save(run_dir / "checkpoints", 0, {"trainable": trainable}, metadata={"kind": "train"})

    batch = 2 * config.train.batch_size
    predicted = predict(result.model, test_data, batch_size=batch, mesh=mesh)
    scores = regression_scores(test_data.yields, predicted)
    originals = train_data.subset(np.arange(len(train_set)))  # not the placeholder copies
    train_scores = regression_scores(originals.yields, predict(result.model, originals, batch_size=batch,
                                                               mesh=mesh))
    if sharding.is_reporting_process():
        metrics = {**{f"test_{k}": v for k, v in scores.items()},
                   **{f"train_{k}": v for k, v in train_scores.items()},
                   "n_train": len(train_set), "n_test": len(test_data),
                   "n_train_placeholder_copies": len(train_data) - len(train_set),
                   "n_test_with_unseen_molecules": (0 if read.known is None
                                                    else unseen.unseen_count(test_set, read.known)),
                   "seconds": time.perf_counter() - start, "mode": config.adaptation.mode,
                   "history": result.history}
        report.write_metrics(run_dir, metrics)
        report.write_csv(run_dir / "history.csv", result.history)
        report.write_csv(run_dir / "predictions.csv", [
            {"row": int(r), "reaction": s, "task": t, "yield_percent": round(100 * float(y), 4),
             PREDICTION_COLUMN: round(100 * float(p), 2)}
            for r, s, t, y, p in zip(test_set.rows, test_set.smiles, test_set.tasks, test_data.yields,
                                     predicted, strict=True)])
        report.parity_plot(test_data.yields, predicted, run_dir / "parity.png",
                           f"held-out test ({len(test_data)} reactions)", scores)
        report.loss_curve(result.history, run_dir / "loss.png", "training loss")
    return TrainedRun(run_dir, train_scores, scores, result)


def predict_file(run_dir: str | Path, file: str | Path, *, output: str | Path | None = None,
                 smiles_column: str | None = None, strategy: str | None = None, task: str | None = None,
                 mesh: Mesh | None = None) -> tuple[Path, int]:
    """`mistral-cl predict`: FILE's rows, every column kept, with a run's predicted yield (percent) as
    the last column, written to `output` (checked before any work, see `prediction.output_path`).
    Returns where the predictions went and how many there are."""
    path = output_path(file, output, run_dir)
    frame, smiles, column = read_queries(file, smiles_column)
    config, models = restore_predictor(run_dir, strategy, task, mesh=mesh)
    dataset = ReactionDataset.build(smiles, np.zeros(len(smiles)), ["all"] * len(smiles),
                                    rows=spreadsheet_rows(frame), source=str(file), smiles_column=column)
    if config.head.molecule_dropout:
        known = load_known_molecules(Path(run_dir))
        new = unseen.unseen_count(dataset, known)
        if new and sharding.is_reporting_process():
            warn(f"{new} of {len(dataset)} reactions hold molecules the run never trained on; each is "
                 f"read as the placeholder {unseen.PLACEHOLDER!r}, the average over the molecules it stood "
                 f"for in training", file=str(file))
        dataset = unseen.masked(dataset, known)
    encoded = encode_reactions(dataset, tokenizer_for(config), max_len=config.model.max_seq_len)
    batch = 64 if mesh is None else 64 * mesh.shape["data"] * mesh.shape["fsdp"]
    predicted = predict_mean(models, encoded, batch_size=batch, mesh=mesh)
    if sharding.is_reporting_process():
        report.write_csv(path, with_predictions(frame, predicted).to_dict("records"))
    return path, len(predicted)


def summary_rows(run: TrainedRun) -> list[dict[str, Any]]:
    return [{"split": "train", **run.train_scores}, {"split": "test", **run.test_scores}]
