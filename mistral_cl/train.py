"""Losses, the one jitted train step, evaluation, and the plain fit loop.

Every trainer in the project (plain fitting, each continual-learning strategy, the benchmarks) builds
its step with `make_train_step`, so precision, gradient clipping, donation and sharding are decided in
one place. A strategy changes *what* is minimised (an `Objective`) and, rarely, how gradients are
combined (a `GradientTransform`), never the step itself.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
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
from mistral_cl.head import point_prediction
from mistral_cl.predictor import YieldModel, cast_floating

LossKind = Literal["mse", "huber"]
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; `learning_rate` is the peak of a warm-up + cosine schedule."""

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    optimizer: Literal["adamw", "adafactor"] = "adamw"
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
        if self.loss not in ("mse", "huber"):
            raise InputError(f"unknown loss {self.loss!r}; choose mse or huber")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise InputError(f"unknown compute dtype {self.compute_dtype!r}; choose {sorted(COMPUTE_DTYPES)}")
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise InputError(f"EMA decay must be in (0, 1), got {self.ema}", hint="e.g. --ema 0.999")


def make_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Gradient clipping, then AdamW (default) or Adafactor, on a warm-up + cosine schedule."""
    warmup = max(1, int(config.warmup_fraction * total_steps))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, warmup, max(total_steps, warmup + 1), end_value=0.01 * config.learning_rate
    )
    if config.optimizer == "adamw":
        update = optax.adamw(schedule, weight_decay=config.weight_decay)
    else:
        update = optax.adafactor(schedule, weight_decay_rate=config.weight_decay or None)
    parts = [optax.clip_by_global_norm(config.clip_norm)] if config.clip_norm else []
    return optax.chain(*parts, update)


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


class BatchSource(Protocol):
    """Reactions that serve themselves as fixed-shape batches: `EncodedReactions` (token ids) or
    `features.CachedFeatures` (frozen backbone outputs, for head-only training)."""

    def __len__(self) -> int: ...

    def batches(self, batch_size: int, *, shuffle: bool, seed: int = 0) -> Iterator[Any]: ...

    def count_batches(self, batch_size: int) -> int: ...


def forward(model: YieldModel, batch: Any, *, key: PRNGKeyArray | None = None
            ) -> Float[Array, "*members batch"]:
    """Predicted yields for a batch of token ids, or of cached backbone features (head mode); one row
    per member for a head ensemble (`head.point_prediction` averages them)."""
    return model.head(head_inputs(model, batch), batch.mask, key=key)


def head_inputs(model: YieldModel, batch: Any) -> Float[Array, "batch seq dim"]:
    """The token states the head reads: a batch's cached backbone features (head mode), or the
    backbone's hidden states for its token ids (`YieldModel.features`)."""
    features = getattr(batch, "features", None)
    return features if features is not None else model.features(batch.tokens, batch.mask)


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


@eqx.filter_jit
def predict_batch(model: YieldModel, batch: Batch) -> Float[Array, " batch"]:
    """Predicted yields for one batch, without dropout (an ensemble's mean)."""
    return point_prediction(forward(model, batch))


def _feeder(mesh: Mesh | None, batch_size: int) -> Callable[[Any], Any]:
    """How a host batch enters a step: as is, or as global arrays split over the mesh, each process
    passing only its own rows."""
    if mesh is None:
        return lambda batch: batch
    rows = sharding.process_rows(batch_size, mesh)
    return lambda batch: sharding.place_batch(jax.tree.map(lambda x: x[rows], batch), mesh)


def predict(model: YieldModel, data: BatchSource, batch_size: int = 64, *, mesh: Mesh | None = None
            ) -> np.ndarray:
    """Predicted yields for every reaction of `data`, in `data`'s order (on every process)."""
    out = np.zeros(len(data), np.float32)
    feed = _feeder(mesh, batch_size)
    for batch in data.batches(batch_size, shuffle=False):
        pred = np.asarray(sharding.to_host(predict_batch(model, feed(batch))))
        real = np.asarray(batch.weight) > 0
        out[np.asarray(batch.index)[real]] = pred[real]
    return out


@eqx.filter_jit
def _pooled_batch(model: YieldModel, batch: Any) -> Array:
    return model.head.pooled(head_inputs(model, batch), batch.mask)


def standardize_head(model: YieldModel, data: BatchSource, *, max_reactions: int = 512,
                     batch_size: int = 64, seed: int = 0, mesh: Mesh | None = None) -> YieldModel:
    """`model` with its head's pooled-vector standardiser set from up to `max_reactions` reactions of
    `data` (a seeded sample), see `MHARHead.standardized`. A head without one is returned as is.

    This is part of initialising a model for training, done once before its first step.
    """
    if not model.head.standardizes:
        return model
    feed, parts, count = _feeder(mesh, batch_size), [], 0
    for batch in data.batches(batch_size, shuffle=True, seed=seed):
        pooled = np.asarray(sharding.to_host(_pooled_batch(model, feed(batch))))
        real = np.asarray(batch.weight) > 0
        parts.append(pooled[..., real, :])
        count += int(real.sum())
        if count >= max_reactions:
            break
    if count < 2:
        raise InputError("too few training reactions to standardise the head (need 2)",
                         hint="add reactions, or pass --no-head-standardize")
    vectors = jnp.concatenate(parts, -2)
    if mesh is not None:  # so the standardiser comes out replicated over the mesh, as its spec says
        vectors = sharding.replicate(vectors, mesh)
    return eqx.tree_at(lambda m: m.head, model, model.head.standardized(vectors))


@jax.jit
def ema_update(average: Any, current: Any, decay: Scalar) -> Any:
    """One step of an exponential moving average of the trainable half (all its leaves are float arrays)."""
    return jax.tree.map(lambda a, c: decay * a + (1.0 - decay) * c.astype(a.dtype), average, current)


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
    on_epoch_end: Callable[[int, YieldModel], dict[str, float] | None] | None = None,
    mesh: Mesh | None = None,
) -> FitResult:
    """Trains `model` on `data` for `config.epochs` epochs; returns the trained model and loss history.

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
    if mesh is None:
        opt_state = optimizer.init(eqx.filter(trainable, eqx.is_array))
    else:
        opt_state = sharding.sharded_opt_init(optimizer, trainable, mesh)
    feed = _feeder(mesh, config.batch_size)
    # The average has buffers of its own: the step donates (reuses) the trainable half's.
    average = None if config.ema is None else jax.tree.map(jnp.copy, trainable)
    key = jax.random.key(config.seed)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    bar = tqdm(total=config.epochs * steps_per_epoch, desc=description, disable=not progress,
               unit="step", dynamic_ncols=True, leave=False)
    n_step = 0
    for epoch in range(config.epochs):
        losses, reactions, tokens, t0 = [], 0, 0, time.perf_counter()
        for batch in data.batches(config.batch_size, shuffle=True, seed=config.seed * 100_003 + epoch):
            trainable, opt_state, metrics = step(
                trainable, frozen, opt_state, (feed(batch),), jax.random.fold_in(key, n_step), None
            )
            n_step += 1
            if average is not None:
                average = ema_update(average, trainable, config.ema)
            losses.append(metrics["loss"])
            reactions += int(np.sum(batch.weight))
            tokens += int(np.sum(batch.mask))
            bar.update()
            if n_step % 10 == 0:
                elapsed = max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{float(metrics['loss']):.4f}", rxn_s=f"{reactions / elapsed:.0f}")
        record = {"epoch": epoch + 1, "loss": float(np.mean(jax.device_get(losses))),
                  "seconds": time.perf_counter() - t0, "tokens": tokens}
        if on_epoch_end is not None:
            current = trainable if average is None else average
            record.update(on_epoch_end(epoch, eqx.combine(current, frozen)) or {})
        history.append(record)
    bar.close()
    final = trainable if average is None else average
    return FitResult(eqx.combine(final, frozen), opt_state, history, time.perf_counter() - start)
