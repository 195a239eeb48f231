"""Outputs for people: metric tables (CSV/JSON), printed tables and PNG plots."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mistral_cl.runs import write_json


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rows of dicts to CSV (columns in first-seen order), written atomically."""
    path = Path(path)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def write_metrics(run_dir: Path, metrics: dict[str, Any], name: str = "metrics") -> None:
    """`NAME.json` with everything and `NAME.csv` with the flat scalar entries."""
    write_json(Path(run_dir) / f"{name}.json", metrics)
    flat = {k: v for k, v in metrics.items() if isinstance(v, int | float | str)}
    write_csv(Path(run_dir) / f"{name}.csv", [flat])


def format_table(rows: Sequence[dict[str, Any]], floats: str = "{:.3f}") -> str:
    """A plain-text table of dict rows, for printing at the end of a job."""
    if not rows:
        return "(no rows)"
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    cell = lambda v: floats.format(v) if isinstance(v, float) else str(v)
    body = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(columns)]
    line = lambda cells: "  ".join(x.rjust(w) if i else x.ljust(w)
                                   for i, (x, w) in enumerate(zip(cells, widths, strict=True)))
    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, body)])


def parity_plot(y_true: np.ndarray, y_pred: np.ndarray, path: Path, title: str,
                scores: dict[str, float] | None = None) -> None:
    """Predicted against measured yield (percent), with the identity line and the scores."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.scatter(100 * np.asarray(y_true), 100 * np.asarray(y_pred), s=6, alpha=0.5, linewidths=0)
    ax.plot([0, 100], [0, 100], color="black", linewidth=0.8)
    ax.set(xlim=(0, 100), ylim=(0, 100), xlabel="measured yield (%)", ylabel="predicted yield (%)",
           title=title)
    if scores:
        text = "\n".join(f"{k.upper() if k != 'r2' else 'R²'} = {v:.3f}" for k, v in scores.items())
        ax.text(0.04, 0.96, text, transform=ax.transAxes, va="top", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def loss_curve(history: Sequence[dict[str, float]], path: Path, title: str) -> None:
    """Training loss (and any test score recorded per epoch) against epoch."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["loss"] for h in history], label="train loss")
    ax.set(xlabel="epoch", ylabel="loss", yscale="log", title=title)
    if any("test_r2" in h for h in history):
        twin = ax.twinx()
        twin.plot(epochs, [h.get("test_r2", np.nan) for h in history], color="tab:orange",
                  label="test R²")
        twin.set_ylabel("test R²")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
