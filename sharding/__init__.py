"""Meshes, partition specs and placement: where every array of training lives.

    mesh = make_mesh("1x8x1")                              # data x fsdp x tensor
    model = sharded_init(lambda: build_yield_model(...), mesh)
    trainable, frozen = eqx.partition(model, trainable_filter(model, mode))
    opt_state = sharded_opt_init(optimizer, trainable, mesh)
    step = make_train_step(optimizer, objective, constrain=state_constraint(mesh))
    trainable, opt_state, metrics = step(trainable, frozen, opt_state,
                                         (place_batch(batch, mesh),), key, None)
"""

from sharding.distributed import barrier, initialize, is_reporting_process
from sharding.mesh import AXES, BATCH_AXES, describe, make_mesh, parse_mesh_spec
from sharding.placement import (
    feed,
    place,
    place_batch,
    place_state,
    process_rows,
    replicate,
    sharded_init,
    sharded_opt_init,
    state_constraint,
    to_host,
)
from sharding.specs import (
    BATCH_LIKE_STATE,
    LOGICAL_TO_MESH,
    RULES,
    batch_specs,
    logical_axes,
    model_specs,
    opt_state_specs,
    shardings,
    strategy_state_specs,
)

__all__ = [
    "AXES",
    "BATCH_AXES",
    "BATCH_LIKE_STATE",
    "barrier",
    "LOGICAL_TO_MESH",
    "RULES",
    "batch_specs",
    "describe",
    "feed",
    "initialize",
    "is_reporting_process",
    "logical_axes",
    "make_mesh",
    "model_specs",
    "opt_state_specs",
    "parse_mesh_spec",
    "place",
    "place_batch",
    "place_state",
    "process_rows",
    "replicate",
    "sharded_init",
    "sharded_opt_init",
    "shardings",
    "state_constraint",
    "strategy_state_specs",
    "to_host",
]
