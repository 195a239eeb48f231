"""The representations of `benchmarks/feature_probes.py`."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import feature_probes  # noqa: E402


def test_one_hot_marks_the_reactant_side_molecules_of_each_reaction():
    x = feature_probes.one_hot_molecules(["CO.O>>C=O", "O.CCO>>CC=O", "CO>>C"])
    # Columns in sorted order: CCO, CO, O; products are not molecules of the screen.
    np.testing.assert_array_equal(x, [[0, 1, 1], [1, 0, 1], [0, 1, 0]])


def test_standardised_and_whitened_features_over_the_training_rows():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 6)) @ rng.standard_normal((6, 6)) * [1, 10, 100, 1, 1, 1] + 5.0
    train = np.arange(300)
    z = feature_probes.standardized(x, train)
    np.testing.assert_allclose(z[train].mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(z[train].std(0), 1, rtol=1e-5)
    w = feature_probes.whitened(x, train, floor=0.0)
    np.testing.assert_allclose(np.cov(w[train].T), np.eye(6), atol=1e-6)
