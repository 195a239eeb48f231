"""User-facing errors and warnings.

Every mistake a user can make (a bad file, a wrong flag, a mismatched checkpoint) is raised as an
`InputError`. The CLI prints its message and exits with code 2; anything else is a bug and keeps its
traceback. Input that is valid but doubtful (duplicate rows merged, yields that all lie below 1 %)
is reported with `warn`, an `InputWarning` the CLI prints as `mistral-cl COMMAND: warning: ...`.
"""

from __future__ import annotations

import warnings


def located(
    message: str,
    *,
    file: str | None = None,
    rows: list[int] | None = None,
    column: str | None = None,
    hint: str | None = None,
) -> str:
    """`file, rows R, column 'C': message` plus a `what to do:` line, the shape of every message."""
    where = []
    if file is not None:
        where.append(str(file))
    if rows:
        shown = ", ".join(str(r) for r in rows[:10])
        more = f" (+{len(rows) - 10} more)" if len(rows) > 10 else ""
        where.append(f"row{'s' if len(rows) > 1 else ''} {shown}{more}")
    if column is not None:
        where.append(f"column {column!r}")
    text = ": ".join([", ".join(where), message]) if where else message
    if hint:
        text += f"\n  what to do: {hint}"
    return text


class InputError(ValueError):
    """Bad input from the user: names where it is (file, row, column) and what to do about it."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        rows: list[int] | None = None,
        column: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.file, self.rows, self.column, self.hint = file, rows, column, hint
        super().__init__(located(message, file=file, rows=rows, column=column, hint=hint))


class InputWarning(UserWarning):
    """Valid but doubtful input: the run goes on, and the user is told where and why."""


def warn(
    message: str,
    *,
    file: str | None = None,
    rows: list[int] | None = None,
    column: str | None = None,
    hint: str | None = None,
) -> None:
    """Issue an `InputWarning` shaped like an `InputError` message."""
    text = located(message, file=file, rows=rows, column=column, hint=hint)
    warnings.warn(text, InputWarning, stacklevel=2)
