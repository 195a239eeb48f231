# ruff: noqa: E402  (XLA_FLAGS must be set before jax is imported)
"""Checkpoint throughput: save and restore a ~1 GiB tree, median of a few runs.

    python benchmarks/checkpoint.py [--gib 1] [--runs 3] [--directory /fast/disk] [--cold]

Saving includes fsync of every file, so it measures what reaches the disk. Restoring right after a
save reads from the page cache unless `--cold` drops it first (Linux, as root). Prints a table and
writes benchmarks/results/checkpoint.json. On a CPU-only machine eight devices are simulated, so the
sharded variant shows the cost of writing and reading per-device blocks.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import argparse
import importlib.metadata
import json
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mistral_cl.checkpoint import restore, save

LEAVES = 4
COLUMNS = 8192
RESULTS = Path(__file__).resolve().parent / "results" / "checkpoint.json"


def weights(gib: float, dtype: jnp.dtype, sharding: jax.sharding.Sharding) -> dict[str, jax.Array]:
    """LEAVES matrices of `dtype` filling `gib` GiB, distinct per leaf so nothing compresses."""
    rows = int(gib * 2**30) // (LEAVES * COLUMNS * jnp.dtype(dtype).itemsize)
    rows -= rows % 8  # divisible by every mesh axis used here
    make = jax.jit(
        lambda seed: jax.random.normal(jax.random.key(seed), (rows, COLUMNS), dtype),
        static_argnums=0,
        out_shardings=sharding,
    )
    return {f"layers.w{i}": make(i) for i in range(LEAVES)}


def variants(gib: float) -> list[tuple[str, Callable[[], dict], Callable[[dict], dict]]]:
    """(name, tree to save, `like` to restore into) for each measured case."""
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    unsharded = lambda tree: {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in tree.items()}
    cases = [
        ("float32, 1 device", lambda: weights(gib, jnp.float32, one), unsharded),
        ("bfloat16, 1 device", lambda: weights(gib, jnp.bfloat16, one), unsharded),
    ]
    if len(jax.devices()) >= 8:
        devices = np.array(jax.devices()[:8])
        rows = NamedSharding(Mesh(devices, ("data",)), P("data", None))
        grid = NamedSharding(Mesh(devices.reshape(2, 4), ("fsdp", "tensor")), P("tensor", "fsdp"))
        onto_grid = lambda tree: {
            k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=grid) for k, v in tree.items()
        }
        cases.append(("float32, 8 devices -> 2x4 mesh", lambda: weights(gib, jnp.float32, rows), onto_grid))
    return cases


def drop_page_cache() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("1\n")


def measure(tree: dict, like: dict, base: Path, runs: int, cold: bool) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {"save": [], "restore": []}
    for run in range(runs):
        directory = Path(tempfile.mkdtemp(prefix="checkpoint-bench-", dir=base))
        start = time.perf_counter()
        save(directory, 0, tree, keep=None)
        seconds["save"].append(time.perf_counter() - start)
        if cold:
            drop_page_cache()
        start = time.perf_counter()
        restored, _ = restore(directory, like)
        jax.block_until_ready(restored)
        seconds["restore"].append(time.perf_counter() - start)
        if run == 0:
            for key, array in tree.items():
                np.testing.assert_array_equal(np.asarray(restored[key]), np.asarray(array))
        del restored
        shutil.rmtree(directory)
    return seconds


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of the tree in GiB")
    parser.add_argument("--runs", type=int, default=3, help="runs per case; the median is shown")
    parser.add_argument("--directory", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--cold", action="store_true", help="drop the page cache before restoring")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    results = []
    print(f"{'case':<32} {'GiB':>5} {'save MB/s':>10} {'restore MB/s':>13}")
    for name, build, like_of in variants(args.gib):
        tree = jax.block_until_ready(build())
        nbytes = sum(array.nbytes for array in tree.values())
        seconds = measure(tree, like_of(tree), args.directory, args.runs, args.cold)
        del tree
        row = {"case": name, "bytes": nbytes, "leaves": LEAVES}
        for phase, times in seconds.items():
            row[f"{phase}_seconds"] = [round(t, 3) for t in times]
            row[f"{phase}_MB_per_s"] = round(nbytes / statistics.median(times) / 1e6, 1)
        results.append(row)
        print(
            f"{name:<32} {nbytes / 2**30:>5.2f} {row['save_MB_per_s']:>10.0f}"
            f" {row['restore_MB_per_s']:>13.0f}"
        )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "checkpoint save/restore throughput (MB = 10^6 bytes, median of runs)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "devices": f"{len(jax.devices())} x {jax.devices()[0].device_kind}",
            "python": platform.python_version(),
            "jax": jax.__version__,
            "tensorstore": importlib.metadata.version("tensorstore"),
        },
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "directory": str(args.directory),
        "runs": args.runs,
        "restore_from": "disk (page cache dropped)" if args.cold else "page cache",
        "results": results,
    }
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
