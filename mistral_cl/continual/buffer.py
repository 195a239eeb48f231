"""Replay memory: which past training reactions a rehearsal strategy may revisit.

The memory stores positions of reactions in the run's `TaskPool` (the reactions themselves are
rebuilt from the data spec), so it is a few integers per reaction in a checkpoint. Policies:

- `all`: every training reaction of every past task;
- `reservoir:N`: a uniform sample of at most N of all past training reactions (reservoir sampling,
  Vitter's algorithm R), whatever the number of tasks;
- `quota:N`: N reactions drawn at random from each past task (all of a smaller task), so the memory
  grows by N per task and every task is equally represented.

Every draw comes from a generator seeded by the run seed and the task's position in the stream, so a
resumed run rebuilds exactly the memory of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np

from mistral_cl.errors import InputError

PolicyKind = Literal["all", "reservoir", "quota"]


@dataclasses.dataclass(frozen=True)
class MemoryPolicy:
    """What the memory keeps: `all`, `reservoir` (at most `size` in total) or `quota` (`size` per task)."""

    kind: PolicyKind = "all"
    size: int | None = None

    @classmethod
    def parse(cls, text: str) -> MemoryPolicy:
        """`all`, `reservoir:N` or `quota:N`."""
        kind, _, size = text.strip().partition(":")
        hint = "set `continual.memory` to all, reservoir:N or quota:N (N a positive integer)"
        if kind == "all" and not size:
            return cls("all")
        if kind not in ("reservoir", "quota"):
            raise InputError(f"unknown replay memory {text!r}", hint=hint)
        try:
            value = int(size)
        except ValueError:
            raise InputError(f"replay memory {text!r} needs a size", hint=hint) from None
        if value <= 0:
            raise InputError(f"replay memory size must be positive, got {value}", hint=hint)
        return cls(kind, value)

    def __str__(self) -> str:
        return self.kind if self.size is None else f"{self.kind}:{self.size}"


@dataclasses.dataclass(frozen=True)
class ReplayMemory:
    """Positions (in the task pool) of the remembered training reactions; `seen` counts every
    reaction ever offered, which reservoir sampling needs to keep its sample uniform."""

    policy: MemoryPolicy
    positions: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    seen: int = 0

    def __len__(self) -> int:
        return len(self.positions)

    def add_task(self, positions: np.ndarray, rng: np.random.Generator) -> ReplayMemory:
        """The memory after a task whose training reactions are `positions` has been learned."""
        positions = np.asarray(positions, np.int64)
        if self.policy.kind == "all":
            kept = np.concatenate([self.positions, positions])
        elif self.policy.kind == "quota":
            chosen = np.sort(rng.permutation(len(positions))[: self.policy.size])
            kept = np.concatenate([self.positions, positions[chosen]])
        else:
            kept = _reservoir(self.positions, positions, self.seen, self.policy.size, rng)
        return dataclasses.replace(self, positions=kept, seen=self.seen + len(positions))

    def to_json(self) -> dict[str, Any]:
        return {"policy": str(self.policy), "positions": self.positions.tolist(), "seen": self.seen}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ReplayMemory:
        return cls(MemoryPolicy.parse(raw["policy"]), np.asarray(raw["positions"], np.int64),
                   int(raw["seen"]))


def _reservoir(kept: np.ndarray, offered: np.ndarray, seen: int, size: int,
               rng: np.random.Generator) -> np.ndarray:
    """Algorithm R: the n-th reaction ever offered replaces a random slot with probability size / n."""
    kept = list(kept)
    for item in offered:
        seen += 1
        if len(kept) < size:
            kept.append(item)
        else:
            slot = int(rng.integers(seen))
            if slot < size:
                kept[slot] = item
    return np.asarray(kept, np.int64)
