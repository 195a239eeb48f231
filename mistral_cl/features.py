"""Cached backbone features for head-only training.

With a frozen backbone the hidden states of a reaction never change, so they are computed once, stored
on disk with tensorstore (zarr v3, one chunk per reaction) and every later epoch runs the head alone.
The cache is keyed by a fingerprint of the backbone weights and the token ids, so a stale cache is
never read: other weights or other reactions get another directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import tensorstore as ts
from jax.sharding import Mesh

import sharding
from mistral_cl.data.batching import EncodedReactions
from mistral_cl.model import Mistral, check_depth

# Below this size the whole cache is read into host memory once; above it, batch by batch from disk.
IN_MEMORY_BYTES = 4 << 30
_DONE = "COMPLETE"


class FeatureBatch(NamedTuple):
    """Like `Batch`, with backbone hidden states float [B, T, D] in place of token ids."""

    features: np.ndarray
    mask: np.ndarray
    yields: np.ndarray
    weight: np.ndarray
    task: np.ndarray
    index: np.ndarray
    molecules: np.ndarray | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class CachedFeatures:
    """Hidden states of the reactions of `encoded`; batches like `encoded` does.

    `store_rows[i]` is the cache row of `encoded`'s reaction i; None means row i (the whole cache,
    as `cache_features` returns it). `subset` selects reactions without copying any features.
    """

    encoded: EncodedReactions
    store: ts.TensorStore
    in_memory: np.ndarray | None = None
    store_rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.encoded)

    def subset(self, positions: np.ndarray) -> CachedFeatures:
        """Reactions `positions` of this one (batched like `EncodedReactions.subset`)."""
        positions = np.asarray(positions, np.int64)
        rows = positions if self.store_rows is None else self.store_rows[positions]
        return dataclasses.replace(self, encoded=self.encoded.subset(positions), store_rows=rows)

    def count_batches(self, batch_size: int) -> int:
        return self.encoded.count_batches(batch_size)

    def batches(self, batch_size: int, *, shuffle: bool, seed: int = 0) -> Iterator[FeatureBatch]:
        for batch in self.encoded.batches(batch_size, shuffle=shuffle, seed=seed):
            index = batch.index if self.store_rows is None else self.store_rows[batch.index]
            yield FeatureBatch(self.rows(index, batch.tokens.shape[1]), batch.mask, batch.yields,
                               batch.weight, batch.task, batch.index, batch.molecules)

    def rows(self, index: np.ndarray, width: int) -> np.ndarray:
        """Features of reactions `index`, cut or zero-padded to `width` positions."""
        stored = self.store.shape[1]
        if self.in_memory is not None:
            out = self.in_memory[index, : min(width, stored)]
        else:
            out = self.store.oindex[np.asarray(index), : min(width, stored)].read().result()
        if width > stored:
            out = np.pad(out, ((0, 0), (0, width - stored), (0, 0)))
        return out


def fingerprint(backbone: Mistral, encoded: EncodedReactions, depth: int | None = None) -> str:
    """A digest of the backbone's weights and configuration, of the depth its states are read at
    and of the reactions' token ids (the final output's digest leaves the depth out, as before
    the depth could be chosen, so existing caches stay valid)."""
    config = backbone.config.to_dict()
    depth = check_depth(depth, backbone.config.n_layers)
    if depth != backbone.config.n_layers:
        config["feature_layer"] = depth
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for leaf in jax.tree.leaves(eqx.filter(backbone, eqx.is_array)):
        digest.update(np.ascontiguousarray(jax.device_get(leaf)).view(np.uint8))
    for part in (encoded.tokens, encoded.lengths):
        digest.update(np.ascontiguousarray(part).view(np.uint8))
    return digest.hexdigest()[:20]


@eqx.filter_jit
def hidden_states(backbone: Mistral, tokens, mask, depth: int | None = None):
    """The frozen backbone's states after `depth` blocks for a batch of token ids: what the cache
    stores (`Mistral.__call__`)."""
    return backbone(tokens, mask, depth=depth)


@eqx.filter_jit
def mean_pooled_states(backbone: Mistral, tokens, mask, depth: int | None = None):
    """`hidden_states` averaged over each row's real tokens (`mask`): one float32 [batch, dim] vector a
    text, summed in float32 whatever the backbone's dtype (bf16 sums drift by ~1e-3). A row without a
    real token gives zeros."""
    hidden = backbone(tokens, mask, depth=depth).astype(jnp.float32)
    weights = mask.astype(jnp.float32)[..., None]
    return (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)


def cache_features(
    backbone: Mistral,
    encoded: EncodedReactions,
    directory: str | Path,
    *,
    batch_size: int = 32,
    dtype: str = "float32",
    depth: int | None = None,
    mesh: Mesh | None = None,
) -> CachedFeatures:
    """Features of `encoded` (the backbone's states after `depth` blocks, None: its output) under
    `directory`, computed now unless an identical cache exists.

    On a `mesh` every process computes with its rows of each batch fed to the mesh, and process 0
    alone writes the cache, which the others then read (the run directory is shared by the hosts, as
    its checkpoints need).
    """
    path = Path(directory) / fingerprint(backbone, encoded, depth)
    width = max(int(encoded.tokens.shape[1]), *(encoded.buckets or ()))
    shape = (len(encoded), width, backbone.config.dim)
    spec = {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(path / "features")},
        "metadata": {"shape": list(shape), "data_type": dtype,
                     "chunk_grid": {"name": "regular",
                                    "configuration": {"chunk_shape": [1, shape[1], shape[2]]}}},
    }
    if not (path / _DONE).exists():
        writer = sharding.is_reporting_process()
        if writer:
            shutil.rmtree(path, ignore_errors=True)
        store = ts.open(spec, create=True, open=True).result() if writer else None
        writes = []
        for batch in encoded.batches(batch_size, shuffle=False):
            placed = sharding.feed(batch, mesh)
            hidden = sharding.to_host(hidden_states(backbone, placed.tokens, placed.mask, depth))
            if store is None:
                continue
            hidden = np.asarray(hidden, dtype=dtype)
            for row in np.flatnonzero(batch.weight > 0):
                writes.append(store[int(batch.index[row]), : hidden.shape[1]].write(hidden[row]))
        for write in writes:
            write.result()
        if writer:
            (path / _DONE).write_text("")
        sharding.barrier(f"features {path.name}")
    store = ts.open({k: v for k, v in spec.items() if k != "metadata"}, open=True).result()
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    in_memory = store.read().result() if nbytes <= IN_MEMORY_BYTES else None
    return CachedFeatures(encoded, store, in_memory)
