"""Token-token correlations vs distance (paper Fig. 1c, Fig. 4).

For one-hot tokens, ``Cov(onehot(x_i), onehot(x_j))[a, b] = P(x_i=a, x_j=b) - P(x_i=a) P(x_j=b)``;
its Frobenius norm, averaged over the positions i at distance t = j - i, measures how far
coherence reaches. Estimated from N sequences, independent tokens still give a nonzero
value: the noise floor of :func:`noise_floor`.
"""
from __future__ import annotations

import numpy as np


def token_correlation(tokens, v: int) -> np.ndarray:
    """``float[d]``: entry ``t >= 1`` is the mean over positions ``i`` (``0 <= i < d - t``)
    of the Frobenius norm of the v x v population covariance between ``onehot(x_i)`` and
    ``onehot(x_{i+t})`` over the N sequences of ``tokens int[N, d]``; entry 0 is NaN.

    Joint frequencies come from one ``bincount`` per distance over pair codes
    ``(i, x_i v + x_{i+t})``: O(N d^2) time and O((d - t) v^2) memory, no one-hot tensors."""
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
    x = x.astype(np.int64)
    marg = np.stack([np.bincount(x[:, i], minlength=v) for i in range(d)]) / n  # [d, v]
    out = np.full(d, np.nan)
    for t in range(1, d):
        pos = np.arange(d - t)
        codes = (pos * v * v + x[:, :-t] * v + x[:, t:]).ravel()
        joint = np.bincount(codes, minlength=(d - t) * v * v).reshape(d - t, v, v) / n
        cov = joint - marg[:-t, :, None] * marg[t:, None, :]
        out[t] = np.sqrt((cov**2).sum((1, 2))).mean()
    return out


def noise_floor(v: int, num: int) -> float:
    """Expected Frobenius norm of the covariance estimated from ``num`` sequences of
    independent uniform tokens: ``(1 - 1/v) / sqrt(num)`` (each of the v^2 entries has
    variance ``(1/v)^2 (1 - 1/v)^2 / num``). The paper's line ``1/(v sqrt(N))`` (Fig. 1c) is
    the root-mean-square *entry*, i.e. this norm divided by ~v."""
    return (1.0 - 1.0 / v) / np.sqrt(num)
