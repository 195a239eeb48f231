"""Regression scores of predicted yields, reported in yield percent (0-100)."""

from __future__ import annotations

import numpy as np


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """R^2, RMSE and MAE; yields are fractions in [0, 1], RMSE and MAE are returned in percent."""
    y_true = np.asarray(y_true, np.float64)
    y_pred = np.asarray(y_pred, np.float64)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(f"need equal, non-empty shapes, got {y_true.shape} and {y_pred.shape}")
    residual = y_true - y_pred
    total = np.sum((y_true - y_true.mean()) ** 2)
    r2 = 1.0 - np.sum(residual**2) / total if total > 0 else float("nan")
    return {
        "r2": float(r2),
        "rmse": float(100.0 * np.sqrt(np.mean(residual**2))),
        "mae": float(100.0 * np.mean(np.abs(residual))),
    }
