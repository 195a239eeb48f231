"""Specification of the Mistral tokenizer wrapper."""

import numpy as np
import pytest

from mistral_cl.errors import InputError
from mistral_cl.tokenizer import Tokenizer

SMILES = ["CCO", "c1ccccc1Br.OB(O)c1ccccc1>>c1ccc(-c2ccccc2)cc1", "[Na+].[OH-]"]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.default()


def test_default_tokenizer_is_mistral_v1_from_mistral_common(tokenizer):
    assert tokenizer.path.name == "tokenizer.model.v1"
    assert (tokenizer.vocab_size, tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (
        32000, 1, 2, 0)


def test_encode_starts_with_bos_and_ends_without_eos(tokenizer):
    ids = tokenizer.encode("CC(=O)O")
    assert ids[0] == tokenizer.bos_id
    assert tokenizer.eos_id not in ids
    assert tokenizer.encode("CC(=O)O", bos=False) == ids[1:]


@pytest.mark.parametrize("text", SMILES)
def test_decode_inverts_encode(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_encode_batch_right_pads_to_a_multiple_and_masks_the_padding(tokenizer):
    tokens, mask = tokenizer.encode_batch(SMILES, pad_to_multiple=8)
    assert tokens.dtype == np.int32 and mask.dtype == bool
    assert tokens.shape == mask.shape and tokens.shape[1] % 8 == 0
    for row, text in enumerate(SMILES):
        ids = tokenizer.encode(text)
        assert mask[row].sum() == len(ids)
        assert tokens[row, : len(ids)].tolist() == ids
        assert (tokens[row, len(ids):] == tokenizer.pad_id).all()
        assert not mask[row, len(ids):].any()


def test_over_long_sequence_is_an_error_naming_its_row(tokenizer):
    with pytest.raises(InputError, match=r"row 1\b") as error:
        tokenizer.encode_batch(SMILES, max_len=12)
    assert error.value.rows == [1]


def test_truncate_keeps_the_first_max_len_tokens(tokenizer):
    tokens, mask = tokenizer.encode_batch(SMILES, max_len=12, truncate=True)
    assert tokens.shape == (3, 12)
    assert tokens[1].tolist() == tokenizer.encode(SMILES[1])[:12]
    assert mask[1].all() and mask.sum(axis=1).tolist() == [3, 12, 10]


def test_missing_tokenizer_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        Tokenizer.from_file(tmp_path / "tokenizer.model")


def test_invalid_tokenizer_file_is_an_input_error(tmp_path):
    path = tmp_path / "tokenizer.model"
    path.write_text("this is not a sentencepiece model")
    with pytest.raises(InputError, match="not a SentencePiece model"):
        Tokenizer.from_file(path)


def test_molecules_number_the_dot_separated_parts_and_the_product(tokenizer):
    text = "CC#N.CC(=O)O~[Pd].O.[Na+].[OH-]>>Cc1ccccc1"
    tokens, mask = tokenizer.encode_batch([text, "CCO"], pad_to_multiple=8)
    molecules = tokenizer.molecules(tokens, mask)
    assert molecules.dtype == np.int16 and molecules.shape == tokens.shape
    assert molecules[0, 0] == 0 and molecules[1, 0] == 0  # BOS
    assert not molecules[~mask].any()  # padding
    # Every character's molecule, counted independently: separators 0, the k-th part k.
    label, part, previous = [], 0, "."
    for char in text:
        part += char not in ".>" and previous in ".>"
        label.append(0 if char in ".>" else part)
        previous = char
    # A token belongs to the molecule of its first character that is not a separator.
    expected, position = [], 0
    for token in tokens[0, 1:mask[0].sum()]:
        piece = tokenizer.decode([token])
        start = text.index(piece, position)
        expected.append(next((label[i] for i in range(start, start + len(piece)) if label[i]), 0))
        position = start + len(piece)
    assert molecules[0, 1:mask[0].sum()].tolist() == expected
    assert molecules[0].max() == 6  # five reactants and reagents, one product
    assert set(molecules[1, 1:mask[1].sum()].tolist()) == {1}
