"""`mistral-cl convert`: Mistral weights (Hugging Face or consolidated safetensors) to a checkpoint.

The checkpoint is the project's own format (`checkpoint.py`): one zarr array per stacked leaf, chunked
by layer, so training can later restore it straight into any sharding, each device reading only its
own block. Conversion streams: each stacked leaf is written one layer tensor at a time, so the host
holds one tensor (plus tensorstore's bounded write queue), never the model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from mistral_cl import checkpoint
from mistral_cl.config import ModelConfig
from mistral_cl.errors import InputError
from mistral_cl.model import Mistral
from mistral_cl.weights import Checkpoint as WeightFiles
from mistral_cl.weights import check_tensors

CONFIG = "config.json"
WEIGHTS = "weights"
DTYPES = {"float32": np.float32, "bfloat16": jax.numpy.bfloat16}


def _leaf(files: WeightFiles, name: str, leaf: jax.ShapeDtypeStruct, config: ModelConfig):
    dtype = np.dtype(leaf.dtype)
    if name.startswith("layers."):
        inner = name.removeprefix("layers.")

        def blocks():
            for i in range(leaf.shape[0]):
                yield (slice(i, i + 1),), np.asarray(
                    files.read(f"layers.{i}.{inner}", config.head_dim), dtype)[None]

        return checkpoint.Deferred(leaf.shape, dtype, (1, *leaf.shape[1:]), blocks)
    return checkpoint.Deferred(leaf.shape, dtype, leaf.shape,
                               lambda: iter([((), np.asarray(files.read(name, config.head_dim), dtype))]))


def convert(source: str | Path, target: str | Path, dtype: str = "bfloat16") -> Path:
    """Writes the backbone at `source` to `target/weights` and its shapes to `target/config.json`."""
    source, target = Path(source), Path(target)
    if not source.is_dir():
        raise InputError("not a directory of model weights", file=str(source))
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose {sorted(DTYPES)}")
    if checkpoint.steps(target / WEIGHTS):
        raise InputError("already holds converted weights", file=str(target),
                         hint="choose another --to, or delete it first")
    config = ModelConfig.from_dir(source)
    files = WeightFiles.open(source)
    abstract = eqx.filter_eval_shape(Mistral, config, key=jax.random.key(0), dtype=DTYPES[dtype])
    flat, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    names = [jax.tree_util.keystr(path, simple=True, separator=".") for path, _ in flat]
    check_tensors(files, names, [leaf for _, leaf in flat])
    tree = jax.tree_util.tree_unflatten(
        treedef, [_leaf(files, name, leaf, config) for name, (_, leaf) in zip(names, flat, strict=True)])
    target.mkdir(parents=True, exist_ok=True)
    checkpoint.save(target / WEIGHTS, 0, tree, metadata={"source": str(source), "dtype": dtype}, keep=1)
    (target / CONFIG).write_text(json.dumps({**config.to_hf_config(), "torch_dtype": dtype}, indent=2) + "\n")
    return target


def is_converted(path: str | Path) -> bool:
    return bool(checkpoint.steps(Path(path) / WEIGHTS))


def load_converted(path: str | Path, config: ModelConfig | None = None, sharding=None) -> Mistral:
    """The backbone of a converted directory; `sharding` (a pytree of shardings shaped like the
    model) makes each device read only its own block."""
    path = Path(path)
    raw = json.loads((path / CONFIG).read_text())
    found = ModelConfig.from_hf_config(raw)
    if config is not None and config != found:
        raise InputError("converted weights have other shapes than requested", file=str(path))
    dtype = DTYPES[raw.get("torch_dtype", "float32")]
    like = eqx.filter_eval_shape(Mistral, found, key=jax.random.key(0), dtype=dtype)
    if sharding is not None:
        like = jax.tree.map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
                            like, sharding)
    model, _ = checkpoint.restore(path / WEIGHTS, like)
    return model


def convert_command(args: argparse.Namespace) -> int:
    target = convert(args.source, args.target, args.dtype)
    print(f"wrote {target}/ ({WEIGHTS}/ checkpoint, {CONFIG}); train from it with --weights {target}")
    return 0
