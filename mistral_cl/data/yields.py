"""Yields as a file writes them (percent or fractions) turned into fractions, the unit never guessed
silently.

A unit is 'percent' (0-100), 'fraction' (0-1), or 'auto'. `auto` reads fractions when no yield
exceeds 1 and percent when the yields above 1 are at least as many as those strictly between 0 and 1.
Anything else (say one 1.5 among fractions) is refused as unclear: read as percent, one typo would
turn every other yield into a hundredth of itself.

Every yield must be a finite number (NaN, inf and text are refused) within the unit's range. Read as
percent, a column whose yields all lie within [0, 1], some strictly between, looks like fractions: it is
read as stated, with a warning.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from mistral_cl.data.tables import RowProblem
from mistral_cl.errors import InputError, warn

YieldUnit = Literal["percent", "fraction", "auto"]
UNITS: tuple[str, ...] = ("percent", "fraction", "auto")
TOP = {"percent": 100.0, "fraction": 1.0}


@dataclasses.dataclass(frozen=True)
class ReadYields:
    """A yield column read: `fractions` (float64, NaN where a cell is bad), the `unit` it was read in
    ('percent' or 'fraction'), and the rows that break a rule."""

    fractions: np.ndarray
    unit: str
    problems: list[RowProblem]


def _numbers(cells: Sequence[object]) -> tuple[np.ndarray, list[int], list[int], list[int]]:
    """The cells as floats (NaN where not a finite number): the blank ones, the non-numbers (NaN or
    text) and the infinite ones."""
    values = np.full(len(cells), np.nan)
    missing, not_numbers, infinite = [], [], []
    for i, cell in enumerate(cells):
        text = "" if cell is None or (isinstance(cell, float) and math.isnan(cell)) else str(cell).strip()
        if not text:
            missing.append(i)
            continue
        try:
            value = float(text)
        except ValueError:
            not_numbers.append(i)
            continue
        if math.isfinite(value):
            values[i] = value
        else:
            (not_numbers if math.isnan(value) else infinite).append(i)
    return values, missing, not_numbers, infinite


def parse_yields(cells: Sequence[object], rows: np.ndarray, column: str, unit: YieldUnit, *,
                 file: str, reason: str | None = None) -> ReadYields:
    """Read a yield column in `unit` ('auto' decides from the values, see the module docstring).

    rows: the spreadsheet row of each cell, for messages. reason: why this unit, shown with it
    (e.g. "the run's unit"); none for a unit the caller states.
    """
    if unit not in UNITS:
        raise InputError(f"unknown yield unit {unit!r}", column=column,
                         hint="set `yield_unit` to percent, fraction or auto")
    values, missing, not_numbers, infinite = _numbers(cells)
    problems = []
    if missing:
        problems.append(RowProblem(column, rows[missing].tolist(), "yield is missing"))
    if not_numbers:
        problems.append(RowProblem(column, rows[not_numbers].tolist(), "yield is not a number (NaN or text)"))
    if infinite:
        problems.append(RowProblem(column, rows[infinite].tolist(),
                                   "yield is infinite (inf); a yield is a finite number"))
    known = np.isfinite(values)
    above = known & (values > 1.0)
    between = known & (values > 0.0) & (values < 1.0)
    if unit == "auto":
        if not above.any():
            unit, reason = "fraction", "`yield_unit=auto`: no yield exceeds 1"
        elif above.sum() >= between.sum():
            unit, reason = "percent", "`yield_unit=auto`: yields exceed 1"
        else:
            problems.append(RowProblem(column, rows[above].tolist(), (
                f"yield above 1, yet {int(between.sum())} of the {int(known.sum())} yields lie strictly "
                f"between 0 and 1 as fractions do, so the unit is unclear; if the yields are "
                f"percentages set `yield_unit=percent`, if they are fractions fix these rows")))
            return ReadYields(np.clip(values, 0.0, 1.0), "fraction", problems)
    shown = f"{unit}, {reason}" if reason else unit
    top = TOP[unit]
    slack = 1e-6 * top
    out = np.flatnonzero(known & ((values < -slack) | (values > top + slack)))
    if len(out):
        advice = ("; if the yields are percentages set `yield_unit=percent`"
                  if unit == "fraction" and (values[out] <= 100).all() else "")
        problems.append(RowProblem(column, rows[out].tolist(),
                                   f"yield outside [0, {top:g}] (read as {shown}; e.g. "
                                   f"{values[out[0]]:g}){advice}"))
    elif not problems and unit == "percent" and known.any() and not above.any() and between.any():
        why = f" ({reason})" if reason else ""
        warn(f"every yield lies within [0, 1] though they are read as percent{why}: the largest is "
             f"{values[known].max():g} %", file=file, column=column,
             hint="if these yields are fractions, set `yield_unit=fraction`")
    return ReadYields(np.clip(values / top, 0.0, 1.0), unit, problems)
