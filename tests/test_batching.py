"""Specification of encoded reactions and length-bucketed, fixed-size batches."""

import collections

import numpy as np
import pytest

from mistral_cl.data.batching import (
    Batch,
    EncodedReactions,
    batches,
    bucket_count,
    choose_buckets,
    count_batches,
    encode_reactions,
)
from mistral_cl.data.suzuki import read_suzuki_csv
from mistral_cl.data.tasks import split_by_task
from mistral_cl.errors import InputError
from mistral_cl.tokenizer import Tokenizer

BATCH = 32


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.default()


@pytest.fixture(scope="module")
def encoded(tokenizer) -> EncodedReactions:
    return encode_reactions(read_suzuki_csv(), tokenizer)


@pytest.fixture(scope="module")
def buckets(encoded) -> tuple[int, ...]:
    return choose_buckets(encoded.lengths)


def fingerprint(tokens: np.ndarray, length: int) -> tuple[int, ...]:
    return tuple(tokens[:length].tolist())


def test_encoding_keeps_yields_and_indexes_tasks_by_sorted_key(encoded):
    dataset = read_suzuki_csv()
    assert encoded.tokens.dtype == np.int32 and encoded.tokens.shape == (5760,
                                                                          encoded.lengths.max())
    np.testing.assert_array_equal(encoded.yields, dataset.yields)
    keys = dataset.task_keys()
    assert [keys[i] for i in encoded.task] == dataset.tasks.tolist()


def test_a_task_of_a_stream_is_encoded_with_its_stream_index(tokenizer):
    task = split_by_task(read_suzuki_csv())[4]
    encoded = encode_reactions(task.test, tokenizer, {task.key: 11})
    assert set(encoded.task.tolist()) == {11}


def test_reactions_longer_than_max_len_are_an_error_naming_their_rows(tokenizer):
    dataset = read_suzuki_csv().subset([0, 1, 2])
    longest = int(encode_reactions(dataset, tokenizer).lengths.max())
    with pytest.raises(InputError, match="longer than the model's maximum length"):
        encode_reactions(dataset, tokenizer, max_len=longest - 1)
    cut = encode_reactions(dataset, tokenizer, max_len=longest - 1, truncate=True)
    assert cut.lengths.max() == longest - 1


def test_a_small_set_gets_one_bucket_and_a_screen_the_number_asked_for():
    assert [bucket_count(n) for n in (1, 255, 256, 600, 1023, 1024, 5760)] == [1, 1, 1, 2, 3, 4, 4]
    assert bucket_count(5760, at_most=2) == 2 and bucket_count(100, at_most=2) == 1
    spread = np.arange(1, 201) % 180 + 1  # lengths from 1 to 180: four widths would pay off in padding
    assert len(choose_buckets(spread)) == 1 and len(choose_buckets(np.tile(spread, 6))) == 4


def test_buckets_are_few_increasing_multiples_of_16_that_hold_the_longest(encoded, buckets):
    assert 1 <= len(buckets) <= 4
    assert list(buckets) == sorted(set(buckets)) and all(b % 16 == 0 for b in buckets)
    assert buckets[-1] >= encoded.lengths.max()


@pytest.mark.parametrize("shuffle", [True, False])
def test_every_reaction_appears_exactly_once_per_epoch_in_fixed_size_batches(
    encoded, buckets, shuffle
):
    served: collections.Counter = collections.Counter()
    indices = []
    for batch in batches(encoded, BATCH, shuffle=shuffle, seed=0, buckets=buckets):
        assert isinstance(batch, Batch)
        rows = [column for name, column in batch._asdict().items() if name != "parts"]  # a table
        assert {len(column) for column in rows} == {BATCH}
        assert batch.tokens.dtype == batch.task.dtype == batch.index.dtype == np.int32
        assert batch.yields.dtype == batch.weight.dtype == np.float32
        assert batch.mask.dtype == bool
        indices += batch.index[batch.weight == 1].tolist()
        for row in np.flatnonzero(batch.weight == 1):
            length = int(batch.mask[row].sum())
            served[(fingerprint(batch.tokens[row], length), float(batch.yields[row]))] += 1
    expected = collections.Counter(
        (fingerprint(t, n), float(y))
        for t, n, y in zip(encoded.tokens, encoded.lengths, encoded.yields, strict=True))
    assert served == expected
    assert sorted(indices) == list(range(len(encoded)))


def test_batches_are_padded_to_the_smallest_bucket_that_holds_their_longest_row(
    encoded, buckets
):
    shapes = set()
    for batch in batches(encoded, BATCH, shuffle=True, seed=1, buckets=buckets):
        longest = int(batch.mask.sum(axis=1).max())
        assert batch.tokens.shape[1] == min(b for b in buckets if b >= longest)
        shapes.add(batch.tokens.shape)
    assert len(shapes) <= len(buckets)


def test_mask_marks_exactly_the_real_tokens_and_padding_uses_pad_id(encoded, buckets):
    batch = next(batches(encoded, BATCH, shuffle=True, seed=0, buckets=buckets))
    lengths = batch.mask.sum(axis=1)
    assert (batch.mask == (np.arange(batch.tokens.shape[1]) < lengths[:, None])).all()
    assert (batch.tokens[~batch.mask] == encoded.pad_id).all()
    assert (batch.tokens[:, 0] == 1).all()


def test_filler_rows_have_weight_zero_and_repeat_real_rows(encoded, buckets):
    small = encoded.subset(np.arange(40))
    served = list(batches(small, BATCH, shuffle=False, buckets=buckets))
    assert sum(float(b.weight.sum()) for b in served) == 40
    assert len(served) == count_batches(small, BATCH, buckets)
    for batch in served:
        real = batch.weight == 1
        assert real[: real.sum()].all()
        assert set(batch.index[~real].tolist()) <= set(batch.index[real].tolist())
        assert all(batch.mask[row].any() for row in range(BATCH))


def test_index_puts_rows_back_in_dataset_order(encoded, buckets):
    lengths = np.zeros(len(encoded), dtype=np.int64)
    for batch in batches(encoded, BATCH, shuffle=True, seed=0, buckets=buckets):
        real = batch.weight == 1
        lengths[batch.index[real]] = batch.mask[real].sum(axis=1)
    np.testing.assert_array_equal(lengths, encoded.lengths)


def test_shuffled_order_is_fixed_by_the_seed(encoded, buckets):
    def first_tokens(seed: int) -> np.ndarray:
        return next(batches(encoded, BATCH, shuffle=True, seed=seed, buckets=buckets)).tokens

    np.testing.assert_array_equal(first_tokens(5), first_tokens(5))
    assert not np.array_equal(first_tokens(5), first_tokens(6))


def test_without_buckets_every_batch_is_padded_to_the_longest_reaction(encoded):
    widths = {b.tokens.shape[1] for b in batches(encoded, BATCH, shuffle=True, seed=0,
                                                  buckets=None)}
    assert widths == {int(encoded.lengths.max())}


def test_bucketing_pads_less_than_padding_to_the_longest(encoded, buckets):
    def positions(chosen) -> int:
        return sum(b.tokens.size for b in batches(encoded, BATCH, shuffle=True, seed=0,
                                                  buckets=chosen))

    assert positions(buckets) < 0.8 * positions(None)


def test_a_reaction_longer_than_the_largest_bucket_is_an_error(encoded):
    with pytest.raises(InputError, match="largest bucket"):
        next(batches(encoded, BATCH, shuffle=False, buckets=(32, 64)))


def test_concat_of_encoded_reactions_keeps_every_reaction(encoded):
    a, b = encoded.subset([0, 1]), encoded.subset([2])
    joined = EncodedReactions.concat([a, b])
    assert len(joined) == 3
    np.testing.assert_array_equal(joined.lengths, encoded.lengths[:3])


def test_molecule_ids_travel_with_their_tokens_through_subsets_concat_and_batches(encoded, tokenizer):
    assert encoded.molecules.shape == encoded.tokens.shape
    parts = [s.replace(">>", ".").count(".") + 1 for s in read_suzuki_csv().smiles]  # 7 to 15
    np.testing.assert_array_equal(encoded.molecules.max(axis=1), parts)
    np.testing.assert_array_equal(encoded.molecules[:5],
                                  tokenizer.molecules(encoded.tokens[:5], encoded.tokens[:5] != 0))
    part = EncodedReactions.concat([encoded.subset([7, 3]), encoded.subset([11])])
    np.testing.assert_array_equal(part.molecules, encoded.molecules[[7, 3, 11]])
    for batch in batches(part, 4, shuffle=True, seed=2, buckets=part.buckets):
        rows = np.asarray(batch.index)
        width = batch.tokens.shape[1]
        np.testing.assert_array_equal(batch.molecules, part.molecules[rows, :width])
        assert not batch.molecules[~batch.mask].any()
