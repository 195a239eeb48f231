"""A process killed at any moment of a save leaves its newest committed checkpoint intact.

A child process saves checkpoints in a loop and is SIGKILLed, again and again, in one directory.
Some kills come after a random delay (they mostly land while arrays are written); others come at a
pause point placed just after a chosen call to os.fsync, os.rename or os.unlink, which are the
boundaries between writing the manifest, renaming, writing the commit marker and pruning. After
every kill each committed step must restore to exactly what was saved for it.
"""

from __future__ import annotations

import inspect
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mistral_cl.checkpoint import restore, save, steps

KEEP = 3
RANDOM_KILLS = 12
PAUSED_KILLS = [  # (os function, n-th call after the child's first save)
    ("fsync", 1),  # manifest written, not yet renamed
    ("fsync", 2),  # temporary directory synced, not yet renamed
    ("rename", 1),  # renamed, no commit marker yet
    ("fsync", 4),  # commit marker written, directory not yet synced
    ("fsync", 5),  # committed, older steps not yet pruned
    ("unlink", 1),  # pruning: oldest step uncommitted, nothing deleted yet
    ("unlink", 4),  # pruning: part of the oldest step deleted
    ("unlink", 11),  # pruning: most of the oldest step deleted
    ("rename", 2),  # second save: renamed, no commit marker yet
    ("unlink", 25),  # pruning during a later save
]


def state_at(step: int) -> dict:
    """A training state whose every leaf tells which step wrote it."""
    base = jnp.arange(1024 * 1024, dtype=jnp.float32).reshape(1024, 1024)
    return {
        "layers": {f"w{i}": base * step + i for i in range(4)},
        "embed": jnp.full((1024, 1024), step, jnp.bfloat16),
        "tokens": jnp.arange(4096, dtype=jnp.int32) + step,
        "key": jax.random.key(step),
        "raw_key": jax.random.PRNGKey(step),
        "step": step,
        "name": f"after task {step}",
    }


CHILD = f"""
import os, sys, time
import jax, jax.numpy as jnp
from mistral_cl.checkpoint import latest_step, save

{inspect.getsource(state_at)}

directory, pause_call, pause_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
step = (latest_step(directory) or 0) + 1
state_at(0)
print("ready", flush=True)
save(directory, step, state_at(step), keep={KEEP})
if pause_call != "none":
    real, calls = getattr(os, pause_call), 0

    def pausing(*args, **kwargs):
        global calls
        result = real(*args, **kwargs)
        calls += 1
        if calls == pause_at:
            print("paused", flush=True)
            time.sleep(600)
        return result

    setattr(os, pause_call, pausing)
while True:
    step += 1
    save(directory, step, state_at(step), keep={KEEP})
"""


def run_and_kill(directory: Path, pause_call: str, pause_at: int, delay: float) -> None:
    """Start the saving child and SIGKILL it `delay` s after it is ready, or once it pauses."""
    child = subprocess.Popen(
        [sys.executable, "-u", "-c", CHILD, str(directory), pause_call, str(pause_at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
        text=True,
    )
    try:
        awaited = "ready" if pause_call == "none" else "paused"
        deadline = time.monotonic() + 60
        line = ""
        while line.strip() != awaited:
            readable, _, _ = select.select([child.stdout], [], [], deadline - time.monotonic())
            line = child.stdout.readline() if readable else ""
            if not readable or (not line and child.poll() is not None):
                raise AssertionError(f"child never said {awaited!r}: {child.stderr.read()[-2000:]}")
        time.sleep(delay)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()


def phases_left_behind(directory: Path) -> set[str]:
    """Which phase of a save the directory shows was interrupted."""
    committed = steps(directory)
    seen = set()
    for entry in directory.iterdir():
        if ".tmp-" in entry.name:
            seen.add("writing arrays or manifest")
        elif not (entry / "COMMIT").exists():
            step = int(entry.name.removeprefix("step_"))
            seen.add("pruning" if step < committed[-1] else "renamed, not committed")
    if len(committed) > KEEP:
        seen.add("committed, not pruned")
    return seen or {"between saves"}


def assert_committed_steps_restore_exactly(directory: Path) -> list[int]:
    committed = steps(directory)
    assert committed, "a kill lost every checkpoint"
    for step in committed:
        expected = state_at(step)
        restored, _ = restore(directory, expected, step=step)
        for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(expected), strict=True):
            if isinstance(want, jax.Array) and jax.dtypes.issubdtype(want.dtype, jax.dtypes.prng_key):
                got, want = jax.random.key_data(got), jax.random.key_data(want)
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=f"{step}")
    return committed


def test_sigkill_at_any_moment_leaves_the_latest_step_restorable(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    random_delays = [(i + rng.random()) * 0.35 / RANDOM_KILLS for i in range(RANDOM_KILLS)]
    kills = [("none", 0, delay) for delay in random_delays[:6]]
    kills += [(call, n, 0.0) for call, n in PAUSED_KILLS]
    kills += [("none", 0, delay) for delay in random_delays[6:]]
    save(tmp_path, 1, state_at(1), keep=KEEP)
    seen, newest = {}, 1
    for call, n, delay in kills:
        run_and_kill(tmp_path, call, n, delay)
        for phase in phases_left_behind(tmp_path):
            seen[phase] = seen.get(phase, 0) + 1
        committed = assert_committed_steps_restore_exactly(tmp_path)
        assert committed[-1] >= newest, "a committed step disappeared"
        newest = committed[-1]
    print(f"{len(kills)} kills, newest step {newest}, interrupted phases: {seen}")
    assert len(kills) >= 20
    assert {"writing arrays or manifest", "renamed, not committed", "pruning"} <= set(seen)
    assert "committed, not pruned" in seen
