"""The device mesh: every array of the project lives on one `(data, fsdp, tensor)` mesh.

- `data`: pure data parallelism; parameters are replicated along it, the batch is split.
- `fsdp`: the batch is split *and* parameters/optimizer state are sharded (ZeRO-3), gathered per layer.
- `tensor`: Megatron-style tensor parallelism inside each block (heads and the MLP hidden width).

Axes are ordered from least to most communication, so on TPU pods and multi-node GPU clusters the
`tensor` axis lands on the fastest links (`mesh_utils.create_device_mesh` knows the topology).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

from mistral_cl.errors import InputError

AXES: tuple[str, str, str] = ("data", "fsdp", "tensor")
BATCH_AXES: tuple[str, str] = ("data", "fsdp")


def parse_mesh_spec(spec: str, n_devices: int) -> tuple[int, int, int]:
    """Axis sizes from `"DATAxFSDPxTENSOR"`; one size may be `-1`, meaning "all remaining devices"."""
    parts = spec.strip().lower().split("x")
    example = "e.g. '-1x1x1' (all data parallel), '1x8x1' (FSDP over 8), '2x2x2'"
    if len(parts) != len(AXES):
        raise InputError(
            f"mesh spec {spec!r} must have {len(AXES)} sizes ({'x'.join(AXES)})", hint=example
        )
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"mesh spec {spec!r}: sizes must be integers", hint=example) from None
    if sizes.count(-1) > 1:
        raise InputError(f"mesh spec {spec!r}: at most one axis may be -1 (the rest)", hint=example)
    if any(s == 0 or s < -1 for s in sizes):
        raise InputError(f"mesh spec {spec!r}: sizes must be positive (or -1 for the rest)", hint=example)
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if n_devices % known:
            raise InputError(
                f"mesh spec {spec!r}: {n_devices} devices cannot be split into {known} x the rest",
                hint=example,
            )
        sizes[sizes.index(-1)] = n_devices // known
    if math.prod(sizes) != n_devices:
        raise InputError(
            f"mesh spec {spec!r} needs {math.prod(sizes)} devices but {n_devices} are available",
            hint=f"make the sizes multiply to {n_devices}, or use -1 for one axis",
        )
    return sizes[0], sizes[1], sizes[2]


def make_mesh(spec: str = "-1x1x1", devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A `(data, fsdp, tensor)` mesh over `devices` (default: every device of every process).

    Axes are `Auto`, so shardings declared on inputs and outputs propagate through the computation.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = parse_mesh_spec(spec, len(devices))
    try:
        grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError):
        # Topologies mesh_utils cannot map (odd slices of a pod): fall back to process-major order,
        # which still keeps each process's devices together along the batch axes.
        grid = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(grid, AXES, axis_types=(AxisType.Auto,) * len(AXES))


def describe(mesh: Mesh) -> str:
    """`data=2 fsdp=2 tensor=2 over 8 devices (2 processes)`, for logs and reports."""
    sizes = " ".join(f"{name}={size}" for name, size in mesh.shape.items())
    processes = len({d.process_index for d in mesh.devices.flat})
    return f"{sizes} over {mesh.devices.size} devices ({processes} process{'es' * (processes > 1)})"
