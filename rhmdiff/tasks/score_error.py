"""The ``score_error`` task: the trained denoisers of a P sweep against the Bayes-optimal one,
per diffusion time and per level of the tree (:mod:`rhmdiff.analysis.score_error`).

For every finished offline ``rhm`` run matched by ``score_error.sources`` (e.g. the points of
``configs/sweep_P.py``), restore its best parameters, draw ``score_error.num_data`` fresh
sequences of its grammar that are not among its training points, and measure at
``score_error.num_t`` log-spaced steps t: the per-token KL from the exact posterior to the
network's prediction, the excess of the network's variational-bound term over the oracle's,
and the KL of the level-l posteriors that the network's marginals imply (with error bars
over sequences). The oracle itself is measured too (``"BP oracle"``: zero by construction,
a check of the pipeline). Writes ``score_error.json`` and ``score_error.png`` (one panel per
level: the error vs t, one curve per P; and the error vs P at a few t, next to 1 - A_l).
"""
from __future__ import annotations

import jax
import numpy as np
from absl import logging
from jax.tree_util import Partial

from rhmdiff import config_check as check
from rhmdiff import evaluate, from_config, rhm, runs
from rhmdiff._util import example_keys
from rhmdiff.analysis import figures, score_error
from rhmdiff.tasks import finish

MUTABLE = ("score_error.sources", "score_error.batch_size")
OUTPUTS = ("score_error.json", "score_error.png")


def validate(config) -> None:
    check.seed(config)
    check.patterns(config, "score_error.sources")
    check.integer(config, "score_error.num_data", 2)
    check.integer(config, "score_error.num_t", 1, 1000)
    check.integer(config, "score_error.batch_size", 1)


def fresh_sequences(key, g: rhm.Grammar, num: int, train_x) -> np.ndarray:
    """``num`` i.i.d. sequences of ``g`` that are not training points (rejection)."""
    out, i = [], 0
    while sum(len(x) for x in out) < num:
        x = np.asarray(rhm.sample(jax.random.fold_in(key, i), g, 2 * num)[0])
        out.append(x[~evaluate.copies_of(x, train_x)])
        i += 1
    return np.concatenate(out)[:num]


def measure(g, schedule, logits_fn, keys, x0, grid, batch_size: int) -> dict:
    """:func:`rhmdiff.analysis.score_error.errors_at` at every step of ``grid``, over all
    devices, summarized as mean and standard error per step."""
    rows = {k: [] for k in ("token_kl", "vb_excess", "level_kl", "map_floor")}
    for t in grid:
        fn = lambda f, k, x, tt: score_error.errors_at(g, schedule, f, k, x, tt)
        out = evaluate.map_examples(fn, keys, x0, np.full(len(x0), t, np.int32), shared=logits_fn,
                                    batch_size=batch_size)
        for name in rows:
            rows[name].append(score_error.summarize(out[name]))
    return rows


def run(config, workdir) -> dict:
    sc = config.score_error
    key = jax.random.PRNGKey(config.seed)
    measured = []
    for run_dir, results in runs.trained_rhm_runs(sc.sources, "score_error.sources"):
        stored, g, model, params = runs.restore_rhm(run_dir, results)
        schedule = from_config.d3pm_schedule(stored)
        grid = score_error.log_grid(schedule.T, sc.num_t)
        splits = from_config.splits(stored, g)
        x0 = fresh_sequences(jax.random.fold_in(key, 0), g, sc.num_data, np.asarray(splits["train"][0]))
        keys = example_keys(jax.random.fold_in(key, 1), len(x0))
        errors = measure(g, schedule, Partial(model.apply, params), keys, x0, grid, sc.batch_size)
        measured.append({"name": run_dir.name, "P": results["train_size"], "accuracy": results["accuracy"],
                         "t": grid.tolist(), **errors})
        logging.info("%s: token KL %s nats at t = %s", run_dir.name,
                     np.round([e["mean"] for e in errors["token_kl"]], 4).tolist(), grid.tolist())
    # the oracle as the "network" (zero error), on the last run's grammar and data
    oracle = measure(g, schedule, evaluate.oracle_logits_fn(g, schedule), keys, x0, grid, sc.batch_size)
    results = {"task": "score_error", "num_data": sc.num_data, "L": g.L, "runs": measured,
               "oracle": {"t": grid.tolist(), **oracle}}
    lines = [f"{row['name']} (P={row['P']}): token KL {np.round([e['mean'] for e in row['token_kl']], 4).tolist()} "
             f"nats at t = {row['t']}" for row in measured]
    return finish(config, workdir, results, "score_error.json", figures.plot_score_error, "\n".join(lines))
