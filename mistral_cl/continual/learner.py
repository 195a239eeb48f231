"""The task loop of one strategy: train a round, score every task, checkpoint, repeat.

Everything random is derived from the run seed and the position in the loop (round, epoch, step),
never from the process, so a run resumed from its checkpoint after round k ends with exactly the
scores of an uninterrupted run. A checkpoint after every round (step number = rounds done) holds the
trainable half, the strategy's arrays, the run's PRNG key and, when it is carried, the optimizer
state; its metadata holds the strategy's values (e.g. memory positions), every score so far and the
record of each round (epochs, steps, reactions processed, what it chose; wall and CPU time).

Every round runs through the project's one loop (`train.train_epochs`), on one device or on a mesh:
with `Setting.mesh`, the trainable half, the optimizer state and every array of the strategy's state
are laid out by `sharding.specs` (by role), every batch is fed split over the batch axes, and scores
are gathered to every process. Sharded and single-device runs draw the same random numbers, so they
end with the same scores up to float rounding, and a checkpoint saved on one mesh resumes on another.

By default the optimizer restarts at every round: fresh Adam moments and the run's schedule, as a lab
would fine-tune on each new batch of experiments; a checkpoint at a round's end then needs no
optimizer state. The schedule is as long as the round's epochs times the longest epoch of the plan (a
round a batch shorter simply stops a little before the schedule's end), so all rounds of the run's
epochs share one jitted step, compiled once per batch width (an ingested task larger than all others
lengthens the schedule of its own round). With `continual.carry_optimizer` (the seed repository's
protocol) one optimizer state runs through all rounds: its moments and step count go on from round to
round, a cosine schedule spans the whole plan, and the state is checkpointed with every round.

Compute is counted, not estimated: a round's `reactions` are the rows, by the batches' weights, of
every batch its steps trained on (current and remembered alike; each went forward and backward),
including a trial run that chose its epochs. Work outside the steps (scoring, EWC's Fisher diagonal,
LwF's teacher predictions) is not counted there, but shows in the round's wall and CPU seconds.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np
from tqdm.auto import tqdm

import sharding
from mistral_cl import checkpoint
from mistral_cl.continual.metrics import ScoreBoard, pooled_round
from mistral_cl.continual.pool import TaskPool
from mistral_cl.continual.strategies import Setting, Strategy, StrategyState
from mistral_cl.continual.strategies.base import EpochChoice, copy_tree, seed_for
from mistral_cl.errors import InputError
from mistral_cl.inference import predict, predict_mean
from mistral_cl.predictor import YieldModel
from mistral_cl.scores import regression_scores
from mistral_cl.train import LoopResult, init_opt_state, make_optimizer, make_train_step, train_epochs

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
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # per round, see `round_record`
    opt_state: Any = None  # the optimizer state after the last round, when carried across rounds

    @property
    def rounds_done(self) -> int:
        return self.board.rounds


def predictions(strategy: Strategy, setting: Setting, state: StrategyState, trainable: YieldModel,
                tasks: Sequence[int], batch_size: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Measured and predicted yields of the test set of each of `tasks`, each predicted by the
    strategy's choice of models (one prediction pass over all tasks that share them)."""
    pool, wanted, out = setting.pool, set(tasks), {}
    for members, group in strategy.predictors(setting, state, trainable, len(pool)):
        group = [j for j in group if j in wanted]
        if not group:
            continue
        positions = pool.test_positions(group)
        predicted = predict_mean([setting.model(m) for m in members], pool.source(positions), batch_size,
                                 mesh=setting.mesh)
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
    if setting.carry_optimizer:
        like["opt_state"] = opt_state_like(setting)
    tree, meta = checkpoint.restore(directory / CHECKPOINTS, like, step=rounds_done)
    key = sharding.place_state(tree["key"], setting.mesh)  # replicated, like every step's key
    records = meta.get("records", [{} for _ in range(rounds_done)])  # none before compute was counted
    return Progress(tree["trainable"], StrategyState(tree["state"], meta["values"]), key,
                    ScoreBoard.from_json(meta["board"]), list(meta["seconds"]), list(meta["cpu_seconds"]),
                    list(records), tree.get("opt_state"))


def opt_state_like(setting: Setting) -> Any:
    """The structure of the carried optimizer state (the schedule's length does not change it), each
    leaf with its layout on the run's mesh: what a checkpoint restores it into."""
    params = eqx.filter(setting.initial, eqx.is_array)
    abstract = jax.eval_shape(make_optimizer(setting.train, 1).init, params)
    if setting.mesh is None:
        return abstract
    placement = sharding.shardings(sharding.opt_state_specs(abstract, params, setting.mesh), setting.mesh)
    return jax.tree.map(lambda leaf, where: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=where),
                        abstract, placement)


def save(progress: Progress, directory: Path, strategy: Strategy) -> None:
    tree = {"trainable": progress.trainable, "state": progress.state.arrays, "key": progress.key}
    if progress.opt_state is not None:
        tree["opt_state"] = progress.opt_state
    metadata = {"strategy": strategy.spec, "values": progress.state.values,
                "board": progress.board.to_json(), "seconds": progress.seconds,
                "cpu_seconds": progress.cpu_seconds, "records": progress.records}
    checkpoint.save(directory / CHECKPOINTS, progress.rounds_done, tree, metadata=metadata, keep=KEEP)


def build_step(strategy: Strategy, setting: Setting, schedule_steps: int) -> tuple[Any, Callable]:
    """The strategy's optimizer (its schedule over `schedule_steps`) and its jitted train step."""
    config = setting.train
    optimizer = make_optimizer(config, schedule_steps)
    constrain = None if setting.mesh is None else sharding.state_constraint(setting.mesh)
    step = make_train_step(optimizer, strategy.objective(setting), compute_dtype=config.compute_dtype,
                           grad_transform=strategy.grad_transform(setting), constrain=constrain)
    return optimizer, step


def round_steps(strategy: Strategy, setting: Setting, tasks: Sequence[int]) -> int:
    """The number of steps of a round on `tasks` (every epoch has as many; a round that chooses its
    epochs is counted at the most it may choose)."""
    per_epoch = strategy.round_source(setting, tasks).count_batches(setting.train.batch_size)
    return strategy.round_epochs(setting, tasks) * per_epoch


def train_round(strategy: Strategy, setting: Setting, progress: Progress, tasks: Sequence[int],
                optimizer: Any, step: Callable, *, epochs: int | None = None, opt_state: Any = None,
                bar: tqdm | None = None, on_epoch_end: Callable | None = None) -> LoopResult:
    """One round on `tasks`: `train_epochs` over the strategy's steps for `epochs` (default: the
    run's), from `opt_state` (default: a fresh optimizer state). Its trainable half is, with `--ema`,
    the round's moving average of the weights."""
    round_index = progress.rounds_done
    trainable = strategy.begin_round(setting, progress.state, progress.trainable)
    extra = sharding.place_state(strategy.extra(setting, progress.state), setting.mesh, setting.initial)
    if opt_state is None:
        opt_state = init_opt_state(optimizer, trainable, setting.mesh)
    return train_epochs(
        step, trainable, setting.frozen, opt_state,
        lambda epoch: strategy.steps(setting, progress.state, tasks, round_index, epoch),
        epochs=epochs or setting.train.epochs, key=jax.random.fold_in(progress.key, round_index),
        extra=extra, ema=setting.train.ema, mesh=setting.mesh, bar=bar, on_epoch_end=on_epoch_end)


def validation_split(pool: TaskPool, tasks: Sequence[int], fraction: float, seed: int
                     ) -> tuple[TaskPool, dict[int, np.ndarray]]:
    """The pool with a `fraction` of the training reactions of each of `tasks` held out (at least
    one, never all; a seeded draw per task), and the held-out positions of each task. Test
    reactions are never touched."""
    train, held = list(pool.train), {}
    for task in tasks:
        positions = pool.train[task]
        count = min(max(1, round(fraction * len(positions))), len(positions) - 1)
        if count <= 0:
            continue
        rng = np.random.default_rng(seed_for(seed, "validation", task))
        chosen = np.isin(positions, rng.choice(positions, count, replace=False))
        held[task], train[task] = positions[chosen], positions[~chosen]
    return dataclasses.replace(pool, train=tuple(train)), held


def choose_epochs(strategy: Strategy, setting: Setting, progress: Progress, tasks: Sequence[int],
                  choice: EpochChoice, steps_for: Callable[[int], tuple[Any, Callable]],
                  eval_batch_size: int) -> dict[str, Any]:
    """The epoch count of a round on `tasks`, chosen on validation: a trial round on the training
    reactions less a held-out share of each task's (`validation_split`), from where the round starts,
    for up to `choice.max_epochs` epochs with a fresh optimizer, scored after every epoch by the mean
    over tasks of the held-out RMSE. Returns `epochs` (the first lowest), the `validation_rmse` curve,
    the `validation_reactions` held out and the `trial_reactions` the trial processed."""
    pool = setting.pool
    trial_pool, held = validation_split(pool, tasks, choice.validation, setting.seed)
    trial = dataclasses.replace(setting, pool=trial_pool)
    per_epoch = strategy.round_source(trial, tasks).count_batches(setting.train.batch_size)
    optimizer, step = steps_for(choice.max_epochs * per_epoch)
    if not held:
        raise InputError("too few training reactions to hold out a validation part (a task needs 2)",
                         hint="use a fixed number of epochs, e.g. `continual.strategies=joint:epochs=30`")
    held_tasks = sorted(held)
    positions = np.concatenate([held[j] for j in held_tasks])
    truth = pool.encoded.yields[positions]
    ends = np.cumsum([len(held[j]) for j in held_tasks])

    def validation_rmse(epoch: int, model: YieldModel) -> dict[str, float]:
        predicted = predict(model, pool.source(positions), eval_batch_size, mesh=setting.mesh)
        errors = [regression_scores(truth[end - len(held[j]):end], predicted[end - len(held[j]):end])["rmse"]
                  for j, end in zip(held_tasks, ends, strict=True)]
        return {"validation_rmse": float(np.mean(errors))}

    start_from = dataclasses.replace(progress, trainable=copy_tree(progress.trainable))  # the step donates it
    result = train_round(strategy, trial, start_from, tasks, optimizer, step, epochs=choice.max_epochs,
                         on_epoch_end=validation_rmse)
    curve = [record["validation_rmse"] for record in result.history]
    best = int(np.argmin(np.nan_to_num(curve, nan=np.inf)))
    return {"epochs": best + 1, "validation_rmse": curve, "validation_reactions": int(len(positions)),
            "trial_reactions": sum(record["processed"] for record in result.history)}


def round_record(result: LoopResult, choice: dict[str, Any]) -> dict[str, Any]:
    """What a round did: its `epochs` and `steps`, the `reactions` it processed (a trial run's
    included) and, for a round that chose its epochs, the choice (see `choose_epochs`)."""
    history = result.history
    return {**choice, "epochs": len(history), "steps": sum(record["steps"] for record in history),
            "reactions": sum(record["processed"] for record in history) + choice.get("trial_reactions", 0)}


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
    built: dict[int, tuple[Any, Callable]] = {}

    def steps_for(schedule_steps: int) -> tuple[Any, Callable]:
        if schedule_steps not in built:
            built[schedule_steps] = build_step(strategy, setting, schedule_steps)
        return built[schedule_steps]

    carry = setting.carry_optimizer
    whole_plan = sum(round_steps(strategy, setting, tasks) for tasks in plan) if carry else 0
    last = len(plan) if stop_after is None else min(len(plan), stop_after)
    for round_index in range(progress.rounds_done, last):
        tasks = plan[round_index]
        if bar is not None:
            named = pool.keys[tasks[0]] if len(tasks) == 1 else f"{len(tasks)} tasks"
            bar.set_description(f"{label or strategy.spec} · round {round_index + 1}/{len(plan)} {named}")
        rule = strategy.epoch_choice()
        choice = ({} if rule is None else
                  choose_epochs(strategy, setting, progress, tasks, rule, steps_for, eval_batch_size))
        epochs = choice.get("epochs") or strategy.round_epochs(setting, tasks)
        optimizer, step = steps_for(whole_plan if carry else epochs * longest)
        result = train_round(strategy, setting, progress, tasks, optimizer, step, epochs=epochs,
                             opt_state=progress.opt_state, bar=bar)
        trainable = result.trainable
        state = placed(setting, strategy.end_round(setting, progress.state, trainable, tasks, round_index))
        outcome = predictions(strategy, setting, state, trainable, range(len(pool)), eval_batch_size)
        truths, predicted = ({j: pair[k] for j, pair in outcome.items()} for k in (0, 1))
        board.add_round(tasks, [regression_scores(*outcome[j]) for j in range(len(pool))],
                        pooled_round(truths, predicted, board.seen_after(tasks)))
        record = round_record(result, choice)
        if setting.retention is not None:
            record["lm_loss"] = setting.retention.loss(setting.model(trainable), setting.mesh)
        now, cpu_now = time.perf_counter(), time.process_time()
        progress = dataclasses.replace(progress, trainable=trainable, state=state,
                                       seconds=[*progress.seconds, now - clock],
                                       cpu_seconds=[*progress.cpu_seconds, cpu_now - cpu_clock],
                                       records=[*progress.records, record],
                                       opt_state=result.opt_state if carry else None)
        clock, cpu_clock = now, cpu_now
        save(progress, directory, strategy)
        if on_round is not None:
            on_round(progress)
    return progress
