"""Canonical SMILES, so that one reaction written two ways becomes one string.

A canonical reaction is `reactants>agents>products`, each side's molecules split at `.`,
written as RDKit canonical SMILES and sorted. Two sources that list the same chemicals in any
order or spelling therefore agree character for character. Salts and mixtures are split into their
ions and components, as the widely used Yield-BERT encoding does.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence

from rdkit import Chem, RDLogger


class SmilesError(ValueError):
    """A SMILES string that RDKit cannot parse."""


class NotAReaction(SmilesError):
    """A string that is not shaped like a reaction: no `reactants>agents>products`, or an empty side."""


@contextlib.contextmanager
def _rdkit_quiet() -> Iterator[None]:
    """Silence RDKit's parse errors on stderr: bad rows are reported together by the caller."""
    RDLogger.DisableLog("rdApp.*")
    try:
        yield
    finally:
        RDLogger.EnableLog("rdApp.*")


@functools.lru_cache(maxsize=65536)
def canonical_smiles(smiles: str) -> str:
    """RDKit canonical SMILES of a molecule or mixture; raises `SmilesError` if unparsable."""
    if not smiles.strip():
        raise SmilesError("empty SMILES")
    with _rdkit_quiet():
        molecule = Chem.MolFromSmiles(smiles)
    if molecule is None:
        raise SmilesError(f"RDKit cannot parse {smiles!r}")
    return Chem.MolToSmiles(molecule)


def _canonical_side(side: str) -> list[str]:
    """Sorted canonical components of one side of a reaction (empty side -> no components)."""
    if not side:
        return []
    try:
        parts = [canonical_smiles(part) for part in side.split(".")]
    except SmilesError:
        # Ring closures may legally span a '.', so a side can parse only as a whole.
        parts = [canonical_smiles(side)]
    return sorted(part for whole in parts for part in whole.split("."))


def canonical_reaction(reaction: str) -> str:
    """Canonical `reactants>agents>products`; the agents part is omitted (`>>`) when empty.

    Raises `NotAReaction` if the string is not shaped like a reaction, `SmilesError` if a molecule in
    it is unparsable.
    """
    sides = reaction.strip().split(">")
    if len(sides) != 3:
        raise NotAReaction(f"not a reaction SMILES (need 'reactants>>products'): {reaction!r}")
    if not sides[0].strip() or not sides[2].strip():
        raise NotAReaction(f"a reaction needs reactants and products: {reaction!r}")
    reactants, agents, products = (".".join(_canonical_side(side)) for side in sides)
    if not reactants or not products:
        raise NotAReaction(f"a reaction needs reactants and products: {reaction!r}")
    return f"{reactants}>{agents}>{products}"


def reaction_components(reaction: str) -> tuple[list[str], list[str], list[str]]:
    """Reactant, agent and product components of a canonical reaction SMILES."""
    reactants, agents, products = reaction.split(">")
    return tuple(side.split(".") if side else [] for side in (reactants, agents, products))


def unreadable(texts: Sequence[str]) -> list[int]:
    """Positions of the texts RDKit cannot parse as a molecule or a `reactants>agents>products` reaction.

    Only the syntax is checked (atoms, bonds, branches, rings; no valence rules), at about 40 µs a
    text, so that a corpus of millions of lines is checked in minutes: it catches names, numbers, a
    wrong column and cut-off strings, not chemistry."""
    bad = []
    with _rdkit_quiet():
        for i, text in enumerate(texts):
            sides = text.split(">")
            if len(sides) not in (1, 3) or (len(sides) == 3 and not (sides[0] and sides[2])):
                bad.append(i)  # a reaction needs reactants and products
            elif any(side and Chem.MolFromSmiles(side, sanitize=False) is None for side in sides):
                bad.append(i)
    return bad
