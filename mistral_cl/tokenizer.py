"""Mistral's SentencePiece tokenizer, with batch encoding into right-padded arrays and masks.

Mistral-7B v0.1 uses a 32000-piece SentencePiece model. The same file ships inside the
`mistral_common` package as `data/tokenizer.model.v1`, so `Tokenizer.default()` needs no network.
Sequences start with BOS and carry no EOS, as in Mistral's own encoder.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import sentencepiece

from mistral_cl.errors import InputError

_MISTRAL_V1 = "tokenizer.model.v1"


def _mistral_common_tokenizer() -> Path:
    spec = importlib.util.find_spec("mistral_common")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "the package mistral-common is not installed, so Mistral's tokenizer cannot be found",
            hint="pip install mistral-common, or pass a tokenizer.model file explicitly",
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / _MISTRAL_V1
        if path.is_file():
            return path
    raise InputError(
        f"mistral-common is installed but ships no data/{_MISTRAL_V1}",
        hint="reinstall mistral-common, or pass a tokenizer.model file explicitly",
    )


class Tokenizer:
    """A SentencePiece model plus the special ids a Mistral backbone expects.

    Mistral has no padding token; padded positions get `pad_id` (0, `<unk>`) and are excluded by
    the mask, never by their id.
    """

    pad_id: int = 0

    def __init__(self, processor: sentencepiece.SentencePieceProcessor, path: Path) -> None:
        self._processor = processor
        self.path = path

    @classmethod
    def default(cls) -> Tokenizer:
        """Mistral-7B v0.1's tokenizer, as shipped in the installed `mistral_common` package."""
        return cls.from_file(_mistral_common_tokenizer())

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        """Load any SentencePiece `tokenizer.model` file."""
        path = Path(path)
        if not path.is_file():
            raise InputError(
                "tokenizer file not found",
                file=str(path),
                hint="pass the path of a SentencePiece tokenizer.model",
            )
        processor = sentencepiece.SentencePieceProcessor()
        try:
            processor.Load(str(path))
        except (OSError, RuntimeError) as error:
            raise InputError(
                f"not a SentencePiece model ({error})",
                file=str(path),
                hint="pass the tokenizer.model that belongs to the model weights",
            ) from error
        return cls(processor, path)

    @property
    def vocab_size(self) -> int:
        return self._processor.GetPieceSize()

    @property
    def bos_id(self) -> int:
        return self._processor.bos_id()

    @property
    def eos_id(self) -> int:
        return self._processor.eos_id()

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """Token ids of one text, with BOS first (and EOS last when asked for)."""
        return self._processor.Encode(text, out_type=int, add_bos=bos, add_eos=eos)

    def encode_all(self, texts: Sequence[str], bos: bool = True, eos: bool = False) -> list[list[int]]:
        """Token ids of many texts at once (faster than one `encode` each)."""
        return self._processor.Encode(list(texts), out_type=int, add_bos=bos, add_eos=eos)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of a sequence of ids; special tokens are dropped."""
        return self._processor.Decode([int(i) for i in ids])

    def molecules(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Which molecule of its reaction SMILES each token belongs to: int16 [N, T], 1 for the first
        molecule, 2 for the second and so on across `>>` (the product is a molecule too); 0 for
        padding, BOS and tokens that hold only separators (`.`, `>`).

        Molecules are the dot-separated parts of the text, so a `~`-joined catalyst is one. A piece
        may straddle a boundary (`].`, `.C`): it belongs to the molecule of its first character that
        is not a separator, so every token is counted once. Reads the pieces' text, so it holds for
        any SentencePiece model, byte-fallback pieces included.
        """
        tokens, mask = np.asarray(tokens), np.asarray(mask, bool)
        out = np.zeros(tokens.shape, np.int16)
        pieces: dict[int, str] = {}
        special = {self.bos_id, self.eos_id, self.pad_id}
        for row in range(tokens.shape[0]):
            molecule, inside = 0, False
            for col in np.flatnonzero(mask[row]):
                token = int(tokens[row, col])
                if token in special:
                    continue
                text = pieces.get(token)
                if text is None:
                    text = pieces[token] = _piece_text(self._processor.IdToPiece(token))
                for char in text:
                    if char in ".>":
                        inside = False
                    elif not char.isspace():
                        if not inside:
                            molecule, inside = molecule + 1, True
                        if out[row, col] == 0:
                            out[row, col] = molecule
        return out

    def encode_batch(
        self,
        texts: Sequence[str],
        *,
        max_len: int | None = None,
        pad_to_multiple: int = 16,
        truncate: bool = False,
        bos: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encode texts into right-padded `tokens` (int32 [N, T]) and `mask` (bool [N, T]).

        `T` is the longest sequence rounded up to `pad_to_multiple`, capped at `max_len`.
        A sequence longer than `max_len` is an error naming its row (0-based position in `texts`)
        unless `truncate=True`, which keeps its first `max_len` tokens.
        """
        if pad_to_multiple < 1:
            raise ValueError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}")
        ids = self._processor.Encode(list(texts), out_type=int, add_bos=bos)
        lengths = np.array([len(seq) for seq in ids], dtype=np.int64)
        if max_len is not None:
            too_long = np.flatnonzero(lengths > max_len).tolist()
            if too_long and not truncate:
                raise InputError(
                    f"{len(too_long)} sequence(s) have more than max_len={max_len} tokens "
                    f"(longest: {int(lengths.max())}); rows are 0-based positions in the batch",
                    rows=too_long,
                    hint="raise max_len, or pass truncate=True to keep the first max_len tokens",
                )
            lengths = np.minimum(lengths, max_len)
        longest = int(lengths.max()) if len(ids) else 0
        width = -(-longest // pad_to_multiple) * pad_to_multiple
        if max_len is not None:
            width = min(width, max_len)
        tokens = np.full((len(ids), width), self.pad_id, dtype=np.int32)
        for row, (seq, length) in enumerate(zip(ids, lengths, strict=True)):
            tokens[row, :length] = seq[:length]
        mask = np.arange(width)[None, :] < lengths[:, None]
        return tokens, mask


def _piece_text(piece: str) -> str:
    """The text a SentencePiece piece stands for: `▁` is a space, `<0xNN>` one byte."""
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        return bytes([int(piece[3:5], 16)]).decode("latin-1")
    return piece.replace("\u2581", " ")
