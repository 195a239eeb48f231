"""Molecules a model never trained on, read as one placeholder molecule.

A yield model that reads a reaction molecule by molecule has, for a ligand (or base, or solvent) it
never saw, only the code its layers happen to give that molecule's text, and a head fitted on ten
ligands extrapolates from it freely: held-out ligands are where such models fall below the mean. A
lab asking about a new ligand is better served by the answer "what these reactants, base and solvent
give over the ligands I know", and that is what this module makes the model learn and use:

- training (`with_molecule_dropout`): a share of the training reactions is added a second time with
  one of their molecules, drawn at random among those that vary across the training set, replaced
  by `PLACEHOLDER` (`*`, the SMILES dummy atom). With a squared loss the placeholder comes to mean
  the average over the molecules it stood for, given the rest of the reaction;
- prediction (`masked`): every molecule outside the training set's (`molecules_of`) is replaced by
  the placeholder. Reactions made only of known molecules are read exactly as without this module.

A molecule is a dot-separated part of the SMILES, as everywhere in the package: a salt is its ions and
a ferrocene ligand three parts. A copy drops every occurrence of one of them; at prediction each
unseen part is read as the placeholder on its own. Reactions are compared with the count of each
molecule, so a potassium base and a trifluoroborate's potassium are two `[K+]`.

The run keeps its training molecules (`runs.save_known_molecules`), so `predict` reads new reactions
as the training did.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from mistral_cl.data.reactions import ReactionDataset
from mistral_cl.data.smiles import reaction_components

PLACEHOLDER = "*"

# A reaction's molecules with their counts, as a hashable key: `[K+]` from a trifluoroborate and
# `[K+]` from a potassium base are two, and a reaction with both differs from one with either.
Molecules = frozenset[tuple[str, int]]


def _counts(reaction: str) -> Counter[str]:
    return Counter(m for side in reaction_components(reaction) for m in side)


def _without(counts: Counter[str], molecule: str) -> Molecules:
    """`counts` with every occurrence of `molecule` taken out, as a key."""
    return frozenset((m, n) for m, n in counts.items() if m != molecule)


def molecules_of(dataset: ReactionDataset) -> frozenset[str]:
    """Every molecule (canonical component) of `dataset`'s reactions, on any side."""
    return frozenset(m for r in dataset.smiles for m in _counts(r))


def _replaced(reaction: str, replace: set[str] | frozenset[str], keep: bool) -> str:
    """`reaction` with each occurrence of a molecule in `replace` (or, with `keep`, of a molecule not
    in it) read as the placeholder."""
    sides = reaction_components(reaction)
    return ">".join(".".join(PLACEHOLDER if (m in replace) != keep else m for m in side) for side in sides)


def with_molecule_dropout(dataset: ReactionDataset, rate: float, seed: int) -> ReactionDataset:
    """`dataset` followed by copies of a `rate` share of its reactions (each drawn with probability
    `rate`, seeded by `seed`), each copy with one varying molecule (every occurrence of it) replaced
    by the placeholder.

    A molecule varies if some reaction lacks it; one in every reaction tells the reactions nothing
    apart. A copy's yield is the mean yield of the reactions of `dataset` that read alike once one
    of their own molecules is taken out (its reaction among them, counts of every other molecule
    equal): the average the placeholder stands for, measured where the data has it, rather than one
    draw of it that the model would have to average out over many copies. Copies keep their
    reaction's task and row. `rate=0`: `dataset` itself."""
    if rate <= 0.0 or not len(dataset):
        return dataset
    counts = [_counts(r) for r in dataset.smiles]
    everywhere = frozenset.intersection(*(frozenset(c) for c in counts))
    varying = [sorted(set(c) - everywhere) for c in counts]
    alike: dict[Molecules, list[float]] = {}
    for mine, vary, y in zip(counts, varying, dataset.yields, strict=True):
        for m in vary:
            alike.setdefault(_without(mine, m), []).append(float(y))
    rng = np.random.default_rng(seed)
    copies, yields, kept = [], [], []
    for i in np.flatnonzero(rng.random(len(dataset)) < rate):
        if varying[i]:
            dropped = varying[i][rng.integers(len(varying[i]))]
            copies.append(_replaced(dataset.smiles[i], {dropped}, keep=False))
            yields.append(np.mean(alike[_without(counts[i], dropped)]))
            kept.append(i)
    extra = dataset.subset(np.asarray(kept, dtype=np.int64))
    return ReactionDataset.concat([dataset, ReactionDataset.build(
        copies, yields, extra.tasks, extra.rows, dataset.source, dataset.yield_unit, dataset.smiles_column)])


def masked(dataset: ReactionDataset, known: frozenset[str]) -> ReactionDataset:
    """`dataset` with every molecule outside `known` replaced by the placeholder (the placeholder
    itself is always known)."""
    known = known | {PLACEHOLDER}
    smiles = np.array([_replaced(r, known, keep=True) for r in dataset.smiles], dtype=object)
    return ReactionDataset.build(smiles, dataset.yields, dataset.tasks, dataset.rows, dataset.source,
                                 dataset.yield_unit, dataset.smiles_column)


def unseen_count(dataset: ReactionDataset, known: frozenset[str]) -> int:
    """How many of `dataset`'s reactions hold a molecule outside `known`."""
    return sum(bool(set(_counts(r)) - known - {PLACEHOLDER}) for r in dataset.smiles)
