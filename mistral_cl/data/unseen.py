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

The run keeps its training molecules (`runs.save_known_molecules`), so `predict` reads new reactions
as the training did.
"""

from __future__ import annotations

import numpy as np

from mistral_cl.data.reactions import ReactionDataset
from mistral_cl.data.smiles import reaction_components

PLACEHOLDER = "*"


def _molecules(reaction: str) -> set[str]:
    return {m for side in reaction_components(reaction) for m in side}


def molecules_of(dataset: ReactionDataset) -> frozenset[str]:
    """Every molecule (canonical component) of `dataset`'s reactions, on any side."""
    return frozenset().union(*map(_molecules, dataset.smiles)) if len(dataset) else frozenset()


def _replaced(reaction: str, replace: set[str] | frozenset[str], keep: bool) -> str:
    """`reaction` with each molecule in `replace` (or, with `keep`, each molecule not in it) read as
    the placeholder."""
    sides = reaction_components(reaction)
    return ">".join(".".join(PLACEHOLDER if (m in replace) != keep else m for m in side) for side in sides)


def with_molecule_dropout(dataset: ReactionDataset, rate: float, seed: int) -> ReactionDataset:
    """`dataset` followed by copies of a `rate` share of its reactions (each drawn with probability
    `rate`, seeded by `seed`), each copy with one varying molecule replaced by the placeholder.

    A molecule varies if some reaction lacks it; one in every reaction tells the reactions nothing
    apart. A copy's yield is the mean yield of the reactions of `dataset` that differ from its
    reaction in that one molecule at most (its reaction among them): the average the placeholder
    stands for, measured where the data has it, rather than one draw of it that the model would
    have to average out over many copies. Copies keep their reaction's task and row. `rate=0`:
    `dataset` itself."""
    if rate <= 0.0 or not len(dataset):
        return dataset
    molecules = [_molecules(r) for r in dataset.smiles]
    everywhere = frozenset.intersection(*map(frozenset, molecules))
    varying = [sorted(m - everywhere) for m in molecules]
    # The reactions that read alike once one of their molecules is the placeholder.
    alike: dict[frozenset[str], list[float]] = {}
    for mine, vary, y in zip(molecules, varying, dataset.yields, strict=True):
        for m in vary:
            alike.setdefault(frozenset(mine - {m}), []).append(float(y))
    rng = np.random.default_rng(seed)
    copies, yields, kept = [], [], []
    for i in np.flatnonzero(rng.random(len(dataset)) < rate):
        if varying[i]:
            dropped = varying[i][rng.integers(len(varying[i]))]
            copies.append(_replaced(dataset.smiles[i], {dropped}, keep=False))
            yields.append(np.mean(alike[frozenset(molecules[i] - {dropped})]))
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
    return sum(bool(_molecules(r) - known - {PLACEHOLDER}) for r in dataset.smiles)
