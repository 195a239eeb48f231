"""A user's CSV file as a table of text cells, every reading failure named by file, row and column.

Rows are numbered as a spreadsheet shows them: the header is row 1, the first data row 2. Blank lines
(and rows whose every cell is empty) are dropped but keep their numbers, so a row number in a
message is always the line the user sees. Files must be comma-separated UTF-8 text; a file separated
by semicolons or tabs, or saved in another encoding, is refused with the reason rather than read
into one wide column or into mangled text.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mistral_cl.errors import InputError

ROW_CONVENTION = "row numbers as in a spreadsheet: the header is row 1"
FIRST_DATA_ROW = 2
_OTHER_SEPARATORS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}
_SAVE_AS_CSV = "save the table as comma-separated UTF-8 text (in Excel: CSV UTF-8)"


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


def checked_file(path: str | Path, what: str = "file") -> Path:
    """`path` if it is an existing file; a directory or a missing path is an `InputError`."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in (".csv", ".xlsx"))[:5]
        listed = f"; it holds {', '.join(inside)}" if inside else ""
        raise InputError(f"is a directory, not a {what}{listed}", file=str(path),
                         hint=f"pass the {what} itself, e.g. {path / (inside[0] if inside else 'data.csv')}")
    if not path.exists():
        raise InputError(f"{what} not found", file=str(path), hint="check the path")
    return path


def spreadsheet_rows(frame: pd.DataFrame) -> list[int]:
    """The spreadsheet row number of each row of a frame read by `read_cells`."""
    return [int(i) + FIRST_DATA_ROW for i in frame.index]


def read_cells(path: str | Path) -> pd.DataFrame:
    """Every cell of a CSV file as text ('' when empty); the index is the row's position among the
    file's data rows, so `index + FIRST_DATA_ROW` is its spreadsheet number (see `spreadsheet_rows`).
    Blank rows are dropped. Unreadable files raise an `InputError`."""
    path = checked_file(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise InputError("the file is empty", file=str(path),
                         hint="a CSV needs a header row and one row per reaction") from None
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except (OSError, EOFError) as error:
        raise unreadable_file(path, error) from None
    except pd.errors.ParserError as error:
        raise InputError(f"not a readable CSV file ({str(error).strip()})", file=str(path),
                         hint=f"give every row as many cells as the header (quote cells that hold "
                              f"commas), and {_SAVE_AS_CSV}") from None
    _check_separator(frame, path)
    blank = (frame.fillna("").map(str.strip) == "").all(axis=1)
    return frame[~blank]


def _check_separator(frame: pd.DataFrame, path: Path) -> None:
    if len(frame.columns) != 1:
        return
    header = str(frame.columns[0])
    for separator, name in _OTHER_SEPARATORS.items():
        if separator in header:
            raise InputError(
                f"the header {header!r} looks separated by {name}, not commas", file=str(path), rows=[1],
                hint=f"{_SAVE_AS_CSV}, or replace the {name} between cells by commas",
            )


def unreadable_file(path: Path, error: Exception) -> InputError:
    """The error for a file that opens but cannot be read through, e.g. a `.gz` name on a file that is
    not gzip-compressed, or a compressed file cut short."""
    return InputError(f"cannot read the file ({error})", file=str(path),
                      hint="check that the file is what its name says: a .gz, .bz2, .zip or .xz file "
                           "must be compressed that way")


def _not_utf8(path: Path) -> InputError:
    """Where the first byte that is not UTF-8 sits: its row and, when the row parses, its column."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        offset = error.start
    else:  # pandas decodes in chunks; the whole file decodes, so the fault is pandas' own
        return InputError("pandas cannot decode this file as UTF-8", file=str(path), hint=_SAVE_AS_CSV)
    line_start = data.rfind(b"\n", 0, offset) + 1
    row = data.count(b"\n", 0, offset) + 1
    # latin-1 maps every byte to one character, so cell boundaries before the fault stay where they are.
    before = next(csv.reader(io.StringIO(data[line_start:offset].decode("latin-1"))), [""])
    header = next(csv.reader(io.StringIO(data[: data.find(b"\n")].decode("latin-1"))), [])
    column = header[len(before) - 1] if 0 < len(before) <= len(header) and row > 1 else None
    return InputError(
        f"byte 0x{data[offset]:02x} is not UTF-8 text (the file seems to be saved in another encoding, "
        f"e.g. latin-1; {ROW_CONVENTION})",
        file=str(path), rows=[row], column=column, hint=_SAVE_AS_CSV,
    )


# The usual names of a file's reaction SMILES and yield columns (compared without case or spaces).
SMILES_NAMES = ("rxn", "reaction", "reaction_smiles", "rxn_smiles", "smiles")
YIELD_NAMES = ("yield", "yield_percent", "yield (%)", "yield_%", "measured_yield")


def named_column(header: list[str], given: str | None, names: tuple[str, ...]) -> str | None:
    """`given` if set, else the first column of `header` with one of the usual `names`, else None."""
    if given is not None:
        return given
    found = [c for c in header if c.strip().lower() in names]
    return found[0] if found else None
