"""Token-token correlations vs distance (paper Fig. 1c, Fig. 4b), for the RHM and for text.

For one-hot tokens, ``Cov(onehot(x_i), onehot(x_j))[a, b] = P(x_i=a, x_j=b) - P(x_i=a) P(x_j=b)``;
its Frobenius norm, averaged over the positions i at distance t = j - i, measures how far
coherence reaches. Estimated from N sequences, independent tokens still give a nonzero
value: the noise floor of :func:`noise_floor`.
"""
from __future__ import annotations

import numpy as np


def _frequencies(codes, groups, num_groups: int, per_group: int):
    """Empirical frequency (within its group of ``per_group`` samples) of every sample's code,
    and the sum over distinct codes of the squared frequencies, per group."""
    unique, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
    freq = counts / per_group
    first = np.zeros(len(unique), np.int64)
    first[inverse] = np.arange(len(codes))  # one sample holding each distinct code
    return freq[inverse], freq, groups[first], first


def _covariance_norms(a, b, groups, num_groups: int, v: int) -> np.ndarray:
    """Frobenius norm of the covariance of ``onehot(a)`` and ``onehot(b)`` within each of
    ``num_groups`` equal-size groups of samples, without any v x v array:
    ``||J - p q^T||^2 = sum J^2 - 2 sum J_ab p_a q_b + (sum p^2)(sum q^2)``, where only the
    observed pairs (a, b) contribute to the first two sums."""
    per_group = len(a) // num_groups
    p_at, p, p_group, _ = _frequencies(groups * v + a, groups, num_groups, per_group)
    q_at, q, q_group, _ = _frequencies(groups * v + b, groups, num_groups, per_group)
    _, joint, j_group, j_first = _frequencies((groups * v + a) * v + b, groups, num_groups, per_group)
    total = (np.bincount(j_group, joint**2, num_groups)
             - 2 * np.bincount(j_group, joint * p_at[j_first] * q_at[j_first], num_groups)
             + np.bincount(p_group, p**2, num_groups) * np.bincount(q_group, q**2, num_groups))
    return np.sqrt(np.maximum(total, 0.0))


def token_correlation(tokens, v: int, distances=None, pool_positions: bool = False) -> np.ndarray:
    """``float[d]``: entry ``t`` (for ``t`` in ``distances``, default 1..d-1; NaN elsewhere and
    at 0) is the Frobenius norm of the v x v population covariance between ``onehot(x_i)``
    and ``onehot(x_{i+t})`` over the N sequences of ``tokens int[N, d]``, averaged over the
    positions ``0 <= i < d - t`` (the RHM, Fig. 1c) or, with ``pool_positions``, of the one
    covariance of all N (d - t) pairs at distance t (stationary text, Fig. 4: more pairs,
    lower noise floor).

    Sparse: frequencies come from ``np.unique`` over pair codes, so memory and time grow with
    the number of pairs, not with v^2 (v = 50257 for GPT-2 tokens)."""
    x = np.asarray(tokens)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"tokens must be an integer array [N, d], got {x.dtype} {x.shape}")
    if not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"v must be an integer >= 1, got {v!r}")
    if x.size and (x.min() < 0 or x.max() >= v):
        raise ValueError(f"tokens must lie in [0, v) = [0, {v}), got values in [{x.min()}, {x.max()}]")
    n, d = x.shape
    if n == 0:
        raise ValueError("tokens must hold at least one sequence")
    distances = range(1, d) if distances is None else [int(t) for t in distances]
    if any(not 1 <= t < d for t in distances):
        raise ValueError(f"distances must lie in [1, d - 1] = [1, {d - 1}], got {list(distances)}")
    x = x.astype(np.int64)
    out = np.full(d, np.nan)
    for t in distances:
        a, b = x[:, :-t].ravel(), x[:, t:].ravel()
        if pool_positions:
            out[t] = _covariance_norms(a, b, np.zeros_like(a), 1, v)[0]
        else:
            positions = np.broadcast_to(np.arange(d - t), (n, d - t)).ravel()
            out[t] = _covariance_norms(a, b, positions, d - t, v).mean()
    return out


def noise_floor(v: int, num: int) -> float:
    """Expected Frobenius norm of the covariance estimated from ``num`` sequences of
    independent uniform tokens: ``(1 - 1/v) / sqrt(num)`` (each of the v^2 entries has
    variance ``(1/v)^2 (1 - 1/v)^2 / num``). The paper's line ``1/(v sqrt(N))`` (Fig. 1c) is
    the root-mean-square *entry*, i.e. this norm divided by ~v."""
    return (1.0 - 1.0 / v) / np.sqrt(num)


def unigram_noise_floor(tokens, num_pairs: int) -> float:
    """Expected Frobenius norm of the covariance of two independent tokens with the unigram
    frequencies p of ``tokens``, estimated from ``num_pairs`` pairs:
    ``(1 - sum p^2) / sqrt(num_pairs)`` (``(1 - 1/v)/sqrt(N)`` for uniform tokens)."""
    _, counts = np.unique(np.asarray(tokens), return_counts=True)
    p = counts / counts.sum()
    return float((1.0 - np.sum(p**2)) / np.sqrt(num_pairs))


def correlation_curve(name: str, tokens, vocab_size: int, distances) -> dict:
    """Pooled correlation at ``distances`` and its per-distance noise floor."""
    tokens = np.asarray(tokens)
    n, d = tokens.shape
    corr = token_correlation(tokens, vocab_size, distances, pool_positions=True)
    floor = np.full(d, np.nan)
    for t in distances:
        floor[t] = unigram_noise_floor(tokens, n * (d - t))
    return {"name": name, "num": int(n), "correlation": corr.tolist(), "noise_floor": floor.tolist()}


def subtract_floor(correlation, floor) -> np.ndarray:
    """The correlation with the estimator's noise removed in quadrature:
    ``sqrt(max(C^2 - floor^2, 0))``. The squared norm of the estimated covariance is the true
    one plus the noise's (their cross term averages to zero), so this is the norm of the
    population covariance, up to the noise's own fluctuation."""
    c, f = np.asarray(correlation, float), np.asarray(floor, float)
    return np.sqrt(np.maximum(c**2 - f**2, 0.0))


def effective_support(tokens) -> float:
    """``1 / sum_x p(x)^2`` of the distribution the rows of ``tokens [N, d]`` are drawn from,
    estimated without bias from the collisions among them:
    ``sum_x n_x (n_x - 1) / (N (N - 1))`` estimates ``sum_x p(x)^2`` (inf when no two rows
    agree). The number of sequences of the RHM's language for its uniform distribution; the
    number of training points for a sampler that only copies them."""
    x = np.ascontiguousarray(np.asarray(tokens))
    n = len(x)
    if n < 2:
        raise ValueError(f"tokens must hold at least two sequences, got {n}")
    _, counts = np.unique(x.view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).ravel(), return_counts=True)
    collisions = float(np.sum(counts * (counts - 1.0))) / (n * (n - 1.0))
    return 1.0 / collisions if collisions > 0 else float("inf")


def nearest_distances(tokens, reference, chunk_size: int = 256) -> np.ndarray:
    """``int[N]``: the Hamming distance from each row of ``tokens [N, d]`` to the nearest row
    of ``reference [M, d]`` (the training set: 0 for a copy, 1 for a sequence one token away
    from a training point). Computed in chunks of ``chunk_size`` rows (memory N_chunk x M x d)."""
    x, ref = np.asarray(tokens), np.asarray(reference)
    if x.ndim != 2 or ref.ndim != 2 or x.shape[1] != ref.shape[1] or not len(ref):
        raise ValueError(f"tokens [N, d] and a non-empty reference [M, d] are needed, got {x.shape} and {ref.shape}")
    return np.concatenate([(x[i:i + chunk_size, None, :] != ref[None]).sum(-1).min(1)
                           for i in range(0, len(x), chunk_size)] or [np.zeros(0, np.int64)])
