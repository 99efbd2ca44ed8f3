"""The paper's formulas (Sec. 4.2, App. A): sample complexities and correlation magnitudes.

Notation as in the paper: v symbols per level, m synonyms per symbol, tuples of s, and
``f = m / v**(s-1)`` the fraction of s-tuples that are valid productions.
"""
from __future__ import annotations

import math

from rhmdiff.rhm import check_sizes


def _check(v, m, s, level, min_level):
    check_sizes(v, m, s, max(level, 1))
    if not isinstance(level, int) or level < min_level:
        raise ValueError(f"level must be an integer >= {min_level}, got {level!r}")


def sample_complexity(v: int, m: int, s: int, level: int) -> float:
    """P_l = v m^{l+1} / (1 - m / v^{s-1}), Eq. (6): training points needed to reconstruct
    level-(l-1) latents from their correlations with a visible token (P_1 ~ v m: the
    number of valid s-tuples, learned by memorization, Sec. 4.2 "Local constraints")."""
    _check(v, m, s, level, 1)
    if m == v ** (s - 1):  # every tuple is valid: no correlations to detect
        return math.inf
    return v * m ** (level + 1) / (1.0 - m / v ** (s - 1))


def sample_complexities(v: int, m: int, s: int, L: int) -> list[float]:
    """[P_1, ..., P_L] (Eq. 6)."""
    return [sample_complexity(v, m, s, level) for level in range(1, L + 1)]


def correlation_magnitude(v: int, m: int, s: int, level: int) -> float:
    """C^(l) ~ sqrt((1 - m/v^{s-1}) / (v^3 m^{l+2})), Eq. (5): typical size (std over
    RHM realizations) of the correlation between a visible token and a tuple of level-(l-2)
    latents whose lowest common ancestor is at level l (asymptotic in v, m)."""
    _check(v, m, s, level, 2)
    return ((1.0 - m / v ** (s - 1)) / (v**3 * m ** (level + 2))) ** 0.5


def sampling_noise(v: int, m: int, P: float) -> float:
    """Size of the empirical-correlation noise from P samples, (v^2 m P)^{-1/2} (Sec. 4.2)."""
    if P <= 0:
        raise ValueError(f"P must be > 0, got {P!r}")
    return (v * v * m * P) ** -0.5
