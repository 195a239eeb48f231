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
from typing import Any, NamedTuple

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
    parts, part_lengths, part_ids: the distinct molecules of the set as token-id sequences (int32
    [M, P] right-padded with `pad_id`, and their lengths [M]), and which of them each reaction holds
    (int32 [N, K], -1 for none), for a head that encodes each molecule on its own
    (`HeadConfig.context="molecule"`, see `molecule_table`); None where `molecules` is.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    yields: np.ndarray
    task: np.ndarray
    pad_id: int = 0
    buckets: tuple[int, ...] | None = None
    molecules: np.ndarray | None = None
    parts: np.ndarray | None = None
    part_lengths: np.ndarray | None = None
    part_ids: np.ndarray | None = None

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
                                   molecules=None if self.molecules is None else self.molecules[indices],
                                   part_ids=None if self.part_ids is None else self.part_ids[indices])

    @staticmethod
    def concat(parts: Sequence[EncodedReactions]) -> EncodedReactions:
        """All reactions of `parts`, in order (e.g. a new task plus replayed ones)."""
        width = max(p.tokens.shape[1] for p in parts)
        tokens = [_to_width(p.tokens, width, p.pad_id) for p in parts]
        known = all(p.molecules is not None for p in parts)
        molecules = np.concatenate([_to_width(p.molecules, width, 0) for p in parts]) if known else None
        tables = (merged_tables([(p.parts, p.part_lengths, p.part_ids) for p in parts], parts[0].pad_id)
                  if known and all(p.parts is not None for p in parts) else (None, None, None))
        return EncodedReactions(
            tokens=np.concatenate(tokens),
            lengths=np.concatenate([p.lengths for p in parts]),
            yields=np.concatenate([p.yields for p in parts]),
            task=np.concatenate([p.task for p in parts]),
            pad_id=parts[0].pad_id,
            buckets=_merged_buckets([p.buckets for p in parts]),
            molecules=molecules,
            parts=tables[0],
            part_lengths=tables[1],
            part_ids=tables[2],
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
    molecules = tokenizer.molecules(tokens, mask)
    parts, part_lengths, part_ids = molecule_table(tokens, molecules, tokenizer.pad_id)
    return EncodedReactions(
        tokens=tokens,
        lengths=lengths,
        yields=dataset.yields.astype(np.float32),
        task=np.array([task_index[k] for k in dataset.tasks], dtype=np.int32),
        pad_id=tokenizer.pad_id,
        buckets=choose_buckets(lengths) if buckets == "auto" and len(lengths) else
        (None if buckets == "auto" else buckets),
        molecules=molecules,
        parts=parts,
        part_lengths=part_lengths,
        part_ids=part_ids,
    )


def molecule_table(tokens: np.ndarray, molecules: np.ndarray, pad_id: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct molecules of encoded reactions and where they occur.

    A molecule is the token ids `Tokenizer.molecules` assigns to one molecule of a reaction, so two
    reactions share a molecule when their texts tokenise it alike. Returns (parts int32 [M, P], right-
    padded with `pad_id`; part_lengths int32 [M]; part_ids int32 [N, K]: the molecules of each
    reaction in text order, -1 after its last), molecules numbered in order of first appearance.
    """
    tokens, molecules = np.asarray(tokens), np.asarray(molecules)
    index: dict[tuple[int, ...], int] = {}
    per_row = []
    for row in range(len(tokens)):
        ids = molecules[row]
        found = []
        for m in range(1, int(ids.max(initial=0)) + 1):
            part = tuple(tokens[row][ids == m].tolist())
            if part:
                found.append(index.setdefault(part, len(index)))
        per_row.append(found)
    return _table_arrays(list(index), per_row, pad_id)


def _table_arrays(parts: Sequence[tuple[int, ...]], per_row: Sequence[Sequence[int]], pad_id: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = np.full((len(parts), max((len(p) for p in parts), default=1)), pad_id, np.int32)
    for i, part in enumerate(parts):
        table[i, : len(part)] = part
    ids = np.full((len(per_row), max((len(r) for r in per_row), default=1)), -1, np.int32)
    for row, found in enumerate(per_row):
        ids[row, : len(found)] = found
    return table, np.array([len(p) for p in parts], np.int32), ids


def merged_tables(tables: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], pad_id: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One molecule table for the reactions of several sets, in order: `(parts, part_lengths,
    part_ids)` of each set (`molecule_table`), renumbered so a molecule in two sets is one."""
    index: dict[tuple[int, ...], int] = {}
    per_row: list[list[int]] = []
    for parts, lengths, ids in tables:
        new = np.array([index.setdefault(tuple(parts[i, : lengths[i]].tolist()), len(index))
                        for i in range(len(parts))], np.int32)
        per_row += [new[row[row >= 0]].tolist() for row in ids]
    return _table_arrays(list(index), per_row, pad_id)


class Parts(NamedTuple):
    """The distinct molecules of one batch, packed into rows: token ids int32 [R, W], each token's
    molecule as a table row + 1 (`segments`, 0 for padding) and its position within the molecule
    (`positions`), and each table row's length (`lengths` int32 [U], 0 for rows no reaction uses).
    R, W and U are fixed for a data set and batch size (see `parts_shape`), so one program serves
    every batch."""

    tokens: np.ndarray
    segments: np.ndarray
    positions: np.ndarray
    lengths: np.ndarray


class Batch(NamedTuple):
    """One step's inputs: tokens int32 [B, T], mask bool [B, T], yields float32 [B],
    weight float32 [B] (1 for real rows, 0 for fillers), task int32 [B], index int32 [B],
    each row's position in the `EncodedReactions` it came from (to put predictions back), and
    molecules int16 [B, T] where the encoded set has them (see `EncodedReactions`).

    `slots` and `parts`, where the set has a molecule table: each row's molecules as rows of the
    batch's table (int32 [B, K], -1 for none), and that table (`Parts`: the batch's distinct
    molecules, packed; not rows of the batch, so never split, tiled or cut like the other fields),
    for a head that encodes each molecule once per batch (`HeadConfig.context="molecule"`)."""

    tokens: np.ndarray
    mask: np.ndarray
    yields: np.ndarray
    weight: np.ndarray
    task: np.ndarray
    index: np.ndarray
    molecules: np.ndarray | None = None
    slots: np.ndarray | None = None
    parts: Parts | None = None


def split_table(batch: Any) -> tuple[Any, Parts | None]:
    """A batch as (its rows, its molecule table or None): every field but `parts` is indexed by
    reaction, so it can be split over devices, tiled or cut into single rows; the table is shared by
    all rows and must stay whole (`with_table` puts it back)."""
    table = getattr(batch, "parts", None)
    return (batch if table is None else batch._replace(parts=None)), table


def with_table(rows: Any, table: Parts | None) -> Any:
    """`rows` (a batch without its table, see `split_table`) with `table` put back."""
    return rows if table is None else rows._replace(parts=table)


# Field names of a batch whose second axis is the token axis (`widen` pads them).
TOKEN_AXIS_FIELDS = ("tokens", "mask", "molecules", "features")

REACTIONS_PER_BUCKET = 256
PART_WIDTH_MULTIPLE = 16


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
    has_table = encoded.part_ids is not None and len(encoded.parts) > 0
    shape = parts_shape(encoded, batch_size) if has_table else None
    for members, width in _epoch_plan(encoded, batch_size, shuffle, seed, buckets):
        rows, tokens, mask, weight = padded_rows(encoded.tokens, encoded.lengths, encoded.pad_id, members,
                                                 batch_size, width)
        molecules = None if encoded.molecules is None else _to_width(encoded.molecules[rows], width, 0)
        slots, parts = batch_parts(encoded, rows, shape)
        yield Batch(tokens, mask, encoded.yields[rows], weight, encoded.task[rows], rows.astype(np.int32),
                    molecules, slots, parts)


def parts_shape(encoded: EncodedReactions, batch_size: int) -> tuple[int, int, int]:
    """(R, W, U) of the packed molecule table of any batch of `batch_size` reactions of `encoded`:
    W, the longest molecule rounded up to a multiple of 16 tokens; U, a power of two (from 8) that
    holds the most distinct molecules a batch can have; R, packed rows enough for any batch.

    A batch's molecules are packed first-fit decreasing, which needs at most 11/9 as many rows as
    the best packing plus 6/9 (Dosa, 2007); the best packing of a batch's molecules needs no more
    rows than a first-fit-decreasing packing of the longest molecules a batch could hold, so R is
    that bound, computed once for the set.
    """
    lengths = np.sort(encoded.part_lengths)[::-1]  # `molecule_table` keeps no empty molecule
    most = min(len(lengths), batch_size * encoded.part_ids.shape[1])
    width = -(-int(lengths[0]) // PART_WIDTH_MULTIPLE) * PART_WIDTH_MULTIPLE
    rows = len(_pack(lengths[:most], width))
    return (11 * rows + 6) // 9, width, max(8, 1 << (most - 1).bit_length())


def _pack(lengths: np.ndarray, width: int) -> list[list[int]]:
    """First-fit decreasing: the positions in `lengths` of the items of each row of `width`."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in np.argsort(-np.asarray(lengths), kind="stable"):
        size = int(lengths[i])
        for r, left in enumerate(room):
            if size <= left:
                rows[r].append(int(i))
                room[r] -= size
                break
        else:
            rows.append([int(i)])
            room.append(width - size)
    return rows


def batch_parts(encoded: EncodedReactions, rows: np.ndarray, shape: tuple[int, int, int] | None
                ) -> tuple[np.ndarray | None, Parts | None]:
    """(slots, parts) of the batch of reactions `rows` (see `Batch`): each distinct molecule of the
    batch once, packed into a table of `shape` (`parts_shape`)."""
    if shape is None:
        return None, None
    n_rows, width, n_table = shape
    ids = encoded.part_ids[rows]
    present = np.unique(ids[ids >= 0])
    slots = np.where(ids >= 0, np.searchsorted(present, np.maximum(ids, 0)), -1).astype(np.int32)
    lengths = np.zeros(n_table, np.int32)
    lengths[: len(present)] = encoded.part_lengths[present]
    packing = _pack(lengths[: len(present)], width)
    if len(packing) > n_rows or len(present) > n_table:
        raise RuntimeError(f"a batch's molecules need {len(packing)} packed rows and {len(present)} "
                           f"table rows, more than the bound {n_rows} and {n_table}")
    tokens = np.full((n_rows, width), encoded.pad_id, np.int32)
    segments = np.zeros((n_rows, width), np.int32)
    positions = np.zeros((n_rows, width), np.int32)
    for r, members in enumerate(packing):
        at = 0
        for u in members:
            size = lengths[u]
            tokens[r, at:at + size] = encoded.parts[present[u], :size]
            segments[r, at:at + size] = u + 1
            positions[r, at:at + size] = np.arange(size)
            at += size
    return slots, Parts(tokens, segments, positions, lengths)


def match_parts(a: Batch, b: Batch) -> tuple[Batch, Batch]:
    """Two batches whose molecule tables differ in shape (batch sizes whose bounds differ, see
    `parts_shape`) padded to a common one, so a step that takes both compiles once: more packed
    rows and tokens are padding, more table rows are unused."""
    if getattr(a, "parts", None) is None or getattr(b, "parts", None) is None:
        return a, b
    rows, width = (max(a.parts.tokens.shape[i], b.parts.tokens.shape[i]) for i in (0, 1))
    table = max(len(a.parts.lengths), len(b.parts.lengths))

    def grow(batch: Batch) -> Batch:
        p = batch.parts
        pad = ((0, rows - p.tokens.shape[0]), (0, width - p.tokens.shape[1]))
        return batch._replace(parts=Parts(np.pad(p.tokens, pad), np.pad(p.segments, pad),
                                          np.pad(p.positions, pad),
                                          np.pad(p.lengths, (0, table - len(p.lengths)))))

    return grow(a), grow(b)


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
