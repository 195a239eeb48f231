"""The ligand-similarity benchmark's weighting: uniform weights are the mean over known ligands, and
a similarity that singles out one known ligand predicts with that ligand's yields."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ligand_similarity as L  # noqa: E402

from mistral_cl.data.suzuki_components import NONE  # noqa: E402
from mistral_cl.scores import regression_scores  # noqa: E402

LIGANDS = [NONE, "a", "b", "c", "new"]


def _table(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 100, size=(40, len(LIGANDS)))


def test_uniform_weights_are_the_mean_over_training_ligands_none_included():
    table = _table()
    train = [NONE, "a", "b", "c"]
    expected = regression_scores(table[:, 4], table[:, :4].mean(axis=1))["r2"]
    assert L.r2_of(table, LIGANDS, ["new"], train, None, 1.0) == pytest.approx(expected)


def test_a_sharp_similarity_predicts_with_the_nearest_known_ligand_and_never_with_none():
    table = _table(1)
    table[:, 0] = table[:, 4]  # `none` yields exactly like the new ligand: it must get no weight
    similarity = {("new", "a"): 0.2, ("new", "b"): 0.9, ("new", "c"): 0.1}
    r2 = L.r2_of(table, LIGANDS, ["new"], [NONE, "a", "b", "c"], lambda x, y: similarity[(x, y)], 0.001)
    assert r2 == pytest.approx(regression_scores(table[:, 4], table[:, 2])["r2"])
    assert r2 < 0.5  # independent random columns: far from the perfect score `none` would give


def test_the_nested_temperature_is_chosen_without_the_held_out_ligand():
    table = _table(2)
    table[:, 3] = table[:, 1] + 1.0  # c yields like a; the held-out `new` is unrelated to both
    names = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0]), "c": np.array([1.0, 0.05]),
             "new": np.array([0.7, 0.7])}
    similarity = lambda x, y: float(names[x] @ names[y] / np.linalg.norm(names[x]) / np.linalg.norm(names[y]))
    train = [NONE, "a", "b", "c"]
    sharp, flat = (L.left_out(table, LIGANDS, train, similarity, t) for t in (0.01, 1.0))
    assert sharp > flat  # a and c predict each other when the weights are sharp
    before = L.left_out(table, LIGANDS, train, similarity, 0.01)
    table[:, 4] = 0.0  # the held-out ligand's yields do not enter the choice
    assert L.left_out(table, LIGANDS, train, similarity, 0.01) == before
