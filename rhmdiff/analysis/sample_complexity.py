"""Sample complexity P* from accuracy-vs-P curves, and power-law fits (paper Fig. 2, Fig. 7)."""
from __future__ import annotations

import numpy as np


def log_grid(P_min: int, P_max: int, num: int) -> np.ndarray:
    """``num`` log-spaced integer training-set sizes from ``P_min`` to ``P_max`` (duplicates
    after rounding removed)."""
    return np.unique(np.round(np.logspace(np.log10(P_min), np.log10(P_max), num)).astype(int))


def p_star(train_sizes, accuracy, threshold: float = 0.5) -> float:
    """The smallest P at which ``accuracy`` reaches ``threshold``, interpolated linearly
    in log P between the last grid point below it and the first one at or above it.
    ``inf`` if never reached; the first P if reached there already."""
    P = np.asarray(train_sizes, float)
    a = np.asarray(accuracy, float)
    if P.ndim != 1 or P.shape != a.shape or len(P) == 0:
        raise ValueError(f"train_sizes and accuracy must be 1-D of equal length, got {P.shape} and {a.shape}")
    if np.any(P <= 0) or np.any(np.diff(P) <= 0):
        raise ValueError("train_sizes must be positive and increasing")
    above = np.nonzero(a >= threshold)[0]
    if len(above) == 0:
        return float("inf")
    i = above[0]
    if i == 0:
        return float(P[0])
    frac = (threshold - a[i - 1]) / (a[i] - a[i - 1])
    return float(np.exp(np.log(P[i - 1]) + frac * (np.log(P[i]) - np.log(P[i - 1]))))


def fit_power_law(x, y) -> tuple[float, float]:
    """``(exponent, prefactor)`` of ``y = prefactor * x**exponent``, least squares in log-log
    over the finite positive points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        raise ValueError("need at least two finite positive points to fit a power law")
    slope, intercept = np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)
    return float(slope), float(np.exp(intercept))
