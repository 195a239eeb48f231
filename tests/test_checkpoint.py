"""Checkpoints: every kind of leaf round-trips, across meshes, atomically, with helpful errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mistral_cl.checkpoint import CheckpointError, latest_step, restore, save, steps
from mistral_cl.errors import InputError


class Attention(eqx.Module):
    wq: eqx.nn.Linear
    wo: eqx.nn.Linear


class Block(eqx.Module):
    attention: Attention
    norm: jax.Array


class TinyModel(eqx.Module):
    """A miniature of the backbone's layout: bfloat16 embeddings, blocks stacked on a layer axis."""

    embed: jax.Array
    layers: Block
    dropout_rate: float
    activation: Callable


def tiny_model(seed: int = 0, width: int = 64, depth: int = 2) -> TinyModel:
    embed_key, block_key = jax.random.split(jax.random.key(seed))

    def block(key: jax.Array) -> Block:
        q_key, o_key = jax.random.split(key)
        attention = Attention(eqx.nn.Linear(32, width, key=q_key), eqx.nn.Linear(width, 32, key=o_key))
        return Block(attention, jnp.ones(32))

    layers = eqx.filter_vmap(block)(jax.random.split(block_key, depth))
    embed = jax.random.normal(embed_key, (100, 32)).astype(jnp.bfloat16)
    return TinyModel(embed, layers, 0.1, jax.nn.gelu)


def training_state(seed: int = 0, width: int = 64) -> dict:
    """What the continual runner saves: model, optimizer, replay memory, keys, counters."""
    model = tiny_model(seed, width)
    optimizer = optax.adamw(1e-3).init(eqx.filter(model, eqx.is_array))
    rng = np.random.default_rng(seed)
    return {
        "model": model,
        "optimizer": optimizer,
        "replay": {
            "tokens": jnp.asarray(rng.integers(0, 32000, (16, 12)), jnp.int32),
            "yields": rng.random(16).astype(np.float32),
            "seen": np.int64(16 + seed),
        },
        "key": jax.random.key(seed),
        "raw_key": jax.random.PRNGKey(seed),
        "task": 3 + seed,
        "loss_scale": 0.5,
        "name": "suzuki-miyaura",
        "finished": False,
        "fisher": None,
    }


def host_value(leaf):
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(leaf))
    return np.asarray(leaf)


def assert_trees_equal(actual, expected) -> None:
    actual_leaves, actual_def = jax.tree_util.tree_flatten_with_path(actual)
    expected_leaves, expected_def = jax.tree_util.tree_flatten_with_path(expected)
    assert actual_def == expected_def
    for (path, got), (_, want) in zip(actual_leaves, expected_leaves, strict=True):
        where = jax.tree_util.keystr(path)
        assert type(got) is type(want) or (isinstance(got, jax.Array) and isinstance(want, jax.Array)), where
        if isinstance(want, jax.Array | np.ndarray | np.generic):
            assert got.dtype == want.dtype, where
            np.testing.assert_array_equal(host_value(got), host_value(want), err_msg=where)
        else:
            assert got == want, where


def shape_only(tree):
    """`like` made of ShapeDtypeStructs without shardings, as built before any array exists."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if isinstance(x, jax.Array) else x, tree
    )


def test_every_kind_of_leaf_round_trips(tmp_path: Path) -> None:
    state = training_state()
    saved = save(tmp_path, 7, state, metadata={"task_names": ["a", "b"], "lr": 1e-3})
    restored, metadata = restore(tmp_path, state)
    assert saved == tmp_path / "step_000007"
    assert_trees_equal(restored, state)
    assert metadata == {"task_names": ["a", "b"], "lr": 1e-3}
    assert restored["model"].activation is jax.nn.gelu
    assert restored["key"].dtype == state["key"].dtype


def test_shape_dtype_structs_without_sharding_restore_onto_one_device(tmp_path: Path) -> None:
    state = training_state(seed=1)
    save(tmp_path, 0, state)
    restored, _ = restore(tmp_path, shape_only(state))
    assert_trees_equal(restored, state)
    first = jax.devices()[0]
    for leaf in jax.tree.leaves(restored):
        if isinstance(leaf, jax.Array):
            assert leaf.sharding.device_set == {first}


def test_values_and_metadata_come_from_the_checkpoint_not_from_like(tmp_path: Path) -> None:
    save(tmp_path, 1, training_state(seed=2), metadata={"task": 5})
    restored, metadata = restore(tmp_path, training_state(seed=0))
    assert restored["task"] == 5
    assert restored["replay"]["seen"] == 18
    assert metadata == {"task": 5}


def test_saved_on_one_mesh_restores_onto_another_with_requested_shardings(tmp_path: Path) -> None:
    devices = np.array(jax.devices())
    assert devices.size == 8, "tests/conftest.py simulates eight CPU devices"
    save_mesh = Mesh(devices.reshape(8, 1), ("data", "model"))
    load_mesh = Mesh(devices.reshape(2, 4), ("fsdp", "tensor"))
    values = {
        "wq": jnp.arange(2 * 64 * 32, dtype=jnp.float32).reshape(2, 64, 32),
        "embed": jnp.arange(16 * 32).reshape(16, 32).astype(jnp.bfloat16),
        "tokens": jnp.arange(16 * 12, dtype=jnp.int32).reshape(16, 12),
        "keys": jax.random.split(jax.random.key(3), 8),
        "count": jnp.int32(11),
    }
    saved_specs = {
        "wq": P(None, "data", None),
        "embed": P("data", "model"),
        "tokens": P("data"),
        "keys": P("data"),
        "count": P(),
    }
    wanted_specs = {
        "wq": P(None, "tensor", "fsdp"),
        "embed": P(None, ("fsdp", "tensor")),
        "tokens": P(("fsdp", "tensor"), None),
        "keys": P("tensor"),
        "count": P(),
    }
    sharded = {k: jax.device_put(v, NamedSharding(save_mesh, saved_specs[k])) for k, v in values.items()}
    save(tmp_path, 1, sharded)
    wanted = {k: NamedSharding(load_mesh, spec) for k, spec in wanted_specs.items()}
    like = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=wanted[k]) for k, v in values.items()}
    restored, _ = restore(tmp_path, like)
    assert_trees_equal(restored, values)
    for name, array in restored.items():
        assert array.sharding.is_equivalent_to(wanted[name], array.ndim), name
        full = host_value(values[name])
        for shard in array.addressable_shards:
            np.testing.assert_array_equal(host_value(shard.data), full[shard.index])


def test_restoring_into_arrays_takes_their_shardings(tmp_path: Path) -> None:
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "tensor"))
    state = training_state()
    save(tmp_path, 1, state)
    replicated = NamedSharding(mesh, P())
    split = NamedSharding(mesh, P("data"))
    like = jax.tree.map(
        lambda x: (
            jax.device_put(x, split if x.ndim and x.shape[0] % 4 == 0 else replicated)
            if isinstance(x, jax.Array)
            else x
        ),
        state,
    )
    restored, _ = restore(tmp_path, like)
    assert_trees_equal(restored, state)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(like), strict=True):
        if isinstance(want, jax.Array):
            assert got.sharding == want.sharding


def test_only_the_last_keep_steps_remain(tmp_path: Path) -> None:
    for step in range(1, 6):
        save(tmp_path, step, {"w": jnp.full(4, step)}, keep=3)
    assert steps(tmp_path) == [3, 4, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"step_00000{s}" for s in (3, 4, 5)]
    restored, _ = restore(tmp_path, {"w": jnp.zeros(4, jnp.int32)}, step=3)
    np.testing.assert_array_equal(restored["w"], np.full(4, 3))


def test_keep_none_keeps_every_step_and_the_step_just_saved_is_never_pruned(tmp_path: Path) -> None:
    for step in (10, 20, 30):
        save(tmp_path, step, {"w": jnp.ones(2)}, keep=None)
    assert steps(tmp_path) == [10, 20, 30]
    save(tmp_path, 5, {"w": jnp.ones(2)}, keep=1)
    assert steps(tmp_path) == [5, 30]


def test_saving_a_step_again_replaces_it(tmp_path: Path) -> None:
    save(tmp_path, 4, {"w": jnp.zeros(3)})
    save(tmp_path, 4, {"w": jnp.ones(3)})
    restored, _ = restore(tmp_path, {"w": jnp.zeros(3)})
    assert steps(tmp_path) == [4]
    np.testing.assert_array_equal(restored["w"], np.ones(3))


def test_uncommitted_checkpoints_are_never_listed_and_are_removed_by_the_next_save(
    tmp_path: Path,
) -> None:
    save(tmp_path, 1, {"w": jnp.full(3, 1.0)})
    save(tmp_path, 2, {"w": jnp.full(3, 2.0)})
    (tmp_path / "step_000002" / "COMMIT").unlink()  # killed between rename and commit marker
    (tmp_path / "step_000003.tmp-0123abcd").mkdir()  # killed while writing arrays
    assert steps(tmp_path) == [1]
    assert latest_step(tmp_path) == 1
    restored, _ = restore(tmp_path, {"w": jnp.zeros(3)})
    np.testing.assert_array_equal(restored["w"], np.full(3, 1.0))
    save(tmp_path, 4, {"w": jnp.full(3, 4.0)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000001", "step_000004"]


def test_another_model_size_names_the_mismatching_leaves(tmp_path: Path) -> None:
    save(tmp_path, 1, tiny_model(width=64))
    with pytest.raises(CheckpointError) as caught:
        restore(tmp_path, tiny_model(width=128))
    message = str(caught.value)
    assert "layers.attention.wq.weight: saved (2, 64, 32) float32, expected (2, 128, 32)" in message
    assert "layers.attention.wo.weight: saved (2, 32, 64) float32, expected (2, 32, 128)" in message
    assert "layers.attention.wq.bias" in message
    assert "embed" not in message
    assert isinstance(caught.value, InputError)


def test_another_structure_names_missing_and_unexpected_leaves(tmp_path: Path) -> None:
    save(tmp_path, 1, {"model": {"w": jnp.ones(2)}, "lora": {"a": jnp.ones((2, 4))}})
    like = {"model": {"w": jnp.ones(2, jnp.bfloat16)}, "head": {"b": jnp.ones(3)}}
    with pytest.raises(CheckpointError) as caught:
        restore(tmp_path, like)
    message = str(caught.value)
    assert "model.w: saved (2,) float32, expected (2,) bfloat16" in message
    assert "head.b: not in the checkpoint, expected (3,) float32" in message
    assert "lora.a: saved (2, 4) float32, not in `like`" in message


def test_a_missing_array_is_reported_with_the_previous_good_step(tmp_path: Path) -> None:
    save(tmp_path, 1, training_state())
    save(tmp_path, 2, training_state())
    missing = next((tmp_path / "step_000002" / "arrays").glob("*replay.tokens"))
    for file in sorted(missing.rglob("*"), reverse=True):
        file.unlink() if file.is_file() else file.rmdir()
    missing.rmdir()
    with pytest.raises(CheckpointError) as caught:
        restore(tmp_path, training_state())
    message = str(caught.value)
    assert "step 2 is damaged" in message and "replay.tokens" in message
    assert "previous good step 1" in message


def test_a_bad_manifest_is_reported_with_the_previous_good_step(tmp_path: Path) -> None:
    save(tmp_path, 1, {"w": jnp.ones(2)})
    save(tmp_path, 2, {"w": jnp.ones(2)})
    (tmp_path / "step_000002" / "manifest.json").write_text('{"format": "mistral-cl chec')
    with pytest.raises(CheckpointError, match="step 2 is damaged: unreadable manifest") as caught:
        restore(tmp_path, {"w": jnp.ones(2)})
    assert "previous good step 1" in str(caught.value)


def test_flipped_or_lost_chunks_are_errors_not_silently_wrong_values(tmp_path: Path) -> None:
    save(tmp_path, 1, {"w": jnp.arange(8.0)})
    save(tmp_path, 2, {"w": jnp.arange(8.0)})
    (chunk,) = [f for f in (tmp_path / "step_000002").rglob("c/*") if f.is_file()]
    data = bytearray(chunk.read_bytes())
    data[3] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="step 2 is damaged: array 'w'"):
        restore(tmp_path, {"w": jnp.zeros(8)})
    chunk.unlink()
    with pytest.raises(CheckpointError, match="step 2 is damaged: array 'w'"):
        restore(tmp_path, {"w": jnp.zeros(8)})


def test_an_empty_or_absent_directory_has_no_checkpoint(tmp_path: Path) -> None:
    assert steps(tmp_path / "absent") == [] and latest_step(tmp_path) is None
    with pytest.raises(CheckpointError, match="there is no checkpoint: .* does not exist"):
        restore(tmp_path / "absent", {"w": jnp.ones(2)})
    with pytest.raises(CheckpointError, match="there is no checkpoint: .* holds no committed"):
        restore(tmp_path, {"w": jnp.ones(2)})


def test_asking_for_an_unsaved_step_lists_the_committed_ones(tmp_path: Path) -> None:
    save(tmp_path, 1, {"w": jnp.ones(2)})
    save(tmp_path, 3, {"w": jnp.ones(2)})
    with pytest.raises(CheckpointError, match=r"step 2(.|\n)*committed steps are \[1, 3\]"):
        restore(tmp_path, {"w": jnp.ones(2)}, step=2)


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ({"step": -1}, "non-negative integer"),
        ({"keep": 0}, "keep must be at least 1"),
        ({"metadata": {"mean": np.float32(1.0)}}, "JSON-serialisable"),
    ],
)
def test_bad_save_arguments_are_input_errors(tmp_path: Path, arguments: dict, complaint: str) -> None:
    call = {"step": 1, "keep": 3, "metadata": None, **arguments}
    with pytest.raises(CheckpointError, match=complaint):
        save(tmp_path, call["step"], {"w": jnp.ones(2)}, metadata=call["metadata"], keep=call["keep"])
    assert steps(tmp_path) == []


def test_the_manifest_describes_each_leaf_for_people(tmp_path: Path) -> None:
    folder = save(tmp_path, 1, {"task": 2, "key": jax.random.key(0), "w": jnp.ones((2, 3))})
    entries = {e["path"]: e for e in json.loads((folder / "manifest.json").read_text())["leaves"]}
    assert entries["task"]["value"] == 2
    assert entries["key"]["impl"] == "threefry2x32"
    assert entries["w"]["shape"] == [2, 3] and entries["w"]["dtype"] == "float32"


TWO_PROCESS_CHILD = """
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
process, port, directory = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process)
from mistral_cl.checkpoint import restore, save, steps

auto = jax.sharding.AxisType.Auto
rows = NamedSharding(jax.make_mesh((8,), ("data",), axis_types=(auto,)), P("data"))
grid = jax.make_mesh((2, 4), ("fsdp", "tensor"), axis_types=(auto, auto))
weights = np.arange(16 * 6, dtype=np.float32).reshape(16, 6)
keys = np.asarray(jax.random.key_data(jax.random.split(jax.random.key(0), 8)))
tree = {
    "w": jax.make_array_from_callback(weights.shape, rows, lambda i: weights[i]),
    "keys": jax.make_array_from_callback((8,), rows, lambda i: jax.random.wrap_key_data(keys[i])),
    "replicated": jax.device_put(jnp.ones(3), NamedSharding(rows.mesh, P())),
}
for step in (1, 2):
    save(directory, step, {**tree, "task": step}, keep=1)
assert steps(directory) == [2], steps(directory)
wanted = NamedSharding(grid, P("tensor", "fsdp"))
like = {
    "w": jax.ShapeDtypeStruct(weights.shape, jnp.float32, sharding=wanted),
    "keys": jax.ShapeDtypeStruct((8,), tree["keys"].dtype, sharding=NamedSharding(grid, P("fsdp"))),
    "replicated": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=NamedSharding(grid, P())),
    "task": 0,
}
restored, _ = restore(directory, like)
assert restored["task"] == 2 and restored["w"].sharding == wanted
for shard in restored["w"].addressable_shards:
    np.testing.assert_array_equal(np.asarray(shard.data), weights[shard.index])
for shard in restored["keys"].addressable_shards:
    np.testing.assert_array_equal(np.asarray(jax.random.key_data(shard.data)), keys[shard.index])
print("ok", flush=True)
"""


def test_two_processes_each_write_their_shards_and_restore_onto_another_mesh(
    tmp_path: Path,
) -> None:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", TWO_PROCESS_CHILD, str(process), str(port), str(tmp_path)],
            cwd=Path(__file__).resolve().parents[1],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for process in (0, 1)
    ]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0 and "ok" in out, err[-3000:]
    chunks = [f for f in (tmp_path / "step_000002").glob("arrays/*.w/c/*/*") if f.is_file()]
    assert len(chunks) == 8, "one chunk file per device shard"
