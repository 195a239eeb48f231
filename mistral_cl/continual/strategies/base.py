"""What a continual-learning strategy decides, and what every strategy shares.

A strategy never owns a training loop or a train step: the runner builds one step per run with
`train.make_train_step` and asks the strategy, round by round, for

- the **objective** (and rarely a **gradient transform**) the step is built with;
- the **steps** of a round: tuples of batches (the current task's batch, then e.g. a memory batch);
- the **extra** arrays the step reads but does not train (a previous model, a Fisher diagonal);
- what to do when a round **begins** (start a fresh adapter) and **ends** (update a memory, a Fisher
  diagonal, a snapshot), returning its new **state**;
- which trainable halves **predict** each task (one per task for task-aware strategies; the mean of
  several, e.g. `replay-snapshot`'s);
- how many **epochs** a round takes (the run's, unless the strategy sets its own or has them chosen on
  a validation part of the round's training reactions, see `EpochChoice`).

The base class is sequential fine-tuning with the plain regression loss; a strategy overrides only
what differs. State is a `StrategyState`: `arrays` (pytrees, stored in the checkpoint tree) and
`values` (small JSON data such as memory positions, stored in the checkpoint metadata).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from mistral_cl.continual.buffer import MemoryPolicy
from mistral_cl.continual.pool import TaskPool
from mistral_cl.data.batching import TOKEN_AXIS_FIELDS, match_parts, split_table, with_table
from mistral_cl.inference import BatchSource
from mistral_cl.predictor import MODES, YieldModel
from mistral_cl.train import GradientTransform, Objective, TrainConfig, supervised_objective

Steps = Iterator[tuple[Any, ...]]
Members = tuple[YieldModel, ...]  # trainable halves whose predictions are averaged


@dataclasses.dataclass(frozen=True, eq=False)
class Setting:
    """What a strategy may read: the run's reactions and tasks, its optimisation settings, what
    trains (`filter_spec`, a boolean pytree), the frozen half of the model, the untrained trainable
    half (`initial`, never handed to the donating step), the replay memory policy, and the device
    mesh every array lives on (None: one device)."""

    pool: TaskPool
    train: TrainConfig
    mode: str
    filter_spec: YieldModel
    frozen: YieldModel
    initial: YieldModel
    memory: MemoryPolicy = dataclasses.field(default_factory=MemoryPolicy)
    mesh: Mesh | None = None
    carry_optimizer: bool = False  # `continual.carry_optimizer`: one optimizer state for all rounds
    retention: Any = None  # a `continual.retention.Retention`: the LM loss measured after every round

    @property
    def seed(self) -> int:
        return self.train.seed

    def model(self, trainable: YieldModel) -> YieldModel:
        return eqx.combine(trainable, self.frozen)


@dataclasses.dataclass(frozen=True)
class EpochChoice:
    """A round whose epochs are chosen on validation: a trial run on the round's training reactions
    less a held-out `validation` share of every task's, for up to `max_epochs` epochs, then the
    round itself for the epoch count with the lowest validation RMSE (see `learner.choose_epochs`)."""

    validation: float
    max_epochs: int


@dataclasses.dataclass(frozen=True)
class StrategyState:
    """What a strategy carries from one round to the next."""

    arrays: dict[str, Any] = dataclasses.field(default_factory=dict)
    values: dict[str, Any] = dataclasses.field(default_factory=dict)


class Strategy:
    """Sequential fine-tuning; subclasses are frozen dataclasses whose fields are hyperparameters
    (set from the command line as `name:field=value`)."""

    name: ClassVar[str] = ""
    task_aware: ClassVar[bool] = False  # picks a model by task id at prediction time
    stores_data: ClassVar[bool] = False  # keeps past tasks' reactions (joint, replay, agem)
    restarts: ClassVar[bool] = False  # every round starts again from the untrained model
    modes: ClassVar[tuple[str, ...]] = MODES

    @property
    def spec(self) -> str:
        """The name plus every hyperparameter that differs from its default, e.g. `ewc:lam=300`."""
        changed = [f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)  # type: ignore[arg-type]
                   if getattr(self, f.name) != f.default] if dataclasses.is_dataclass(self) else []
        return ":".join([self.name, *changed])

    def rounds(self, arrivals: Sequence[int]) -> list[list[int]]:
        """Tasks trained by each round; `arrivals` are the task counts after the stream and after
        each ingested task. Sequential strategies learn one task per round."""
        return [[task] for task in range(arrivals[-1])]

    def objective(self, setting: Setting) -> Objective:
        return supervised_objective(setting.train.loss, setting.train.huber_delta)

    def grad_transform(self, setting: Setting) -> GradientTransform | None:
        return None

    def initial_state(self, setting: Setting) -> StrategyState:
        return StrategyState()

    def state_like(self, setting: Setting, rounds_done: int) -> dict[str, Any]:
        """The shapes of `StrategyState.arrays` after `rounds_done` rounds (to restore them)."""
        return {}

    def begin_round(self, setting: Setting, state: StrategyState, trainable: YieldModel) -> YieldModel:
        """The trainable half a round starts from (default: where the last round ended)."""
        return trainable

    def round_epochs(self, setting: Setting, tasks: Sequence[int]) -> int:
        """The epochs of a round on `tasks` (default: the run's; with an `epoch_choice`, the most
        it may choose)."""
        return setting.train.epochs

    def epoch_choice(self) -> EpochChoice | None:
        """How the epochs of every round are chosen on validation (default: they are not)."""
        return None

    def round_source(self, setting: Setting, tasks: Sequence[int]) -> BatchSource:
        """The reactions the round trains on; its batch count sets the steps of an epoch."""
        return setting.pool.source(setting.pool.train_positions(tasks))

    def steps(self, setting: Setting, state: StrategyState, tasks: Sequence[int], round_index: int,
              epoch: int) -> Steps:
        """One epoch of step inputs: here, `(batch,)` for each batch of the round's tasks."""
        seed = seed_for(setting.seed, "epoch", round_index, epoch)
        for batch in self.round_source(setting, tasks).batches(setting.train.batch_size, shuffle=True,
                                                               seed=seed):
            yield (batch,)

    def extra(self, setting: Setting, state: StrategyState) -> Any:
        return None

    def end_round(self, setting: Setting, state: StrategyState, trainable: YieldModel,
                  tasks: Sequence[int], round_index: int) -> StrategyState:
        return state

    def predictors(self, setting: Setting, state: StrategyState, trainable: YieldModel,
                   n_tasks: int) -> list[tuple[Members, list[int]]]:
        """Which trainable halves predict which tasks: each entry's tasks are predicted by the mean of
        its members' predictions (default: the current half alone predicts all)."""
        return [((trainable,), list(range(n_tasks)))]


def task_slot(task: int) -> str:
    """The key of a per-task pytree in `StrategyState.arrays` (`adapters`, `replay-snapshot`)."""
    return f"task_{task:04d}"


def per_task_like(setting: Setting, rounds_done: int) -> dict[str, Any]:
    """The shapes of one trainable half per task learned in `rounds_done` one-task rounds (`state_like`
    of the strategies that keep one, restored into `task_slot` keys)."""
    return {task_slot(task): setting.initial for task in range(rounds_done)}


def learned_and_unseen(state: StrategyState, n_tasks: int) -> tuple[list[int], list[int]]:
    """The tasks with a trainable half of their own in `state` (`task_slot`), and those without."""
    learned = [task for task in range(n_tasks) if task_slot(task) in state.arrays]
    return learned, [task for task in range(n_tasks) if task_slot(task) not in state.arrays]


def seed_for(*parts: int | str) -> int:
    """A seed determined by `parts` alone (run seed, round, epoch, purpose), never by process state."""
    words = [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) & 0xFFFFFFFF for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def copy_tree(tree: Any) -> Any:
    """The same pytree with fresh array buffers (safe to keep while the original is donated)."""
    return jax.tree.map(lambda x: jnp.array(x, copy=True) if eqx.is_array(x) else x, tree)


def widen(batch: Any, width: int) -> Any:
    """`batch` with its token axis zero-padded to `width` (padding is masked out everywhere)."""

    def pad(x: np.ndarray) -> np.ndarray:
        if x.shape[1] >= width:
            return x
        return np.pad(x, [(0, 0), (0, width - x.shape[1])] + [(0, 0)] * (x.ndim - 2))

    return batch._replace(**{name: pad(np.asarray(x)) for name, x in batch._asdict().items()
                             if name in TOKEN_AXIS_FIELDS and x is not None})


def stand_in(batch: Any, rows: int) -> Any:
    """A weight-0 batch of `rows` rows, repeats of `batch`'s (and its molecule table as it is): it adds
    nothing to a loss, and has the shape a batch of `rows` reactions would have, so a step that
    takes it compiles no new program."""
    take = np.arange(rows) % len(batch.weight)
    each_row, table = split_table(batch)
    tiled = each_row._replace(**{name: np.asarray(x)[take] for name, x in each_row._asdict().items()
                                 if x is not None})
    return with_table(tiled._replace(weight=np.zeros_like(tiled.weight)), table)


def endless(source: BatchSource, batch_size: int, seed: int) -> Iterator[Any]:
    """Shuffled batches of `source` without end: a new seeded order every pass."""
    for cycle in range(1 << 62):
        yield from source.batches(batch_size, shuffle=True, seed=seed_for(seed, cycle))


def paired_with_memory(setting: Setting, current: Steps, memory: np.ndarray, round_index: int,
                       epoch: int, size: int | None = None, targets: np.ndarray | None = None) -> Steps:
    """`(current, remembered)` pairs: each current batch with the next batch of `size` reactions of
    the memory (default: the current batch's size; `targets`, one per memory position, replace their
    yields), cycled in a seeded order, both padded to the wider of the two (so only one shape per
    bucket compiles). With an empty memory (the first round) the second batch is `size` repeats of the
    current one's rows with weight 0: it adds nothing, and the step has the shape of the later rounds'
    steps, so it compiles once for the whole stream."""
    size = size or setting.train.batch_size
    remembered = (endless(setting.pool.source(memory, targets), size, seed_for(setting.seed, "memory",
                                                                          round_index, epoch))
                  if len(memory) else None)
    for (batch,) in current:
        if remembered is None:
            yield batch, stand_in(batch, size)
            continue
        other = next(remembered)
        width = max(batch.mask.shape[1], other.mask.shape[1])
        yield match_parts(widen(batch, width), widen(other, width))
