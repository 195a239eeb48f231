"""Every reaction of a continual run, encoded once, and where each task's train and test sets lie.

All tasks share one `EncodedReactions` whose batch widths (buckets) were chosen from the whole stream,
so a step compiled for the first task serves every later one. A task, a replay memory or an
evaluation set is a list of positions in the pool. In head mode the pool also holds the frozen
backbone's features (computed once, see `features.py`), and positions select rows of that cache.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from jax.sharding import Mesh

from mistral_cl.data.batching import EncodedReactions, choose_buckets, encode_reactions
from mistral_cl.data.reactions import ReactionDataset
from mistral_cl.data.tasks import Task
from mistral_cl.features import CachedFeatures, cache_features
from mistral_cl.inference import BatchSource
from mistral_cl.model import Mistral
from mistral_cl.tokenizer import Tokenizer

_BUCKET_MULTIPLE = 16


@dataclasses.dataclass(frozen=True, eq=False)
class TaskPool:
    """The reactions of a run; `train[i]`/`test[i]` are the positions of task i's two sets, and
    `encoded.task` holds each reaction's task index (its position in the stream)."""

    encoded: EncodedReactions
    keys: tuple[str, ...]
    train: tuple[np.ndarray, ...]
    test: tuple[np.ndarray, ...]
    features: CachedFeatures | None = None

    @classmethod
    def from_tasks(cls, tasks: Sequence[Task], tokenizer: Tokenizer, n_buckets: int = 4,
                   max_len: int | None = None) -> TaskPool:
        """Encode the tasks of a stream at once; `n_buckets` batch widths (each one compiled shape of
        every jitted function; fewer for a stream of a few hundred reactions, see `bucket_count`) are
        chosen from all their reactions. A reaction of more than `max_len` tokens (the model's
        longest sequence) is an error naming its row."""
        parts = [part for task in tasks for part in (task.train, task.test)]
        encoded = encode_reactions(ReactionDataset.concat(parts), tokenizer,
                                   {task.key: i for i, task in enumerate(tasks)}, buckets=None,
                                   max_len=max_len)
        encoded = dataclasses.replace(encoded, buckets=choose_buckets(encoded.lengths, n_buckets))
        sizes = np.cumsum([0, *(len(p) for p in parts)])
        spans = [np.arange(sizes[k], sizes[k + 1]) for k in range(len(parts))]
        return cls(encoded, tuple(t.key for t in tasks), tuple(spans[0::2]), tuple(spans[1::2]))

    def with_task(self, task: Task, tokenizer: Tokenizer, max_len: int | None = None) -> TaskPool:
        """The pool with `task` appended; its reactions reuse the pool's buckets (plus one wider
        bucket if a reaction is longer than all of them, up to `max_len` tokens)."""
        index = len(self.keys)
        dataset = ReactionDataset.concat([task.train, task.test])
        new = encode_reactions(dataset, tokenizer, {task.key: index}, buckets=None, max_len=max_len)
        buckets = tuple(self.encoded.buckets or ())
        longest = int(new.lengths.max())
        if not buckets or longest > buckets[-1]:
            buckets += (-(-longest // _BUCKET_MULTIPLE) * _BUCKET_MULTIPLE,)
        encoded = EncodedReactions.concat([dataclasses.replace(self.encoded, buckets=buckets),
                                           dataclasses.replace(new, buckets=buckets)])
        start = len(self.encoded)
        train = np.arange(start, start + len(task.train))
        test = np.arange(start + len(task.train), start + len(dataset))
        return TaskPool(encoded, (*self.keys, task.key), (*self.train, train), (*self.test, test))

    def with_features(self, backbone: Mistral, directory: Path, batch_size: int,
                      depth: int | None = None, mesh: Mesh | None = None) -> TaskPool:
        """The pool serving cached backbone features (head mode; the states after `depth` blocks)
        instead of token ids."""
        cache = cache_features(backbone, self.encoded, directory, batch_size=batch_size, depth=depth,
                               mesh=mesh)
        return dataclasses.replace(self, features=cache)

    def __len__(self) -> int:
        return len(self.keys)

    def source(self, positions: np.ndarray | Sequence[int], yields: np.ndarray | None = None) -> BatchSource:
        """The reactions at `positions`, as batches of token ids or of cached features; `yields`
        (one per position) replaces their targets."""
        positions = np.asarray(positions, np.int64)
        source = self.encoded.subset(positions) if self.features is None else self.features.subset(positions)
        if yields is None:
            return source
        if isinstance(source, EncodedReactions):
            return dataclasses.replace(source, yields=np.asarray(yields, np.float32))
        return dataclasses.replace(source, encoded=dataclasses.replace(
            source.encoded, yields=np.asarray(yields, np.float32)))

    def train_positions(self, tasks: Sequence[int]) -> np.ndarray:
        return np.concatenate([self.train[i] for i in tasks]) if tasks else np.zeros(0, np.int64)

    def test_positions(self, tasks: Sequence[int]) -> np.ndarray:
        return np.concatenate([self.test[i] for i in tasks]) if tasks else np.zeros(0, np.int64)
