"""`replay`, `replay-avg-grad` and `replay-snapshot`: experience replay from a memory of past tasks'
reactions.

As in the seed paper, every step pairs a batch of the current task with a batch drawn from the memory
(`--memory all | reservoir:N | quota:N`, see `buffer.py`) and minimises the **sum** of the two losses.
`replay-avg-grad` averages the two gradients instead, i.e. minimises their mean: under Adam the two
differ only where gradient clipping or Adam's epsilon see the factor of two. The first task has no
memory; its second batch is a weight-0 stand-in of the remembered batch's size (repeats of the
current rows) and adds nothing. Every mode makes sense.

A remembered batch holds 64 reactions by default (`replay:memory_batch=N`; 0 gives it the current
batch's size), four times the continual demo's batch of 16. Its loss is still a mean, so the
two halves of the sum weigh what they weigh in the paper; the larger batch only estimates the memory's
loss better. On seed 2 of the benchmark, ACC rose from 0.423 (16) to 0.484 (32) and 0.513 (64),
against 0.509 for `joint`, and BWT from -0.079 to -0.027 (benchmarks/README.md has all seeds). A
likely reason, not tested further: 16 remembered reactions spread over up to 14 tasks, about one each,
so the remembered half of a step was a noisy estimate beside the current task's 16.

The paper's sum gives the current task half of every step however many tasks the memory holds, so
with 15 tasks the newest one weighs as much as the 14 before it together. `replay:weight=tasks` weighs
the remembered batch by the number of tasks in the memory, k, so that every task seen so far counts
the same, as in joint training: loss = 2 (current + k remembered) / (1 + k). The factor 2 / (1 + k)
keeps the total weight of the paper's sum (k = 1 is the paper's loss), so gradient clipping sees the
same scale. `weight=W` (a number) fixes k = W.

`replay:epochs=N` trains every round for N epochs instead of the run's (`--epochs`), so that one run
can hold `replay` at the demo's length beside a longer one, such as the benchmark's
`replay:weight=tasks:epochs=40` (docs/research-notes.md has the figures).

`replay:distill=A` replays remembered reactions against a blend of their measured yields and what the
model predicted for them when their task had just been learned: target = A * prediction + (1 - A) *
yield. This is dark experience replay (DER++, Buzzega et al., NeurIPS 2020) for a regression head:
with squared error, DER++'s two memory terms a (f - p)^2 + b (f - y)^2 equal (a + b) (f - t)^2 up to a
constant, with t = (a p + b y) / (a + b), so one loss on blended targets is the same objective (exactly
for `--loss mse`; with Huber it is the blend's own loss). The predictions are those of the model at the
end of the task's round, on all of that task's training reactions (the memory keeps the ones of the
reactions it keeps); they anchor the remembered tasks to the function that was fitted on every one of
their reactions, not only on the few a bounded memory keeps. Settling epochs use measured yields.

`replay:settle=E` ends every round with E settling epochs: their steps draw *both* batches from every
task seen so far (the memory and the current task alike), in the later, lower-lr part of the round's
cosine schedule. The round still learns its task at full weight first, but its last updates see a balanced
mixture instead of the newest task, the recency bias that balanced fine-tuning (Castro et al.,
End-to-End Incremental Learning, 2018) removes in classification. Settling epochs keep the round's
step count and the step itself, so nothing recompiles. E >= epochs makes every epoch a settling one.

`replay-snapshot` trains exactly as `replay` (with every setting above) and also keeps, for every
task, the trainable half as it was when that task's round ended: its *snapshot*. A learned task is
predicted by the mean of its snapshot's prediction and the current half's; a task not learned yet by
the current half alone. The two disagree in useful ways: the snapshot was fitted on every training
reaction of the task, the current half on only the few a bounded memory keeps but on every later
task too, and averaging the two cancels part of each one's error, as a two-member ensemble does. It
is **task-aware** (prediction needs the task, as `adapters`' does) and it stores one trainable half
per task besides the memory: a head per task in `head` mode, an adapter and head in `lora` mode, a
whole model in `full` mode (costly for large backbones). Training is untouched, so its training
scores and compute are `replay`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from mistral_cl.continual.buffer import ReplayMemory
from mistral_cl.continual.strategies.base import (
    Members,
    Setting,
    Steps,
    Strategy,
    StrategyState,
    copy_tree,
    endless,
    learned_and_unseen,
    paired_with_memory,
    per_task_like,
    seed_for,
    task_slot,
)
from mistral_cl.errors import InputError
from mistral_cl.inference import forward, predict
from mistral_cl.predictor import YieldModel
from mistral_cl.train import Objective, regression_loss


def memory_of(state: StrategyState) -> ReplayMemory:
    return ReplayMemory.from_json(state.values["memory"])


@dataclasses.dataclass(frozen=True)
class Rehearsal(Strategy):
    """What `replay` and `agem` share: a memory of past tasks' training reactions (`--memory`), updated
    after every round, and steps that pair each current batch with a remembered one. How the
    remembered batch is used is each subclass's own."""

    stores_data: ClassVar[bool] = True
    memory_batch: int = 0  # reactions in a remembered batch; 0: as many as in a current one

    def __post_init__(self) -> None:
        if self.memory_batch < 0:
            raise InputError(f"{self.name}: memory_batch must be a number of reactions >= 0 (0: the "
                             f"batch size), got {self.memory_batch}",
                             hint=f"e.g. `continual.strategies={self.name}:memory_batch=64`")

    def initial_state(self, setting: Setting) -> StrategyState:
        return StrategyState(values={"memory": ReplayMemory(setting.memory).to_json()})

    def steps(self, setting: Setting, state: StrategyState, tasks: Sequence[int], round_index: int,
              epoch: int) -> Steps:
        current = super().steps(setting, state, tasks, round_index, epoch)
        positions = memory_of(state).positions
        return paired_with_memory(setting, current, positions, round_index, epoch, self.memory_batch,
                                  self.remembered_targets(setting, state, positions))

    def remembered_targets(self, setting: Setting, state: StrategyState,
                           positions: np.ndarray) -> np.ndarray | None:
        """The targets of the remembered reactions at `positions` (None: their measured yields)."""
        return None

    def end_round(self, setting: Setting, state: StrategyState, trainable: YieldModel,
                  tasks: Sequence[int], round_index: int) -> StrategyState:
        memory = memory_of(state)
        for task in tasks:
            rng = np.random.default_rng(seed_for(setting.seed, "memory", task))
            memory = memory.add_task(setting.pool.train[task], rng)
        return dataclasses.replace(state, values={**state.values, "memory": memory.to_json()})


@dataclasses.dataclass(frozen=True)
class Replay(Rehearsal):
    """Current batch + remembered batch per step; loss = sum of their regression losses, the
    remembered one weighted by `weight` ("1", the paper's sum; "tasks"; or a positive number). A
    remembered batch holds `memory_batch` reactions, 64 by default (see the module docstring)."""

    name: ClassVar[str] = "replay"
    average: ClassVar[bool] = False
    memory_batch: int = 64
    weight: str = "1"
    settle: int = 0
    epochs: str = "run"
    distill: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.distill <= 1.0:
            raise InputError(f"{self.name}: distill must be a share between 0 and 1, got {self.distill}",
                             hint=f"e.g. `continual.strategies={self.name}:distill=0.5`")
        if self.epochs != "run" and not (self.epochs.isdigit() and int(self.epochs) > 0):
            raise InputError(f"{self.name}: epochs must be run or a positive number, got {self.epochs!r}",
                             hint=f"e.g. `continual.strategies={self.name}:epochs=40`")
        if self.settle < 0:
            raise InputError(f"{self.name}: settle must be a number of epochs >= 0, got {self.settle}",
                             hint=f"e.g. `continual.strategies={self.name}:settle=3`")
        if self.weight != "tasks":
            try:
                valid = float(self.weight) > 0
            except ValueError:
                valid = False
            if not valid:
                raise InputError(f"{self.name}: weight must be 'tasks' or a positive number, got "
                                 f"{self.weight!r}",
                                 hint=f"e.g. `continual.strategies={self.name}:weight=tasks`")

    def round_epochs(self, setting: Setting, tasks: Sequence[int]) -> int:
        return setting.train.epochs if self.epochs == "run" else int(self.epochs)

    def steps(self, setting: Setting, state: StrategyState, tasks: Sequence[int], round_index: int,
              epoch: int) -> Steps:
        if epoch < self.round_epochs(setting, tasks) - self.settle:
            yield from super().steps(setting, state, tasks, round_index, epoch)
            return
        # A settling epoch: as many steps as a plain one, both batches drawn from every task seen.
        size = setting.train.batch_size
        seen = np.concatenate([memory_of(state).positions, setting.pool.train_positions(tasks)])
        count = self.round_source(setting, tasks).count_batches(size)
        draws = endless(setting.pool.source(seen), size, seed_for(setting.seed, "settle", round_index, epoch))
        yield from paired_with_memory(setting, ((next(draws),) for _ in range(count)), seen, round_index,
                                      epoch, self.memory_batch)

    def remembered_targets(self, setting: Setting, state: StrategyState,
                           positions: np.ndarray) -> np.ndarray | None:
        if not self.distill or not len(positions):  # the first round has no memory
            return None
        # `predicted` holds one prediction per memory position, in the memory's order.
        predicted = np.asarray(state.values["predicted"], np.float32)
        measured = setting.pool.encoded.yields[positions]
        return self.distill * predicted + (1.0 - self.distill) * measured

    def end_round(self, setting: Setting, state: StrategyState, trainable: YieldModel,
                  tasks: Sequence[int], round_index: int) -> StrategyState:
        if not self.distill:
            return super().end_round(setting, state, trainable, tasks, round_index)
        earlier = dict(zip(memory_of(state).positions.tolist(), state.values.get("predicted", []),
                           strict=True))
        state = super().end_round(setting, state, trainable, tasks, round_index)
        # What the model predicts for the round's training reactions now, kept for those the memory
        # keeps (a reservoir may drop older ones, whose predictions go with them).
        learned = setting.pool.train_positions(tasks)
        now = predict(setting.model(trainable), setting.pool.source(learned), 128, mesh=setting.mesh)
        table = {**earlier, **dict(zip(learned.tolist(), np.asarray(now, np.float64).tolist(), strict=True))}
        kept = [table[p] for p in memory_of(state).positions.tolist()]
        return dataclasses.replace(state, values={**state.values, "predicted": kept})

    def memory_weight(self, setting: Setting, memory: ReplayMemory) -> float:
        """k, the weight of the remembered batch relative to the current one."""
        if self.weight != "tasks":
            return float(self.weight)
        return max(1, len(np.unique(setting.pool.encoded.task[memory.positions])))

    def objective(self, setting: Setting) -> Objective:
        kind, delta = setting.train.loss, setting.train.huber_delta
        scale = 0.5 if self.average else 1.0

        def objective(model, batches, key, k):
            current, remembered = (
                regression_loss(forward(model, batch, key=subkey), batch.yields, batch.weight, kind, delta)
                for batch, subkey in zip(batches, jax.random.split(key), strict=True))
            loss = scale * 2.0 * (current + k * remembered) / (1.0 + k)
            return loss, {"loss": loss, "current_loss": current, "replay_loss": remembered}

        return objective

    def extra(self, setting: Setting, state: StrategyState) -> jax.Array:
        return jnp.float32(self.memory_weight(setting, memory_of(state)))


@dataclasses.dataclass(frozen=True)
class AveragedReplay(Replay):
    """Like `replay`, with the mean of the two losses (the average of their gradients)."""

    name: ClassVar[str] = "replay-avg-grad"
    average: ClassVar[bool] = True


@dataclasses.dataclass(frozen=True)
class SnapshotReplay(Replay):
    """`replay` that predicts a learned task with the mean of the current trainable half and the one
    saved when that task's round ended (see the module docstring); task-aware."""

    name: ClassVar[str] = "replay-snapshot"
    task_aware: ClassVar[bool] = True

    def state_like(self, setting: Setting, rounds_done: int) -> dict[str, Any]:
        return per_task_like(setting, rounds_done)

    def end_round(self, setting: Setting, state: StrategyState, trainable: YieldModel,
                  tasks: Sequence[int], round_index: int) -> StrategyState:
        state = super().end_round(setting, state, trainable, tasks, round_index)
        snapshots = {task_slot(task): copy_tree(trainable) for task in tasks}
        return dataclasses.replace(state, arrays={**state.arrays, **snapshots})

    def predictors(self, setting: Setting, state: StrategyState, trainable: YieldModel,
                   n_tasks: int) -> list[tuple[Members, list[int]]]:
        learned, unseen = learned_and_unseen(state, n_tasks)
        groups = [((state.arrays[task_slot(task)], trainable), [task]) for task in learned]
        return groups + ([((trainable,), unseen)] if unseen else [])
