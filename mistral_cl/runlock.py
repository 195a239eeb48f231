"""One command at a time in a run directory.

`continual` and `ingest` train a run's strategies and write its files; two at once would train the
same round twice or interleave their writes. Each holds an exclusive lock on `RUN/.lock` while it works:
an `fcntl` lock, which the kernel frees when the process ends, however it ends, so a crash never leaves
a run locked. The file names its holder (command, pid, host, start time), so a refused command can say
who is working on the run and that the run is free again once that process has ended. The holder
removes the file when it finishes, so a run at rest has none.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sharding
from mistral_cl.errors import InputError

LOCK_FILE = ".lock"


def _holder_of(fd: int) -> dict[str, Any]:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict[str, Any]) -> str:
    """`mistral-cl ingest (pid 123 on host, started 2026-01-02 10:00:00)`, or what is known of it."""
    if not holder:
        return "another mistral-cl process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return (f"`mistral-cl {holder.get('command', '?')}` (pid {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')}, started {started})")


def busy_error(run_dir: Path, holder: dict[str, Any]) -> InputError:
    return InputError(
        f"the run is busy: {describe_holder(holder)} is working on it", file=str(run_dir),
        hint="wait until that process has ended (the run is free again then) and run this command "
             "again: a second process training the same run would repeat its rounds")


@contextlib.contextmanager
def run_lock(run_dir: Path, command: str) -> Iterator[None]:
    """Hold the run's lock for the block; an `InputError` naming the holder if another process has it.
    Only the reporting process of a multi-process job locks: it alone writes the run's files."""
    if not sharding.is_reporting_process():
        yield
        return
    path = Path(run_dir) / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_of(fd)
            os.close(fd)
            raise busy_error(Path(run_dir), holder) from None
        # The last holder removes the file as it leaves: a lock on that old file protects nothing.
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        record = {"command": command, "pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.time()}
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def holder(run_dir: Path) -> dict[str, Any] | None:
    """Who holds the run's lock now (see `describe`), or None when nobody does."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder_of(fd)
    finally:
        os.close(fd)
    return None
