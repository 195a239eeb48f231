"""One reaction, one label: what becomes of a file that lists the same reaction more than once.

Rows hold the same reaction when their canonical SMILES agree, however they were written. Kept as they
are, such rows would teach two labels for one input, or, split apart, score the model on a reaction it
trained on. So every reader leaves one row per reaction, and every split then keeps each reaction on
one side:

- rows that agree on the yield and the task are merged into the first, with a warning naming them;
- rows that disagree follow the policy: `error` (the default) refuses the file and lists every
  conflicting group; `mean` keeps one reaction with the mean of the yields; `first` keeps the first
  row's yield. Either way the reaction keeps its first row's task and row number, and a warning lists
  what was merged.

A batch ingested into a continual run must not repeat a reaction the run already has in another task
either (`not_in_run`): by default that is an error; `first` leaves such rows out of the new task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from mistral_cl.data.tables import ROW_CONVENTION
from mistral_cl.errors import InputError, warn

DuplicatePolicy = Literal["error", "mean", "first"]
POLICIES: tuple[str, ...] = ("error", "mean", "first")
_SHOWN_GROUPS = 8


def _groups(reactions: Sequence[str]) -> list[list[int]]:
    """Positions of each reaction that occurs more than once, in order of first occurrence."""
    positions: dict[str, list[int]] = {}
    for i, reaction in enumerate(reactions):
        positions.setdefault(reaction, []).append(i)
    return [group for group in positions.values() if len(group) > 1]


def _described(group: list[int], yields: np.ndarray, tasks: Sequence[str], rows: np.ndarray,
               top: float) -> str:
    shown_rows = ", ".join(str(rows[i]) for i in group)
    shown_yields = ", ".join(f"{top * yields[i]:g}" for i in group)
    text = f"rows {shown_rows}: yields {shown_yields}"
    if len({tasks[i] for i in group}) > 1:
        text += f"; tasks {', '.join(repr(tasks[i]) for i in group)}"
    return text


def one_row_per_reaction(
    reactions: Sequence[str],
    yields: np.ndarray,
    tasks: Sequence[str],
    rows: np.ndarray,
    *,
    policy: DuplicatePolicy,
    file: str,
    column: str,
    top: float = 100.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(positions kept, their yields) after merging the rows of each repeated reaction.

    reactions: canonical reaction SMILES; yields: fractions; tasks: task keys; rows: spreadsheet rows.
    column: the SMILES column (named in messages); top: 100 to show yields in percent, 1 as fractions.
    """
    if policy not in POLICIES:
        raise InputError(f"unknown duplicates policy {policy!r}",
                         hint="set `duplicates` to error, mean or first")
    yields = np.asarray(yields, np.float64).copy()
    groups = _groups(reactions)
    if not groups:
        return np.arange(len(reactions)), yields
    same = [len({yields[i] for i in g}) == 1 and len({tasks[i] for i in g}) == 1 for g in groups]
    agree = [g for g, s in zip(groups, same, strict=True) if s]
    conflicts = [g for g, s in zip(groups, same, strict=True) if not s]
    if conflicts and policy == "error":
        lines = [f"  {_described(g, yields, tasks, rows, top)}" for g in conflicts[:_SHOWN_GROUPS]]
        if len(conflicts) > _SHOWN_GROUPS:
            lines.append(f"  (+{len(conflicts) - _SHOWN_GROUPS} more groups)")
        raise InputError(
            f"{len(conflicts)} reaction(s) appear in several rows with different yields or tasks "
            f"({ROW_CONVENTION}; yields as in the file):\n" + "\n".join(lines),
            file=file, rows=sorted(int(rows[i]) for g in conflicts for i in g), column=column,
            hint="fix or delete the rows that are wrong, or set `duplicates=mean` (average each "
                 "reaction's yields) or `duplicates=first` (keep each reaction's first row)",
        )
    if agree:
        repeated = sorted(int(rows[i]) for g in agree for i in g[1:])
        warn(f"{len(repeated)} row(s) repeat an earlier row's reaction, yield and task and were merged into "
             f"it ({ROW_CONVENTION})", file=file, rows=repeated, column=column,
             hint="delete the repeated rows to silence this warning")
    if conflicts:
        if policy == "mean":
            for g in conflicts:
                yields[g[0]] = float(np.mean(yields[g]))
        merged = sorted(int(rows[i]) for g in conflicts for i in g)
        warn(f"{len(conflicts)} reaction(s) with different yields or tasks in several rows were merged "
             f"by `duplicates={policy}` ({'the mean yield' if policy == 'mean' else 'the first row'}; "
             f"the first row's task; {ROW_CONVENTION})", file=file, rows=merged, column=column)
    dropped = {i for g in groups for i in g[1:]}
    keep = np.array([i for i in range(len(reactions)) if i not in dropped], dtype=np.int64)
    return keep, yields[keep]


def not_in_run(reactions: Sequence[str], rows: np.ndarray, known: Mapping[str, str], *,
               policy: DuplicatePolicy, file: str, column: str | None) -> np.ndarray:
    """Positions of the `reactions` (canonical SMILES of a new batch) that the run does not have yet.

    known: every reaction of the run and its task key. A repeated reaction is an error, unless
    `policy` is 'first': the run's earlier measurement stands and the row is left out, with a warning.
    """
    repeated = [i for i, reaction in enumerate(reactions) if reaction in known]
    if not repeated:
        return np.arange(len(reactions))
    tasks = sorted({known[reactions[i]] for i in repeated})
    shown = ", ".join(map(repr, tasks[:5])) + (f" (+{len(tasks) - 5} more)" if len(tasks) > 5 else "")
    what = (f"{len(repeated)} reaction(s) of this file are already in the run, in task(s) {shown}: one "
            f"reaction in two tasks would be trained on in one and scored in the other ({ROW_CONVENTION})")
    where = {"file": file, "rows": sorted(int(rows[i]) for i in repeated), "column": column}
    if policy != "first":
        raise InputError(what, **where, hint="delete these rows, or set `duplicates=first` to leave them "
                                             "out of the new task (the run keeps its earlier measurement)")
    warn(what + "; left out of the new task (`duplicates=first`)", **where)
    dropped = set(repeated)
    return np.array([i for i in range(len(reactions)) if i not in dropped], dtype=np.int64)
