"""The chemicals of the Suzuki–Miyaura screen of Perera et al., Science 359, 429 (2018).

Every name used in the supplementary workbook (Data File S1) maps to a SMILES. One quinoline
(6-X-quinoline, `Q`) couples with one indazole (5-methyl-1-(oxan-2-yl)-1H-indazol-4-yl-Y, `Ind`);
each reacting pair is one task, named `<quinoline>+<indazole>`, e.g. `Cl-Q+BOH2-Ind`.

The encoding follows the Yield-BERT / gauche convention so that both published forms of the data
give the same reaction strings: the aryl (pseudo)halide quinolines are listed with the internal
standard 1,3-diethylbenzene of their stock solutions, the boron quinolines with water (and HCl for
the hydrochloride), every solvent with water, Pd(OAc)2 and dtbpf in their `~`/radical notation;
'MeOH/H2O_V2 9:1' and 'THF_V2' (second batches of the same solvents) are the same chemicals as
MeOH and THF.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

from mistral_cl.data.smiles import canonical_reaction, canonical_smiles, reaction_components


@dataclasses.dataclass(frozen=True)
class Reactant:
    """A coupling partner: `key` names it in task keys, `smiles` is the molecule that reacts,
    `companions` are the other chemicals that enter the vial with it."""

    key: str
    smiles: str
    companions: tuple[str, ...] = ()


_DIETHYLBENZENE = "CCc1cccc(CC)c1"
_INDAZOLE = "Cc1ccc2n(C3CCCCO3)ncc2c1"  # the aryl carbon that couples is C4, bearing '{}'

QUINOLINES: dict[str, Reactant] = {
    "6-chloroquinoline": Reactant("Cl-Q", "Clc1ccc2ncccc2c1", (_DIETHYLBENZENE,)),
    "6-Bromoquinoline": Reactant("Br-Q", "Brc1ccc2ncccc2c1", (_DIETHYLBENZENE,)),
    "6-Iodoquinoline": Reactant("I-Q", "Ic1ccc2ncccc2c1", (_DIETHYLBENZENE,)),
    "6-triflatequinoline": Reactant(
        "OTf-Q", "FC(F)(F)S(=O)(=O)Oc1ccc2ncccc2c1", (_DIETHYLBENZENE,)
    ),
    "6-quinoline-boronic acid hydrochloride": Reactant(
        "BOH2-Q", "OB(O)c1ccc2ncccc2c1", ("Cl", "O")
    ),
    "6-Quinolineboronic acid pinacol ester": Reactant(
        "BPin-Q", "CC1(C)OB(c2ccc3ncccc3c2)OC1(C)C", ("O",)
    ),
    "Potassium quinoline-6-trifluoroborate": Reactant(
        "BF3K-Q", "F[B-](F)(F)c1ccc2ncccc2c1", ("[K+]", "O")
    ),
}

INDAZOLES: dict[str, Reactant] = {
    "2a, Boronic Acid": Reactant("BOH2-Ind", "Cc1ccc2n(C3CCCCO3)ncc2c1B(O)O"),
    "2b, Boronic Ester": Reactant("BPin-Ind", "Cc1ccc2n(C3CCCCO3)ncc2c1B1OC(C)(C)C(C)(C)O1"),
    "2c, Trifluoroborate": Reactant("BF3K-Ind", "Cc1ccc2n(C3CCCCO3)ncc2c1[B-](F)(F)F", ("[K+]",)),
    "2d, Bromide": Reactant("Br-Ind", "Cc1ccc2n(C3CCCCO3)ncc2c1Br"),
}

PRODUCT = "Cc1ccc2n(C3CCCCO3)ncc2c1-c1ccc2ncccc2c1"

CATALYSTS: dict[str, str] = {"Pd(OAc)2": "CC(=O)O~CC(=O)O~[Pd]"}

_DTBPF_HALF = "CC(C)(C)P(C(C)(C)C)C1=CC=C[CH]1"
_DPPF_HALF = "[C-]1(P(c2ccccc2)c2ccccc2)C=CC=C1"

LIGANDS: dict[str, str] = {
    "P(tBu)3": "CC(C)(C)P(C(C)(C)C)C(C)(C)C",
    "P(Ph)3": "P(c1ccccc1)(c1ccccc1)c1ccccc1",
    "AmPhos": "CN(C)c1ccc(cc1)P(C(C)(C)C)C(C)(C)C",
    "P(Cy)3": "P(C1CCCCC1)(C1CCCCC1)C1CCCCC1",
    "P(o-Tol)3": "Cc1ccccc1P(c1ccccc1C)c1ccccc1C",
    "CataCXium A": "CCCCP(C12CC3CC(CC(C3)C1)C2)C12CC3CC(CC(C3)C1)C2",
    "SPhos": "COc1cccc(OC)c1-c1ccccc1P(C1CCCCC1)C1CCCCC1",
    "dtbpf": f"{_DTBPF_HALF}.{_DTBPF_HALF}.[Fe]",
    "XPhos": "CC(C)c1cc(C(C)C)c(c(C(C)C)c1)-c1ccccc1P(C1CCCCC1)C1CCCCC1",
    "dppf": f"{_DPPF_HALF}.{_DPPF_HALF}.[Fe+2]",
    "Xantphos": "CC1(C)c2cccc(P(c3ccccc3)c3ccccc3)c2Oc2c1cccc2P(c1ccccc1)c1ccccc1",
}

BASES: dict[str, str] = {
    "NaOH": "[Na+].[OH-]",
    "NaHCO3": "[Na+].OC([O-])=O",
    "CsF": "[Cs+].[F-]",
    "K3PO4": "[K+].[K+].[K+].[O-]P([O-])([O-])=O",
    "KOH": "[K+].[OH-]",
    "LiOtBu": "[Li+].CC(C)(C)[O-]",
    "Et3N": "CCN(CC)CC",
}

SOLVENTS: dict[str, str] = {
    "MeCN": "CC#N.O",
    "DMF": "CN(C)C=O.O",
    "THF": "C1CCOC1.O",
    "THF_V2": "C1CCOC1.O",
    "MeOH": "CO.O",
    "MeOH/H2O_V2 9:1": "CO.O",
}


def reaction_smiles(
    quinoline: Reactant,
    indazole: Reactant,
    catalyst: str,
    ligand: str | None,
    base: str | None,
    solvent: str,
) -> str:
    """Reaction SMILES with everything in the vial on the reactant side, as Yield-BERT does."""
    vial = [quinoline.smiles, *quinoline.companions, indazole.smiles, *indazole.companions,
            catalyst, ligand, base, solvent]
    return ".".join(s for s in vial if s) + ">>" + PRODUCT


@functools.cache
def _keys_by_molecule() -> tuple[dict[str, str], dict[str, str]]:
    def canonical(table: dict[str, Reactant]) -> dict[str, str]:
        return {canonical_smiles(r.smiles): r.key for r in table.values()}

    return canonical(QUINOLINES), canonical(INDAZOLES)


def suzuki_task(reaction: str) -> str | None:
    """Task key `<quinoline>+<indazole>` of a canonical reaction SMILES, read from the reacting
    pair among its reactants and agents; None unless exactly one of each is present."""
    reactants, agents, _ = reaction_components(reaction)
    quinolines, indazoles = _keys_by_molecule()
    found_q = {quinolines[m] for m in (*reactants, *agents) if m in quinolines}
    found_i = {indazoles[m] for m in (*reactants, *agents) if m in indazoles}
    if len(found_q) != 1 or len(found_i) != 1:
        return None
    return f"{found_q.pop()}+{found_i.pop()}"


CONDITIONS: tuple[str, ...] = ("quinoline", "indazole", "ligand", "base", "solvent")
NONE = "none"  # the ligand or base cell of a reaction run without one


@functools.cache
def _screen() -> dict[str, tuple[str, ...]]:
    """Every reaction the screen's chemicals make (any quinoline, indazole, ligand or none, base or
    none, solvent), canonical SMILES -> its `CONDITIONS` (names; a solvent's second batch, which is
    the same chemical, under its first name)."""
    solvents = {smiles: name for name, smiles in reversed(SOLVENTS.items())}
    ligands = [(NONE, None), *LIGANDS.items()]
    bases = [(NONE, None), *BASES.items()]
    (catalyst,) = CATALYSTS.values()
    screen = {}
    for quinoline, indazole, (ligand, lig), (base, bas), (vial, solvent) in itertools.product(
            QUINOLINES.values(), INDAZOLES.values(), ligands, bases, solvents.items()):
        reaction = canonical_reaction(reaction_smiles(quinoline, indazole, catalyst, lig, bas, vial))
        screen[reaction] = (quinoline.key, indazole.key, ligand, base, solvent)
    return screen


def suzuki_conditions(reaction: str) -> dict[str, str] | None:
    """The screen's chemical in each of `CONDITIONS` of a canonical reaction SMILES (`none` for a
    reaction without ligand or base), or None for a reaction not made of the screen's chemicals.
    Read from the whole reaction, so water or potassium shared by several chemicals is no problem."""
    names = _screen().get(reaction)
    return None if names is None else dict(zip(CONDITIONS, names, strict=True))


# How the seed repository writes each coupling partner, companions included (its own non-canonical
# SMILES). Its task label is the quinoline's string, '.', then the indazole's, and its stream visits
# the labels in Python's string order: that order is the `seed` task-order preset.
SEED_SPELLINGS: dict[str, str] = {
    "Cl-Q": "C1=C(Cl)C=CC2=NC=CC=C12.CCC1=CC(=CC=C1)CC",
    "Br-Q": "C1=C(Br)C=CC2=NC=CC=C12.CCC1=CC(=CC=C1)CC",
    "I-Q": "C1=C(I)C=CC2=NC=CC=C12.CCC1=CC(=CC=C1)CC",
    "OTf-Q": "C1C2C(=NC=CC=2)C=CC=1OS(C(F)(F)F)(=O)=O.CCC1=CC(=CC=C1)CC",
    "BOH2-Q": "C1C(B(O)O)=CC=C2N=CC=CC=12.Cl.O",
    "BPin-Q": "B1(OC(C(O1)(C)C)(C)C)C2=CC3=C(C=C2)N=CC=C3.O",
    "BF3K-Q": "[B-](C1=CC2=C(C=C1)N=CC=C2)(F)(F)F.[K+].O",
    "BOH2-Ind": "CC1=CC=C2C(C=NN2C3OCCCC3)=C1B(O)O",
    "BPin-Ind": "CC1=CC=C2C(C=NN2C3OCCCC3)=C1B4OC(C)(C)C(C)(C)O4",
    "BF3K-Ind": "CC1=CC=C2C(C=NN2C3OCCCC3)=C1[B-](F)(F)F.[K+]",
    "Br-Ind": "CC1=CC=C2C(C=NN2C3OCCCC3)=C1Br",
}


def seed_label(key: str) -> str | None:
    """The seed repository's task label of a task key `<quinoline>+<indazole>`; None for keys that
    are not a Suzuki reactant pair."""
    quinoline, plus, indazole = key.partition("+")
    if not plus or quinoline not in SEED_SPELLINGS or indazole not in SEED_SPELLINGS:
        return None
    return f"{SEED_SPELLINGS[quinoline]}.{SEED_SPELLINGS[indazole]}"
