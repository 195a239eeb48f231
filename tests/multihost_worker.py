"""A few train steps of a tiny yield model, run by every process of a (simulated) multi-host job.

Driven by `tests/test_multihost.py` through `launch/local_multiprocess.sh`: every process builds the same
global batches, feeds only its own rows (`sharding.process_rows`), and process 0 writes the losses
and a checksum of the trained parameters as JSON. `train` with `mesh=None` is the single-device
reference the multi-process run must reproduce.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

import sharding  # noqa: E402
from mistral_cl.config import ModelConfig  # noqa: E402
from mistral_cl.data.batching import Batch  # noqa: E402
from mistral_cl.head import HeadConfig  # noqa: E402
from mistral_cl.predictor import AdaptationConfig, build_yield_model, trainable_filter  # noqa: E402
from mistral_cl.train import (  # noqa: E402
    TrainConfig,
    make_optimizer,
    make_train_step,
    supervised_objective,
)

TINY = ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=16, n_kv_heads=8, head_dim=4,
                   hidden_dim=64, sliding_window=16, max_seq_len=64)
HEAD = HeadConfig(n_heads=4, mlp_dim=16)
BATCH, SEQ, STEPS = 8, 16, 3


def synthetic_batch(seed: int, batch_size: int = BATCH, seq: int = SEQ) -> Batch:
    """A reproducible, right-padded batch of random reactions (every process builds the same)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, seq + 1, batch_size)
    mask = np.arange(seq)[None] < lengths[:, None]
    fields = {
        "tokens": np.where(mask, rng.integers(1, TINY.vocab_size, (batch_size, seq)), 0).astype(np.int32),
        "mask": mask,
        "yields": rng.random(batch_size).astype(np.float32),
        "weight": np.ones(batch_size, np.float32),
        "task": np.zeros(batch_size, np.int32),
        "index": np.arange(batch_size, dtype=np.int32),
    }
    return Batch(**fields)


def train(mode: str, mesh: Mesh | None, steps: int = STEPS) -> tuple[list[float], float]:
    """Losses of `steps` train steps and the sum of |trained parameters|, on `mesh` or one device."""
    optimizer = make_optimizer(TrainConfig(learning_rate=1e-3), 100)

    def build():
        return build_yield_model(TINY, HEAD, AdaptationConfig(mode=mode), key=jax.random.key(0))

    model = build() if mesh is None else sharding.sharded_init(build, mesh)
    trainable, frozen = eqx.partition(model, trainable_filter(model, mode))
    if mesh is None:
        opt_state = optimizer.init(eqx.filter(trainable, eqx.is_array))
        step = make_train_step(optimizer, supervised_objective())
    else:
        opt_state = sharding.sharded_opt_init(optimizer, trainable, mesh)
        step = make_train_step(optimizer, supervised_objective(),
                               constrain=sharding.state_constraint(mesh))
    losses = []
    for i in range(steps):
        batch = synthetic_batch(i)
        if mesh is not None:
            rows = sharding.process_rows(BATCH, mesh)
            batch = sharding.place_batch(jax.tree.map(lambda x, r=rows: x[r], batch), mesh)
        key = jax.random.fold_in(jax.random.key(1), i)
        if mesh is not None:
            key = sharding.replicate(key, mesh)
        trainable, opt_state, metrics = step(trainable, frozen, opt_state, (batch,), key, None)
        losses.append(float(sharding.to_host(metrics["loss"])))
    checksum = sum(float(np.abs(x).sum()) for x in jax.tree.leaves(sharding.to_host(trainable)))
    return losses, checksum


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mesh", default="1x2x2")
    parser.add_argument("--mode", default="full", choices=("full", "lora"))
    parser.add_argument("--out", required=True, help="JSON file process 0 writes")
    args = parser.parse_args()
    sharding.initialize()
    mesh = sharding.make_mesh(args.mesh)
    losses, checksum = train(args.mode, mesh)
    if sharding.is_reporting_process():
        Path(args.out).write_text(json.dumps({
            "losses": losses, "checksum": checksum, "mesh": sharding.describe(mesh),
            "processes": jax.process_count(), "pid": os.getpid(),
        }))


if __name__ == "__main__":
    main()
