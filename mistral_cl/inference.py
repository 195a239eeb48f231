"""Inference: what the head reads, predicted yields for a batch, and for every reaction of a source.

Nothing here trains. Training (`train.py`) and every continual-learning strategy call `forward` inside
their objectives; `predict` scores a whole source, on one device or on a mesh.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import equinox as eqx
import numpy as np
from jax.sharding import Mesh
from jaxtyping import Array, Float, PRNGKeyArray

import sharding
from mistral_cl.data.batching import Batch
from mistral_cl.head import PartsInput, no_molecule_table, point_prediction
from mistral_cl.predictor import YieldModel


class BatchSource(Protocol):
    """Reactions that serve themselves as fixed-shape batches: `EncodedReactions` (token ids) or
    `features.CachedFeatures` (frozen backbone outputs, for head-only training)."""

    def __len__(self) -> int: ...

    def batches(self, batch_size: int, *, shuffle: bool, seed: int = 0) -> Iterator[Any]: ...

    def count_batches(self, batch_size: int) -> int: ...


def head_inputs(model: YieldModel, batch: Any) -> tuple[Array, Array, dict[str, Any]]:
    """What the head reads: (states, mask, keyword arguments). The states are a batch's cached
    backbone features (head mode) or the backbone's hidden states for its token ids
    (`YieldModel.features`); for a head whose context is the molecule, the states of the batch's
    packed molecule table, with the table's layout (`head.PartsInput`)."""
    if model.head.context == "molecule":
        parts = batch.parts
        if parts is None:
            raise no_molecule_table()
        mask = parts.segments > 0
        states = model.features(parts.tokens, mask, segments=parts.segments, positions=parts.positions)
        return states, mask, {"parts": PartsInput(parts.segments, parts.positions, parts.lengths,
                                                  batch.slots)}
    features = getattr(batch, "features", None)
    states = features if features is not None else model.features(batch.tokens, batch.mask)
    return states, batch.mask, {"molecules": getattr(batch, "molecules", None)}


def forward(model: YieldModel, batch: Any, *, key: PRNGKeyArray | None = None
            ) -> Float[Array, "*members batch"]:
    """Predicted yields for a batch of token ids, or of cached backbone features (head mode); one row
    per member for a head ensemble (`head.point_prediction` averages them)."""
    states, mask, inputs = head_inputs(model, batch)
    return model.head(states, mask, key=key, **inputs)


@eqx.filter_jit
def predict_batch(model: YieldModel, batch: Batch) -> Float[Array, " batch"]:
    """Predicted yields for one batch, without dropout (an ensemble's mean)."""
    return point_prediction(forward(model, batch))


@eqx.filter_jit
def pooled_batch(model: YieldModel, batch: Any) -> Array:
    """The head's pooled vector of every reaction of a batch (what its standardiser normalises)."""
    states, mask, inputs = head_inputs(model, batch)
    return model.head.pooled(states, mask, **inputs)


def predict(model: YieldModel, data: BatchSource, batch_size: int = 64, *, mesh: Mesh | None = None
            ) -> np.ndarray:
    """Predicted yields for every reaction of `data`, in `data`'s order (on every process)."""
    out = np.zeros(len(data), np.float32)
    for batch in data.batches(batch_size, shuffle=False):
        pred = np.asarray(sharding.to_host(predict_batch(model, sharding.feed(batch, mesh))))
        real = np.asarray(batch.weight) > 0
        out[np.asarray(batch.index)[real]] = pred[real]
    return out


def predict_mean(models: Sequence[YieldModel], data: BatchSource, batch_size: int = 64, *,
                 mesh: Mesh | None = None) -> np.ndarray:
    """The mean of `models`' predicted yields for every reaction of `data` (one model: its own
    predictions, unchanged). A task-aware strategy may predict a task with several models, e.g.
    `replay-snapshot` with the current one and the one saved when the task had just been learned."""
    predicted = [predict(model, data, batch_size, mesh=mesh) for model in models]
    if len(predicted) == 1:
        return predicted[0]
    return np.mean(predicted, axis=0, dtype=np.float64).astype(np.float32)
