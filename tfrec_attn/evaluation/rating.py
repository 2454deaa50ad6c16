"""Rating-prediction metrics (RMSE, MAE) over the rated rows of a test set.

Plain numpy on the whole test set at once: the figures are comparable with the ones
published for ML-100K's u1..u5 folds (Surprise, LibRec), which are computed the same way.
"""

from __future__ import annotations

import numpy as np


def rating_metrics(predicted, actual) -> dict:
    """RMSE and MAE of ``predicted`` against the finite ``actual`` ratings.

    Args:
        predicted: array-like of float, [n]. Predicted ratings.
        actual: array-like of float, [n]. True ratings; NaN rows (no rating) are ignored.

    Returns:
        dict: ``{"RMSE": float, "MAE": float, "count": int}``; ``count`` = rows scored.

    Example:
        >>> rating_metrics([3.0, 4.0, 1.0], [4.0, 4.0, float("nan")])
        {'RMSE': 0.7071067811865476, 'MAE': 0.5, 'count': 2}
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if predicted.ndim != 1 or actual.ndim != 1 or len(predicted) != len(actual):
        raise ValueError(f"predicted and actual must be 1-D and of equal length; got shapes "
                         f"{predicted.shape} and {actual.shape}")
    rated = ~np.isnan(actual)
    count = int(rated.sum())
    if count == 0:
        raise ValueError(f"no rated rows to score: all {len(actual)} actual ratings are NaN")
    if not np.all(np.isfinite(actual[rated])):
        raise ValueError("actual ratings contain inf")
    if not np.all(np.isfinite(predicted[rated])):
        bad = int(np.flatnonzero(rated & ~np.isfinite(predicted))[0])
        raise ValueError(f"predicted ratings contain NaN or inf at rated rows (first at row {bad})")
    error = predicted[rated] - actual[rated]
    return {"RMSE": float(np.sqrt(np.mean(error ** 2))), "MAE": float(np.mean(np.abs(error))), "count": count}
