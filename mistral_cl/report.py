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


def heatmap(matrix: np.ndarray, rows: Sequence[str], columns: Sequence[str], path: Path, title: str,
            label: str = "R²", reverse: bool = False, limits: tuple[float, float] | None = None) -> None:
    """A score matrix (rows: after each round; columns: tasks) with every value written in its cell.

    `reverse` flips the colour map for errors (RMSE, MAE), so that good is always the same colour.
    `limits` fixes the colour range; values beyond it get the end colours (R² of a task whose yields
    barely vary can fall to -90, which would otherwise wash out every other cell). NaN cells (never
    measured) stay blank.
    """
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=np.float64)
    n_rows, n_cols = matrix.shape
    fig, ax = plt.subplots(figsize=(max(4.5, 2.5 + 0.55 * n_cols), max(3.5, 2.2 + 0.4 * n_rows)), dpi=120)
    finite = matrix[np.isfinite(matrix)]
    low, high = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
    if limits is not None:
        low, high = limits
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis_r" if reverse else "viridis",
                      vmin=low, vmax=max(high, low + 1e-9), aspect="auto")
    for (i, j), value in np.ndenumerate(matrix):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.2f}" if abs(value) < 10 else f"{value:.0f}", ha="center",
                    va="center", fontsize=6, color="white" if (value < (low + high) / 2) != reverse
                    else "black")
    ax.set_xticks(range(n_cols), list(columns), rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n_rows), list(rows), fontsize=7)
    ax.set(xlabel="evaluated on task", ylabel="after training", title=title)
    below, above = bool(finite.size and finite.min() < low), bool(finite.size and finite.max() > high)
    extend = "both" if below and above else "min" if below else "max" if above else "neither"
    fig.colorbar(image, ax=ax, label=label, fraction=0.04, extend=extend)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def task_curves(matrix: np.ndarray, before: Sequence[float], keys: Sequence[str],
                learned_at: Sequence[int], path: Path, title: str, label: str = "R²") -> None:
    """One line per task: its score before training and after every round; a dot marks the round
    that learned it, so forgetting shows as a line falling after its dot."""
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    colours = plt.get_cmap("tab20")
    steps = np.arange(matrix.shape[0] + 1)
    for j, key in enumerate(keys):
        values = np.concatenate([[before[j]], matrix[:, j]])
        ax.plot(steps, values, color=colours(j % 20), linewidth=1.0, label=key)
        if j < len(learned_at):
            ax.plot(learned_at[j] + 1, matrix[learned_at[j], j], "o", color=colours(j % 20), markersize=4)
    shown = np.concatenate([matrix.ravel(), np.asarray(before, np.float64)])
    finite = shown[np.isfinite(shown)]
    if finite.size:  # very negative R^2 (a badly offset untrained model) would squash the lines
        ax.set_ylim(max(float(np.min(finite)), -1.0) - 0.05, float(np.max(finite)) + 0.05)
    ax.set_xticks(steps, ["before", *[str(r + 1) for r in range(matrix.shape[0])]], fontsize=7)
    ax.set(xlabel="training round", ylabel=f"test {label}", title=title)
    ax.legend(fontsize=6, ncol=1, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def retention_plot(curves: dict[str, Sequence[float | None]], pretrained: float, path: Path) -> None:
    """Each strategy's language-model loss on held-out texts after every round, against the pretrained
    model's (a dashed line): how much general chemistry yield training erases."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    for name, values in curves.items():
        shown = [np.nan if v is None else v for v in values]
        ax.plot(np.arange(1, len(shown) + 1), shown, marker="o", markersize=3, linewidth=1.2, label=name)
    ax.axhline(pretrained, color="grey", linestyle="--", linewidth=1.0, label="pretrained")
    ax.set(xlabel="training round", ylabel="LM loss on held-out texts (nats/token)",
           title="knowledge retention of the backbone")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
