"""Joining a multi-process (multi-host) run: one Python process per host, or per GPU, all in one mesh.

After `initialize`, `jax.devices()` lists the devices of every process and `sharding.make_mesh` spans
them all; each process still feeds only its own rows of every batch (`sharding.place_batch`), and
only the reporting process writes files and tables.
"""

from __future__ import annotations

import glob
import importlib.util
import os

import jax

from mistral_cl.errors import InputError

ENV_COORDINATOR = "MISTRAL_CL_COORDINATOR"
ENV_NUM_PROCESSES = "MISTRAL_CL_NUM_PROCESSES"
ENV_PROCESS_ID = "MISTRAL_CL_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "MISTRAL_CL_LOCAL_DEVICE_IDS"

# Environments where `jax.distributed.initialize()` finds the coordinator and process ids itself.
_SLURM = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
_TPU = ("TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES", "MEGASCALE_COORDINATOR_ADDRESS",
        "TPU_WORKER_ID", "CLOUD_TPU_TASK_ID")


def detected_cluster() -> str | None:
    """`"slurm"` or `"tpu"` when the environment describes a multi-process job, else `None`."""
    if all(v in os.environ for v in _SLURM):
        return "slurm"
    if any(v in os.environ for v in _TPU):
        return "tpu"
    # A Cloud TPU VM: libtpu installed and TPU chips present (/dev/accel*, or VFIO groups on v5e+).
    if importlib.util.find_spec("libtpu") and (glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")):
        return "tpu"
    return None


def _int(value: str | int | None, name: str) -> int | None:
    if value is None or isinstance(value, int):
        return value
    try:
        return int(value)
    except ValueError:
        raise InputError(f"{name} must be an integer, got {value!r}") from None


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: list[int] | None = None,
) -> None:
    """Connects this process to the others of the run (idempotent).

    coordinator: `host:port` of process 0, which every process must reach; with `num_processes` and
        `process_id` (this process's rank, 0-based). Each argument left `None` is read from
        `MISTRAL_CL_COORDINATOR`, `MISTRAL_CL_NUM_PROCESSES`, `MISTRAL_CL_PROCESS_ID`.
    local_device_ids: the accelerators this process drives (default: all it sees; under SLURM,
        jax's default is one GPU per task). Also read from `MISTRAL_CL_LOCAL_DEVICE_IDS` ("0,1,2,3").

    Without any of these, TPU pods and SLURM jobs are detected from their environment and jax finds
    everything itself. On CPU, processes exchange data through gloo collectives.
    """
    if jax.distributed.is_initialized():
        return
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR) or None
    num_processes = _int(num_processes if num_processes is not None
                         else os.environ.get(ENV_NUM_PROCESSES), ENV_NUM_PROCESSES)
    process_id = _int(process_id if process_id is not None
                      else os.environ.get(ENV_PROCESS_ID), ENV_PROCESS_ID)
    if local_device_ids is None and os.environ.get(ENV_LOCAL_DEVICE_IDS):
        raw = os.environ[ENV_LOCAL_DEVICE_IDS]
        local_device_ids = [_int(x.strip(), ENV_LOCAL_DEVICE_IDS) for x in raw.split(",") if x.strip()]
    explicit = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    given = [k for k, v in explicit.items() if v is not None]
    if given and len(given) < len(explicit):
        missing = sorted(set(explicit) - set(given))
        raise InputError(
            f"a distributed run needs coordinator, num_processes and process_id; missing {missing}",
            hint=f"pass them, or set {ENV_COORDINATOR}, {ENV_NUM_PROCESSES} and {ENV_PROCESS_ID}",
        )
    if given:
        if not 0 <= process_id < num_processes:
            raise InputError(f"process_id {process_id} must be in [0, {num_processes})")
        if ":" not in coordinator:
            raise InputError(f"coordinator {coordinator!r} must be host:port, e.g. 10.0.0.1:12355")
    elif detected_cluster() is None:
        raise InputError(
            "--distributed: no coordinator given and no TPU pod or SLURM job detected",
            hint=f"set {ENV_COORDINATOR}=host:port, {ENV_NUM_PROCESSES} and {ENV_PROCESS_ID} "
            "on every process, or use one of the scripts in launch/",
        )
    if getattr(jax.config, "jax_cpu_collectives_implementation", "gloo") in (None, "none"):
        # Without cross-process collectives, CPU processes could not exchange gradients.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
    )


def is_reporting_process() -> bool:
    """True on exactly one process (process 0): the one that writes reports, plots and logs."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name` (nothing to wait for with one process):
    after process 0 writes a file the others read, for instance."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"mistral_cl:{name}")
