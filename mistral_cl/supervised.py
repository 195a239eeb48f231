"""One model fitted on one split of all tasks at once (the seed paper's baseline), and predictions of a
trained run, `train` or `continual`, for new reactions.

`fit_split` is the whole of training a model on a split: build it (on a mesh if given), cache the
frozen backbone's features in head mode, set the head's standardiser, and run the one training loop.
`mistral-cl train` and `benchmarks/accuracy.py` both call it, so they cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd
from jax.sharding import Mesh

import sharding
from mistral_cl import checkpoint, report
from mistral_cl.data.batching import EncodedReactions, encode_reactions
from mistral_cl.data.reactions import FIRST_DATA_ROW, ROW_CONVENTION, ReactionDataset
from mistral_cl.data.smiles import SmilesError, canonical_reaction
from mistral_cl.data.tasks import random_split, split_by_task
from mistral_cl.errors import InputError
from mistral_cl.features import cache_features
from mistral_cl.inference import BatchSource, predict
from mistral_cl.predictor import YieldModel, trainable_filter
from mistral_cl.runs import (
    RunConfig,
    fresh_run_dir,
    initial_model,
    load_model,
    load_run_config,
    save_frozen,
    save_run_config,
    split_model,
    tokenizer_for,
    trainable_like,
)
from mistral_cl.scores import regression_scores
from mistral_cl.train import EpochHook, FitResult, fit, standardize_head


def training_source(model: YieldModel, config: RunConfig, data: EncodedReactions, cache_dir: Path,
                    mesh: Mesh | None = None) -> BatchSource:
    """What the step eats: token batches, or cached backbone features when only the head trains."""
    if config.adaptation.mode != "head":
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


@dataclasses.dataclass
class TrainedRun:
    """What `train_run` leaves besides its directory: the scores of both parts and the fit."""

    directory: Path
    train_scores: dict[str, float]
    test_scores: dict[str, float]
    result: FitResult


def train_run(config: RunConfig, out: str | Path, *, mesh: Mesh | None = None,
              progress: bool = True) -> TrainedRun:
    """`mistral-cl train`: fit one model on the training part of `config.data`, score both parts,
    and write the run directory `out` (run.json, checkpoint, metrics, predictions and plots)."""
    dataset = config.data.read()
    tokenizer = tokenizer_for(config)
    train_set, test_set = split_reactions(config, dataset)
    run_dir = fresh_run_dir(out)
    encoded = encode_reactions(dataset, tokenizer)  # buckets from all reactions: one set of shapes
    index = {s: i for i, s in enumerate(dataset.smiles)}
    train_data = encoded.subset([index[s] for s in train_set.smiles])
    test_data = encoded.subset([index[s] for s in test_set.smiles])
    if sharding.is_reporting_process():
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
    train_scores = regression_scores(train_data.yields, predict(result.model, train_data, batch_size=batch,
                                                                mesh=mesh))
    if sharding.is_reporting_process():
        metrics = {**{f"test_{k}": v for k, v in scores.items()},
                   **{f"train_{k}": v for k, v in train_scores.items()},
                   "n_train": len(train_data), "n_test": len(test_data),
                   "seconds": time.perf_counter() - start, "mode": config.adaptation.mode,
                   "history": result.history}
        report.write_metrics(run_dir, metrics)
        report.write_csv(run_dir / "history.csv", result.history)
        report.write_csv(run_dir / "predictions.csv", [
            {"reaction": s, "task": t, "yield": float(y), "predicted": float(p)}
            for s, t, y, p in zip(test_set.smiles, test_set.tasks, test_data.yields, predicted, strict=True)])
        report.parity_plot(test_data.yields, predicted, run_dir / "parity.png",
                           f"held-out test ({len(test_data)} reactions)", scores)
        report.loss_curve(result.history, run_dir / "loss.png", "training loss")
    return TrainedRun(run_dir, train_scores, scores, result)


def trained_model(run_dir: str | Path, *, strategy: str | None = None, task: str | None = None,
                  mesh: Mesh | None = None) -> tuple[RunConfig, YieldModel]:
    """The model of a finished run: a `train` run's, or the model a continual run's `strategy` ended
    with (for a task-aware strategy, that of `task`)."""
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    if config.kind == "continual":
        from mistral_cl.continual.runner import ContinualRun

        return config, ContinualRun.open(run_dir, mesh).model_of(strategy, task)
    if strategy is not None or task is not None:
        raise InputError("a `train` run has one model: no strategy or task to choose", file=str(run_dir))
    like = {"trainable": trainable_like(config)}
    state, _ = checkpoint.restore(run_dir / "checkpoints", like)
    model = load_model(run_dir, config, state["trainable"])
    return config, model if mesh is None else sharding.place(model, mesh)


def predict_reactions(run_dir: str | Path, smiles: list[str], *, source: str = "",
                      strategy: str | None = None, task: str | None = None,
                      mesh: Mesh | None = None) -> np.ndarray:
    """Predicted yields (fractions) of canonical reaction SMILES with a finished run's model."""
    config, model = trained_model(run_dir, strategy=strategy, task=task, mesh=mesh)
    dataset = ReactionDataset.build(smiles, np.zeros(len(smiles)), ["all"] * len(smiles),
                                    rows=range(FIRST_DATA_ROW, FIRST_DATA_ROW + len(smiles)), source=source)
    encoded = encode_reactions(dataset, tokenizer_for(config))
    batch = 64 if mesh is None else 64 * mesh.shape["data"] * mesh.shape["fsdp"]
    return predict(model, encoded, batch_size=batch, mesh=mesh)


def reactions_to_predict(path: str, smiles_column: str | None) -> list[str]:
    """Canonical reaction SMILES of a CSV without yields; all bad rows are reported at once."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise InputError(f"not a readable CSV file ({err})", file=path) from None
    header = list(frame.columns)
    if smiles_column is None:
        names = ("rxn", "reaction", "smiles", "reaction_smiles", "rxn_smiles")
        found = [c for c in header if c.lower() in names]
        if not found:
            raise InputError(f"no reaction SMILES column among {header}", file=path,
                             hint="name it (`smiles_column`)")
        smiles_column = found[0]
    elif smiles_column not in header:
        raise InputError(f"no such column; the file has {header}", file=path, column=smiles_column,
                         hint="name the right column (`smiles_column`)")
    if frame.empty:
        raise InputError("the file has no reactions", file=path)
    smiles, bad = [], []
    for row, text in enumerate(frame[smiles_column], start=FIRST_DATA_ROW):
        try:
            smiles.append(canonical_reaction(text))
        except SmilesError:
            bad.append(row)
    if bad:
        raise InputError(f"unparsable reaction SMILES ({ROW_CONVENTION})", file=path, rows=bad,
                         column=smiles_column, hint="fix or remove these rows")
    return smiles


def summary_rows(run: TrainedRun) -> list[dict[str, Any]]:
    return [{"split": "train", **run.train_scores}, {"split": "test", **run.test_scores}]
