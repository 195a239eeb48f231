"""Loaded from a checkpoint that transformers wrote, the backbone computes what transformers does.

The reference is `MistralModel` with eager attention in float32. It applies the sliding window
itself (checked below), so no hand-made mask stands in for it.
"""

import dataclasses

import equinox as eqx
import jax
import numpy as np
import pytest
from hf_fixtures import GQA, hf_config, hf_hidden_states, hf_mistral

from mistral_cl.weights import load_mistral

WINDOW = GQA.sliding_window


def relative_error(ours, reference) -> float:
    return float(np.max(np.abs(np.asarray(ours) - reference)) / np.max(np.abs(reference)))


def padded_batch(lengths, total, *, seed=0):
    """Random sequences of the given lengths, right-padded with token 0 to `total`."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, GQA.vocab_size, (len(lengths), total)).astype(np.int32)
    mask = np.arange(total)[None] < np.asarray(lengths)[:, None]
    return np.where(mask, tokens, 0).astype(np.int32), mask


def left_padded(tokens, mask):
    """The same sequences with their padding moved to the front."""
    shifts = (~mask).sum(axis=1)
    roll = lambda rows: np.stack([np.roll(r, s) for r, s in zip(rows, shifts, strict=True)])
    return roll(tokens), roll(mask)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    model = hf_mistral()
    directory = tmp_path_factory.mktemp("hf")
    model.save_pretrained(directory, safe_serialization=True)
    return model, directory


@pytest.fixture(scope="module")
def ours(reference):
    return eqx.filter_jit(load_mistral(reference[1]))


def test_transformers_reference_applies_the_sliding_window(reference):
    model, _ = reference
    unwindowed = type(model)(hf_config(dataclasses.replace(GQA, sliding_window=None))).eval()
    unwindowed.load_state_dict(model.state_dict())
    tokens, mask = padded_batch([3 * WINDOW], 3 * WINDOW)
    windowed = hf_hidden_states(model, tokens, mask)
    full = hf_hidden_states(unwindowed, tokens, mask)
    np.testing.assert_allclose(windowed[:, :WINDOW], full[:, :WINDOW], rtol=1e-6, atol=1e-6)
    assert relative_error(windowed[:, WINDOW:], full[:, WINDOW:]) > 1e-2


def test_hidden_states_match_transformers_on_a_right_padded_batch(reference, ours):
    lengths = [24, 17, 9, 3, 1]
    tokens, mask = padded_batch(lengths, 24)
    expected = hf_hidden_states(reference[0], tokens, mask)
    got = np.asarray(ours(tokens, mask))
    for row, length in enumerate(lengths):
        assert relative_error(got[row, :length], expected[row, :length]) <= 1e-5


@pytest.mark.parametrize("depth", range(GQA.n_layers + 1))
def test_every_depth_matches_the_transformers_hidden_states_of_that_layer(reference, depth):
    lengths = [24, 11, 2]
    tokens, mask = padded_batch(lengths, 24, seed=2)
    expected = hf_hidden_states(reference[0], tokens, mask, layer=depth)
    got = np.asarray(eqx.filter_jit(load_mistral(reference[1]))(tokens, mask, depth=depth))
    for row, length in enumerate(lengths):
        assert relative_error(got[row, :length], expected[row, :length]) <= 1e-5
    if depth < GQA.n_layers:  # an earlier layer is not the output: the test can tell them apart
        final = hf_hidden_states(reference[0], tokens, mask)
        assert relative_error(got[0, :24], final[0, :24]) > 1e-2


def test_hidden_states_match_transformers_beyond_the_sliding_window(reference, ours):
    tokens, mask = padded_batch([3 * WINDOW], 3 * WINDOW, seed=1)
    assert relative_error(ours(tokens, mask), hf_hidden_states(reference[0], tokens, mask)) <= 1e-5


def test_sharded_checkpoint_loads_like_a_single_file(reference, tmp_path):
    model, single = reference
    model.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1
    for a, b in zip(jax.tree.leaves(load_mistral(tmp_path)), jax.tree.leaves(load_mistral(single)),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_padding_never_changes_real_tokens_hidden_states(ours):
    lengths, total = [2 * WINDOW + 5, WINDOW - 3, 1], 2 * WINDOW + 9
    right_tokens, right_mask = padded_batch(lengths, total, seed=2)
    left_tokens, left_mask = left_padded(right_tokens, right_mask)
    right = np.asarray(ours(right_tokens, right_mask))
    left = np.asarray(ours(left_tokens, left_mask))
    for row, length in enumerate(lengths):
        real = right_tokens[row : row + 1, :length]
        alone = np.asarray(ours(real, np.ones_like(real, bool)))[0]
        assert relative_error(right[row, :length], alone) <= 1e-6
        assert relative_error(left[row, total - length :], alone) <= 1e-6
