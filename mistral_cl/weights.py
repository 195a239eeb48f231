"""Pretrained Mistral weights -> the Equinox `Mistral` pytree, one tensor at a time.

Two layouts are read, both as safetensors:

- Hugging Face: `model.safetensors`, or shards listed in `model.safetensors.index.json`, beside
  `config.json`. Names are `model.layers.{i}.self_attn.q_proj.weight` and so on; `MistralModel`
  writes them without the `model.` prefix and both spellings are accepted. `lm_head.weight` is
  ignored: the backbone ends at the final norm.
- Mistral's own: `consolidated.safetensors` beside `params.json`, already in our names
  (`layers.{i}.attention.wq.weight`, ...). `output.weight` is ignored. Its query/key projections are
  laid out for interleaved rotary pairs and are permuted on load to the rotate-half convention that
  `apply_rope` uses.

Loading never holds a second copy of the model: each leaf of the model (for blocks, all layers
stacked) is allocated once in the target dtype, filled slice by slice from memory-mapped files, and
handed to JAX before the next leaf is read, so the host peak is the model plus at most one leaf.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import equinox as eqx
import jax
import ml_dtypes
import numpy as np
from jax.sharding import Sharding
from jax.typing import DTypeLike

from mistral_cl.config import ModelConfig
from mistral_cl.errors import InputError
from mistral_cl.model import Mistral

Layout = Literal["huggingface", "consolidated"]
LeafSharding = Callable[[str], Sharding | None]

# Our names -> Hugging Face names, for the model's own leaves and for the leaves of one block.
_HF_MODEL = {"tok_embeddings.weight": "embed_tokens.weight", "norm.weight": "norm.weight"}
_HF_BLOCK = {
    "attention_norm.weight": "input_layernorm.weight",
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
}
_FROM_HF_MODEL = {hf: ours for ours, hf in _HF_MODEL.items()}
_FROM_HF_BLOCK = {hf: ours for ours, hf in _HF_BLOCK.items()}
# Language-model heads: present in causal-LM checkpoints, unused by a backbone.
_IGNORED = {"huggingface": {"lm_head.weight"}, "consolidated": {"output.weight"}}
_ROTARY = re.compile(r"layers\.\d+\.attention\.w[qk]\.weight")
_LAYER = re.compile(r"layers\.(\d+)\.(.+)")

_SAFETENSORS_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
# XLA's CPU client adopts host buffers aligned to this many bytes instead of copying them.
_ALIGNMENT = 64


@dataclasses.dataclass(frozen=True)
class StoredTensor:
    """One tensor of a safetensors file: where its bytes are and what they hold."""

    file: Path
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int

    def read(self) -> np.ndarray:
        """A read-only view of the bytes on disk; pages are read as they are touched."""
        if math.prod(self.shape) == 0:
            return np.empty(self.shape, self.dtype)
        return np.memmap(self.file, self.dtype, mode="r", offset=self.offset, shape=self.shape)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """The tensors of a weights directory, indexed from file headers; nothing is read yet.

    `tensors` maps our name (`layers.{i}.attention.wq.weight`) to where it is stored; `unknown`
    holds the tensors whose names mean nothing to a Mistral backbone.
    """

    directory: Path
    layout: Layout
    tensors: dict[str, StoredTensor]
    unknown: list[StoredTensor]
    hf_prefix: str

    @classmethod
    def open(cls, path: str | Path) -> Checkpoint:
        """Indexes the weights directory at `path` (reads headers only)."""
        directory = Path(path)
        layout, files = _weight_files(directory)
        tensors: dict[str, StoredTensor] = {}
        unknown: list[StoredTensor] = []
        for file in files:
            for stored in _read_header(file):
                if stored.name in _IGNORED[layout]:
                    continue
                ours = _our_name(stored.name, layout)
                if ours is None:
                    unknown.append(stored)
                else:
                    tensors[ours] = stored
        prefixed = any(t.name.startswith("model.") for t in tensors.values())
        return cls(directory, layout, tensors, unknown, "model." if prefixed else "")

    def stored_name(self, ours: str) -> str:
        """How this checkpoint spells (or would spell) one of our tensor names."""
        if self.layout == "consolidated":
            return ours
        layer = _LAYER.fullmatch(ours)
        if layer:
            return f"{self.hf_prefix}layers.{layer[1]}.{_HF_BLOCK.get(layer[2], layer[2])}"
        return self.hf_prefix + _HF_MODEL.get(ours, ours)

    def read(self, ours: str, head_dim: int | None) -> np.ndarray:
        """One tensor in our conventions: a view of the file, permuted if a rotary projection.

        `head_dim` matters only for consolidated checkpoints, whose rotary pairs are permuted.
        """
        array = self.tensors[ours].read()
        if self.layout == "consolidated" and _ROTARY.fullmatch(ours):
            return interleaved_to_rotate_half(array, head_dim)
        return array


def interleaved_to_rotate_half(weight: np.ndarray, head_dim: int) -> np.ndarray:
    """Reorders a query/key projection `(heads * head_dim, in)` from interleaved rotary pairs.

    Interleaved rotary rotates output pairs (2k, 2k+1) of each head by angle k; rotate-half rotates
    pairs (k, k + head_dim/2). Moving row 2k + c of a head to row c * head_dim/2 + k makes the
    second convention compute, on the permuted weights, what the first computes on the original ones
    (attention scores are dot products within a head, so the order of rows in a head is free). This
    is the permutation of Hugging Face's Mistral conversion; its inverse writes consolidated files.
    """
    rows, cols = weight.shape
    if rows % head_dim:
        raise InputError(f"rotary projection of {rows} rows is not a whole number of heads "
                         f"of head_dim={head_dim}")
    pairs = weight.reshape(rows // head_dim, head_dim // 2, 2, cols)
    return pairs.transpose(0, 2, 1, 3).reshape(rows, cols)


def iter_tensors(
    path: str | Path, *, config: ModelConfig | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """Every backbone tensor of the checkpoint at `path`, one at a time, as `(our name, array)`.

    Names are ours (`tok_embeddings.weight`, `layers.3.feed_forward.w1.weight`, `norm.weight`);
    arrays keep the dtype on disk (bfloat16 as `ml_dtypes.bfloat16`), are read-only views of the
    files, and follow the rotate-half rotary convention. `config` gives the head size needed to
    permute Mistral's query/key projections; it is read from the directory when omitted.
    Language-model heads are skipped; names that belong to no Mistral backbone raise `InputError`
    before anything is read.
    """
    checkpoint = Checkpoint.open(path)
    if checkpoint.unknown:
        raise InputError(
            "tensors that belong to no Mistral backbone: "
            + ", ".join(t.name for t in checkpoint.unknown),
            file=str(checkpoint.directory),
        )
    rotary = checkpoint.layout == "consolidated"
    head_dim = (config or ModelConfig.from_dir(path)).head_dim if rotary else None
    for ours in checkpoint.tensors:
        yield ours, checkpoint.read(ours, head_dim)


def load_mistral(
    path: str | Path,
    *,
    config: ModelConfig | None = None,
    dtype: DTypeLike = np.float32,
    sharding: Mistral | LeafSharding | None = None,
) -> Mistral:
    """The backbone stored at `path` (a Hugging Face or Mistral weights directory).

    `config` defaults to the directory's `config.json` / `params.json`; when given, it must agree
    with them (`max_seq_len` aside: it is a limit of use, not a property of the weights). Every
    parameter is cast to `dtype`. `sharding` places each parameter: either a pytree shaped like the
    model with a `jax.sharding.Sharding` for every array, or a function from a leaf's name
    (`"layers.attention.wq.weight"`) to a `Sharding` (None: the default device). Each device then
    receives only its own shard. Missing, unexpected and wrongly shaped tensors are reported
    together, in one `InputError`, before any tensor is read.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise InputError("not a directory of model weights", file=str(directory))
    config = _reconcile_config(directory, config)
    checkpoint = Checkpoint.open(directory)
    abstract = eqx.filter_eval_shape(Mistral, config, key=jax.random.key(0), dtype=dtype)
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    names = [jax.tree_util.keystr(p, simple=True, separator=".") for p, _ in leaves_with_paths]
    leaves = [leaf for _, leaf in leaves_with_paths]
    check_tensors(checkpoint, names, leaves)
    placements = _placements(sharding, names)
    loaded = [
        _place(_fill(checkpoint, name, leaf, config), placement)
        for name, leaf, placement in zip(names, leaves, placements, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, loaded)


# ---------------------------------------------------------------------------------------- files
def _weight_files(directory: Path) -> tuple[Layout, list[Path]]:
    index = directory / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise InputError(f"not a safetensors index ({err})", file=str(index)) from None
        files = [directory / name for name in sorted(set(weight_map.values()))]
        absent = [f.name for f in files if not f.exists()]
        if absent:
            raise InputError(f"shards listed in the index are missing: {', '.join(absent)}",
                             file=str(index))
        return "huggingface", files
    if (directory / "model.safetensors").exists():
        return "huggingface", [directory / "model.safetensors"]
    if (directory / "consolidated.safetensors").exists():
        return "consolidated", [directory / "consolidated.safetensors"]
    raise InputError(
        "no model weights found",
        file=str(directory),
        hint="expected model.safetensors, model.safetensors.index.json with its shards "
        "(Hugging Face) or consolidated.safetensors (Mistral); PyTorch .bin/.pth files are not "
        "read, convert them to safetensors first",
    )


def _read_header(file: Path) -> list[StoredTensor]:
    """The tensors of one safetensors file: 8-byte little-endian header size, JSON header, data."""
    size = file.stat().st_size
    try:
        with file.open("rb") as handle:
            header_size = int.from_bytes(handle.read(8), "little")
            if not 8 <= 8 + header_size <= size:
                raise ValueError(f"header of {header_size} bytes in a file of {size}")
            header = json.loads(handle.read(header_size))
        data_start = 8 + header_size
        tensors = []
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            dtype = _SAFETENSORS_DTYPES.get(entry["dtype"])
            if dtype is None:
                raise ValueError(f"tensor {name} has unsupported dtype {entry['dtype']}")
            shape = tuple(int(n) for n in entry["shape"])
            begin, end = (int(n) for n in entry["data_offsets"])
            if end - begin != math.prod(shape) * dtype.itemsize or data_start + end > size:
                raise ValueError(f"tensor {name} has inconsistent offsets {begin}..{end}")
            tensors.append(StoredTensor(file, name, dtype, shape, data_start + begin))
        return tensors
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"not a readable safetensors file ({err})", file=str(file)) from None


def _our_name(stored: str, layout: Layout) -> str | None:
    if layout == "consolidated":
        return stored
    name = stored.removeprefix("model.")
    layer = _LAYER.fullmatch(name)
    if layer:
        inner = _FROM_HF_BLOCK.get(layer[2])
        return None if inner is None else f"layers.{layer[1]}.{inner}"
    return _FROM_HF_MODEL.get(name)


# ----------------------------------------------------------------------------------- checking
def _reconcile_config(directory: Path, config: ModelConfig | None) -> ModelConfig:
    described = any((directory / name).exists() for name in ("config.json", "params.json"))
    if not described:
        if config is None:
            raise InputError(
                "neither config.json nor params.json found", file=str(directory),
                hint="pass config= (e.g. ModelConfig.preset(...)) describing these weights",
            )
        return config
    on_disk = ModelConfig.from_dir(directory)
    if config is None:
        return on_disk
    differing = [
        f"{name}: given {getattr(config, name)!r}, files say {getattr(on_disk, name)!r}"
        for name in (field.name for field in dataclasses.fields(ModelConfig))
        if name != "max_seq_len" and getattr(config, name) != getattr(on_disk, name)
    ]
    if differing:
        raise InputError(
            "the given model config disagrees with the checkpoint's: " + "; ".join(differing),
            file=str(directory), hint="omit config= to use the checkpoint's own",
        )
    return config


def _expected_shapes(names: list[str], leaves: list[jax.ShapeDtypeStruct]) -> dict[str, tuple]:
    """Our per-tensor names and shapes: a stacked block leaf stands for one tensor per layer."""
    expected = {}
    for name, leaf in zip(names, leaves, strict=True):
        if name.startswith("layers."):
            inner = name.removeprefix("layers.")
            for i in range(leaf.shape[0]):
                expected[f"layers.{i}.{inner}"] = tuple(leaf.shape[1:])
        else:
            expected[name] = tuple(leaf.shape)
    return expected


def check_tensors(checkpoint: Checkpoint, names: list[str], leaves: list[jax.ShapeDtypeStruct]) -> None:
    """Raises one `InputError` listing every missing, unexpected or wrongly shaped tensor of
    `checkpoint` for the model leaves `names` (stacked block leaves stand for one tensor a layer)."""
    _check_tensors(checkpoint, _expected_shapes(names, leaves))


def _check_tensors(checkpoint: Checkpoint, expected: dict[str, tuple]) -> None:
    def shape(dims: tuple) -> str:
        return "[" + ", ".join(str(d) for d in dims) + "]"

    problems = [
        f"missing {checkpoint.stored_name(ours)} (expected {shape(dims)})"
        for ours, dims in expected.items() if ours not in checkpoint.tensors
    ]
    unexpected = list(checkpoint.unknown)
    unexpected += [t for ours, t in checkpoint.tensors.items() if ours not in expected]
    problems += [f"unexpected {t.name} {shape(t.shape)}" for t in unexpected]
    problems += [
        f"wrong shape {t.name}: expected {shape(expected[ours])}, found {shape(t.shape)}"
        for ours, t in checkpoint.tensors.items()
        if ours in expected and t.shape != expected[ours]
    ]
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise InputError(
            f"the {checkpoint.layout} checkpoint does not fit the model config ({count}):\n  "
            + "\n  ".join(problems),
            file=str(checkpoint.directory),
            hint="check that config.json / params.json (or config=) describes these weights",
        )


# ------------------------------------------------------------------------------------ loading
def _placements(sharding: Mistral | LeafSharding | None, names: list[str]) -> list[Sharding | None]:
    if sharding is None:
        return [None] * len(names)
    if callable(sharding) and not isinstance(sharding, eqx.Module):
        return [sharding(name) for name in names]
    placements = jax.tree.leaves(sharding, is_leaf=lambda x: isinstance(x, Sharding))
    if len(placements) != len(names) or not all(isinstance(p, Sharding) for p in placements):
        raise TypeError(
            "sharding must be a pytree shaped like the model with a Sharding for each of its "
            f"{len(names)} arrays, or a function from leaf name to Sharding"
        )
    return placements


def _fill(
    checkpoint: Checkpoint, name: str, leaf: jax.ShapeDtypeStruct, config: ModelConfig
) -> np.ndarray:
    """One model leaf on the host in its final dtype, read layer by layer for stacked blocks."""
    buffer = _aligned_empty(leaf.shape, np.dtype(leaf.dtype))
    if name.startswith("layers."):
        inner = name.removeprefix("layers.")
        for i in range(leaf.shape[0]):
            buffer[i] = checkpoint.read(f"layers.{i}.{inner}", config.head_dim)
    else:
        buffer[...] = checkpoint.read(name, config.head_dim)
    buffer.flags.writeable = False
    return buffer


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    raw = np.empty(math.prod(shape) * dtype.itemsize + _ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % _ALIGNMENT
    return raw[start : start + math.prod(shape) * dtype.itemsize].view(dtype).reshape(shape)


def _place(host: np.ndarray, sharding: Sharding | None) -> jax.Array:
    if sharding is None:
        return jax.device_put(host)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


# ------------------------------------------------------------------------------- language models
_OUTPUT_NAMES = {"huggingface": ("lm_head.weight",), "consolidated": ("output.weight",)}
_DTYPE_NAMES = {np.dtype("<f4"): "F32", np.dtype(ml_dtypes.bfloat16): "BF16", np.dtype("<f2"): "F16"}


def tied_embeddings(path: str | Path) -> bool:
    """Whether the weights at `path` use their token embeddings as output layer (`tie_word_embeddings`)."""
    config = Path(path) / "config.json"
    return bool(config.is_file() and json.loads(config.read_text()).get("tie_word_embeddings", False))


def read_output_layer(path: str | Path) -> np.ndarray | None:
    """The language-model output layer `(vocab, dim)` stored at `path`, None when tied to the embeddings."""
    if tied_embeddings(path):
        return None
    layout, files = _weight_files(Path(path))
    for file in files:
        for stored in _read_header(file):
            if stored.name in _OUTPUT_NAMES[layout]:
                return stored.read()
    raise InputError(
        f"no output layer ({' or '.join(_OUTPUT_NAMES[layout])}) in these weights: they hold a backbone only",
        file=str(path),
        hint="pretrain from weights saved with their language-model head (a *ForCausalLM checkpoint)",
    )


def load_causal_lm(path: str | Path, *, config: ModelConfig | None = None, dtype: DTypeLike = np.float32):
    """The backbone at `path` with its own output layer (a `pretrain.CausalLM`)."""
    from mistral_cl.pretrain import CausalLM

    backbone = load_mistral(path, config=config, dtype=dtype)
    output = read_output_layer(path)
    if output is None:
        return CausalLM(backbone, None)
    expected = (backbone.config.vocab_size, backbone.config.dim)
    if output.shape != expected:
        raise InputError(f"the output layer is {output.shape}, the backbone needs {expected}", file=str(path))
    return CausalLM(backbone, output_layer(output, dtype))


def output_layer(weight: np.ndarray, dtype: DTypeLike = np.float32):
    """A stored `(vocab, dim)` output weight as the `Linear` a `pretrain.CausalLM` holds."""
    from mistral_cl.layers import Linear

    layer = eqx.filter_eval_shape(Linear, 1, 1, key=jax.random.key(0))
    return eqx.tree_at(lambda m: m.weight, layer, jax.device_put(np.asarray(weight, dtype)))


def hf_tensors(lm) -> Iterator[tuple[str, np.ndarray]]:
    """`(Hugging Face name, array)` of every tensor of a `pretrain.CausalLM` (adapters merged first)."""
    backbone = lm.backbone
    yield "model.embed_tokens.weight", np.asarray(backbone.tok_embeddings.weight)
    leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(backbone.layers, eqx.is_array))[0]
    for path, stacked in leaves:
        inner = _HF_BLOCK[jax.tree_util.keystr(path, simple=True, separator=".")]
        for i, layer in enumerate(np.asarray(stacked)):
            yield f"model.layers.{i}.{inner}", layer
    yield "model.norm.weight", np.asarray(backbone.norm.weight)
    if lm.output is not None:
        yield "lm_head.weight", np.asarray(lm.output.weight)


def write_safetensors(file: Path, tensors: Iterator[tuple[str, np.ndarray]], dtype: DTypeLike) -> None:
    """A safetensors file of `tensors`, each cast to `dtype`, written to a temporary name then renamed."""
    dtype = np.dtype(dtype)
    arrays = [(name, np.ascontiguousarray(np.asarray(a, dtype))) for name, a in tensors]
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, array in arrays:
        header[name] = {"dtype": _DTYPE_NAMES[dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    partial = file.with_name(file.name + ".partial")
    with partial.open("wb") as handle:
        handle.write(len(encoded).to_bytes(8, "little"))
        handle.write(encoded)
        for _, array in arrays:
            handle.write(array.tobytes())
    partial.replace(file)


def save_hf(directory: str | Path, lm, *, dtype: str = "float32") -> Path:
    """`config.json` and `model.safetensors` of a `pretrain.CausalLM` in Hugging Face's layout (a
    `MistralForCausalLM`), loadable by `load_mistral` / `--weights` and by `transformers`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stored = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}[dtype]
    write_safetensors(directory / "model.safetensors", hf_tensors(lm), stored)
    config = {**lm.backbone.config.to_hf_config(), "architectures": ["MistralForCausalLM"],
              "tie_word_embeddings": lm.output is None, "torch_dtype": dtype}
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return directory
