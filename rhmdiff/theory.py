"""The paper's formulas (Sec. 4.2, App. A): sample complexities and correlation magnitudes.

Notation as in the paper: v symbols per level, m synonyms per symbol, tuples of s, and
``f = m / v**(s-1)`` the fraction of s-tuples that are valid productions. Correlation
magnitudes are root-mean-square values over realizations of the RHM (random rules).
"""
from __future__ import annotations

import math

import numpy as np

from rhmdiff.rhm import check_sizes


def _check(v, m, s, level, min_level, name="level"):
    # the level first, under its own name (check_sizes would call a bad one "L")
    if not isinstance(level, (int, np.integer)) or isinstance(level, bool) or level < min_level:
        raise ValueError(f"{name} must be an integer >= {min_level}, got {level!r}")
    check_sizes(v, m, s, 1)


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


def rule_moments(v: int, m: int, s: int) -> tuple[float, float]:
    """``(<p(mu|mu_1)^2>, <p(mu|mu_1) p(mu|nu_1)>)`` for ``nu_1 != mu_1``, Eqs. (15)-(16): moments,
    over random rules, of the probability that a symbol's production puts ``mu`` at a given
    position of its s-tuple."""
    check_sizes(v, m, s, 1)
    square = (v ** (s - 1) * (v - 1) + m * (v ** (s - 1) - 1)) / (m * v * (v**s - 1))
    cross = (v ** (s - 1) - 1) / (v * (v**s - 1))
    return square, cross


def level_factor(v: int, m: int, s: int) -> float:
    """``v (<p^2> - <p p'>) = v^{s-1} (v-1) / (m (v^s - 1))`` (-> 1/m for v >> 1), Eq. (18): the
    factor by which a mean squared correlation shrinks when one of its two variables is
    replaced by a descendant one level down (Eqs. 13-14, using Eq. 17)."""
    square, cross = rule_moments(v, m, s)
    return v * (square - cross)


def token_tuple_correlation(v: int, m: int, s: int, level: int) -> float:
    """RMS entry of C^(l)(mu, nu), Eqs. (11) and (18) without the large-v limit of Eq. (19):
    ``sqrt((1 - f) / (v^3 m^4) * level_factor^(l - 2))`` for a visible token and an s-tuple
    whose lowest common ancestor sits at level l >= 2 (:func:`correlation_magnitude` is its
    v, m -> infinity limit)."""
    _check(v, m, s, level, 2)
    f = m / v ** (s - 1)
    return ((1.0 - f) / (v**3 * m**4) * level_factor(v, m, s) ** (level - 2)) ** 0.5


def marginal_spread(v: int, m: int, s: int, L: int, level: int) -> float:
    """Relative variance of the marginal ``q(a) = P[h^(l) = a]`` of a level-l latent (0 at the
    root, which is uniform). ``q(a) = sum_b q'(b) n_ba / m`` with ``n_ba`` the number of
    productions of the level-(l+1) symbol b that put a at the given position: the v m rules
    being drawn without replacement from the v^s tuples, ``sum_b n_ba`` is hypergeometric,
    which adds ``c = (1 - 1/v) (v^s - v m) / (m (v^s - 1))`` (~(1 - f)/m), while the parents'
    own spread enters averaged over their ~m terms: ``spread_l = c + spread_{l+1} / m``."""
    _check(v, m, s, L, 1, "L")
    if not 1 <= level <= L:
        raise ValueError(f"level must lie in [1, L] = [1, {L}], got {level!r}")
    c = (1.0 - 1.0 / v) * (v**s - v * m) / (m * (v**s - 1))
    spread = 0.0
    for _ in range(L - level):
        spread = c + spread / m
    return spread


def token_token_correlation(v: int, m: int, s: int, L: int, level: int) -> float:
    """Frobenius norm of Cov(onehot(x_i), onehot(x_j)) for two visible tokens at tree
    distance ``level`` (lowest common ancestor at that level) in an RHM of depth L: the
    quantity of Fig. 1c, as a root-mean-square over realizations of the rules.

    The two children of the common ancestor h, at positions a != b of its production, have
    the joint ``P(a, b) = sum_h q(h) n_h(a, b) / m``, where the ``n_h(a, b)`` count the rules
    with that pair, drawn without replacement from the v^s tuples (hypergeometric): each
    entry varies by ``sigma^2 = (1 - 1/v^2) (v^s - v m) / ((v^s - 1) v^3 m)`` (``(1 - f) / (v^3 m)``
    for large v; cf. Eq. 11 for a token and a full tuple), times ``1 +`` :func:`marginal_spread`
    for the non-uniform marginal q of the ancestor. A covariance has zero row and column sums,
    so ``(v - 1)^2`` of the v^2 entries are free; going down ``level - 1`` levels on each side
    multiplies the variance by :func:`level_factor` per step (Eq. 18). In total
    ``||C||_F ~ sqrt((1 - f) / (v m)) m^{1 - l}`` for v, m >> 1: a power law ``t^{-log m / log s}``
    in the distance ``t = s^l``. On enumerated languages the average over grammars lies
    within 3% of this at v = 32-64 and 10% at v = 16; at v = 8 the deepest levels fall
    15-35% below (L = 3-4)."""
    spread = marginal_spread(v, m, s, L, level)
    siblings = (1.0 - v**-2) * (v**s - v * m) / ((v**s - 1) * v**3 * m) * (1.0 + spread)
    return (v - 1) * (siblings * level_factor(v, m, s) ** (2 * (level - 1))) ** 0.5


def tree_distance(s: int, i, j):
    """Level of the lowest common ancestor of leaves ``i != j`` (0-based positions) of an
    s-ary tree: the smallest l with ``i // s^l == j // s^l``."""
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    level = np.zeros(np.broadcast(i, j).shape, np.int64)
    while np.any(i != j):
        differ = i != j
        level += differ
        i, j = i // s, j // s
    return level


def token_correlation_curve(v: int, m: int, s: int, L: int) -> np.ndarray:
    """``float[d]``: the theory of :func:`rhmdiff.analysis.correlations.token_correlation` --
    entry t is :func:`token_token_correlation` averaged over the pairs (i, i + t), whose
    tree distances vary with i (entry 0 is NaN)."""
    check_sizes(v, m, s, L)
    d = s**L
    by_level = np.array([np.nan] + [token_token_correlation(v, m, s, L, level) for level in range(1, L + 1)])
    curve = np.full(d, np.nan)
    for t in range(1, d):
        i = np.arange(d - t)
        curve[t] = by_level[tree_distance(s, i, i + t)].mean()
    return curve


def top_rule_chance(v: int, m: int, s: int) -> float:
    """f = m / v^{s-1}: the probability that a uniformly random s-tuple of level-l symbols is
    one of the v m productions of the level above -- the chance that a model that has learned
    the levels below but not the top rule still satisfies it (0.5 at v = 8, m = 4, s = 2)."""
    check_sizes(v, m, s, 1)
    return m / v ** (s - 1)
