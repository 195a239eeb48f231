"""`mistral-cl train` and `mistral-cl predict`: one model fitted on one split of all tasks at once.

This is the seed paper's baseline, and the shared plumbing (reading data and models from command-line
options) that the continual runner reuses.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

import sharding
from mistral_cl import checkpoint, report
from mistral_cl.config import ModelConfig
from mistral_cl.data.batching import EncodedReactions, encode_reactions
from mistral_cl.data.reactions import ReactionDataset
from mistral_cl.data.sources import describe, load_dataset
from mistral_cl.data.tables import spreadsheet_rows
from mistral_cl.data.tasks import random_split, split_by_task
from mistral_cl.errors import InputError
from mistral_cl.features import cache_features
from mistral_cl.head import HeadConfig
from mistral_cl.lora import LoRAConfig
from mistral_cl.prediction import (
    PREDICTION_COLUMN,
    output_path,
    read_queries,
    restore_predictor,
    with_predictions,
)
from mistral_cl.predictor import AdaptationConfig, YieldModel, trainable_filter
from mistral_cl.runs import (
    RunConfig,
    initial_model,
    make_run_dir,
    save_frozen,
    save_run_config,
    split_model,
)
from mistral_cl.scores import regression_scores
from mistral_cl.tokenizer import Tokenizer
from mistral_cl.train import BatchSource, TrainConfig, fit, predict, standardize_head

# ----------------------------------------------------------------------------- options -> objects


def data_spec(args: argparse.Namespace) -> dict[str, Any]:
    """How to read the data, as stored in run.json (only the options the user set)."""
    spec: dict[str, Any] = {"data": args.data}
    for name, default in (("smiles_column", None), ("yield_column", None), ("yield_unit", "auto"),
                          ("duplicates", "error")):
        value = getattr(args, name, None)
        if value is not None and value != default:
            spec[name] = value
    if getattr(args, "task_columns", None):
        spec["task_columns"] = [c.strip() for c in args.task_columns.split(",") if c.strip()]
    return spec


def read_data(spec: dict[str, Any]) -> ReactionDataset:
    options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.items() if k != "data"}
    return load_dataset(spec["data"], **options)


def model_config(model: str | None, weights: str | None) -> ModelConfig:
    """The backbone shapes: a preset name or a config.json path, or those of the weights directory
    (checked against `--model` when both are given)."""
    if model is not None and model.endswith(".json"):
        wanted = ModelConfig.from_hf_config(model)
    elif model is not None:
        wanted = ModelConfig.preset(model)
    if weights is None:
        return wanted if model is not None else ModelConfig.preset("tiny")
    if not Path(weights).is_dir():
        raise InputError("weights directory not found", file=weights,
                         hint="pass a directory with config.json or params.json and *.safetensors")
    found = ModelConfig.from_dir(weights)
    if model is not None:
        differ = [f"{name}: --model {getattr(wanted, name)}, weights {getattr(found, name)}"
                  for name in wanted.to_dict() if name != "max_seq_len"
                  and getattr(wanted, name) != getattr(found, name)]
        if differ:
            raise InputError(f"the weights do not match --model {model}: " + "; ".join(differ),
                             file=weights, hint="drop --model to use the weights' own shapes")
    return found


def run_config(args: argparse.Namespace, **extra: Any) -> RunConfig:
    targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
    return RunConfig(
        model=model_config(args.model, args.weights),
        head=HeadConfig(n_heads=args.head_heads, members=args.head_members,
                        pool_heads=args.head_pool_heads, dropout=args.head_dropout,
                        mlp_layers=args.head_mlp_layers, standardize=not args.no_head_standardize,
                        feature_layer=feature_layer(args.feature_layer, args.mode, args.weights)),
        adaptation=AdaptationConfig(
            mode=args.mode, lora=LoRAConfig(rank=args.lora_rank, alpha=args.lora_alpha, targets=targets)
        ),
        train=TrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
            weight_decay=args.weight_decay, optimizer=args.optimizer, loss=args.loss,
            compute_dtype=args.compute_dtype, seed=args.seed, ema=args.ema,
        ),
        data=data_spec(args),
        weights=str(Path(args.weights).resolve()) if args.weights else None,
        tokenizer=str(Path(args.tokenizer).resolve()) if args.tokenizer else None,
        remat=args.remat,
        extra=extra,
    )


def feature_layer(option: str, mode: str, weights: str | None) -> int | None:
    """`--feature-layer` as `HeadConfig.feature_layer` (None: the backbone's final output).

    `auto` reads the token embeddings when the head trains alone on a randomly initialised backbone:
    its frozen blocks are noise that blurs which molecules a reaction holds (on the standard split 0,
    one head reaches held-out R^2 0.80 on the embeddings against 0.77 on the output; see the README).
    With loaded weights, or blocks that train (`lora`, `full`), the head reads the output.
    """
    if option == "auto":
        return 0 if mode == "head" and weights is None else None
    if option == "final":
        return None
    try:
        return int(option)
    except ValueError:
        raise InputError(f"--feature-layer {option!r} is not a layer number",
                         hint="pass a block count such as 0 (the token embeddings), final or auto") from None


def tokenizer_for(config: RunConfig) -> Tokenizer:
    tokenizer = Tokenizer.from_file(config.tokenizer) if config.tokenizer else Tokenizer.default()
    if tokenizer.vocab_size > config.model.vocab_size:
        raise InputError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {config.model.vocab_size}",
            file=str(tokenizer.path), hint="use the tokenizer that belongs to the weights",
        )
    return tokenizer


def training_mesh(spec: str) -> Mesh | None:
    """The device mesh of `--mesh`, or None for one device (no sharding machinery at all)."""
    mesh = sharding.make_mesh(spec)
    return mesh if mesh.size > 1 else None


def fresh_run_dir(out: str) -> Path:
    """`out`, which must not already hold a run (so nothing saved is ever overwritten)."""
    path = Path(out)
    if not sharding.is_reporting_process():  # process 0 alone decides and writes
        return path
    return make_run_dir(path)


def training_source(model: YieldModel, config: RunConfig, data: EncodedReactions,
                    run_dir: Path) -> BatchSource:
    """What the step eats: token batches, or cached backbone features when only the head trains."""
    if config.adaptation.mode != "head":
        return data
    return cache_features(model.backbone, data, run_dir / "feature_cache",
                          batch_size=config.train.batch_size, depth=model.feature_layer)


def standardize_for_run(model: YieldModel, config: RunConfig, train_source: BatchSource,
                        mesh: Mesh | None = None) -> YieldModel:
    """The head's standardiser set from the training reactions as a `train` run sets it (the run's
    batch size and seed); `benchmarks/accuracy.py` calls this too, so the two cannot drift apart."""
    return standardize_head(model, train_source, batch_size=config.train.batch_size,
                            seed=config.train.seed, mesh=mesh)


# ---------------------------------------------------------------------------------- commands


def train_command(args: argparse.Namespace) -> int:
    config = run_config(args, split=args.split, test_fraction=args.test_fraction)
    dataset = read_data(config.data)
    print(describe(dataset, config.data))
    tokenizer = tokenizer_for(config)
    if args.split == "random":
        train_set, test_set = random_split(dataset, args.test_fraction, seed=args.seed)
    else:
        tasks = split_by_task(dataset, args.test_fraction, seed=args.seed)
        train_set = ReactionDataset.concat([t.train for t in tasks])
        test_set = ReactionDataset.concat([t.test for t in tasks])
    # Buckets from all reactions: one set of shapes.
    encoded = encode_reactions(dataset, tokenizer, max_len=config.model.max_seq_len)
    index = {s: i for i, s in enumerate(dataset.smiles)}
    train_data = encoded.subset([index[s] for s in train_set.smiles])
    test_data = encoded.subset([index[s] for s in test_set.smiles])
    run_dir = fresh_run_dir(args.out)  # only once the data is known to be good: no empty run left
    if sharding.is_reporting_process():
        save_run_config(run_dir, config)

    mesh = training_mesh(args.mesh)
    model = initial_model(config, jax.random.key(config.train.seed), mesh)
    save_frozen(run_dir, model, config)
    start = time.perf_counter()
    train_source = training_source(model, config, train_data, run_dir)
    test_source = training_source(model, config, test_data, run_dir)
    model = standardize_for_run(model, config, train_source, mesh)
    result = fit(model, trainable_filter(model, config.adaptation.mode), train_source, config.train,
                 progress=not args.no_progress, description=f"train ({config.adaptation.mode})", mesh=mesh)
    trainable, _ = split_model(result.model, config)
    checkpoint.save(run_dir / "checkpoints", 0, {"trainable": trainable},
                    metadata={"kind": "train"})

    predicted = predict(result.model, test_source, batch_size=2 * config.train.batch_size, mesh=mesh)
    scores = regression_scores(test_data.yields, predicted)
    train_scores = regression_scores(train_data.yields, predict(
        result.model, train_source, batch_size=2 * config.train.batch_size, mesh=mesh))
    if not sharding.is_reporting_process():
        return 0
    metrics = {**{f"test_{k}": v for k, v in scores.items()},
               **{f"train_{k}": v for k, v in train_scores.items()},
               "n_train": len(train_data), "n_test": len(test_data),
               "seconds": time.perf_counter() - start, "mode": config.adaptation.mode,
               "history": result.history}
    report.write_metrics(run_dir, metrics)
    report.write_csv(run_dir / "history.csv", result.history)
    report.write_csv(run_dir / "predictions.csv", [
        {"row": int(r), "reaction": s, "task": t, "yield_percent": round(100 * float(y), 4),
         PREDICTION_COLUMN: round(100 * float(p), 2)}
        for r, s, t, y, p in zip(test_set.rows, test_set.smiles, test_set.tasks, test_data.yields, predicted,
                                 strict=True)])
    report.parity_plot(test_data.yields, predicted, run_dir / "parity.png",
                       f"held-out test ({len(test_data)} reactions)", scores)
    report.loss_curve(result.history, run_dir / "loss.png", "training loss")
    print(report.format_table([{"split": "train", **train_scores}, {"split": "test", **scores}]))
    print(f"wrote {run_dir}/ (metrics.json, predictions.csv, parity.png)")
    return 0


def predict_command(args: argparse.Namespace) -> int:
    run_dir = Path(args.run)
    output = output_path(args.file, args.output, run_dir)
    frame, smiles, column = read_queries(args.file, args.smiles_column)
    config, model = restore_predictor(run_dir, args.strategy, args.task)
    dataset = ReactionDataset.build(smiles, np.zeros(len(smiles)), ["all"] * len(smiles),
                                    rows=spreadsheet_rows(frame), source=args.file, smiles_column=column)
    encoded = encode_reactions(dataset, tokenizer_for(config), max_len=config.model.max_seq_len)
    predicted = predict(model, encoded)
    report.write_csv(output, with_predictions(frame, predicted).to_dict("records"))
    print(f"wrote {len(predicted)} predictions (yield in percent, column {PREDICTION_COLUMN}) to {output}")
    return 0
