"""The task loop of one strategy: train a round, score every task, checkpoint, repeat.

Everything random is derived from the run seed and the position in the loop (round, epoch, step),
never from the process, so a run resumed from its checkpoint after round k ends with exactly the
scores of an uninterrupted run. A checkpoint after every round (step number = rounds done) holds the
trainable half, the strategy's arrays and the run's PRNG key; its metadata holds the strategy's
values (e.g. memory positions), every score so far and the wall time of each round.

Every round runs through the project's one loop (`train.train_epochs`), on one device or on a mesh:
with `Setting.mesh`, the trainable half, the optimizer state and every array of the strategy's state
are laid out by `sharding.specs` (by role), every batch is fed split over the batch axes, and scores
are gathered to every process. Sharded and single-device runs draw the same random numbers, so they
end with the same scores up to float rounding, and a checkpoint saved on one mesh resumes on another.

The optimizer restarts at every round: fresh Adam moments and a warm-up + cosine schedule, as a lab
would fine-tune on each new batch of experiments; a checkpoint at a round's end therefore needs no
optimizer state. The schedule is as long as the longest round of the plan (a round a batch shorter
simply stops a little before the schedule's end), so all rounds share one jitted step, compiled once
per batch width (an ingested task larger than all others lengthens the schedule of its own round).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

import sharding
from mistral_cl import checkpoint
from mistral_cl.continual.metrics import ScoreBoard, pooled_round
from mistral_cl.continual.strategies import Setting, Strategy, StrategyState
from mistral_cl.continual.strategies.base import copy_tree
from mistral_cl.inference import predict
from mistral_cl.predictor import YieldModel
from mistral_cl.scores import regression_scores
from mistral_cl.train import init_opt_state, make_optimizer, make_train_step, train_epochs

CHECKPOINTS = "checkpoints"
KEEP = 2  # the latest round to resume from, and the one before it in case the latest is damaged


@dataclasses.dataclass
class Progress:
    """Where a strategy's run stands: after `rounds_done` rounds, with these parameters and scores."""

    trainable: YieldModel
    state: StrategyState
    key: jax.Array
    board: ScoreBoard
    seconds: list[float]  # wall time of each round (training, scoring, checkpoint; compiles included)
    cpu_seconds: list[float]  # CPU time of each round (steadier than wall time on a shared machine)

    @property
    def rounds_done(self) -> int:
        return self.board.rounds


def predictions(strategy: Strategy, setting: Setting, state: StrategyState, trainable: YieldModel,
                tasks: Sequence[int], batch_size: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Measured and predicted yields of the test set of each of `tasks`, each predicted by the
    strategy's choice of model (one prediction pass over all tasks that share a model)."""
    pool, wanted, out = setting.pool, set(tasks), {}
    for predictor, group in strategy.predictors(setting, state, trainable, len(pool)):
        group = [j for j in group if j in wanted]
        if not group:
            continue
        positions = pool.test_positions(group)
        predicted = predict(setting.model(predictor), pool.source(positions), batch_size, mesh=setting.mesh)
        truth = pool.encoded.yields[positions]
        ends = np.cumsum([len(pool.test[j]) for j in group])
        for j, end in zip(group, ends, strict=True):
            start = end - len(pool.test[j])
            out[j] = (truth[start:end], predicted[start:end])
    return out


def evaluate(strategy: Strategy, setting: Setting, state: StrategyState, trainable: YieldModel,
             tasks: Sequence[int], batch_size: int) -> list[dict[str, float]]:
    """R^2, RMSE and MAE on the test set of each of `tasks` (see `predictions`)."""
    outcome = predictions(strategy, setting, state, trainable, tasks, batch_size)
    return [regression_scores(*outcome[j]) for j in tasks]


def start(strategy: Strategy, setting: Setting, before: dict[str, np.ndarray]) -> Progress:
    """A strategy's state before its first round."""
    board = ScoreBoard(list(setting.pool.keys), {k: np.asarray(v) for k, v in before.items()})
    return Progress(copy_tree(setting.initial), placed(setting, strategy.initial_state(setting)),
                    jax.random.key(setting.seed), board, [], [])


def placed(setting: Setting, state: StrategyState) -> StrategyState:
    """`state` with its arrays in their layout on the run's mesh (`sharding.specs.strategy_state_specs`)."""
    arrays = sharding.place_state(state.arrays, setting.mesh, setting.initial)
    return dataclasses.replace(state, arrays=arrays)


def restore(strategy: Strategy, setting: Setting, directory: Path) -> Progress | None:
    """The state saved after the latest round in `directory`, or None before the first round. Arrays
    come back in the layout of the run's mesh, whatever mesh they were saved from."""
    rounds_done = checkpoint.latest_step(directory / CHECKPOINTS)
    if not rounds_done:
        return None
    like = {"trainable": setting.initial, "state": strategy.state_like(setting, rounds_done),
            "key": jax.random.key(0)}
    tree, meta = checkpoint.restore(directory / CHECKPOINTS, like, step=rounds_done)
    key = sharding.place_state(tree["key"], setting.mesh)  # replicated, like every step's key
    return Progress(tree["trainable"], StrategyState(tree["state"], meta["values"]), key,
                    ScoreBoard.from_json(meta["board"]), list(meta["seconds"]), list(meta["cpu_seconds"]))


def save(progress: Progress, directory: Path, strategy: Strategy) -> None:
    tree = {"trainable": progress.trainable, "state": progress.state.arrays, "key": progress.key}
    metadata = {"strategy": strategy.spec, "values": progress.state.values,
                "board": progress.board.to_json(), "seconds": progress.seconds,
                "cpu_seconds": progress.cpu_seconds}
    checkpoint.save(directory / CHECKPOINTS, progress.rounds_done, tree, metadata=metadata, keep=KEEP)


def build_step(strategy: Strategy, setting: Setting, schedule_steps: int) -> tuple[Any, Callable]:
    """The strategy's optimizer (warm-up + cosine over `schedule_steps`) and its jitted train step."""
    config = setting.train
    optimizer = make_optimizer(config, schedule_steps)
    constrain = None if setting.mesh is None else sharding.state_constraint(setting.mesh)
    step = make_train_step(optimizer, strategy.objective(setting), compute_dtype=config.compute_dtype,
                           grad_transform=strategy.grad_transform(setting), constrain=constrain)
    return optimizer, step


def round_steps(strategy: Strategy, setting: Setting, tasks: Sequence[int]) -> int:
    """The number of steps of a round on `tasks` (every epoch has as many)."""
    per_epoch = strategy.round_source(setting, tasks).count_batches(setting.train.batch_size)
    return setting.train.epochs * per_epoch


def train_round(strategy: Strategy, setting: Setting, progress: Progress, tasks: Sequence[int],
                optimizer: Any, step: Callable, *, bar: tqdm | None = None) -> YieldModel:
    """The trainable half after one round on `tasks`: `train_epochs` over the strategy's steps,
    starting from a fresh optimizer state (with `--ema`, the round's moving average of the weights)."""
    round_index = progress.rounds_done
    trainable = strategy.begin_round(setting, progress.state, progress.trainable)
    extra = sharding.place_state(strategy.extra(setting, progress.state), setting.mesh, setting.initial)
    result = train_epochs(
        step, trainable, setting.frozen, init_opt_state(optimizer, trainable, setting.mesh),
        lambda epoch: strategy.steps(setting, progress.state, tasks, round_index, epoch),
        epochs=setting.train.epochs, key=jax.random.fold_in(progress.key, round_index), extra=extra,
        ema=setting.train.ema, mesh=setting.mesh, bar=bar)
    return result.trainable


def run_strategy(strategy: Strategy, setting: Setting, directory: Path, arrivals: Sequence[int],
                 before: dict[str, np.ndarray], *, eval_batch_size: int, stop_after: int | None = None,
                 bar: tqdm | None = None, label: str = "",
                 on_round: Callable[[Progress], None] | None = None) -> Progress:
    """Continue `strategy`'s run in `directory` to the end of the stream (or `stop_after` rounds).

    `arrivals` are the task counts after the initial stream and after each ingested task; `before`
    holds the untrained model's scores on every task. Tasks that arrived after the latest round are
    first scored with the current model, then trained in new rounds. `on_round` sees the progress
    after every round (to write tables and plots).
    """
    clock, cpu_clock = time.perf_counter(), time.process_time()
    progress = restore(strategy, setting, directory) or start(strategy, setting, before)
    pool, board = setting.pool, progress.board
    for task in range(len(board.keys), len(pool)):
        latest = evaluate(strategy, setting, progress.state, progress.trainable, [task], eval_batch_size)
        board.add_task(pool.keys[task], {k: float(v[task]) for k, v in before.items()}, latest[0])
    plan = strategy.rounds(arrivals)
    config = setting.train
    longest = max(strategy.round_source(setting, tasks).count_batches(config.batch_size) for tasks in plan)
    optimizer, step = build_step(strategy, setting, config.epochs * longest)
    last = len(plan) if stop_after is None else min(len(plan), stop_after)
    for round_index in range(progress.rounds_done, last):
        tasks = plan[round_index]
        if bar is not None:
            named = pool.keys[tasks[0]] if len(tasks) == 1 else f"{len(tasks)} tasks"
            bar.set_description(f"{label or strategy.spec} · round {round_index + 1}/{len(plan)} {named}")
        trainable = train_round(strategy, setting, progress, tasks, optimizer, step, bar=bar)
        state = placed(setting, strategy.end_round(setting, progress.state, trainable, tasks, round_index))
        outcome = predictions(strategy, setting, state, trainable, range(len(pool)), eval_batch_size)
        truths, predicted = ({j: pair[k] for j, pair in outcome.items()} for k in (0, 1))
        board.add_round(tasks, [regression_scores(*outcome[j]) for j in range(len(pool))],
                        pooled_round(truths, predicted, board.seen_after(tasks)))
        now, cpu_now = time.perf_counter(), time.process_time()
        progress = dataclasses.replace(progress, trainable=trainable, state=state,
                                       seconds=[*progress.seconds, now - clock],
                                       cpu_seconds=[*progress.cpu_seconds, cpu_now - cpu_clock])
        clock, cpu_clock = now, cpu_now
        save(progress, directory, strategy)
        if on_round is not None:
            on_round(progress)
    return progress
