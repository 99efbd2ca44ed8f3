"""The paper's clustering algorithm (Sec. 4.3 "Clustering", Fig. 2, Fig. 7).

To reconstruct the level-``level`` latents from data, take the s-tuple of level-(level-1)
symbols produced by the *second* level-``level`` latent (positions s..2s-1 of level
level-1), whose lowest common ancestor with the first visible token is at level level+1.
For every value nu of that tuple seen in the data, average the one-hot context over the
sequences where it occurs -- the mean-context vector E[context | tuple = nu] -- and run
k-means on these vectors, with as many clusters as there are parents among the tuples
seen (v, unless some symbol never occurs at that position or in the data). Synonyms
(tuples with the same parent) have the same expected context, so with enough data each
cluster holds the synonyms of one symbol.
The sample complexity is P_{level+1} = v m^{level+2} / (1 - m/v^{s-1}) (Eq. 6).

``context = "token"``: the first visible token x_1 (v-dimensional context);
``context = "tuple"``: the first visible s-tuple x_{1:s}, one-hot per token (s*v dimensions).
"""
from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

from rhmdiff import rhm
from rhmdiff._util import numpy_rng

CONTEXTS = ("token", "tuple")


def tuple_symbols(g: rhm.Grammar, tokens, level: int) -> np.ndarray:
    """The level-(level-1) s-tuple below the second level-``level`` latent, ``int[N, s]``
    (level 0 = visible tokens; latents from :func:`rhmdiff.rhm.decode`)."""
    x = np.asarray(tokens)
    below = x if level == 1 else np.asarray(rhm.decode(g, x)[level - 2])
    return below[:, g.s:2 * g.s]


def mean_contexts(codes, context) -> tuple[np.ndarray, np.ndarray]:
    """``(values, vectors)``: the distinct tuple codes seen and, for each, the mean of the
    ``context [N, k]`` rows where it occurs (one ``np.add.at`` pass)."""
    values, inverse = np.unique(codes, return_inverse=True)
    sums = np.zeros((len(values), context.shape[1]))
    np.add.at(sums, inverse, context)
    return values, sums / np.bincount(inverse)[:, None]


def cluster_purity(labels, parents) -> float:
    """Fraction of items whose cluster's most common parent is their own parent; 1.0 when
    every cluster holds the items of one parent only."""
    labels, parents = np.asarray(labels), np.asarray(parents)
    hits = 0
    for c in np.unique(labels):
        hits += np.bincount(parents[labels == c]).max()
    return hits / len(labels)


def synonym_clustering_accuracy(key, tokens, g: rhm.Grammar, level: int, context: str) -> float:
    """Run the clustering algorithm on ``tokens int[N, s**L]`` for the tuples of level
    ``level - 1`` below level-``level`` latents (``1 <= level <= L - 1``) and return the
    purity of the clusters with respect to the true parents (1.0: synonyms recovered
    exactly, since there are as many clusters as parents). Only tuples that occur in ``tokens`` are clustered; ``key`` seeds k-means."""
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
    if not isinstance(level, (int, np.integer)) or not 1 <= level <= g.L - 1:
        raise ValueError(f"level must be an integer in [1, L - 1] = [1, {g.L - 1}], got {level!r}")
    x = np.asarray(tokens)
    tuples = tuple_symbols(g, x, level)
    powers = g.v ** np.arange(g.s - 1, -1, -1)
    codes = tuples @ powers
    ctx = x[:, :1] if context == "token" else x[:, :g.s]
    onehot = (ctx[:, :, None] == np.arange(g.v)).reshape(len(x), -1).astype(np.float64)
    values, vectors = mean_contexts(codes, onehot)
    rule_codes = np.asarray(g.rules[level - 1]) @ powers  # [v, m]: codes of each symbol's productions
    parent_of = dict(zip(rule_codes.ravel().tolist(), np.repeat(np.arange(g.v), g.m).tolist()))
    parents = np.array([parent_of[c] for c in values.tolist()])
    n_clusters = len(np.unique(parents))
    seed = int(numpy_rng(key).integers(2**31))
    labels = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(vectors)
    return float(cluster_purity(labels, parents))
