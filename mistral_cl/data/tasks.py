"""Tasks, their held-out splits, and the order in which a continual learner meets them.

Two splits (`Split`):
- `task` (the default): each task's reactions are split into train and test with a generator seeded
  by the split seed and the task key, over the task's reactions in a canonical order (by SMILES, then
  source row), so a task's split depends on nothing else: not on the other tasks, the order of the
  rows, or the order of the stream. Every task holds out the same share, and at least 2 reactions:
  R^2 of a single reaction is undefined, and would turn ACC, BWT and FWT into NaN.
- `global` (the seed repository's protocol): one 70/30 split of all reactions, drawn as scikit-learn's
  `train_test_split(..., random_state=seed)` draws it over the rows in file order, then grouped by
  task, so a task's held-out share varies around the test fraction.
Either way every reaction is in exactly one set, and forgetting is measured on the held-out part.

Orders (`TaskOrder`): `sorted` by key; `random` (a permutation seeded by the stream's order seed);
`random:K` (seeded by K, the same order whatever the run's seed); `seed`, the order of the seed
repository (Suzuki reactant pairs sorted by their SMILES as it writes them, see
`suzuki_components.SEED_SPELLINGS`); or an explicit list of keys.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

import numpy as np

from mistral_cl.data.reactions import ROW_CONVENTION, ReactionDataset
from mistral_cl.data.suzuki_components import seed_label
from mistral_cl.errors import InputError, warn

TaskOrder = Literal["sorted", "random", "seed"] | str | Sequence[str]
Split = Literal["task", "global"]
SPLITS: tuple[str, ...] = ("task", "global")


@dataclasses.dataclass(frozen=True)
class Task:
    """One task of a stream: `key` names it (e.g. a reactant pair), `index` is its position in
    the stream (0 = learned first), `train`/`test` are its disjoint reactions."""

    key: str
    index: int
    train: ReactionDataset
    test: ReactionDataset


MIN_TEST = 2  # R^2 compares a set of yields with its mean: one reaction has no variance


def _held_out(part: ReactionDataset, test_fraction: float, rng: np.random.Generator, what: str
              ) -> np.ndarray:
    """Sorted positions (of `part`) that go to the test set: round(n * test_fraction), at least
    `MIN_TEST` and leaving at least one reaction to train on. `what` names `part` in messages."""
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction must be between 0 and 1, got {test_fraction}",
                         hint="use e.g. `test_fraction=0.3` for a 70/30 split")
    n = len(part)
    rows = sorted(part.rows.tolist())
    if n < MIN_TEST + 1:
        raise InputError(
            f"{what} has {n} reaction(s); a split needs at least {MIN_TEST + 1}: {MIN_TEST} held out "
            f"to score R², 1 to train on ({ROW_CONVENTION})", file=part.source, rows=rows,
            hint="add reactions to it, or delete its rows (in `continual`, `task_order` may also list "
                 "the other tasks without it)")
    n_test = min(max(round(n * test_fraction), 1), n - 1)
    if n_test < MIN_TEST:
        needed = math.ceil(100 * (MIN_TEST - 0.5) / n) / 100
        raise InputError(
            f"holding out {test_fraction:g} of the {n} reactions of {what} leaves {n_test} test "
            f"reaction; R² needs at least {MIN_TEST}", file=part.source,
            hint=f"set `test_fraction={min(needed, 0.5):g}` or more, or add reactions")
    return np.sort(rng.permutation(n)[:n_test])


def _warn_if_unscorable(test: ReactionDataset, what: str, consequence: str) -> None:
    """R^2 is undefined on a test set whose yields are all equal: say so, and what it leaves out."""
    if len(test) and float(np.ptp(test.yields)) == 0.0:
        level = 100 * float(test.yields[0])
        warn(f"the {len(test)} held-out reactions of {what} all have the yield {level:g} %: R² is "
             f"undefined there (NaN){consequence}", file=test.source, rows=sorted(test.rows.tolist()),
             hint="add reactions with other yields, or raise `test_fraction`")


def _complement(n: int, chosen: np.ndarray) -> np.ndarray:
    keep = np.ones(n, dtype=bool)
    keep[chosen] = False
    return np.flatnonzero(keep)


def random_split(
    dataset: ReactionDataset, test_fraction: float = 0.3, seed: int = 0
) -> tuple[ReactionDataset, ReactionDataset]:
    """(train, test) over the whole dataset, ignoring tasks: the standard single-task protocol
    (for the Suzuki screen, a random 70/30 split repeated with seeds 0..9)."""
    n = len(dataset)
    test = _held_out(dataset, test_fraction, np.random.default_rng(seed), "the data set")
    _warn_if_unscorable(dataset.subset(test), "the data set", "")
    return dataset.subset(_complement(n, test)), dataset.subset(test)


def split_by_task(
    dataset: ReactionDataset, test_fraction: float = 0.3, seed: int = 0
) -> list[Task]:
    """One `Task` per task key, sorted by key (index = position in that order), each split into
    train and test with its own generator (seeded by `seed` and the key)."""
    if len(dataset) == 0:
        raise InputError("the dataset has no reactions", file=dataset.source,
                         hint="check the file and any filters applied to it")
    tasks = []
    for index, key in enumerate(dataset.task_keys()):
        members = np.flatnonzero(dataset.tasks == key)
        # A canonical member order makes the split independent of how the rows were ordered.
        members = members[np.lexsort((dataset.rows[members], dataset.smiles[members]))]
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        test = _held_out(dataset.subset(members), test_fraction, rng, f"task {key!r}")
        train = members[_complement(len(members), test)]
        tasks.append(Task(key, index, dataset.subset(train), dataset.subset(members[test])))
        _warn_if_unscorable(tasks[-1].test, f"task {key!r}",
                            ", so ACC, BWT, FWT and forgetting leave this task out")
    return tasks


def split_globally(
    dataset: ReactionDataset, test_fraction: float = 0.3, seed: int = 0
) -> list[Task]:
    """One `Task` per task key, sorted by key, from one split of all reactions: the reactions in file
    order (by source row) are permuted by `numpy.random.RandomState(seed)` and the first
    ceil(n * test_fraction) are held out, as scikit-learn's `train_test_split` does in the seed
    repository; on the Science workbook this is the seed's split, reaction for reaction."""
    n = len(dataset)
    if n == 0:
        raise InputError("the dataset has no reactions", file=dataset.source,
                         hint="check the file and any filters applied to it")
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction must be between 0 and 1, got {test_fraction}",
                         hint="use e.g. 0.3 for a 70/30 split")
    in_file_order = np.argsort(dataset.rows, kind="stable")
    # The legacy generator on purpose: it is the one scikit-learn draws from for an integer seed.
    permuted = in_file_order[np.random.RandomState(seed).permutation(n)]
    held_out = np.zeros(n, dtype=bool)
    held_out[permuted[: math.ceil(n * test_fraction)]] = True
    tasks = []
    for index, key in enumerate(dataset.task_keys()):
        members = np.flatnonzero(dataset.tasks == key)
        train, test = members[~held_out[members]], members[held_out[members]]
        if not len(train) or not len(test):
            raise InputError(f"task {key!r} ({len(members)} reactions) has no "
                             f"{'training' if not len(train) else 'test'} reaction in the global split",
                             hint="use --split task, or leave this small task out of the stream")
        tasks.append(Task(key, index, dataset.subset(train), dataset.subset(test)))
    return tasks


def seed_order(keys: Sequence[str]) -> list[str]:
    """`keys` in the seed repository's order: by its task label, the two partners' SMILES as it
    writes them (defined for the Suzuki-Miyaura reactant pairs only)."""
    labels = {key: seed_label(key) for key in keys}
    unknown = [key for key, label in labels.items() if label is None]
    if unknown:
        raise InputError(f"the seed order is defined for Suzuki-Miyaura reactant pairs only, not "
                         f"{', '.join(map(repr, unknown[:3]))}",
                         hint="use --task-order sorted, random or random:K for this dataset")
    return sorted(keys, key=lambda key: labels[key])


def _checked_keys(keys: list[str], valid: list[str]) -> list[str]:
    hint = f"valid task keys: {', '.join(valid)}"
    if not keys:
        raise InputError("the task order is empty", hint=hint)
    unknown = [k for k in keys if k not in valid]
    if unknown:
        raise InputError(f"unknown task key(s) {', '.join(map(repr, unknown))}", hint=hint)
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise InputError(f"task key(s) listed twice: {', '.join(map(repr, repeated))}", hint=hint)
    return keys


def ordered_keys(keys: Iterable[str], order: TaskOrder = "sorted", seed: int = 0) -> list[str]:
    """Task keys in learning order (see `TaskStream.from_tasks`); what a run's stream.json records."""
    valid = sorted(keys)
    if isinstance(order, str) and order.startswith("random:") and order[7:].isdigit():
        order, seed = "random", int(order[7:])
    if order == "sorted":
        return valid
    if order == "random":
        return [valid[i] for i in np.random.default_rng(seed).permutation(len(valid))]
    if order == "seed":
        return seed_order(valid)
    if isinstance(order, str):
        raise InputError(f"unknown task order {order!r}",
                         hint="use 'sorted', 'random', 'random:K', 'seed' or a list of task keys")
    return _checked_keys(list(order), valid)


@dataclasses.dataclass(frozen=True)
class TaskStream:
    """Tasks in the order they are learned; `tasks[i].index == i`."""

    tasks: tuple[Task, ...]

    @classmethod
    def from_tasks(cls, tasks: Sequence[Task], order: TaskOrder = "sorted", seed: int = 0
                   ) -> TaskStream:
        """Order `tasks`: 'sorted' by key, 'random' (permutation seeded by `seed`), 'random:K'
        (seeded by K), 'seed' (see `seed_order`), or an explicit list of keys (a subset is allowed;
        unknown or repeated keys are errors)."""
        by_key = {task.key: task for task in tasks}
        keys = ordered_keys(by_key, order, seed)
        return cls(tuple(dataclasses.replace(by_key[k], index=i) for i, k in enumerate(keys)))

    @classmethod
    def from_dataset(
        cls,
        dataset: ReactionDataset,
        *,
        order: TaskOrder = "sorted",
        test_fraction: float = 0.3,
        split_seed: int = 0,
        order_seed: int = 0,
        split: Split = "task",
    ) -> TaskStream:
        """Split `dataset` (`split`: 'task', see `split_by_task`, or 'global', see `split_globally`)
        and order its tasks (see `from_tasks`); an explicit order splits only the tasks it names."""
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}", hint=f"use one of {', '.join(SPLITS)}")
        if not isinstance(order, str):
            keys = _checked_keys(list(order), dataset.task_keys())
            dataset = dataset.subset(np.flatnonzero(np.isin(dataset.tasks, np.array(keys, dtype=object))))
        splitter = split_by_task if split == "task" else split_globally
        return cls.from_tasks(splitter(dataset, test_fraction, split_seed), order, order_seed)

    @property
    def keys(self) -> list[str]:
        return [task.key for task in self.tasks]

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, index: int) -> Task:
        return self.tasks[index]

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)
