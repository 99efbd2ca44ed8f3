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

import warnings

import jax
import numpy as np
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning

from rhmdiff import rhm
from rhmdiff._util import numpy_rng

CONTEXTS = ("token", "tuple")


def tuple_symbols(g: rhm.Grammar, tokens, level: int) -> np.ndarray:
    """The level-(level-1) s-tuple below the second level-``level`` latent, ``int[N, s]``
    (level 0 = visible tokens; latents from :func:`rhmdiff.rhm.decode`)."""
    x = np.asarray(tokens)
    below = x if level == 1 else np.asarray(rhm.decode(g, x)[level - 2])
    return below[:, g.s:2 * g.s]


def mean_contexts(codes, context, v: int) -> tuple[np.ndarray, np.ndarray]:
    """``(values, vectors)``: the distinct tuple ``codes [N]`` seen and, for each, the mean
    one-hot encoding of the integer ``context [N, c]`` rows where it occurs (``[n, c*v]``,
    the c one-hots side by side), from one ``bincount``."""
    context = np.asarray(context)
    values, inverse = np.unique(codes, return_inverse=True)
    c = context.shape[1]
    flat = (inverse[:, None] * c + np.arange(c)) * v + context
    sums = np.bincount(flat.ravel(), minlength=len(values) * c * v).reshape(len(values), c * v)
    return values, sums / np.bincount(inverse)[:, None]


def cluster_purity(labels, parents) -> float:
    """Fraction of items whose cluster's most common parent is their own parent; 1.0 when
    every cluster holds the items of one parent only."""
    labels, parents = np.asarray(labels), np.asarray(parents)
    hits = 0
    for c in np.unique(labels):
        hits += np.bincount(parents[labels == c]).max()
    return hits / len(labels)


def first_symbols(g: rhm.Grammar, level: int) -> np.ndarray:
    """The symbols that can occur as the *first* level-``level`` latent (level L: all v)."""
    rules = np.asarray(g.rules)
    syms = np.arange(g.v)
    for l in range(g.L, level, -1):
        syms = np.unique(rules[l - 1][syms][:, :, 0])
    return syms


def possible_parents(g: rhm.Grammar, level: int) -> np.ndarray:
    """The level-``level`` symbols that can occur as the *second* level-``level`` latent
    (child 1 of the first level-(level+1) latent)."""
    return np.unique(np.asarray(g.rules)[level][first_symbols(g, level + 1)][:, :, 1])


def synonym_clustering_accuracy(key, tokens, g: rhm.Grammar, level: int, context: str) -> float:
    """Run the clustering algorithm on ``tokens int[N, s**L]`` for the tuples of level
    ``level - 1`` below level-``level`` latents (``1 <= level <= L - 1``; the level-(level-1)
    latents are the true ones, from :func:`rhmdiff.rhm.decode`) and score it.

    The tuples seen in ``tokens`` are clustered by k-means into as many clusters as they
    have parents; the score is the number of tuples whose cluster's majority parent is
    their own, divided by the number of tuples that can occur there (m times
    :func:`possible_parents`), so unseen tuples count as failures and the score is 1.0
    exactly when every possible tuple was seen and the clusters are the synonym classes.
    ``key`` seeds k-means."""
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
    if not isinstance(level, (int, np.integer)) or not 1 <= level <= g.L - 1:
        raise ValueError(f"level must be an integer in [1, L - 1] = [1, {g.L - 1}], got {level!r}")
    x = np.asarray(tokens)
    tuples = tuple_symbols(g, x, level)
    complete = (tuples >= 0).all(1)  # decode gives -1 above an invalid lower-level tuple
    x, tuples = x[complete], tuples[complete]
    values, vectors = mean_contexts(tuple_codes(tuples, g.v), x[:, :1] if context == "token" else x[:, :g.s], g.v)
    return score_synonym_clusters(key, values, vectors, g, level, g.m * len(possible_parents(g, level)))


def tuple_codes(tuples, v: int) -> np.ndarray:
    """Integer code of each s-tuple of symbols ``[..., s]`` (base v, first symbol most significant)."""
    tuples = np.asarray(tuples)
    return tuples @ (v ** np.arange(tuples.shape[-1] - 1, -1, -1))


def _kmeans_labels(key, vectors, k: int) -> np.ndarray:
    """k-means (scikit-learn, 10 restarts) cluster of each row of ``vectors``, seeded by ``key``.
    At small P several tuples share one context vector (each seen in the same few sequences),
    so fewer than k distinct clusters exist: scikit-learn's warning about it is expected there
    and silenced (the score counts such tuples as they fall)."""
    seed = int(numpy_rng(key).integers(2**31))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(vectors)


def score_synonym_clusters(key, values, vectors, g: rhm.Grammar, level: int, num_possible: int) -> float:
    """k-means on ``vectors`` (one row per tuple code in ``values``, tuples of level-(level-1)
    symbols) with as many clusters as the tuples have parents at level ``level``; returns
    the number of tuples whose cluster's majority parent is their own divided by
    ``num_possible``, the number of tuples that can occur (unseen ones count as failures).
    Codes that are not productions are left out. ``key`` seeds k-means."""
    rule_codes = tuple_codes(np.asarray(g.rules[level - 1]), g.v)  # [v, m]: each symbol's productions
    parent_of = dict(zip(rule_codes.ravel().tolist(), np.repeat(np.arange(g.v), g.m).tolist()))
    known = np.array([c in parent_of for c in np.asarray(values).tolist()], bool)
    values, vectors = np.asarray(values)[known], np.asarray(vectors)[known]
    if len(values) < 2:
        return 0.0
    parents = np.array([parent_of[c] for c in values.tolist()])
    labels = _kmeans_labels(key, vectors, len(np.unique(parents)))
    return float(cluster_purity(labels, parents) * len(values) / num_possible)


def possible_symbols(g: rhm.Grammar, level: int, position: int) -> np.ndarray:
    """The symbols that can occur as the level-``level`` latent at ``position``."""
    rules = np.asarray(g.rules)
    syms, pos = np.arange(g.v), position
    path = []
    for _ in range(level, g.L):
        path.append(pos % g.s)
        pos //= g.s
    for l, child in zip(range(g.L, level, -1), reversed(path)):
        syms = np.unique(rules[l - 1][syms][:, :, child])
    return syms


def _cluster_tuples(key, tuples, context, v: int, k: int) -> np.ndarray:
    """k-means (k clusters) of the s-tuples ``tuples [N, s]`` (-1 = unknown symbol) by mean
    context; the cluster of each row, -1 where the tuple holds an unknown symbol."""
    ok = (tuples >= 0).all(1)
    rows = np.full(len(tuples), -1)
    if not ok.any():
        return rows
    codes = tuple_codes(tuples[ok], v)
    values, vectors = mean_contexts(codes, context[ok], v)
    labels = _kmeans_labels(key, vectors, min(k, len(values)))
    rows[ok] = labels[np.searchsorted(values, codes)]
    return rows


def _code_classes(key, tuples, context, v: int, k: int) -> np.ndarray:
    """The class (k-means cluster) of every tuple code from the tuples ``[N, n, s]`` of
    symbols (-1: unknown) seen at the n positions, with the integer ``context [N, n, c]`` of
    each position, pooled over positions (the rules do not depend on the position); an
    array over all ``v**s`` codes, -1 for codes never seen."""
    s = tuples.shape[-1]
    flat_t, flat_c = tuples.reshape(-1, s), context.reshape(-1, context.shape[-1])
    ok = (flat_t >= 0).all(1) & (flat_c >= 0).all(1)
    classes = np.full(v**s, -1)
    if not ok.any():
        return classes
    values, vectors = mean_contexts(tuple_codes(flat_t[ok], v), flat_c[ok], v)
    classes[values] = _kmeans_labels(key, vectors, min(k, len(values)))
    return classes


def local_context(tuples, context: str) -> np.ndarray:
    """The local context of every tuple of ``tuples [N, n, s]`` (n a multiple of s: the
    tuples in groups of s siblings under one parent of the level above): its nearest sibling's
    nearest symbol (``"token"``: the next sibling's first symbol, or for the last sibling the
    previous one's last) or the nearest sibling's whole tuple (``"tuple"``), ``[N, n, 1 or s]``."""
    N, n, s = tuples.shape
    child = np.arange(n) % s
    sibling = np.where(child < s - 1, np.arange(n) + 1, np.arange(n) - 1)
    if context == "token":
        return np.where(child[None, :, None] < s - 1, tuples[:, sibling, :1], tuples[:, sibling, -1:])
    return tuples[:, sibling, :]


def hierarchical_classes(key, tokens, g: rhm.Grammar, context: str) -> list[np.ndarray]:
    """The paper's mechanism (Sec. 4) from visible data only, levels 1 .. L-2: the level-1
    synonym classes from local context (:func:`local_context`, the nearest sibling tuple under
    the same level-2 parent), the same classes at every position (statistics pooled over the
    positions), then the tuples of *estimated* level-1 classes clustered the same way into
    level-2 classes, and so on. Returns, per level l, the estimated class of every tuple code
    of level-(l-1) symbols (codes of tokens at l = 1, of estimated classes above; -1 unseen)."""
    symbols, maps = np.asarray(tokens), []
    for level in range(1, g.L - 1):
        tuples = symbols.reshape(len(symbols), -1, g.s)
        classes = _code_classes(jax.random.fold_in(key, level), tuples, local_context(tuples, context), g.v, g.v)
        symbols = estimated_symbols(g, symbols, [classes])
        maps.append(classes)
    return maps


def estimated_symbols(g: rhm.Grammar, tokens, maps: list[np.ndarray]) -> np.ndarray:
    """The level-(len(maps)) symbols of every sequence given by the class maps of
    :func:`hierarchical_classes` (-1 where a tuple was never seen)."""
    symbols = np.asarray(tokens)
    for classes in maps:
        tuples = symbols.reshape(len(symbols), -1, g.s)
        ok = (tuples >= 0).all(-1)
        symbols = np.where(ok, classes[np.where(ok, tuple_codes(np.maximum(tuples, 0), g.v), 0)], -1)
    return symbols


def hierarchical_clustering_accuracy(key, tokens, g: rhm.Grammar, context: str) -> float:
    """The clustering of the paper's Sec. 4 at the top of the tree, from visible data only:
    the latents up to level L-2 estimated level by level from local context
    (:func:`hierarchical_classes`), then the tuple of estimated level-(L-2) classes below the
    second level-(L-1) latent clustered by its mean first-token (or first s-tuple) context,
    as :func:`synonym_clustering_accuracy` does with the true latents. Score: each distinct
    true tuple below the target (from :func:`rhmdiff.rhm.decode`) takes the cluster most of
    its sequences landed in; the number of tuples whose cluster's majority parent is their
    own parent, divided by the number of tuples that can occur there (unseen ones count as
    failures). At L = 2 it is the true-latent algorithm. ``key`` seeds k-means."""
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
    if g.L < 2:
        raise ValueError(f"the grammar needs L >= 2 levels, got {g.L}")
    x = np.asarray(tokens)
    below = estimated_symbols(g, x, hierarchical_classes(key, x, g, context))
    target = below[:, g.s:2 * g.s]
    ctx = x[:, :1] if context == "token" else x[:, :g.s]
    ok = (target >= 0).all(1)
    clusters = _cluster_tuples(jax.random.fold_in(key, g.L), target, ctx, g.v, len(possible_parents(g, g.L - 1)))
    latents = rhm.decode(g, x)
    true_below = x if g.L == 2 else np.asarray(latents[g.L - 3])
    codes = tuple_codes(true_below[:, g.s:2 * g.s], g.v)
    parents = np.asarray(latents[g.L - 2])[:, 1]
    return _majority_score(codes, clusters, parents, ok & (parents >= 0), g.m * len(possible_parents(g, g.L - 1)))


def _majority_score(codes, clusters, parents, ok, num_possible: int) -> float:
    """Each distinct true tuple code takes the cluster most of its rows landed in; the number
    of tuples whose cluster's majority parent is their own parent, over ``num_possible``."""
    if not ok.any():
        return 0.0
    values, inverse = np.unique(codes[ok], return_inverse=True)
    votes = np.zeros((len(values), clusters[ok].max() + 1), int)
    np.add.at(votes, (inverse, clusters[ok]), 1)
    value_parent = np.zeros(len(values), int)
    value_parent[inverse] = parents[ok]
    return float(cluster_purity(votes.argmax(1), value_parent) * len(values) / num_possible)


def distant_context_clustering_accuracy(key, tokens, g: rhm.Grammar, context: str) -> float:
    """A clustering from visible data only in which every latent below the target is estimated
    against the *distant* context (the first token or first s-tuple of the sequence). The
    target is the second level-(L-1) latent; the latents below it are estimated bottom-up:
    at level l = 1 .. L-1, every needed level-l latent is the k-means cluster of the s-tuple
    of estimated level-(l-1) symbols below it, clustered by its mean first-token (or
    first-tuple) context, separately at every position, with as many clusters as symbols can
    occur there. The lower tuples' correlation with that context passes through their lowest
    common ancestor with it, up to the root, so this algorithm needs ~v m^{2L-1} samples: more
    than the true-latent :func:`synonym_clustering_accuracy` and than the paper's mechanism,
    :func:`hierarchical_clustering_accuracy`. Scored as the latter. ``key`` seeds k-means."""
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
    if g.L < 2:
        raise ValueError(f"the grammar needs L >= 2 levels, got {g.L}")
    x = np.asarray(tokens)
    ctx = x[:, :1] if context == "token" else x[:, :g.s]
    needed = {g.L - 1: [1]}
    for level in range(g.L - 2, 0, -1):
        needed[level] = [g.s * p + r for p in needed[level + 1] for r in range(g.s)]
    estimate = x
    for level in range(1, g.L):
        below, estimate = estimate, np.full((len(x), g.s ** (g.L - level)), -1)
        for p in needed[level]:
            estimate[:, p] = _cluster_tuples(jax.random.fold_in(key, level * 10**6 + p), below[:, p * g.s:(p + 1) * g.s],
                                             ctx, g.v, len(possible_symbols(g, level, p)))
    latents = rhm.decode(g, x)
    below = x if g.L == 2 else np.asarray(latents[g.L - 3])
    codes = tuple_codes(below[:, g.s:2 * g.s], g.v)  # the true tuple below the target
    parents = np.asarray(latents[g.L - 2])[:, 1]
    ok = (estimate[:, 1] >= 0) & (parents >= 0)
    return _majority_score(codes, estimate[:, 1], parents, ok, g.m * len(possible_symbols(g, g.L - 1, 1)))
