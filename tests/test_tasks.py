"""Specification of task splits and task streams."""

import numpy as np
import pytest

from mistral_cl.data import suzuki_components as chem
from mistral_cl.data.reactions import ReactionDataset
from mistral_cl.data.smiles import canonical_smiles
from mistral_cl.data.suzuki import read_suzuki_csv
from mistral_cl.data.tasks import TaskStream, random_split, split_by_task, split_globally
from mistral_cl.errors import InputError

# The seed repository's stream: its task labels (quinoline SMILES '.' indazole SMILES, as it writes
# them) in sorted order, worked out by hand from its preprocessing script.
SEED_ORDER = ["BPin-Q+Br-Ind", "Br-Q+BOH2-Ind", "Br-Q+BPin-Ind", "Br-Q+BF3K-Ind", "Cl-Q+BOH2-Ind",
              "Cl-Q+BPin-Ind", "Cl-Q+BF3K-Ind", "I-Q+BOH2-Ind", "I-Q+BPin-Ind", "I-Q+BF3K-Ind",
              "BOH2-Q+Br-Ind", "OTf-Q+BOH2-Ind", "OTf-Q+BPin-Ind", "OTf-Q+BF3K-Ind", "BF3K-Q+Br-Ind"]


@pytest.fixture(scope="module")
def suzuki() -> ReactionDataset:
    return read_suzuki_csv()


def rows(dataset: ReactionDataset) -> set[int]:
    return set(dataset.rows.tolist())


def test_each_task_is_split_70_30_into_disjoint_parts_covering_the_task(suzuki):
    tasks = split_by_task(suzuki)
    assert [t.key for t in tasks] == suzuki.task_keys()
    assert [t.index for t in tasks] == list(range(15))
    for task in tasks:
        assert (len(task.train), len(task.test)) == (269, 115)
        assert not rows(task.train) & rows(task.test)
        assert rows(task.train) | rows(task.test) == rows(suzuki.of_task(task.key))
        assert set(task.train.tasks) == set(task.test.tasks) == {task.key}


def test_split_is_deterministic_given_the_seed(suzuki):
    first, again = split_by_task(suzuki, seed=3), split_by_task(suzuki, seed=3)
    other = split_by_task(suzuki, seed=4)
    assert all(rows(a.test) == rows(b.test) for a, b in zip(first, again, strict=True))
    assert any(rows(a.test) != rows(b.test) for a, b in zip(first, other, strict=True))


def test_split_of_a_task_depends_neither_on_other_tasks_nor_on_row_order(suzuki):
    full = {t.key: rows(t.test) for t in split_by_task(suzuki)}
    shuffled = suzuki.subset(np.random.default_rng(1).permutation(len(suzuki)))
    keys = ["Cl-Q+BOH2-Ind", "I-Q+BPin-Ind"]
    two = shuffled.subset(np.flatnonzero(np.isin(shuffled.tasks, keys)))
    assert {t.key: rows(t.test) for t in split_by_task(two)} == {key: full[key] for key in keys}


def test_split_of_a_task_does_not_depend_on_the_stream_order(suzuki):
    by_sorted = {t.key: rows(t.test) for t in TaskStream.from_dataset(suzuki, order="sorted")}
    by_random = {t.key: rows(t.test)
                 for t in TaskStream.from_dataset(suzuki, order="random", order_seed=7)}
    assert by_sorted == by_random


def test_random_split_is_70_30_disjoint_and_seeded(suzuki):
    train, test = random_split(suzuki, seed=0)
    assert (len(train), len(test)) == (4032, 1728)
    assert not rows(train) & rows(test) and len(rows(train) | rows(test)) == 5760
    assert rows(random_split(suzuki, seed=0)[1]) == rows(test)
    assert rows(random_split(suzuki, seed=1)[1]) != rows(test)


def test_stream_indices_follow_the_stream_order(suzuki):
    stream = TaskStream.from_dataset(suzuki, order="random", order_seed=2)
    assert sorted(stream.keys) == suzuki.task_keys() and stream.keys != suzuki.task_keys()
    assert [t.index for t in stream] == list(range(len(stream)))
    assert stream.keys == TaskStream.from_dataset(suzuki, order="random", order_seed=2).keys


def test_explicit_order_may_name_a_subset_of_tasks(suzuki):
    stream = TaskStream.from_dataset(suzuki, order=["I-Q+BPin-Ind", "Cl-Q+BOH2-Ind"])
    assert stream.keys == ["I-Q+BPin-Ind", "Cl-Q+BOH2-Ind"]
    assert stream[1].index == 1


def test_unknown_task_key_is_an_error_listing_the_valid_keys(suzuki):
    with pytest.raises(InputError, match="unknown task key.*'Cl-Q\\+Nope'") as error:
        TaskStream.from_dataset(suzuki, order=["Cl-Q+BOH2-Ind", "Cl-Q+Nope"])
    assert "BF3K-Q+Br-Ind" in str(error.value)


def test_repeated_task_key_is_an_error(suzuki):
    with pytest.raises(InputError, match="listed twice"):
        TaskStream.from_dataset(suzuki, order=["Cl-Q+BOH2-Ind", "Cl-Q+BOH2-Ind"])


def test_empty_dataset_cannot_be_split_into_tasks(suzuki):
    with pytest.raises(InputError, match="no reactions"):
        split_by_task(suzuki.subset([]))


def test_task_with_a_single_reaction_cannot_be_split(suzuki):
    with pytest.raises(InputError, match="task 'Cl-Q\\+BOH2-Ind' has 1 reaction"):
        split_by_task(suzuki.subset([0]))


def test_seed_order_preset_is_the_seed_repositorys_order_of_the_suzuki_pairs(suzuki):
    assert TaskStream.from_dataset(suzuki, order="seed").keys == SEED_ORDER


def test_seed_spellings_are_the_molecules_of_our_reactant_tables():
    for reactant in [*chem.QUINOLINES.values(), *chem.INDAZOLES.values()]:
        ours = sorted(canonical_smiles(s) for s in (reactant.smiles, *reactant.companions))
        theirs = sorted(canonical_smiles(s) for s in chem.SEED_SPELLINGS[reactant.key].split("."))
        assert ours == theirs, reactant.key


def test_seed_order_is_refused_for_tasks_that_are_not_suzuki_pairs():
    data = ReactionDataset.build(["CC>>C"] * 8, [0.1] * 8, ["Br-3-Py"] * 4 + ["Cl-2-Py"] * 4,
                                 list(range(2, 10)), "halides.csv")
    with pytest.raises(InputError, match="Suzuki-Miyaura reactant pairs only"):
        TaskStream.from_dataset(data, order="seed", test_fraction=0.5)


def test_random_k_order_is_seeded_by_k_not_by_the_order_seed(suzuki):
    tasks = split_by_task(suzuki)
    one = TaskStream.from_tasks(tasks, "random:5", seed=0).keys
    assert one == TaskStream.from_tasks(tasks, "random:5", seed=9).keys
    assert one == TaskStream.from_tasks(tasks, "random", seed=5).keys
    assert one != TaskStream.from_tasks(tasks, "random:6").keys


def test_global_split_keeps_every_reaction_exactly_once(suzuki):
    tasks = split_globally(suzuki, 0.3, seed=0)
    assert [t.key for t in tasks] == suzuki.task_keys()
    test_rows = [r for t in tasks for r in t.test.rows.tolist()]
    train_rows = [r for t in tasks for r in t.train.rows.tolist()]
    assert len(test_rows) == 1728 and len(train_rows) == 4032
    assert sorted(test_rows + train_rows) == sorted(suzuki.rows.tolist())
    for task in tasks:
        assert set(task.train.tasks) == set(task.test.tasks) == {task.key}
    shares = [len(t.test) / (len(t.train) + len(t.test)) for t in tasks]
    assert len(set(shares)) > 1 and all(0.2 < s < 0.4 for s in shares)


def test_global_split_is_scikit_learns_train_test_split_over_the_rows_in_file_order(suzuki):
    model_selection = pytest.importorskip("sklearn.model_selection")
    _, expected = model_selection.train_test_split(np.sort(suzuki.rows), test_size=0.3, random_state=2)
    shuffled = suzuki.subset(np.random.default_rng(0).permutation(len(suzuki)))
    tasks = TaskStream.from_dataset(shuffled, split="global", split_seed=2, order="seed")
    assert sorted(r for t in tasks for r in t.test.rows.tolist()) == sorted(expected.tolist())


def test_global_split_refuses_a_task_left_without_train_or_test_reactions(suzuki):
    lone = suzuki.subset(np.flatnonzero(suzuki.tasks == "Cl-Q+BOH2-Ind")[:1])
    two = ReactionDataset.concat([suzuki.of_task("Br-Q+BOH2-Ind"), lone])
    with pytest.raises(InputError, match="task 'Cl-Q\\+BOH2-Ind' \\(1 reactions\\) has no"):
        split_globally(two, 0.3, seed=0)


def test_unknown_split_is_an_error(suzuki):
    with pytest.raises(InputError, match="unknown split"):
        TaskStream.from_dataset(suzuki, split="per-row")
