"""Synthetic Suzuki–Miyaura cross-coupling reactions, written like the evaluation set.

Drug-like sets teach a model molecules but not the reaction SMILES it is evaluated on: boronic acids,
pinacol esters and trifluoroborates, palladium sources, phosphines, salts split into their ions. Each
generated reaction couples two aryl halides of a molecule set (MOSES for the `couplings` corpus source):
- **electrophile**: the first, its halogen kept half the time, otherwise replaced by Cl, Br, I or
  triflate (MOSES has no aryl iodides or triflates);
- **nucleophile**: the second, its halogen replaced by B(OH)2, Bpin or BF3⁻ (with K⁺);
- **product**: the biaryl, the two aryl carbons joined where the leaving groups were;
- **conditions**: a palladium source; a phosphine ligand 70 % of the time, never one of the screen's
  eleven (`suzuki_components.LIGANDS`); a base 90 % of the time; a solvent, with water 60 % of the
  time; an inert internal standard 25 % of the time. Bases, solvents, Pd(OAc)2 and 1,3-diethylbenzene
  are also the screen's: common chemicals, which no screen reaction can be made of without its
  quinoline and indazole. Ferrocenyl bisphosphines (dippf, dcypf) are written in the screen's two
  notations for dtbpf and dppf.
The text is `canonical_reaction` of everything in the vial `>>` the product: RDKit canonical
components, sorted, salts as ions, as `suzuki.read_suzuki_csv` gives the screen. The reactions
depend only on the molecules, their number and the seed; `cached_couplings` keeps the corpus source's
texts in a file, so a run builds them once.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rdkit import Chem

from mistral_cl.data.smiles import _rdkit_quiet, canonical_smiles
from mistral_cl.errors import InputError, warn

VERSION = "1"  # raise when the reactions change: it names the cache file
SEED = 20180119

_DBA = "O=C(/C=C/c1ccccc1)/C=C/c1ccccc1"
PALLADIUM: dict[str, str] = {
    "Pd(OAc)2": "CC(=O)O~CC(=O)O~[Pd]",
    "Pd2(dba)3": f"{_DBA}.{_DBA}.{_DBA}.[Pd].[Pd]",
    "Pd(dba)2": f"{_DBA}.{_DBA}.[Pd]",
    "PdCl2": "[Cl-].[Cl-].[Pd+2]",
    "PdCl2(MeCN)2": "CC#N.CC#N.[Cl-].[Cl-].[Pd+2]",
    "Pd(TFA)2": "O=C([O-])C(F)(F)F.O=C([O-])C(F)(F)F.[Pd+2]",
    "Pd(acac)2": "CC(=O)/C=C(/C)[O-].CC(=O)/C=C(/C)[O-].[Pd+2]",
}

_CY2P = "P(C1CCCCC1)C1CCCCC1"
LIGANDS: dict[str, str] = {
    "RuPhos": f"CC(C)Oc1cccc(OC(C)C)c1-c1ccccc1{_CY2P}",
    "DavePhos": f"CN(C)c1ccccc1-c1ccccc1{_CY2P}",
    "MePhos": f"Cc1ccccc1-c1ccccc1{_CY2P}",
    "CyJohnPhos": "c1ccc(-c2ccccc2P(C2CCCCC2)C2CCCCC2)cc1",
    "JohnPhos": "CC(C)(C)P(c1ccccc1-c1ccccc1)C(C)(C)C",
    "BrettPhos": "COc1ccc(OC)c(P(C2CCCCC2)C2CCCCC2)c1-c1c(C(C)C)cc(C(C)C)cc1C(C)C",
    "tBuXPhos": "CC(C)c1cc(C(C)C)c(-c2ccccc2P(C(C)(C)C)C(C)(C)C)c(C(C)C)c1",
    "DPEphos": "c1ccc(P(c2ccccc2)c2ccccc2Oc2ccccc2P(c2ccccc2)c2ccccc2)cc1",
    "BINAP": "c1ccc(P(c2ccccc2)c2ccc3ccccc3c2-c2c(P(c3ccccc3)c3ccccc3)ccc3ccccc23)cc1",
    "dppe": "C(CP(c1ccccc1)c1ccccc1)P(c1ccccc1)c1ccccc1",
    "dppp": "C(CP(c1ccccc1)c1ccccc1)CP(c1ccccc1)c1ccccc1",
    "dppb": "C(CCP(c1ccccc1)c1ccccc1)CP(c1ccccc1)c1ccccc1",
    "dcpe": f"C(C{_CY2P}){_CY2P}",
    "PCy2Ph": "C1CCC(P(C2CCCCC2)c2ccccc2)CC1",
    "PCyPh2": "c1ccc(P(c2ccccc2)C2CCCCC2)cc1",
    "P(2-furyl)3": "c1coc(P(c2ccco2)c2ccco2)c1",
    "P(p-Tol)3": "Cc1ccc(P(c2ccc(C)cc2)c2ccc(C)cc2)cc1",
    "P(m-Tol)3": "Cc1cccc(P(c2cccc(C)c2)c2cccc(C)c2)c1",
    "P(p-anisyl)3": "COc1ccc(P(c2ccc(OC)cc2)c2ccc(OC)cc2)cc1",
    "P(C6F5)3": "Fc1c(F)c(F)c(P(c2c(F)c(F)c(F)c(F)c2F)c2c(F)c(F)c(F)c(F)c2F)c(F)c1F",
    "P(OPh)3": "c1ccc(OP(Oc2ccccc2)Oc2ccccc2)cc1",
    "PMe3": "CP(C)C",
    "PEt3": "CCP(CC)CC",
    "P(nBu)3": "CCCCP(CCCC)CCCC",
    "P(iPr)3": "CC(C)P(C(C)C)C(C)C",
    "PtBu2Me": "CP(C(C)(C)C)C(C)(C)C",
    "dippf": "CC(C)P(C(C)C)C1=CC=C[CH]1.CC(C)P(C(C)C)C1=CC=C[CH]1.[Fe]",
    "dcypf": "[C-]1(P(C2CCCCC2)C2CCCCC2)C=CC=C1.[C-]1(P(C2CCCCC2)C2CCCCC2)C=CC=C1.[Fe+2]",
}

BASES: dict[str, str] = {
    "K3PO4": "[K+].[K+].[K+].[O-]P([O-])([O-])=O",
    "K2CO3": "[K+].[K+].[O-]C([O-])=O",
    "Na2CO3": "[Na+].[Na+].[O-]C([O-])=O",
    "Cs2CO3": "[Cs+].[Cs+].[O-]C([O-])=O",
    "NaHCO3": "[Na+].OC([O-])=O",
    "KHCO3": "[K+].OC([O-])=O",
    "NaOH": "[Na+].[OH-]",
    "KOH": "[K+].[OH-]",
    "LiOH": "[Li+].[OH-]",
    "Ba(OH)2": "[Ba+2].[OH-].[OH-]",
    "CsF": "[Cs+].[F-]",
    "KF": "[K+].[F-]",
    "KOAc": "[K+].CC(=O)[O-]",
    "NaOMe": "[Na+].C[O-]",
    "NaOEt": "[Na+].CC[O-]",
    "LiOtBu": "[Li+].CC(C)(C)[O-]",
    "NaOtBu": "[Na+].CC(C)(C)[O-]",
    "KOtBu": "[K+].CC(C)(C)[O-]",
    "Et3N": "CCN(CC)CC",
    "DIPEA": "CCN(C(C)C)C(C)C",
    "DBU": "C1CCC2=NCCCN2CC1",
}

SOLVENTS: dict[str, str] = {
    "1,4-dioxane": "C1COCCO1", "THF": "C1CCOC1", "2-MeTHF": "CC1CCCO1", "DME": "COCCOC",
    "toluene": "Cc1ccccc1", "DMF": "CN(C)C=O", "DMAc": "CC(=O)N(C)C", "NMP": "CN1CCCC1=O",
    "DMSO": "CS(C)=O", "MeCN": "CC#N", "MeOH": "CO", "EtOH": "CCO", "iPrOH": "CC(C)O",
    "n-BuOH": "CCCCO", "CPME": "COC1CCCC1",
}

STANDARDS: dict[str, str] = {
    "1,3-diethylbenzene": "CCc1cccc(CC)c1", "biphenyl": "c1ccc(-c2ccccc2)cc1",
    "naphthalene": "c1ccc2ccccc2c1", "1,3,5-trimethoxybenzene": "COc1cc(OC)cc(OC)c1",
    "mesitylene": "Cc1cc(C)cc(C)c1", "dodecane": "CCCCCCCCCCCC", "hexadecane": "CCCCCCCCCCCCCCCC",
}

# The group that replaces the halogen, bonded through the dummy atom; `None` keeps the halogen.
LEAVING_GROUPS: dict[str | None, float] = {None: 0.5, "[*:1]Cl": 0.125, "[*:1]Br": 0.125,
                                           "[*:1]I": 0.125, "[*:1]OS(=O)(=O)C(F)(F)F": 0.125}
BORON_GROUPS: dict[str, float] = {"[*:1]B(O)O": 0.4, "[*:1]B1OC(C)(C)C(C)(C)O1": 0.35,
                                  "[*:1][B-](F)(F)F.[K+]": 0.25}

_ARYL_HALIDE = Chem.MolFromSmarts("c-[Cl,Br,I]")


def aryl_halides(molecules: Sequence[str], limit: int, seed: int = SEED) -> list[Chem.Mol]:
    """Up to `limit` molecules with an aromatic C–Cl/Br/I bond, in a seeded order; unparsable ones
    are skipped."""
    found = []
    with _rdkit_quiet():
        for index in np.random.default_rng(seed).permutation(len(molecules)):
            text = molecules[index]
            if "Cl" not in text and "Br" not in text and "I" not in text:
                continue
            molecule = Chem.MolFromSmiles(text)
            if molecule is not None and molecule.HasSubstructMatch(_ARYL_HALIDE):
                found.append(molecule)
                if len(found) == limit:
                    break
    return found


def _opened(molecule: Chem.Mol, rng: np.random.Generator) -> Chem.Mol:
    """The molecule with one of its aryl halogens (drawn) turned into the dummy atom `[*:1]`."""
    sites = molecule.GetSubstructMatches(_ARYL_HALIDE)
    _, halogen = sites[rng.integers(len(sites))]
    opened = Chem.RWMol(molecule)
    atom = opened.GetAtomWithIdx(halogen)
    atom.SetAtomicNum(0)
    atom.SetAtomMapNum(1)
    return opened.GetMol()


def _parts(smiles: str) -> tuple[str, ...]:
    """The canonical components of a chemical (salts as their ions)."""
    return tuple(canonical_smiles(smiles).split("."))


def _draw(rng: np.random.Generator, table: dict[str, str], probability: float = 1.0) -> tuple[str, ...]:
    """The components of one chemical of `table` (drawn), or none with 1 - `probability`."""
    if rng.random() >= probability:
        return ()
    values = list(table.values())
    return _parts(values[rng.integers(len(values))])


def _weighted(rng: np.random.Generator, weights: dict[str | None, float]) -> str | None:
    keys = list(weights)
    return keys[rng.choice(len(keys), p=np.array(list(weights.values())))]


def generate_couplings(molecules: Sequence[str], n: int, seed: int = SEED) -> list[str]:
    """`n` distinct coupling reaction SMILES made from the aryl halides among `molecules` (see the
    module docstring); fewer if the halides cannot make `n` distinct reactions."""
    pool = aryl_halides(molecules, n, seed)
    if len(pool) < 2:
        raise InputError(f"{len(pool)} aryl halide(s) among {len(molecules)} molecules: a coupling "
                         "needs two", hint="give molecules with an aromatic C-Cl, C-Br or C-I bond")
    rng = np.random.default_rng(seed)
    groups = {smiles: Chem.MolFromSmiles(smiles) for smiles in (*LEAVING_GROUPS, *BORON_GROUPS) if smiles}
    texts: dict[str, None] = {}
    for attempt in range(4 * n):
        if len(texts) == n:
            break
        first = attempt % len(pool)
        second = (first + 1 + rng.integers(len(pool) - 1)) % len(pool)
        aryl, partner = _opened(pool[first], rng), _opened(pool[second], rng)
        leaving = _weighted(rng, LEAVING_GROUPS)
        electrophile = pool[first] if leaving is None else Chem.molzip(aryl, groups[leaving])
        nucleophile = Chem.molzip(partner, groups[_weighted(rng, BORON_GROUPS)])
        vial = [*Chem.MolToSmiles(electrophile).split("."), *Chem.MolToSmiles(nucleophile).split("."),
                *_draw(rng, PALLADIUM), *_draw(rng, LIGANDS, 0.7), *_draw(rng, BASES, 0.9),
                *_draw(rng, SOLVENTS), *(("O",) if rng.random() < 0.6 else ()), *_draw(rng, STANDARDS, 0.25)]
        texts[".".join(sorted(vial)) + ">>" + Chem.MolToSmiles(Chem.molzip(aryl, partner))] = None
    return list(texts)


def cache_dir() -> Path:
    """Where generated corpora are kept between runs."""
    return Path.home() / ".cache" / "mistral-cl"


def cached_couplings(n: int) -> list[str]:
    """The `couplings:n` corpus source: `n` reactions from MOSES (RDKit's NCI set if `molsets` is not
    installed), read from the cache or generated and written there."""
    from mistral_cl.data.corpus import moses_file, read_source

    try:
        moses_file("moses")
        origin = "moses"
    except InputError:
        warn("molsets is not installed: the couplings are made from RDKit's NCI compounds",
             hint="pip install --no-deps molsets==0.3.1 for couplings of MOSES molecules")
        origin = "nci"
    path = cache_dir() / f"couplings-{origin}-{n}-{VERSION}.txt"
    if path.is_file():
        return path.read_text(encoding="utf-8").split()
    texts = generate_couplings(read_source(origin).texts, n)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False,
                                     prefix=path.name, suffix=".tmp") as handle:
        handle.write("\n".join(texts) + "\n")
    os.replace(handle.name, path)
    return texts
