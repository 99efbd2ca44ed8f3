"""Maximum Mean Discrepancy between two sets of feature vectors (Gretton et al. 2012;
paper Sec. 5.2, Fig. 5b: MMD between ResNet-18 features of generated and real images).

Unbiased estimator of MMD^2 for samples ``x [n, d]`` and ``y [m, d]``:

    sum_{i != j} k(x_i, x_j) / (n (n-1)) + sum_{i != j} k(y_i, y_j) / (m (m-1)) - 2 sum_{i,j} k(x_i, y_j) / (n m)

(it can be slightly negative when the distributions are equal). Kernels:

* ``"rbf"``: ``exp(-|a - b|^2 / (2 sigma^2))``, sigma by the median heuristic: the median of
  the pairwise distances of the pooled samples (on at most 2000 points of each, seeded);
* ``"poly"``: ``(a.b / d + 1)^3``, the kernel of the Kernel Inception Distance (KID).

The MMD per ResNet depth of every kept stage of a ``ddpm`` run (Fig. 5b) is the ``ddpm_mmd``
task (:mod:`rhmdiff.tasks.ddpm_mmd`).

Kernel sums are computed in blocks of ``block`` rows x columns (jitted), so 10^4 x 10^4
kernels never sit in memory at once; the sums accumulate in float64 on the host.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

KERNELS = ("rbf", "poly")


def _sq_dists(a, b):
    return jnp.maximum(jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2 * a @ b.T, 0.0)


@functools.partial(jax.jit, static_argnames="kernel")
def _kernel_block_sum(a, b, kernel: str, bandwidth):
    if kernel == "rbf":
        k = jnp.exp(-_sq_dists(a, b) / (2 * bandwidth**2))
    else:
        k = (a @ b.T / a.shape[1] + 1.0) ** 3
    return jnp.sum(k)


def _kernel_sum(a, b, kernel: str, bandwidth: float, block: int) -> float:
    """Sum of k(a_i, b_j) over all pairs; with ``b is a`` only the blocks on and above the
    diagonal are computed (the kernel matrix is symmetric)."""
    symmetric = b is a
    total = 0.0
    for i in range(0, len(a), block):
        for j in range(i if symmetric else 0, len(b), block):
            weight = 2.0 if symmetric and j > i else 1.0
            total += weight * float(_kernel_block_sum(a[i:i + block], b[j:j + block], kernel, bandwidth))
    return total


def _self_kernel_trace(a, kernel: str) -> float:
    if kernel == "rbf":
        return float(len(a))
    return float(np.sum((np.sum(np.asarray(a, np.float64) ** 2, 1) / a.shape[1] + 1.0) ** 3))


def median_bandwidth(*sets, max_points: int = 2000, seed: int = 0) -> float:
    """The median heuristic: median pairwise Euclidean distance of the pooled samples of
    ``sets`` (at most ``max_points`` of each set, drawn with ``seed``)."""
    rng = np.random.default_rng(seed)
    pick = lambda a: a[rng.choice(len(a), min(len(a), max_points), replace=False)]
    z = np.concatenate([pick(np.asarray(a, np.float32)) for a in sets])
    d2 = np.asarray(_sq_dists(jnp.asarray(z), jnp.asarray(z)))
    return float(np.sqrt(np.median(d2[np.triu_indices(len(z), 1)])))


def mmd2_unbiased(x, y, kernel: str = "rbf", bandwidth: float | None = None, block: int = 2048) -> float:
    """Unbiased MMD^2 of feature sets ``x [n, d]`` and ``y [m, d]`` (n, m >= 2)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be [n, d] and [m, d] with the same d, got {x.shape} and {y.shape}")
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"x and y need at least 2 rows each, got {n} and {m}")
    if kernel == "rbf" and bandwidth is None:
        bandwidth = median_bandwidth(x, y)
    bw = jnp.float32(bandwidth or 1.0)
    kxx = _kernel_sum(x, x, kernel, bw, block) - _self_kernel_trace(x, kernel)
    kyy = _kernel_sum(y, y, kernel, bw, block) - _self_kernel_trace(y, kernel)
    kxy = _kernel_sum(x, y, kernel, bw, block)
    return kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2 * kxy / (n * m)


def kid(x, y, block: int = 2048) -> float:
    """Kernel Inception Distance: unbiased MMD^2 with the cubic polynomial kernel."""
    return mmd2_unbiased(x, y, "poly", block=block)
