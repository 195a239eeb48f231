"""User-facing errors.

Every mistake a user can make (a bad file, a wrong flag, a mismatched checkpoint) is raised as an
`InputError`. The CLI prints its message and exits with code 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


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
        where = []
        if file is not None:
            where.append(str(file))
        if rows:
            shown = ", ".join(str(r) for r in rows[:10])
            more = f" (+{len(rows) - 10} more)" if len(rows) > 10 else ""
            where.append(f"row{'s' if len(rows) > 1 else ''} {shown}{more}")
        if column is not None:
            where.append(f"column {column!r}")
        text = (": ".join([", ".join(where), message]) if where else message)
        if hint:
            text += f"\n  what to do: {hint}"
        super().__init__(text)
