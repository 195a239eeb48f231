"""How much of the Suzuki–Miyaura yields simple models read from simple representations.

    python benchmarks/feature_probes.py [--seed 0] [--epochs 30,100]

A diagnostic for the accuracy benchmark, not a model of this project: it asks whether the `tiny`
backbone's random features or the MHAR head limit the held-out R². On the standard random 70/30 split
`--seed`, a small SiLU MLP (two hidden layers of 256, dropout 0.1 after the first, AdamW, batch 16,
peak lr 2e-3 with cosine decay, weight decay 0.01) is fitted to:

- `one-hot molecules`: which of the screen's reactant-side molecules a reaction contains (the
  representation of the one-hot baselines in the literature);
- `mean-pooled backbone`: the frozen `tiny` backbone's hidden states (seed `--seed`, the model that
  `mistral-cl train` starts from), averaged over each reaction's tokens. With per-channel
  standardisation, as the MHAR head's standardiser does, and with a ZCA whitening (eigenvalue floor
  1e-3 of the largest), as a comparison.
- `mean-pooled embeddings`: the same for the backbone's token embeddings (`--feature-layer 0`, what
  the head reads by default on a random backbone), without the blocks that follow them.

Prints one row per representation and epoch count: held-out and training R².
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mistral_cl.config import ModelConfig
from mistral_cl.data.batching import encode_reactions
from mistral_cl.data.reactions import ReactionDataset
from mistral_cl.data.sources import load_dataset
from mistral_cl.data.tasks import random_split
from mistral_cl.features import mean_pooled_states
from mistral_cl.head import HeadConfig
from mistral_cl.predictor import AdaptationConfig, build_yield_model
from mistral_cl.report import format_table
from mistral_cl.scores import regression_scores
from mistral_cl.tokenizer import Tokenizer


def one_hot_molecules(smiles: Sequence[str]) -> np.ndarray:
    """[reactions, molecules]: 1 where the reaction's reactant side holds that molecule."""
    molecules = [reaction.split(">")[0].split(".") for reaction in smiles]
    vocabulary = {m: i for i, m in enumerate(sorted({m for ms in molecules for m in ms}))}
    out = np.zeros((len(smiles), len(vocabulary)), np.float32)
    for row, ms in enumerate(molecules):
        out[row, [vocabulary[m] for m in ms]] = 1.0
    return out


def mean_pooled_backbone(dataset: ReactionDataset, seed: int, depths: Sequence[int | None] = (None,),
                         batch_size: int = 64) -> list[np.ndarray]:
    """One [reactions, dim] array per entry of `depths`: the random `tiny` backbone's hidden states
    after that many blocks (None: its output), averaged over real tokens. The reactions are tokenized
    and the backbone built once for all depths."""
    encoded = encode_reactions(dataset, Tokenizer.default(), buckets=None)
    # The backbone `mistral-cl train --seed SEED` starts from (the head is not used).
    backbone = build_yield_model(ModelConfig.preset("tiny"), HeadConfig(), AdaptationConfig(mode="head"),
                                 key=jax.random.key(seed)).backbone
    out: list[list[np.ndarray]] = [[] for _ in depths]
    for start in range(0, len(encoded), batch_size):
        tokens, lengths = encoded.tokens[start:start + batch_size], encoded.lengths[start:start + batch_size]
        mask = np.arange(tokens.shape[1])[None] < lengths[:, None]
        for parts, depth in zip(out, depths, strict=True):
            parts.append(np.asarray(mean_pooled_states(backbone, tokens, mask, depth)))
    return [np.concatenate(parts) for parts in out]


def standardized(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    return (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)


def whitened(x: np.ndarray, train: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    centred = x - x[train].mean(0)
    values, vectors = np.linalg.eigh(np.cov(centred[train].T))
    return centred @ (vectors / np.sqrt(values + floor * values.max())) @ vectors.T


def fit_mlp(x: np.ndarray, y: np.ndarray, train: np.ndarray, epochs: int, seed: int,
            hidden: int = 256, batch: int = 16, lr: float = 2e-3) -> np.ndarray:
    """Predictions for every row of `x` of an MLP fitted on the rows `train`."""
    keys = jax.random.split(jax.random.key(seed), 4)
    dims = [x.shape[1], hidden, hidden, 1]
    params = [(jax.random.normal(k, (a, b)) / np.sqrt(a), jnp.zeros(b))
              for k, a, b in zip(keys, dims[:-1], dims[1:], strict=False)]

    def predict(params, inputs, key=None):
        h = inputs
        for i, (w, b) in enumerate(params[:-1]):
            h = jax.nn.silu(h @ w + b)
            if key is not None and i == 0:
                h = jnp.where(jax.random.bernoulli(key, 0.9, h.shape), h / 0.9, 0.0)
        w, b = params[-1]
        return jax.nn.sigmoid((h @ w + b)[:, 0])

    steps = len(train) // batch
    optimizer = optax.adamw(optax.cosine_decay_schedule(lr, epochs * steps), weight_decay=0.01)

    @jax.jit
    def step(params, state, inputs, targets, key):
        grads = jax.grad(lambda p: jnp.mean((predict(p, inputs, key) - targets) ** 2))(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state, rng = optimizer.init(params), np.random.default_rng(seed)
    x_train, y_train = jnp.asarray(x[train]), jnp.asarray(y[train])
    for epoch in range(epochs):
        order = rng.permutation(len(train))
        for i in range(steps):
            rows = order[i * batch:(i + 1) * batch]
            params, state = step(params, state, x_train[rows], y_train[rows],
                                 jax.random.fold_in(keys[-1], epoch * steps + i))
    return np.asarray(predict(params, jnp.asarray(x)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="split and backbone seed (default 0)")
    parser.add_argument("--epochs", default="30,100", help="comma-separated epoch counts")
    args = parser.parse_args(argv)

    dataset = load_dataset("suzuki")
    train_set, _ = random_split(dataset, 0.3, seed=args.seed)
    in_train = np.isin(np.asarray(dataset.smiles), np.asarray(train_set.smiles))
    train, test = np.flatnonzero(in_train), np.flatnonzero(~in_train)
    yields = np.asarray(dataset.yields, np.float32)
    pooled, embeddings = mean_pooled_backbone(dataset, args.seed, depths=(None, 0))
    representations = {
        "one-hot molecules": one_hot_molecules(dataset.smiles),
        "mean-pooled backbone, standardised": standardized(pooled, train),
        "mean-pooled backbone, raw": pooled,
        "mean-pooled backbone, ZCA-whitened": whitened(pooled, train),
    }
    representations["mean-pooled embeddings, standardised"] = standardized(embeddings, train)
    representations["mean-pooled embeddings, ZCA-whitened"] = whitened(embeddings, train)
    rows = []
    for name, x in representations.items():
        for epochs in (int(e) for e in args.epochs.split(",")):
            start = time.perf_counter()
            predicted = fit_mlp(x, yields, train, epochs, args.seed)
            rows.append({"representation": name, "features": x.shape[1], "epochs": epochs,
                         "test R²": regression_scores(yields[test], predicted[test])["r2"],
                         "train R²": regression_scores(yields[train], predicted[train])["r2"],
                         "seconds": time.perf_counter() - start})
            print(rows[-1], file=sys.stderr, flush=True)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
