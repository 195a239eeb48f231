"""What `predict` reads and writes: the model of a run, the reactions to predict, and a safe output.

A `train` run has one model, its checkpoint. A `continual` run has one final model per strategy: the
trainable half after the strategy's latest round (a strategy that has not finished predicts with the
rounds it has done, with a warning). A task-aware strategy (`adapters`) keeps one per task, chosen by
the task's key. The frozen half comes from the run's `base/` (or its weights) in every case.

The output repeats every column of the input (so IDs travel with the prediction) and adds one,
`predicted_yield_percent`. It never replaces the input, a file of the run, or a file that an earlier
`predict` did not write.
"""

from __future__ import annotations

import json
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pandas as pd
from jax.sharding import Mesh

import sharding
from mistral_cl import checkpoint
from mistral_cl.continual.learner import CHECKPOINTS
from mistral_cl.continual.metrics import ScoreBoard
from mistral_cl.continual.runner import STREAM_FILE, continual_settings, strategy_directory
from mistral_cl.continual.strategies import Setting, StrategyState, build_strategy
from mistral_cl.data.reactions import canonical_column, raise_problems
from mistral_cl.data.tables import SMILES_NAMES, named_column, read_cells, spreadsheet_rows
from mistral_cl.errors import InputError, warn
from mistral_cl.predictor import YieldModel
from mistral_cl.runs import RunConfig, load_model, load_models, load_run_config, split_model, trainable_like

PREDICTION_COLUMN = "predicted_yield_percent"


# ------------------------------------------------------------------------------------- the model


def restore_predictor(run_dir: str | Path, strategy: str | None = None, task: str | None = None, *,
                      mesh: Mesh | None = None) -> tuple[RunConfig, tuple[YieldModel, ...]]:
    """The run's configuration and the models whose mean predicts: a `train` run's one, or the final
    model of a `continual` run's `strategy` (for a task-aware one, the models of `task`: its adapter,
    or `replay-snapshot`'s current model and snapshot), each placed on `mesh`."""
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    if config.kind == "continual":
        models = _continual_predictor(run_dir, config, strategy, task)
    else:
        for option, value in (("strategy", strategy), ("task", task)):
            if value is not None:
                raise InputError(f"a `train` run has one model for every reaction: `{option}` does not "
                                 f"apply", file=str(run_dir), hint=f"leave `{option}` unset")
        state, _ = checkpoint.restore(run_dir / "checkpoints", {"trainable": trainable_like(config)})
        models = (load_model(run_dir, config, state["trainable"]),)
    if mesh is None:
        return config, models
    # The members share one frozen half: it is placed once, each trainable half on its own.
    frozen = sharding.place(split_model(models[0], config)[1], mesh)
    return config, tuple(eqx.combine(sharding.place(split_model(model, config)[0], mesh), frozen)
                         for model in models)


def _chosen_spec(run_dir: Path, specs: list[str], wanted: str | None) -> str:
    if wanted is None and len(specs) == 1:
        return specs[0]
    matches = [s for s in specs if wanted in (s, s.split(":")[0])]
    if wanted is not None and len(matches) == 1:
        return matches[0]
    listed = ", ".join(specs)
    if wanted is None:
        raise InputError(f"this continual run trained {len(specs)} strategies ({listed}): which predicts?",
                         file=str(run_dir), hint=f"choose one as `strategy`, e.g. `strategy={specs[-1]}`")
    raise InputError(f"the run has no strategy {wanted!r}" if not matches else
                     f"`strategy={wanted}` fits several of the run's strategies", file=str(run_dir),
                     hint=f"choose one of: {listed}")


def _continual_predictor(run_dir: Path, config: RunConfig, wanted: str | None, task: str | None
                         ) -> tuple[YieldModel, ...]:
    spec = _chosen_spec(run_dir, list(continual_settings(config).strategies), wanted)
    strategy = build_strategy(spec)
    directory = strategy_directory(run_dir, strategy) / CHECKPOINTS
    done = checkpoint.latest_step(directory) or 0
    if not done:
        raise InputError(f"strategy {spec!r} has not finished a round yet: it has no model to predict with",
                         file=str(run_dir), hint=f"train it first: mistral-cl continual --resume {run_dir}")
    stream = json.loads((run_dir / STREAM_FILE).read_text())
    keys = [t["key"] for t in stream["tasks"]]
    if task is not None and not strategy.task_aware:
        raise InputError(f"strategy {spec!r} predicts every task with one model: `task` does not apply",
                         file=str(run_dir), hint="leave `task` unset (only task-aware strategies such as "
                                                 "adapters keep a model per task)")
    if strategy.task_aware and task not in keys:
        raise InputError(f"strategy {spec!r} keeps one model per task" if task is None else
                         f"the run has no task {task!r}", file=str(run_dir),
                         hint=f"name the task as `task`, one of: {', '.join(keys)}")
    total = len(strategy.rounds(stream["arrivals"]))
    if done < total:
        warn(f"strategy {spec!r} has trained {done} of its {total} rounds; predicting with the model "
             f"after round {done}", file=str(run_dir),
             hint=f"finish the run first for its final model: mistral-cl continual --resume {run_dir}")
    # Restoring needs the shapes of the strategy's state, which `state_like` derives from `initial`
    # alone; the other fields of this Setting are never read on the way.
    like = trainable_like(config)
    setting = Setting(pool=None, train=config.train, mode=config.adaptation.mode, filter_spec=None,
                      frozen=None, initial=like)
    saved = {"trainable": like, "state": strategy.state_like(setting, done), "key": jax.random.key(0)}
    tree, meta = checkpoint.restore(directory, saved, step=done)
    members = (tree["trainable"],)
    if task is not None:
        j = keys.index(task)
        if j >= len(ScoreBoard.from_json(meta["board"]).learned_at):
            raise InputError(f"strategy {spec!r} has not learned task {task!r} yet", file=str(run_dir),
                             hint=f"finish the run first: mistral-cl continual --resume {run_dir}")
        state = StrategyState(tree["state"], meta["values"])
        members = next(m for m, group in strategy.predictors(setting, state, tree["trainable"], len(keys))
                       if j in group)
    return load_models(run_dir, config, members)


# -------------------------------------------------------------------------- input and output


def read_queries(path: str | Path, smiles_column: str | None) -> tuple[pd.DataFrame, list[str], str]:
    """The input table (every column), the canonical reaction SMILES of each row, and the SMILES
    column's name; all bad rows are reported at once."""
    frame = read_cells(path)
    header = [str(c) for c in frame.columns]
    given = smiles_column
    smiles_column = named_column(header, given, SMILES_NAMES)
    if smiles_column is None:
        raise InputError(f"no reaction SMILES column among {header}", file=str(path),
                         hint="name it as `smiles_column`")
    if given is not None and smiles_column not in header:
        raise InputError(f"no such column; the file has {header}", file=str(path), column=smiles_column,
                         hint="name the right `smiles_column`")
    if frame.empty:
        raise InputError("the file has no reactions", file=str(path),
                         hint="put one reaction SMILES per row under the header")
    if PREDICTION_COLUMN in header:
        raise InputError(f"the file already has a column {PREDICTION_COLUMN!r} (an earlier prediction?)",
                         file=str(path), column=PREDICTION_COLUMN,
                         hint="predict from a file without that column, e.g. the original input")
    rows = np.asarray(spreadsheet_rows(frame), np.int64)
    smiles, problems = canonical_column(frame[smiles_column].tolist(), rows, smiles_column)
    raise_problems(problems, str(path), "fix or remove these rows")
    return frame, smiles, smiles_column


def output_path(file: str | Path, output: str | Path | None, run_dir: str | Path) -> Path:
    """Where predictions go: `output`, or FILE with `.predictions.csv`. Checked before any work, so
    a bad path costs nothing: it must be a file in an existing folder, not the input, not a saved
    file of the run, and not an existing file that `predict` did not write."""
    path = Path(output) if output else Path(file).with_suffix(".predictions.csv")
    hint = "choose another `output`"
    if path.is_dir():
        raise InputError("is a directory", file=str(path),
                         hint=f"name a file, e.g. {path / 'predictions.csv'}")
    if not path.parent.is_dir():
        raise InputError(f"the folder {str(path.parent)!r} does not exist", file=str(path),
                         hint=f"create it first, or {hint}")
    if not path.exists():
        return path
    if path.resolve() == Path(file).resolve():
        raise InputError("is the input file itself: writing predictions would replace it", file=str(path),
                         hint=hint)
    if path.resolve().is_relative_to(Path(run_dir).resolve()):
        raise InputError("is a file of the run directory: predictions would replace it", file=str(path),
                         hint=hint)
    with open(path, encoding="utf-8", errors="replace") as handle:
        header = handle.readline()
    if PREDICTION_COLUMN not in header:
        raise InputError("exists and was not written by `mistral-cl predict`", file=str(path),
                         hint=f"{hint}, or move the file away first")
    return path


def with_predictions(frame: pd.DataFrame, predicted: np.ndarray) -> pd.DataFrame:
    """The input table with the predicted yield of each row, in percent (2 decimals), as last column."""
    return frame.assign(**{PREDICTION_COLUMN: np.round(100.0 * np.asarray(predicted, np.float64), 2)})

