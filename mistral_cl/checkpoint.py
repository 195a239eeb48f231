"""Checkpoints of any pytree, written with tensorstore and committed atomically.

A checkpoint directory holds one sub-directory per step::

    checkpoints/
      step_000011/                      committed: has COMMIT
        manifest.json                   leaf paths, kinds, shapes, dtypes; Python values; metadata
        arrays/00000.head.weight/       one zarr v3 array per array leaf (zarr.json + chunk files)
        COMMIT                          written last; without it the step does not exist
      step_000012.tmp-5c0f.../          being written, or left by a crash: never listed,
                                        removed by the next save

Layout: zarr v3, one array per leaf, one directory per step (not OCDBT). Reasons:

- Committing is one directory rename and pruning is one directory delete. An OCDBT database shared
  by all steps needs its own garbage collection before old steps free space; one per step would
  only buy fewer files, at the price of a format no other tool reads.
- Chunks tile the shards of the saved arrays (split further to at most 64 MiB), so each process
  writes whole chunk files that no other process touches: processes coordinate through two
  barriers only, never through a lock or a coordinator server as multi-writer OCDBT requires.
- Every chunk carries a crc32c and a missing chunk is an error rather than zeros, so a damaged
  checkpoint is reported with the name of the leaf, never restored silently wrong.
- One leaf can be read by any zarr v3 reader (tensorstore, zarr-python) without this package.

The price is one small file per chunk: a 7B model is a few hundred leaves and a few thousand files.

Restoring reads, for every device, only the block that device holds in the requested sharding, so
a checkpoint saved on one mesh restores onto any other mesh or onto a single device. One writer per
checkpoint directory at a time: a save removes the leftovers of interrupted saves.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jax
import numpy as np
import tensorstore as ts
from jax.experimental import multihost_utils

from mistral_cl.errors import InputError

PyTree = Any
PathLike = str | os.PathLike[str]

_STEP_DIR = re.compile(r"step_(\d+)")
_LEFTOVER = re.compile(r"step_\d+\.tmp-[0-9a-f]+")
_UNSAFE = re.compile(r"[^\w.-]+")  # characters kept out of array directory names
_COMMIT = "COMMIT"
_MANIFEST = "manifest.json"
_FORMAT = "mistral-cl checkpoint"
_VERSION = 1
_CHUNK_BYTES = 64 * 2**20  # large enough for fast sequential I/O, small enough to parallelise
_IN_FLIGHT_BYTES = 512 * 2**20  # host bytes handed to tensorstore before waiting for the oldest
_SHOWN = 20
_WRITING = {"file_io_sync": True}  # every chunk is fsynced before its write completes
_READING = {"file_io_mode": {"mode": "memmap"}}  # no read buffer to allocate and fill: ~2x faster


class CheckpointError(InputError):
    """A checkpoint that cannot be used as asked: absent, damaged, or of another tree."""


def steps(directory: PathLike) -> list[int]:
    """The steps with a committed checkpoint in `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    committed = []
    for entry in directory.iterdir():
        match = _STEP_DIR.fullmatch(entry.name)
        if match and (entry / _COMMIT).is_file():
            committed.append(int(match.group(1)))
    return sorted(committed)


def latest_step(directory: PathLike) -> int | None:
    """The newest committed step in `directory`, or None when there is none."""
    committed = steps(directory)
    return committed[-1] if committed else None


def save(
    directory: PathLike,
    step: int,
    tree: PyTree,
    *,
    metadata: dict | None = None,
    keep: int | None = 3,
) -> Path:
    """Write `tree` as the checkpoint of `step` in `directory`, and commit it atomically.

    Array leaves (jax and numpy arrays, typed and raw PRNG keys) are written leaf by leaf, each
    process writing only the shards it owns. Python bool, int, float and str leaves and the
    JSON-serialisable `metadata` go into the manifest. Other leaves (functions held by modules)
    are not stored: `restore` takes them from its `like`. Saving an existing step replaces it.
    Once the new step is committed only the `keep` highest steps remain (all if `keep` is None);
    the step just saved is never deleted. Every process must call `save`; it returns on each
    process once the checkpoint is committed, with the committed step's directory.
    """
    _check_save_arguments(step, metadata, keep)
    directory = Path(directory)
    leaves = _describe(tree)
    final = directory / f"step_{step:06d}"
    primary = jax.process_index() == 0
    if primary:
        directory.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(directory)
    partial = directory / f"{final.name}.tmp-{_token_shared_by_processes()}"
    context = ts.Context(_WRITING)
    created = _create_arrays(partial, leaves, context) if primary else {}
    _barrier(f"{final.name}:created")
    _write_owned_shards(partial, leaves, created, context)
    _barrier(f"{final.name}:written")
    if primary:
        _write_json(partial / _MANIFEST, _manifest(step, leaves, metadata or {}))
        _commit(partial, final, step)
        if keep is not None:
            for old in steps(directory)[:-keep]:
                if old != step:
                    _retire(directory / f"step_{old:06d}")
    _barrier(f"{final.name}:committed")
    return final


def restore(directory: PathLike, like: PyTree, *, step: int | None = None) -> tuple[PyTree, dict]:
    """Read the checkpoint of `step` (default: the latest committed) into the shape of `like`.

    `like` has the structure of the saved tree. Its array leaves are arrays or
    `jax.ShapeDtypeStruct`s: each restored array gets the sharding of its `like` leaf, every device
    reading only its own block, or lands on the first local device when the leaf has no sharding;
    numpy leaves come back as numpy. Python values come back as saved; leaves that were not stored
    are taken from `like`. Returns the restored tree and the metadata given to `save`.
    """
    directory = Path(directory)
    committed = steps(directory)
    step = _chosen_step(directory, committed, step)
    folder = directory / f"step_{step:06d}"
    manifest = _read_manifest(folder, step, committed)
    saved = {entry["path"]: entry for entry in manifest["leaves"]}
    flat, treedef = jax.tree_util.tree_flatten_with_path(like)
    wanted = [(_path_name(path), leaf) for path, leaf in flat]
    problems = _mismatches(saved, wanted)
    if problems:
        shown = problems[:_SHOWN]
        if len(problems) > _SHOWN:
            shown.append(f"(+{len(problems) - _SHOWN} more)")
        raise CheckpointError(
            f"checkpoint of step {step} does not fit `like`; {len(problems)} leaves differ:\n    "
            + "\n    ".join(shown),
            file=str(folder),
            hint="restore into the tree that was saved (same model config, adapters, optimizer and"
            " strategy), or start a new run directory",
        )

    def damaged(name: str, error: ValueError) -> CheckpointError:
        reason = str(error).split(" [tensorstore_spec=")[0]  # drop tensorstore's spec dump
        return _damaged(folder, step, committed, f"array {name!r}: {reason}")

    restored = _restore_leaves(folder, saved, wanted, damaged)
    return jax.tree_util.tree_unflatten(treedef, restored), manifest["metadata"]


@dataclass(frozen=True)
class Deferred:
    """An array leaf that exists only while it is written: `blocks()` yields `(index, block)` pairs
    that tile an array of `shape` and `dtype`, each block the size of `block_shape` (chunks tile it).

    Lets a caller stream data that is never whole in memory (weights converted tensor by tensor)
    through `save`. Written by process 0; restored like any array leaf.
    """

    shape: tuple[int, ...]
    dtype: Any
    block_shape: tuple[int, ...]
    blocks: Callable[[], Iterator[tuple[tuple, np.ndarray]]]


@dataclass(frozen=True)
class _Leaf:
    """One leaf of a tree being saved: its manifest entry and, for arrays, the array to write."""

    entry: dict[str, Any]
    data: jax.Array | np.ndarray | Deferred | None


def _describe(tree: PyTree) -> list[_Leaf]:
    leaves, seen = [], set()
    for index, (path, leaf) in enumerate(jax.tree_util.tree_flatten_with_path(tree)[0]):
        name = _path_name(path)
        if name in seen:
            raise CheckpointError(
                f"two leaves of the tree are both named {name!r}",
                hint="rename dictionary keys so that dotted key paths are unique",
            )
        seen.add(name)
        entry = {"path": name, **_signature(leaf)}
        data = None
        if entry["kind"] == "key":
            entry["impl"] = str(jax.random.key_impl(leaf))
            data = jax.random.key_data(leaf)
        elif entry["kind"] == "array":
            data = leaf if isinstance(leaf, jax.Array | Deferred) else np.asarray(leaf)
        elif entry["kind"] == "value":
            entry["value"] = leaf
        if data is not None:
            entry["file"] = f"arrays/{index:05d}.{_UNSAFE.sub('_', name)[:120]}"
        leaves.append(_Leaf(entry, data))
    return leaves


def _signature(leaf: Any) -> dict[str, Any]:
    """What must agree between a saved leaf and the `like` leaf it is restored into."""
    if isinstance(leaf, jax.Array | jax.ShapeDtypeStruct) and jax.dtypes.issubdtype(
        leaf.dtype, jax.dtypes.prng_key
    ):
        return {"kind": "key", "shape": list(leaf.shape), "dtype": str(leaf.dtype)}
    if isinstance(leaf, jax.Array | jax.ShapeDtypeStruct | np.ndarray | np.generic | Deferred):
        return {"kind": "array", "shape": list(leaf.shape), "dtype": np.dtype(leaf.dtype).name}
    if isinstance(leaf, bool | int | float | str):
        return {"kind": "value", "type": type(leaf).__name__}
    return {"kind": "static", "type": type(leaf).__name__}


def _path_name(path: tuple) -> str:
    return jax.tree_util.keystr(path, simple=True, separator=".") or "<root>"


def _check_save_arguments(step: int, metadata: dict | None, keep: int | None) -> None:
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
        raise CheckpointError(f"step must be a non-negative integer, got {step!r}")
    if keep is not None and keep < 1:
        raise CheckpointError(
            f"keep must be at least 1, got {keep}", hint="pass keep=None to keep every step"
        )
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint metadata must be JSON-serialisable: {error}",
            hint="keep arrays in the tree; metadata holds plain numbers, strings, lists, dicts",
        ) from error


def _array_spec(path: Path) -> dict[str, Any]:
    return {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(path)},
        "fill_missing_data_reads": False,  # a lost chunk is an error, not zeros
        "store_data_equal_to_fill_value": True,  # so that every chunk exists on disk
    }


def _zarr_metadata(data: jax.Array | np.ndarray | Deferred, name: str) -> dict[str, Any]:
    dtype = np.dtype(data.dtype)
    if isinstance(data, Deferred):
        block = data.block_shape
    else:
        block = data.sharding.shard_shape(data.shape) if isinstance(data, jax.Array) else data.shape
    return {
        "shape": list(data.shape),
        "data_type": dtype.name,
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": _chunk_shape(block, dtype.itemsize)},
        },
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
        "fill_value": False if dtype == np.bool_ else 0,
        "attributes": {"path": name},
    }


def _chunk_shape(block: tuple[int, ...], itemsize: int) -> list[int]:
    """The largest chunk of at most _CHUNK_BYTES that tiles `block` exactly, split on leading axes.

    Chunks that tile the shards written by one device are owned by exactly one process.
    """
    chunk = [max(1, size) for size in block]
    for axis in range(len(chunk)):
        inner = itemsize * math.prod(chunk[axis + 1 :])
        fitting = [d for d in _divisors(chunk[axis]) if d * inner <= _CHUNK_BYTES]
        chunk[axis] = max(fitting, default=1)
        if fitting:
            break
    return chunk


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return small + [n // d for d in small]


def _create_arrays(partial: Path, leaves: list[_Leaf], context: ts.Context) -> dict[str, Any]:
    opening = {
        leaf.entry["file"]: ts.open(
            {
                **_array_spec(partial / leaf.entry["file"]),
                "metadata": _zarr_metadata(leaf.data, leaf.entry["path"]),
            },
            create=True,
            context=context,
        )
        for leaf in leaves
        if leaf.data is not None
    }
    return {file: future.result() for file, future in opening.items()}


def _write_owned_shards(
    partial: Path, leaves: list[_Leaf], created: dict[str, Any], context: ts.Context
) -> None:
    """Write this process's shards leaf by leaf, holding at most ~_IN_FLIGHT_BYTES of host data."""
    in_flight: deque[tuple[Any, np.ndarray]] = deque()
    held = 0
    for leaf in leaves:
        if leaf.data is None:
            continue
        file = leaf.entry["file"]
        if file in created:
            store = created[file]
        else:
            store = ts.open(_array_spec(partial / file), context=context).result()
        for index, block in _owned_blocks(leaf.data):
            # The block stays referenced in `in_flight` until its write is durable.
            write = store[index].write(block, can_reference_source_data_indefinitely=True)
            in_flight.append((write, block))
            held += block.nbytes
            while held > _IN_FLIGHT_BYTES:
                oldest, oldest_block = in_flight.popleft()
                oldest.result()
                held -= oldest_block.nbytes
    for write, _ in in_flight:
        write.result()


def _owned_blocks(data: jax.Array | np.ndarray | Deferred) -> Iterator[tuple[tuple, np.ndarray]]:
    """The (index, host block) pairs this process writes: one copy of each shard, globally."""
    if isinstance(data, Deferred):
        if jax.process_index() == 0:
            yield from data.blocks()
        return
    if isinstance(data, np.ndarray):
        if jax.process_index() == 0:
            yield (), data
        return
    for shard in data.addressable_shards:
        if shard.replica_id == 0:
            yield shard.index, np.asarray(shard.data)  # one shard on the host at a time


def _manifest(step: int, leaves: list[_Leaf], metadata: dict) -> dict[str, Any]:
    return {
        "format": _FORMAT,
        "version": _VERSION,
        "step": int(step),
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "process_count": jax.process_count(),
        "metadata": metadata,
        "leaves": [leaf.entry for leaf in leaves],
    }


def _commit(partial: Path, final: Path, step: int) -> None:
    _fsync_directory(partial)
    if final.exists():
        _retire(final)
    os.rename(partial, final)
    _fsync_directory(final.parent)
    _write_json(final / _COMMIT, {"step": int(step)})
    _fsync_directory(final)


def _retire(step_directory: Path) -> None:
    """Uncommit a step first, so that a crash while deleting it leaves only a leftover."""
    (step_directory / _COMMIT).unlink(missing_ok=True)
    _fsync_directory(step_directory)
    shutil.rmtree(step_directory)


def _remove_leftovers(directory: Path) -> None:
    """Delete what interrupted saves left: temporary directories and uncommitted steps."""
    for entry in directory.iterdir():
        uncommitted = _STEP_DIR.fullmatch(entry.name) and not (entry / _COMMIT).exists()
        if entry.is_dir() and (_LEFTOVER.fullmatch(entry.name) or uncommitted):
            shutil.rmtree(entry, ignore_errors=True)


def _write_json(path: Path, content: dict) -> None:
    with open(path, "w") as file:
        json.dump(content, file, indent=1)
        file.flush()
        os.fsync(file.fileno())


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _token_shared_by_processes() -> str:
    """A random name part that every process agrees on (process 0 draws it)."""
    token = uuid.uuid4()
    if jax.process_count() > 1:
        words = multihost_utils.broadcast_one_to_all(np.frombuffer(token.bytes, np.uint32))
        token = uuid.UUID(bytes=np.asarray(words, np.uint32).tobytes())
    return token.hex


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"mistral_cl.checkpoint:{name}")


def _chosen_step(directory: Path, committed: list[int], step: int | None) -> int:
    if not committed:
        where = "does not exist" if not directory.exists() else "holds no committed checkpoint"
        raise CheckpointError(
            f"there is no checkpoint: {directory} {where}",
            hint="check the run directory, or start the run from scratch",
        )
    if step is None:
        return committed[-1]
    if step not in committed:
        raise CheckpointError(
            f"there is no committed checkpoint of step {step}",
            file=str(directory),
            hint=f"committed steps are {committed}",
        )
    return step


def _read_manifest(folder: Path, step: int, committed: list[int]) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise _damaged(folder, step, committed, f"unreadable manifest ({error})") from error
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise _damaged(folder, step, committed, "the manifest is not a mistral-cl manifest")
    if manifest.get("version") != _VERSION:
        raise CheckpointError(
            f"checkpoint format version {manifest.get('version')} is not supported"
            f" (this mistral-cl reads version {_VERSION})",
            file=str(folder),
            hint="restore it with the mistral-cl version that wrote it",
        )
    return manifest


def _damaged(folder: Path, step: int, committed: list[int], reason: str) -> CheckpointError:
    earlier = [s for s in committed if s < step]
    hint = (
        f"use the previous good step {earlier[-1]}: restore(directory, like, step={earlier[-1]})"
        if earlier
        else "there is no earlier committed step; start the run again"
    )
    return CheckpointError(f"checkpoint of step {step} is damaged: {reason}", file=str(folder), hint=hint)


def _mismatches(saved: dict[str, dict], wanted: list[tuple[str, Any]]) -> list[str]:
    problems = []
    for name, leaf in wanted:
        expected = _signature(leaf)
        entry = saved.get(name)
        if entry is None:
            problems.append(f"{name}: not in the checkpoint, expected {_shown(expected)}")
        elif any(entry.get(field) != expected.get(field) for field in ("kind", "shape", "dtype")):
            problems.append(f"{name}: saved {_shown(entry)}, expected {_shown(expected)}")
    names = {name for name, _ in wanted}
    problems += [
        f"{name}: saved {_shown(entry)}, not in `like`" for name, entry in saved.items() if name not in names
    ]
    return problems


def _shown(signature: dict[str, Any]) -> str:
    if signature["kind"] in ("array", "key"):
        return f"{tuple(signature['shape'])} {signature['dtype']}"
    if signature["kind"] == "value":
        return f"python {signature['type']}"
    return f"unstored {signature['type']}"


def _restore_leaves(
    folder: Path,
    saved: dict[str, dict],
    wanted: list[tuple[str, Any]],
    damaged: Callable[[str, ValueError], CheckpointError],
) -> list[Any]:
    """Restore leaf by leaf, reading up to ~_IN_FLIGHT_BYTES ahead of the leaf being placed."""
    context = ts.Context(_READING)
    restored: list[Any] = [None] * len(wanted)
    reading: deque[tuple[int, _Reading]] = deque()

    def finish_oldest() -> int:
        position, oldest = reading.popleft()
        restored[position] = oldest.finish(damaged)
        return oldest.nbytes

    held = 0
    for position, (name, like) in enumerate(wanted):
        entry = saved[name]
        if entry["kind"] == "value":
            restored[position] = entry["value"]
        elif entry["kind"] == "static":
            restored[position] = like
        else:
            reading.append((position, _Reading.start(folder, entry, like, context, damaged)))
            held += reading[-1][1].nbytes
            while held > _IN_FLIGHT_BYTES:
                held -= finish_oldest()
    while reading:
        finish_oldest()
    return restored


@dataclass(frozen=True)
class _Reading:
    """An array leaf whose blocks are being read, each block once however many devices hold it."""

    entry: dict[str, Any]
    like: Any
    sharding: jax.sharding.Sharding | None  # None: a numpy leaf
    blocks: dict[tuple, np.ndarray]  # block bounds -> the host buffer being filled
    placement: list[tuple[jax.Device, tuple]]  # device -> block bounds
    reads: list[Any]  # tensorstore futures filling the blocks

    @property
    def nbytes(self) -> int:
        return sum(host.nbytes for host in self.blocks.values())

    @classmethod
    def start(
        cls,
        folder: Path,
        entry: dict[str, Any],
        like: Any,
        context: ts.Context,
        damaged: Callable[[str, ValueError], CheckpointError],
    ) -> _Reading:
        try:
            spec = _array_spec(folder / entry["file"])
            store = ts.open(spec, open=True, context=context).result()
        except ValueError as error:  # tensorstore reports missing and corrupt data as ValueError
            raise damaged(entry["path"], error) from error
        if isinstance(like, np.ndarray | np.generic):
            host = np.empty(store.shape, store.dtype.numpy_dtype)
            return cls(entry, like, None, {(): host}, [], [_fill(host, store)])
        sharding = getattr(like, "sharding", None) or jax.sharding.SingleDeviceSharding(
            jax.local_devices()[0]
        )
        blocks, placement, reads = {}, [], []
        for device, index in sharding.addressable_devices_indices_map(like.shape).items():
            block = tuple((s.start, s.stop) for s in index)
            if block not in blocks:
                view = store[index]  # key data: the trailing key axes come whole
                blocks[block] = _aligned_empty(view.shape, view.dtype.numpy_dtype)
                reads.append(_fill(blocks[block], view))
            placement.append((device, block))
        return cls(entry, like, sharding, blocks, placement, reads)

    def finish(self, damaged: Callable[[str, ValueError], CheckpointError]) -> Any:
        try:
            for read in self.reads:
                read.result()
        except ValueError as error:
            raise damaged(self.entry["path"], error) from error
        if self.sharding is None:
            host = self.blocks[()]
            return host if isinstance(self.like, np.ndarray) else host[()]
        arrays = []
        for device, block in self.placement:
            array = jax.device_put(self.blocks[block], device)
            if self.entry["kind"] == "key":
                array = jax.random.wrap_key_data(array, impl=self.entry["impl"])
            arrays.append(array)
        return jax.make_array_from_single_device_arrays(self.like.shape, self.sharding, arrays)


def _fill(host: np.ndarray, view: ts.TensorStore) -> Any:
    """Start reading `view` straight into `host` (no intermediate array), returning the future."""
    return ts.array(host, copy=False, write=True).write(view)


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised host array aligned to 64 bytes, which CPU devices adopt without a copy."""
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + nbytes].view(dtype).reshape(shape)
