"""Putting arrays onto the mesh: models and optimizer state born sharded, batches fed per process.

How a sharded step runs (no special step builder): the step of `mistral_cl.train.make_train_step` is a
plain `jax.jit`, which lays out its computation from the shardings its arguments already carry. So
1. the model is created with `sharded_init` (or loaded and `place`d), the optimizer state with
   `sharded_opt_init`; both carry the layouts of `sharding.specs`;
2. each batch goes through `place_batch` (every process passes only its own rows);
3. `make_train_step(..., constrain=state_constraint(mesh))` pins the updated trainable half and
   optimizer state to those same layouts, so the donated input buffers are reused for the outputs
   and the layout never drifts from step to step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import equinox as eqx
import jax
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mistral_cl.data.batching import split_table, with_table
from mistral_cl.errors import InputError
from sharding.mesh import BATCH_AXES
from sharding.specs import batch_specs, model_specs, opt_state_specs, shardings, strategy_state_specs

Tree = TypeVar("Tree")


def sharded_init(build: Callable[[], Tree], mesh: Mesh) -> Tree:
    """The model `build()` returns, created directly in its sharded layout.

    `build` (e.g. `lambda: build_yield_model(..., key=key)`) runs under `jit` with the model's
    shardings as outputs, so each device materialises only its own shards: no full copy ever lands
    on one device. Every leaf of the result must be an array (true of `YieldModel`).
    """
    abstract = eqx.filter_eval_shape(build)
    return jax.jit(build, out_shardings=shardings(model_specs(abstract, mesh), mesh))()


def sharded_opt_init(optimizer: optax.GradientTransformation, trainable: Any, mesh: Mesh) -> Any:
    """`optimizer.init` of the trainable half, each moment created in its parameter's layout."""
    params = eqx.filter(trainable, eqx.is_array)
    abstract = jax.eval_shape(optimizer.init, params)
    target = shardings(opt_state_specs(abstract, params, mesh), mesh)
    return jax.jit(optimizer.init, out_shardings=target)(params)


def _put(tree: Tree, target: Any) -> Tree:
    if jax.process_count() == 1:
        return jax.device_put(tree, target)
    # `device_put` only reaches this process's devices; a jitted identity takes every process's
    # (identical) copy and keeps the shards each process owns.
    return jax.jit(lambda x: x, out_shardings=target)(tree)


def place(model: Tree, mesh: Mesh) -> Tree:
    """An existing model (or either half of it), the same on every process, in its sharded layout."""
    return _put(model, shardings(model_specs(model, mesh), mesh))


def replicate(tree: Tree, mesh: Mesh) -> Tree:
    """Every array of `tree` (a key, a small strategy state) copied to all devices of `mesh`."""
    return _put(tree, NamedSharding(mesh, PartitionSpec()))


def place_state(state: Tree, mesh: Mesh | None, trainable: Any = None) -> Tree:
    """A strategy's arrays (or a step's extra inputs, or a PRNG key) in their layout by role on `mesh`
    (`specs.strategy_state_specs`): subtrees shaped like `trainable` (the trainable half) as it is
    laid out, everything else replicated or split like a batch. Unchanged without a mesh."""
    if mesh is None:
        return state
    trainable_specs = None if trainable is None else model_specs(trainable, mesh)
    return _put(state, shardings(strategy_state_specs(state, trainable_specs, mesh), mesh))


def state_constraint(mesh: Mesh) -> Callable[[Any], Any]:
    """The `constrain` hook of `make_train_step`: `(trainable, opt_state)` pinned to their specs.

    The specs are computed from the traced shapes, so one hook serves every mode and optimizer.
    """

    def constrain(state):
        trainable, opt_state = state
        target = shardings((model_specs(trainable), opt_state_specs(opt_state, trainable)), mesh)
        return jax.lax.with_sharding_constraint(state, target)

    return constrain


def _batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def process_rows(global_batch_size: int, mesh: Mesh) -> slice:
    """The rows of a global batch that this process must feed to `place_batch`.

    Processes are laid out along the batch axes in order, so each one owns a contiguous block; a
    process whose devices hold replicas of the whole batch (batch axes inside one process, say a pure
    tensor-parallel mesh across hosts) owns every row.
    """
    n_shards = mesh.shape[BATCH_AXES[0]] * mesh.shape[BATCH_AXES[1]]
    if global_batch_size % n_shards:
        raise InputError(
            f"a batch of {global_batch_size} rows cannot be split over the {n_shards} batch shards "
            f"(mesh data x fsdp = {mesh.shape['data']} x {mesh.shape['fsdp']})",
            hint=f"use a multiple of {n_shards} rows",
        )
    index_map = _batch_sharding(mesh).addressable_devices_indices_map((global_batch_size,))
    rows = sorted({(s[0].start or 0, s[0].stop or global_batch_size) for s in index_map.values()})
    start, stop = rows[0][0], rows[-1][1]
    if sum(b - a for a, b in rows) != stop - start:
        raise InputError(
            "this process's devices hold non-contiguous rows of the batch",
            hint="build the mesh with sharding.make_mesh so each process's devices are adjacent",
        )
    return slice(start, stop)


def place_batch(batch: Tree, mesh: Mesh) -> Tree:
    """Global batch arrays, split over `("data", "fsdp")`, from this process's rows of the batch.

    With one process, `batch` is the whole batch. With several, each passes only
    `batch[process_rows(global_batch_size, mesh)]`; the global batch is every process's rows in
    process order.
    """
    local = jax.tree.leaves(batch)[0].shape[0]
    n_shards = mesh.shape["data"] * mesh.shape["fsdp"]
    mine = process_rows(n_shards, mesh)
    share = mine.stop - mine.start  # batch shards held by this process
    if local % share:
        mine = "" if share == n_shards else " held by this process"
        raise InputError(
            f"a batch of {local} rows cannot be split over the {share} batch shards{mine} "
            f"(mesh data x fsdp = {mesh.shape['data']} x {mesh.shape['fsdp']})",
            hint=f"use a multiple of {share} rows" + " per process" * bool(mine),
        )
    total = local * n_shards // share
    specs = batch_specs(jax.tree.map(lambda x: jax.ShapeDtypeStruct((total, *x.shape[1:]), x.dtype),
                                     batch), mesh)

    def put(x, spec):
        if x.shape[0] != local:
            raise InputError(f"batch arrays disagree on their number of rows: {x.shape[0]} vs {local}")
        return jax.make_array_from_process_local_data(
            NamedSharding(mesh, spec), np.asarray(x), (total, *x.shape[1:])
        )

    return jax.tree.map(put, batch, specs)


def feed(batches: Tree, mesh: Mesh | None) -> Tree:
    """How host batches enter a jitted function: as they are without a mesh; on a mesh, each batch
    (one `Batch`, or each of a tuple of them, which may differ in rows) as global arrays split over the
    batch axes, this process passing only its own rows. Every process holds the same host batches
    (they are drawn from seeds, never from process state), so each one cuts out its rows here.
    A batch's molecule table (`parts`, see `mistral_cl.data.batching.Batch`) is not rows of the
    batch: every device gets all of it."""
    if mesh is None:
        return batches

    def one(batch):
        batch, table = split_table(batch)
        rows = process_rows(len(jax.tree.leaves(batch)[0]), mesh)
        placed = place_batch(jax.tree.map(lambda x: x[rows], batch), mesh)
        everywhere = NamedSharding(mesh, PartitionSpec())
        return with_table(placed, jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(everywhere, np.asarray(x), x.shape), table))

    if isinstance(batches, tuple) and not hasattr(batches, "_fields"):
        return tuple(one(batch) for batch in batches)
    return one(batches)


def to_host(tree: Tree) -> Tree:
    """Every array of `tree` as a numpy array holding its global value, on every process."""

    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(fetch, tree)
