"""Reactions encoded once into token ids, and fixed-size, length-bucketed batches of them.

Every batch has the same number of rows, and its width is one of a few bucket lengths: the
smallest bucket that holds its longest reaction. A jitted step therefore compiles once per bucket
instead of once per batch, and short reactions are not padded to the longest of the whole set.
Rows that only fill a short batch up to the batch size repeat real rows of that batch with
weight 0; a row of pure padding would make attention normalise over an empty set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from mistral_cl.data.reactions import ROW_CONVENTION, ReactionDataset
from mistral_cl.errors import InputError
from mistral_cl.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True, eq=False)
class EncodedReactions:
    """Token ids of reactions, right-padded with `pad_id`.

    tokens: int32 [N, L], L = the longest reaction; lengths: int32 [N], tokens per reaction
    (BOS included); yields: float32 [N] in [0, 1]; task: int32 [N], the stream index of each
    reaction's task; buckets: the batch widths to use (chosen once from the whole data set and
    kept by `subset` and `concat`, so every task and epoch reuses the same compiled shapes);
    molecules: int16 [N, L], the molecule of the reaction each token belongs to (0: none, see
    `Tokenizer.molecules`), for a head that pools molecules one by one; None where not known.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    yields: np.ndarray
    task: np.ndarray
    pad_id: int = 0
    buckets: tuple[int, ...] | None = None
    molecules: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.lengths)

    def batches(self, batch_size: int, *, shuffle: bool, seed: int = 0) -> Iterator[Batch]:
        """One epoch of batches in this set's own buckets (see `batches`)."""
        return batches(self, batch_size, shuffle=shuffle, seed=seed, buckets=self.buckets)

    def count_batches(self, batch_size: int) -> int:
        return count_batches(self, batch_size, self.buckets)

    def subset(self, indices: np.ndarray | Sequence[int]) -> EncodedReactions:
        """The reactions at `indices`, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        return dataclasses.replace(self, tokens=self.tokens[indices], lengths=self.lengths[indices],
                                   yields=self.yields[indices], task=self.task[indices],
                                   molecules=None if self.molecules is None else self.molecules[indices])

    @staticmethod
    def concat(parts: Sequence[EncodedReactions]) -> EncodedReactions:
        """All reactions of `parts`, in order (e.g. a new task plus replayed ones)."""
        width = max(p.tokens.shape[1] for p in parts)
        tokens = [_to_width(p.tokens, width, p.pad_id) for p in parts]
        known = all(p.molecules is not None for p in parts)
        molecules = np.concatenate([_to_width(p.molecules, width, 0) for p in parts]) if known else None
        return EncodedReactions(
            tokens=np.concatenate(tokens),
            lengths=np.concatenate([p.lengths for p in parts]),
            yields=np.concatenate([p.yields for p in parts]),
            task=np.concatenate([p.task for p in parts]),
            pad_id=parts[0].pad_id,
            buckets=_merged_buckets([p.buckets for p in parts]),
            molecules=molecules,
        )


def _merged_buckets(choices: Sequence[tuple[int, ...] | None]) -> tuple[int, ...] | None:
    if any(c is None for c in choices):
        return None
    return tuple(sorted(set().union(*choices)))


def encode_reactions(
    dataset: ReactionDataset,
    tokenizer: Tokenizer,
    task_index: Mapping[str, int] | None = None,
    *,
    max_len: int | None = None,
    truncate: bool = False,
    buckets: tuple[int, ...] | None | str = "auto",
) -> EncodedReactions:
    """Tokenize every reaction SMILES of `dataset` once.

    task_index: task key -> index stored per reaction (e.g. `{task.key: task.index}` for a task of
        a stream); by default the position of the key in `dataset.task_keys()`.
    max_len: longest allowed sequence; longer reactions are an error naming their rows, or are cut
        to their first `max_len` tokens with `truncate=True`.
    buckets: batch widths kept with the encoded set; "auto" chooses them from these reactions'
        lengths (`choose_buckets`), None pads every batch to the longest reaction.
    """
    if task_index is None:
        task_index = {key: i for i, key in enumerate(dataset.task_keys())}
    unknown = sorted(set(dataset.tasks.tolist()) - set(task_index))
    if unknown:
        raise InputError(f"no index given for task(s) {', '.join(unknown)}", file=dataset.source,
                         hint=f"known tasks: {', '.join(sorted(task_index))}")
    tokens, mask = tokenizer.encode_batch(list(dataset.smiles), pad_to_multiple=1)
    lengths = mask.sum(axis=1).astype(np.int32)
    if max_len is not None:
        too_long = np.flatnonzero(lengths > max_len)
        if len(too_long) and not truncate:
            raise InputError(
                f"reaction SMILES longer than the model's maximum length of {max_len} tokens (these have "
                f"up to {int(lengths.max())}; {ROW_CONVENTION})",
                file=dataset.source, rows=dataset.rows[too_long].tolist(), column=dataset.smiles_column,
                hint="shorten or delete these reactions, or use a model with a longer "
                     "max_position_embeddings",
            )
        tokens, mask, lengths = tokens[:, :max_len], mask[:, :max_len], np.minimum(lengths, max_len)
    return EncodedReactions(
        tokens=tokens,
        lengths=lengths,
        yields=dataset.yields.astype(np.float32),
        task=np.array([task_index[k] for k in dataset.tasks], dtype=np.int32),
        pad_id=tokenizer.pad_id,
        buckets=choose_buckets(lengths) if buckets == "auto" and len(lengths) else
        (None if buckets == "auto" else buckets),
        molecules=tokenizer.molecules(tokens, mask),
    )


class Batch(NamedTuple):
    """One step's inputs: tokens int32 [B, T], mask bool [B, T], yields float32 [B],
    weight float32 [B] (1 for real rows, 0 for fillers), task int32 [B], index int32 [B],
    each row's position in the `EncodedReactions` it came from (to put predictions back), and
    molecules int16 [B, T] where the encoded set has them (see `EncodedReactions`)."""

    tokens: np.ndarray
    mask: np.ndarray
    yields: np.ndarray
    weight: np.ndarray
    task: np.ndarray
    index: np.ndarray
    molecules: np.ndarray | None = None


REACTIONS_PER_BUCKET = 256


def bucket_count(reactions: int, at_most: int = 4) -> int:
    """How many batch widths a set of `reactions` gets: `at_most`, but one per 256 reactions. Each
    width compiles every jitted step once more (seconds each on a CPU), while the padding it saves
    grows with the number of reactions: a few hundred of them are cheaper in one width. (Every
    reaction screen in the benchmarks has thousands, so they keep `at_most`.)"""
    return max(1, min(at_most, reactions // REACTIONS_PER_BUCKET))


def choose_buckets(
    lengths: np.ndarray | Sequence[int], n_buckets: int = 4, multiple: int = 16
) -> tuple[int, ...]:
    """At most `n_buckets` bucket lengths (fewer for a few hundred reactions, see `bucket_count`),
    multiples of `multiple`, that minimise the padded size of an epoch (sum over reactions of their
    bucket length); the last holds the longest."""
    lengths = np.asarray(lengths)
    if lengths.size == 0 or n_buckets < 1:
        raise ValueError("choose_buckets needs at least one length and one bucket")
    n_buckets = bucket_count(lengths.size, n_buckets)
    widths = np.unique(-(-lengths // multiple) * multiple)
    fits = np.searchsorted(np.sort(lengths), widths, side="right")  # reactions <= each width
    # best[j]: least padded size covering all reactions <= widths[j], with j's bucket last.
    best = fits * widths.astype(np.float64)
    choice: list[list[int]] = [[int(w)] for w in widths]
    for _ in range(n_buckets - 1):
        new_best, new_choice = best.copy(), [list(c) for c in choice]
        for j in range(len(widths)):
            for i in range(j):
                cost = best[i] + (fits[j] - fits[i]) * widths[j]
                if cost < new_best[j]:
                    new_best[j], new_choice[j] = cost, [*choice[i], int(widths[j])]
        best, choice = new_best, new_choice
    return tuple(choice[-1])


def _bucket_of(lengths: np.ndarray, buckets: tuple[int, ...]) -> np.ndarray:
    if list(buckets) != sorted(set(buckets)) or buckets[0] < 1:
        raise ValueError(f"buckets must be positive and strictly increasing, got {buckets}")
    if lengths.size and lengths.max() > buckets[-1]:
        raise InputError(
            f"a reaction has {int(lengths.max())} tokens, more than the largest bucket "
            f"{buckets[-1]}", hint="add a larger bucket, or derive buckets with choose_buckets",
        )
    return np.searchsorted(np.asarray(buckets), lengths, side="left")


def _epoch_plan(
    encoded: EncodedReactions, batch_size: int, shuffle: bool, seed: int,
    buckets: tuple[int, ...] | None,
) -> list[tuple[np.ndarray, int]]:
    """(reaction indices, width) of every batch of one epoch, in the order they are served."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(encoded) == 0:
        return []
    if buckets is None:
        buckets = (int(encoded.lengths.max()),)
    bucket = _bucket_of(encoded.lengths, tuple(buckets))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(encoded)) if shuffle else np.arange(len(encoded))
    plan = []
    for b, width in enumerate(buckets):
        members = order[bucket[order] == b]
        plan += [(members[i:i + batch_size], width) for i in range(0, len(members), batch_size)]
    if shuffle:
        plan = [plan[i] for i in rng.permutation(len(plan))]
    return plan


def count_batches(encoded: EncodedReactions, batch_size: int,
                  buckets: tuple[int, ...] | None = None) -> int:
    """How many batches `batches` serves per epoch (for progress bars)."""
    return len(_epoch_plan(encoded, batch_size, False, 0, buckets))


def batches(
    encoded: EncodedReactions,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    buckets: tuple[int, ...] | None = None,
) -> Iterator[Batch]:
    """One epoch of fixed-size batches; every reaction appears exactly once with weight 1.

    shuffle: serve reactions and batches in an order drawn from `seed` (pass a different seed each
        epoch, e.g. `seed + epoch`); otherwise bucket by bucket in dataset order.
    buckets: allowed batch widths, increasing (see `choose_buckets`); each batch is padded to the
        smallest bucket that holds its longest reaction. None pads every batch to the longest
        reaction of `encoded`.
    """
    for members, width in _epoch_plan(encoded, batch_size, shuffle, seed, buckets):
        rows, tokens, mask, weight = padded_rows(encoded.tokens, encoded.lengths, encoded.pad_id, members,
                                                 batch_size, width)
        molecules = None if encoded.molecules is None else _to_width(encoded.molecules[rows], width, 0)
        yield Batch(tokens, mask, encoded.yields[rows], weight, encoded.task[rows], rows.astype(np.int32),
                    molecules)


def padded_rows(all_tokens: np.ndarray, lengths: np.ndarray, pad_id: int, members: np.ndarray,
                batch_size: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rows, tokens [B, width], mask, weight) of one batch of the sequences at `members`: filled up to
    `batch_size` with weight-0 repeats of its own rows, right-padded with `pad_id` to `width`."""
    rows = members[np.arange(batch_size) % len(members)]
    tokens = _to_width(all_tokens[rows], width, pad_id).astype(np.int32, copy=False)
    mask = np.arange(width)[None, :] < lengths[rows][:, None]
    weight = (np.arange(batch_size) < len(members)).astype(np.float32)
    return rows, tokens, mask, weight


def _to_width(rows: np.ndarray, width: int, fill: int) -> np.ndarray:
    """`rows` [N, L] cut or right-padded with `fill` to [N, width]."""
    if rows.shape[1] >= width:
        return rows[:, :width]
    return np.pad(rows, ((0, 0), (0, width - rows.shape[1])), constant_values=fill)
