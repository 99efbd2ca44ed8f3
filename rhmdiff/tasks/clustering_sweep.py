"""The ``clustering_sweep`` task: sample complexity P* of the clustering algorithm of Sec. 4.3
vs m (paper Fig. 2 at L = 2, Fig. 7 at L = 3), with seeds and intervals.

For every L in ``sweep.L_values``, m in ``sweep.m_values`` and grammar seed 0 ..
``sweep.num_seeds`` - 1 (grammar ``rhm.make_grammar(PRNGKey(seed), v, m, s, L)``: the same
grammars as the diffusion sweeps' ``rhm.seed``), the algorithm runs on P i.i.d. sequences for
a log-spaced grid of P, in each of ``sweep.variants``:

* ``token`` / ``tuple``: the tuple of true level-(L-2) latents below the second level-(L-1)
  latent clustered by its mean first-token (first s-tuple) context
  (:func:`rhmdiff.analysis.clustering.synonym_clustering_accuracy`; Fig. 7 at L = 3);
* ``token-hierarchical`` / ``tuple-hierarchical`` (L >= 3): the same from visible data only,
  the latents below estimated level by level from local context, the paper's mechanism
  (:func:`~rhmdiff.analysis.clustering.hierarchical_clustering_accuracy`);
* ``token-distant`` / ``tuple-distant`` (L >= 3): every lower latent estimated against the
  distant first token (:func:`~rhmdiff.analysis.clustering.distant_context_clustering_accuracy`).

P* per seed at each of ``sweep.thresholds`` (interpolated in log P), with its t-interval over
seeds, and the exponent of P* vs m with its interval (every seed's P* pooled), next to the
theory's L + 1 (Eq. 6). Writes ``clustering_sweep.json`` and ``clustering_sweep.png``.
"""
from __future__ import annotations

import jax
import numpy as np
from absl import logging

from rhmdiff import config_check as check
from rhmdiff import rhm, theory
from rhmdiff._util import progress
from rhmdiff.analysis import clustering, figures
from rhmdiff.analysis.sample_complexity import log_grid, p_star_exponents, p_star_statistics
from rhmdiff.tasks import finish

MUTABLE = ("sweep.thresholds",)
OUTPUTS = ("clustering_sweep.json", "clustering_sweep.png")


def validate(config) -> None:
    check.grammar_grid(config)
    for L in check.int_list(config, "sweep.L_values", 2):
        for m in config.sweep.m_values:
            check.grammar_sizes(config, "sweep.L_values", config.sweep.v, m, config.sweep.s, L)
    chosen = check.get(config, "sweep.variants")
    if not isinstance(chosen, (list, tuple)) or not chosen or not set(chosen) <= set(VARIANTS):
        raise check.ConfigError("sweep.variants", f"must be a non-empty list of {list(VARIANTS)}, got {chosen!r}")
    thresholds = check.get(config, "sweep.thresholds")
    if not isinstance(thresholds, (list, tuple)) or not thresholds or not all(
            isinstance(x, (int, float)) and 0 < x <= 1 for x in thresholds):
        raise check.ConfigError("sweep.thresholds", f"must be a non-empty list of numbers in (0, 1], got {thresholds!r}")


VARIANTS = ("token", "tuple", "token-hierarchical", "tuple-hierarchical", "token-distant", "tuple-distant")


def variants(sw, L: int) -> list[str]:
    """The variants of ``sweep.variants`` that mean something at depth L (the estimated-latent
    ones need L >= 3: at L = 2 the tuple below the target is visible)."""
    return [v for v in sw.variants if "-" not in v or L >= 3]


def scorer(variant: str, g: rhm.Grammar):
    """``(key, tokens) -> score`` of one variant on grammar ``g``."""
    context, _, kind = variant.partition("-")
    if kind == "hierarchical":
        return lambda k, xs: clustering.hierarchical_clustering_accuracy(k, xs, g, context)
    if kind == "distant":
        return lambda k, xs: clustering.distant_context_clustering_accuracy(k, xs, g, context)
    return lambda k, xs: clustering.synonym_clustering_accuracy(k, xs, g, g.L - 1, context)


def run(config, workdir) -> dict:
    sw = config.sweep
    grid = log_grid(sw.P_min, sw.P_max, sw.num_P)
    key = jax.random.PRNGKey(config.seed)
    curves, summary = [], []
    cases = [(L, m, seed) for L in sw.L_values for m in sw.m_values for seed in range(sw.num_seeds)]
    for L, m, seed in progress(cases, desc="clustering sweep"):
        g = rhm.make_grammar(jax.random.PRNGKey(seed), sw.v, m, sw.s, L)
        x = np.asarray(rhm.sample(jax.random.fold_in(key, seed), g, int(grid[-1]))[0])
        for variant in variants(sw, L):
            score = scorer(variant, g)
            acc = [score(jax.random.fold_in(key, int(P)), x[:P]) for P in grid]
            curves.append({"L": L, "m": m, "seed": seed, "context": variant, "accuracy": acc})
    for L in sw.L_values:
        for variant in variants(sw, L):
            per_m = []
            for m in sw.m_values:
                rows = [c["accuracy"] for c in curves if (c["L"], c["m"], c["context"]) == (L, m, variant)]
                per_m.append([p_star_statistics(grid, rows, t) for t in sw.thresholds])
            fits = p_star_exponents([{"m": m, "thresholds": st} for m, st in zip(sw.m_values, per_m)],
                                    sw.thresholds, L)
            summary.append({"L": L, "context": variant, "m": list(sw.m_values),
                            "p_star": [[st[i] for st in per_m] for i in range(len(sw.thresholds))],
                            "exponents": fits, "theory_exponent": L + 1,
                            "theory_P": [theory.sample_complexity(sw.v, m, sw.s, L) for m in sw.m_values]})
            logging.info("L=%d %s: P* = %s, exponents %s (theory %d)", L, variant,
                         [np.round([st[i]["p_star"] for st in per_m], 1).tolist() for i in range(len(sw.thresholds))],
                         [round(f["exponent"], 2) for f in fits], L + 1)
    results = {"task": "clustering_sweep", "train_sizes": grid.tolist(), "thresholds": list(sw.thresholds),
               "v": sw.v, "s": sw.s, "num_seeds": sw.num_seeds, "curves": curves, "summary": summary}
    lines = [f"L={row['L']} {row['context']}: " + "; ".join(
        f"at {f['threshold']} exponent {f['exponent']:.2f} [{f['ci'][0]:.2f}, {f['ci'][1]:.2f}]"
        for f in row["exponents"])
        + f" (theory {row['theory_exponent']})" for row in summary]
    return finish(config, workdir, results, "clustering_sweep.json", figures.plot_clustering_sweep, "\n".join(lines))
