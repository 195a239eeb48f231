"""Losses, the one jitted train step, and the one epoch loop.

Every trainer in the project (`fit`, each round of every continual-learning strategy, the benchmarks)
builds its step with `make_train_step` and runs it with `train_epochs`, so precision, gradient
clipping, donation, sharding, mesh feeding, the moving average of the weights and progress reporting
are decided in one place. A strategy changes *what* is minimised (an `Objective`), rarely how
gradients are combined (a `GradientTransform`), and which batches each step sees (its step inputs),
never the step or the loop. Prediction lives in `inference.py`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal, Protocol

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jaxtyping import Array, Float, PRNGKeyArray, Scalar
from tqdm.auto import tqdm

import sharding
from mistral_cl.data.batching import Batch
from mistral_cl.errors import InputError
from mistral_cl.inference import BatchSource, forward, pooled_batch
from mistral_cl.predictor import YieldModel, cast_floating

LossKind = Literal["mse", "huber"]
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. `schedule`: `cosine` (default), a warm-up to the peak `learning_rate` and
    a cosine decay to 1 % of it over the run; `constant`, `learning_rate` at every step (no warm-up)."""

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    optimizer: Literal["adamw", "adafactor"] = "adamw"
    schedule: Literal["cosine", "constant"] = "cosine"
    clip_norm: float | None = 1.0
    loss: LossKind = "mse"
    huber_delta: float = 0.1
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    seed: int = 0
    ema: float | None = None  # decay of an exponential moving average of the weights, used at the end

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.batch_size <= 0:
            raise InputError(f"epochs and batch size must be positive, got {self.epochs}, {self.batch_size}")
        if self.learning_rate <= 0:
            raise InputError(f"learning rate must be positive, got {self.learning_rate}")
        if self.optimizer not in ("adamw", "adafactor"):
            raise InputError(f"unknown optimizer {self.optimizer!r}; choose adamw or adafactor")
        if self.schedule not in ("cosine", "constant"):
            raise InputError(f"unknown learning-rate schedule {self.schedule!r}; choose cosine or constant "
                             f"(`train.schedule`)")
        if self.loss not in ("mse", "huber"):
            raise InputError(f"unknown loss {self.loss!r}; choose mse or huber")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise InputError(f"unknown compute dtype {self.compute_dtype!r}; choose {sorted(COMPUTE_DTYPES)}")
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise InputError(f"EMA decay must be in (0, 1), got {self.ema}", hint="e.g. `train.ema=0.999`")


def make_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Gradient clipping, then AdamW (default) or Adafactor, on the learning-rate schedule of `config`
    (a cosine schedule spans `total_steps`)."""
    schedule = learning_rate_schedule(config, total_steps)
    if config.optimizer == "adamw":
        update = optax.adamw(schedule, weight_decay=config.weight_decay)
    else:
        update = adafactor(schedule, config.weight_decay)
    parts = [optax.clip_by_global_norm(config.clip_norm)] if config.clip_norm else []
    return optax.chain(*parts, update)


def adafactor(schedule: optax.ScalarOrSchedule, weight_decay: float) -> optax.GradientTransformation:
    """Adafactor with optax's defaults (factored second moments, update clipping at block RMS 1, steps
    relative to each parameter's RMS), its weight decay applied through the learning rate as AdamW
    applies it: a step shrinks the weights by lr * weight_decay.

    `optax.adafactor(weight_decay_rate=...)` adds the decay after the learning rate, so the same 0.01
    would shrink every weight by 1 % a step whatever the rate: a thousand times AdamW's decay at lr
    1e-3, enough to hold a whole continual run at its initial predictions.
    """
    return optax.chain(
        optax.scale_by_factored_rms(),
        optax.clip_by_block_rms(1.0),
        optax.scale_by_param_block_rms(),
        *([optax.add_decayed_weights(weight_decay)] if weight_decay else []),
        optax.scale_by_learning_rate(schedule),
    )


def learning_rate_schedule(config: TrainConfig, total_steps: int) -> optax.Schedule:
    """The learning rate of every step: constant, or a warm-up + cosine decay over `total_steps`."""
    if config.schedule == "constant":
        return optax.constant_schedule(config.learning_rate)
    warmup = max(1, int(config.warmup_fraction * total_steps))
    return optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, warmup, max(total_steps, warmup + 1), end_value=0.01 * config.learning_rate
    )


def regression_loss(
    pred: Float[Array, " batch"],
    target: Float[Array, " batch"],
    weight: Float[Array, " batch"],
    kind: LossKind = "mse",
    delta: float = 0.1,
) -> Scalar:
    """Weighted mean of squared (or Huber) errors; rows with weight 0 (batch filler) do not count.

    `pred` may carry a leading axis of head-ensemble members: each member's loss, averaged.
    """
    err = pred.astype(jnp.float32) - target.astype(jnp.float32)
    per_row = jnp.square(err) if kind == "mse" else 2.0 * optax.huber_loss(err, delta=delta)
    per_row = per_row.reshape(-1, *weight.shape).mean(axis=0)
    return jnp.sum(per_row * weight) / jnp.maximum(jnp.sum(weight), 1.0)


class Objective(Protocol):
    """What a step minimises: `(model, batches, key, extra) -> (loss, metrics)`.

    `batches` is a tuple (the current batch, then e.g. a replay batch); `extra` is strategy state that
    the step reads but does not train (a previous model, a Fisher diagonal, ...).
    """

    def __call__(
        self, model: YieldModel, batches: tuple[Batch, ...], key: PRNGKeyArray, extra: Any
    ) -> tuple[Scalar, dict[str, Array]]: ...


GradientTransform = Callable[..., Any]


def supervised_objective(kind: LossKind = "mse", delta: float = 0.1) -> Objective:
    """The regression loss on the first batch of the tuple."""

    def objective(model, batches, key, extra):
        batch = batches[0]
        pred = forward(model, batch, key=key)
        loss = regression_loss(pred, batch.yields, batch.weight, kind, delta)
        return loss, {"loss": loss}

    return objective


def make_train_step(
    optimizer: optax.GradientTransformation,
    objective: Objective,
    *,
    compute_dtype: str = "float32",
    grad_transform: GradientTransform | None = None,
    constrain: Callable[[Any], Any] | None = None,
):
    """The jitted step `(trainable, frozen, opt_state, batches, key, extra)` -> `(trainable, opt_state,
    metrics)`.

    `trainable`/`frozen` are the two halves of `eqx.partition(model, trainable_filter(...))`. The
    trainable half and the optimizer state are donated, so their buffers are reused in place.
    `grad_transform(grads, trainable, frozen, batches, key, extra)` may rewrite gradients (A-GEM);
    `constrain` pins the sharding of the updated state (see `sharding.specs`).
    """
    dtype = COMPUTE_DTYPES[compute_dtype]

    def loss_of(trainable, frozen, batches, key, extra):
        model = cast_floating(eqx.combine(trainable, frozen), dtype)
        return objective(model, batches, key, extra)

    def step(trainable, frozen, opt_state, batches, key, extra):
        (_, metrics), grads = eqx.filter_value_and_grad(loss_of, has_aux=True)(
            trainable, frozen, batches, key, extra
        )
        if grad_transform is not None:
            grads = grad_transform(grads, trainable, frozen, batches, key, extra)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(trainable, eqx.is_array))
        trainable = eqx.apply_updates(trainable, updates)
        if constrain is not None:
            trainable, opt_state = constrain((trainable, opt_state))
        metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
        return trainable, opt_state, metrics

    # Every leaf of every argument is an array (modules keep their configuration as static fields), so
    # plain `jax.jit` applies and donation can be limited to the trainable half and optimizer state.
    return jax.jit(step, donate_argnums=(0, 2))


def standardize_head(model: YieldModel, data: BatchSource, *, max_reactions: int = 512,
                     batch_size: int = 64, seed: int = 0, mesh: Mesh | None = None) -> YieldModel:
    """`model` with its head's pooled-vector standardiser set from up to `max_reactions` reactions of
    `data` (a seeded sample), see `MHARHead.standardized`. A head without one is returned as is.

    This is part of initialising a model for training, done once before its first step.
    """
    if not model.head.standardizes:
        return model
    parts, count = [], 0
    for batch in data.batches(batch_size, shuffle=True, seed=seed):
        pooled = np.asarray(sharding.to_host(pooled_batch(model, sharding.feed(batch, mesh))))
        real = np.asarray(batch.weight) > 0
        parts.append(pooled[..., real, :])
        count += int(real.sum())
        if count >= max_reactions:
            break
    if count < 2:
        raise InputError("too few training reactions to standardise the head (need 2)",
                         hint="add reactions, or set `head.standardize=False`")
    vectors = jnp.concatenate(parts, -2)
    if mesh is not None:  # so the standardiser comes out replicated over the mesh, as its spec says
        vectors = sharding.replicate(vectors, mesh)
    return eqx.tree_at(lambda m: m.head, model, model.head.standardized(vectors))


@jax.jit
def ema_update(average: Any, current: Any, decay: Scalar) -> Any:
    """One step of an exponential moving average of the trainable half (all its leaves are float arrays)."""
    return jax.tree.map(lambda a, c: decay * a + (1.0 - decay) * c.astype(a.dtype), average, current)




def init_opt_state(optimizer: optax.GradientTransformation, trainable: Any, mesh: Mesh | None) -> Any:
    """The optimizer state of `trainable`, each moment in its parameter's layout on `mesh`."""
    if mesh is None:
        return optimizer.init(eqx.filter(trainable, eqx.is_array))
    return sharding.sharded_opt_init(optimizer, trainable, mesh)


StepInputs = tuple[Any, ...]  # the batches of one step: the current batch, then e.g. a remembered one
EpochHook = Callable[[int, YieldModel], dict[str, float] | None]


@dataclasses.dataclass
class LoopResult:
    """What `train_epochs` leaves: the trainable half (the moving average with `ema`), the optimizer
    state, and one record per epoch: mean loss, seconds, steps, reactions and tokens of the current
    batches, and `processed`, the reactions of every batch of the steps (the current and, e.g., the
    remembered ones: each went forward and backward), counted from the batches' weights."""

    trainable: Any
    opt_state: Any
    history: list[dict[str, float]]


def train_epochs(
    step: Callable,
    trainable: Any,
    frozen: Any,
    opt_state: Any,
    epoch_inputs: Callable[[int], Iterable[StepInputs]],
    *,
    epochs: int,
    key: jax.Array,
    extra: Any = None,
    ema: float | None = None,
    mesh: Mesh | None = None,
    bar: tqdm | None = None,
    on_epoch_end: EpochHook | None = None,
) -> LoopResult:
    """THE training loop: `epochs` passes of `step` over `epoch_inputs(epoch)`.

    `step` is a `make_train_step` step; `epoch_inputs(epoch)` yields one tuple of host batches per step
    (`fit` yields `(batch,)`, a strategy whatever its steps need). On a `mesh` every batch is fed as
    global arrays split over the batch axes, each process passing its own rows (`sharding.feed`);
    `extra` must already be placed (`sharding.place_state`). Step n draws its randomness from
    `fold_in(key, n)`, so the loop is deterministic given its inputs. With `ema`, a moving average of
    the trainable half is kept in buffers of its own (the step donates the trainable half's) and is
    what the loop returns. `bar` is advanced once per step (a progress bar shared by a longer job);
    `on_epoch_end(epoch, model)` may add entries to the epoch's record.
    """
    average = None if ema is None else jax.tree.map(jnp.copy, trainable)
    history: list[dict[str, float]] = []
    n_step = 0
    for epoch in range(epochs):
        losses, reactions, processed, tokens, t0 = [], 0, 0, 0, time.perf_counter()
        for inputs in epoch_inputs(epoch):
            trainable, opt_state, metrics = step(trainable, frozen, opt_state, sharding.feed(inputs, mesh),
                                                 jax.random.fold_in(key, n_step), extra)
            n_step += 1
            if average is not None:
                average = ema_update(average, trainable, ema)
            losses.append(metrics["loss"])
            reactions += int(np.sum(inputs[0].weight))
            processed += int(sum(np.sum(batch.weight) for batch in inputs))
            tokens += int(np.sum(inputs[0].mask))
            if bar is not None:
                bar.update()
                if n_step % 10 == 0:
                    elapsed = max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix(loss=f"{float(metrics['loss']):.4f}", rxn_s=f"{reactions / elapsed:.0f}")
        record = {"epoch": epoch + 1, "loss": float(np.mean(jax.device_get(losses))) if losses else np.nan,
                  "seconds": time.perf_counter() - t0, "steps": len(losses), "reactions": reactions,
                  "processed": processed, "tokens": tokens}
        if on_epoch_end is not None:
            current = trainable if average is None else average
            record.update(on_epoch_end(epoch, eqx.combine(current, frozen)) or {})
        history.append(record)
    return LoopResult(trainable if average is None else average, opt_state, history)


@dataclasses.dataclass
class FitResult:
    model: YieldModel
    opt_state: Any
    history: list[dict[str, float]]
    seconds: float


def fit(
    model: YieldModel,
    filter_spec: Any,
    data: BatchSource,
    config: TrainConfig,
    *,
    objective: Objective | None = None,
    progress: bool = True,
    description: str = "train",
    on_epoch_end: EpochHook | None = None,
    mesh: Mesh | None = None,
) -> FitResult:
    """Trains `model` on `data` for `config.epochs` epochs of `train_epochs`; returns the trained model
    and loss history.

    With a `mesh`, the model (already placed, see `sharding.sharded_init`), the optimizer state and
    every batch are sharded by `sharding.specs`, and the step keeps that layout.
    """
    if len(data) == 0:
        raise InputError("no training reactions", hint="check the data file and the task selection")
    steps_per_epoch = data.count_batches(config.batch_size)
    optimizer = make_optimizer(config, config.epochs * steps_per_epoch)
    objective = objective or supervised_objective(config.loss, config.huber_delta)
    step = make_train_step(optimizer, objective, compute_dtype=config.compute_dtype,
                           constrain=None if mesh is None else sharding.state_constraint(mesh))
    trainable, frozen = eqx.partition(model, filter_spec)
    opt_state = init_opt_state(optimizer, trainable, mesh)

    def epoch_inputs(epoch: int) -> Iterable[StepInputs]:
        for batch in data.batches(config.batch_size, shuffle=True, seed=config.seed * 100_003 + epoch):
            yield (batch,)

    start = time.perf_counter()
    with tqdm(total=config.epochs * steps_per_epoch, desc=description, disable=not progress, unit="step",
              dynamic_ncols=True, leave=False) as bar:
        result = train_epochs(step, trainable, frozen, opt_state, epoch_inputs, epochs=config.epochs,
                              key=jax.random.key(config.seed), ema=config.ema, mesh=mesh, bar=bar,
                              on_epoch_end=on_epoch_end)
    return FitResult(eqx.combine(result.trainable, frozen), result.opt_state, result.history,
                     time.perf_counter() - start)
