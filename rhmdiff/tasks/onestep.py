"""The ``onestep`` task (paper App. B): separability of synonyms after one gradient step of
the perceptron of Eq. 20 vs P, for several m, next to P_2 (Eq. 24)
(:mod:`rhmdiff.analysis.onestep`). Writes ``onestep.json`` and ``onestep.png``.
"""
from __future__ import annotations

import jax
import numpy as np

from rhmdiff import config_check as check
from rhmdiff import rhm, theory
from rhmdiff._util import progress
from rhmdiff.analysis import figures
from rhmdiff.analysis.onestep import synonym_separability
from rhmdiff.analysis.sample_complexity import log_grid
from rhmdiff.tasks import finish

MUTABLE = ()
OUTPUTS = ("onestep.json", "onestep.png")


def validate(config) -> None:
    check.grammar_grid(config)
    L = check.integer(config, "sweep.L", 2)
    for m in config.sweep.m_values:
        check.grammar_sizes(config, "sweep.L", config.sweep.v, m, config.sweep.s, L)
    check.real(config, "sweep.eta", 0.0, float("inf"))


def run(config, workdir) -> dict:
    sw = config.sweep
    grid = log_grid(sw.P_min, sw.P_max, sw.num_P)
    key = jax.random.PRNGKey(config.seed)
    curves = []
    for m in progress(sw.m_values, desc="one-step GD"):
        scores = []
        for seed in range(sw.num_seeds):
            g = rhm.make_grammar(jax.random.PRNGKey(seed), sw.v, m, sw.s, sw.L)
            x = np.asarray(rhm.sample(jax.random.fold_in(key, seed), g, int(grid[-1]))[0])
            scores.append([synonym_separability(jax.random.fold_in(key, int(P)), x[:P], g, sw.eta) for P in grid])
        curves.append({"m": m, "separability": np.mean(scores, 0).tolist(),
                       "P_2": theory.sample_complexity(sw.v, m, sw.s, 2)})
    results = {"task": "onestep", "train_sizes": grid.tolist(), "v": sw.v, "curves": curves}
    lines = [f"m={c['m']}: separability {np.round(c['separability'], 2).tolist()} (P_2 = {c['P_2']:.0f})"
             for c in curves]
    return finish(config, workdir, results, "onestep.json", figures.plot_onestep, "\n".join(lines))
