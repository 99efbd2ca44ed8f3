"""The ``clustering_sweep`` task: sample complexity P* of the clustering algorithm vs m
(paper Fig. 2 for L = 2, Fig. 7 for L = 3).

For every L in ``sweep.L_values``, m in ``sweep.m_values`` and grammar seed, the algorithm of
:func:`rhmdiff.analysis.clustering.synonym_clustering_accuracy` runs on P i.i.d. sequences for a
log-spaced grid of P, for the top tuple level (``level = L - 1``: tuples of level-(L-2)
symbols whose context token has its lowest common ancestor at the root), with both
contexts. With ``sweep.hierarchical`` and L >= 3, also the deep version that estimates every
latent below the target from visible data only
(:func:`rhmdiff.analysis.clustering.hierarchical_clustering_accuracy`, contexts
"token-deep" / "tuple-deep", Fig. 7). P* is where the seed-averaged score crosses
``sweep.threshold`` (interpolated in log P); the fitted exponent of P* vs m is compared with
the theory's L + 1 (Eq. 6).
Writes ``clustering_sweep.json`` and ``clustering_sweep.png``.
"""
from __future__ import annotations

import jax
import numpy as np
from absl import logging

from rhmdiff import config_check as check
from rhmdiff import rhm, theory
from rhmdiff import workdir as workdir_lib
from rhmdiff._util import progress
from rhmdiff.analysis import clustering, figures
from rhmdiff.analysis.sample_complexity import fit_power_law, log_grid, p_star
from rhmdiff.files import write_json

MUTABLE = ("sweep.threshold",)


def validate_grammar_grid(config) -> None:
    """The grammar grid and the P grid of the sweeps that need no training (``clustering_sweep``, ``onestep``)."""
    check.seed(config)
    v, s = check.integer(config, "sweep.v", 1), check.integer(config, "sweep.s", 2)
    for m in check.int_list(config, "sweep.m_values", 1):
        check.grammar_sizes(config, "sweep.m_values", v, m, s, 2)
    check.integer(config, "sweep.num_seeds", 1)
    check.integer(config, "sweep.num_P", 2)
    p_min = check.integer(config, "sweep.P_min", 2)
    if check.integer(config, "sweep.P_max", 2, 10**9) <= p_min:
        raise check.ConfigError("sweep.P_max", f"must be > P_min = {p_min}")


def validate(config) -> None:
    validate_grammar_grid(config)
    for L in check.int_list(config, "sweep.L_values", 2):
        for m in config.sweep.m_values:
            check.grammar_sizes(config, "sweep.L_values", config.sweep.v, m, config.sweep.s, L)
    check.flag(config, "sweep.hierarchical")
    check.real(config, "sweep.threshold", 0.0, 1.0, high_open=False)


def variants(sw, L: int) -> list[str]:
    """The clustering variants run at depth L: both contexts, and their deep versions."""
    deep = [f"{c}-deep" for c in clustering.CONTEXTS] if sw.get("hierarchical", False) and L >= 3 else []
    return list(clustering.CONTEXTS) + deep


def run(config, workdir) -> dict:
    sw = config.sweep
    grid = log_grid(sw.P_min, sw.P_max, sw.num_P)
    key = jax.random.PRNGKey(config.seed)
    curves, summary = [], []
    cases = [(L, m, seed) for L in sw.L_values for m in sw.m_values for seed in range(sw.num_seeds)]
    for L, m, seed in progress(cases, desc="clustering sweep"):
        g = rhm.make_grammar(jax.random.PRNGKey(seed), sw.v, m, sw.s, L)
        x, _ = rhm.sample(jax.random.fold_in(key, seed), g, int(grid[-1]))
        x = np.asarray(x)
        for context in variants(sw, L):
            if context.endswith("-deep"):
                score = lambda k, xs: clustering.hierarchical_clustering_accuracy(k, xs, g, context[:-len("-deep")])
            else:
                score = lambda k, xs: clustering.synonym_clustering_accuracy(k, xs, g, L - 1, context)
            acc = [score(jax.random.fold_in(key, int(P)), x[:P]) for P in grid]
            curves.append({"L": L, "m": m, "seed": seed, "context": context, "accuracy": acc})
    for L in sw.L_values:
        for context in variants(sw, L):
            stars = []
            for m in sw.m_values:
                mean = np.mean([c["accuracy"] for c in curves
                                if (c["L"], c["m"], c["context"]) == (L, m, context)], axis=0)
                stars.append(p_star(grid, mean, sw.threshold))
            exponent, prefactor = fit_power_law(sw.m_values, stars)
            summary.append({"L": L, "context": context, "m": list(sw.m_values), "p_star": stars,
                            "exponent": exponent, "prefactor": prefactor, "theory_exponent": L + 1,
                            "theory_P": [theory.sample_complexity(sw.v, m, sw.s, L) for m in sw.m_values]})
            logging.info("L=%d context=%s: P* = %s, fitted exponent %.2f (theory %d)",
                         L, context, np.round(stars, 1).tolist(), exponent, L + 1)
    results = {"task": "clustering_sweep", "train_sizes": grid.tolist(), "threshold": sw.threshold,
               "v": sw.v, "s": sw.s, "curves": curves, "summary": summary, **workdir_lib.provenance(config)}
    if jax.process_index() == 0:
        write_json(workdir / "clustering_sweep.json", results)
        figures.plot_clustering_sweep(results, workdir / "clustering_sweep.png")
    for row in summary:
        print(f"L={row['L']} context={row['context']}: P* vs m exponent {row['exponent']:.2f} "
              f"(theory {row['theory_exponent']}), P* = {np.round(row['p_star'], 1).tolist()}")
    return results
