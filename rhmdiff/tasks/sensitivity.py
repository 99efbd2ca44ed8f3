"""The ``sensitivity`` task (paper App. D.1, Fig. 6): S_{k,l} of every U-Net block of trained
``rhm`` models vs their number of training points P, next to 1 - A_l, with seeds.

Reads every finished offline ``rhm`` run matched by ``sensitivity.sources`` (e.g. the m = 3
points of the P sweep, every seed), draws ``sensitivity.num_data`` fresh sequences of the
run's grammar and measures :func:`rhmdiff.analysis.sensitivity.relative_sensitivity` of the
block pre-activations at diffusion time ``sensitivity.t``, of the network at its
initialization (the run's own initial parameters) and of the one-hot tokens themselves (the
baselines: what S is before any learning). ``sensitivity.reset``: ``"other"`` (R_l of
:func:`rhmdiff.rhm.reset_synonyms`: every production choice from level l down redrawn, the
one at level l among the other m - 1) or ``"any"`` (among all m).

The paper's claim, as numbers: the U-Net "begins to satisfy rules at level l precisely when
it becomes insensitive to synonymic variations at level l - 1". The synonyms of the
level-(l - 1) variables are their productions, which R_{l-1} redraws while keeping them
fixed; so for l = 2 .. L the table puts the P where the deepest encoder block's
S_{encoder_L, l-1} falls below 1/2 next to the P where A_l rises above 1/2, each per seed
(interpolated in log P) with a t-interval over seeds, or a lower bound where a curve never
crosses. Writes ``sensitivity.json`` and ``sensitivity.png``.
"""
from __future__ import annotations

import jax
import numpy as np
from absl import logging

from rhmdiff import config_check as check
from rhmdiff import from_config, rhm, runs
from rhmdiff.analysis import figures, sensitivity
from rhmdiff.analysis.sample_complexity import p_star_statistics
from rhmdiff.models import unet
from rhmdiff.tasks import finish

MUTABLE = ("sensitivity.sources",)
OUTPUTS = ("sensitivity.json", "sensitivity.png")


def validate(config) -> None:
    check.seed(config)
    check.patterns(config, "sensitivity.sources")
    check.integer(config, "sensitivity.num_data", 2)
    check.integer(config, "sensitivity.t", 1)
    check.choice(config, "sensitivity.reset", ("other", "any"))


def one_hot_features(v: int):
    """``features_fn`` of the tokens themselves (one-hot): S before any network."""
    return lambda x: {"tokens": jax.nn.one_hot(x, v)}


def measure_run(config, run_dir, results: dict) -> dict:
    sc = config.sensitivity
    stored, g, model, params = runs.restore_rhm(run_dir, results)
    if not 1 <= sc.t <= stored.diffusion.T:
        raise check.ConfigError("sensitivity.t", f"must lie in [1, T] = [1, {stored.diffusion.T}] of {run_dir}, "
                                f"got {sc.t}")
    k_data, k_sens = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(config.seed), stored.rhm.seed))
    x = rhm.sample(k_data, g, sc.num_data)[0]
    same = sc.reset == "any"
    measured = lambda fn: {k: v.tolist() for k, v in sensitivity.relative_sensitivity(k_sens, fn, g, x, same).items()}
    initial = unet.init_params(model, from_config.rhm_keys(stored).init, g.d)
    return {"name": run_dir.name, "P": results["train_size"], "seed": stored.rhm.seed, "m": g.m,
            "accuracy": results["accuracy"], "sensitivity": measured(sensitivity.unet_features(model, params, sc.t)),
            "initial": measured(sensitivity.unet_features(model, initial, sc.t)),
            "tokens": measured(one_hot_features(g.v))["tokens"]}


def crossings(rows: list[dict], L: int) -> list[dict]:
    """For l = 2 .. L: where S_{encoder_L, l-1} falls below 1/2 and where A_l rises above 1/2,
    per seed and with a t-interval over seeds (:func:`p_star_statistics`)."""
    seeds = sorted({r["seed"] for r in rows})
    Ps = sorted({r["P"] for r in rows})
    by = {(r["seed"], r["P"]): r for r in rows}
    complete = [s for s in seeds if all((s, P) in by for P in Ps)]
    out = []
    for level in range(2, L + 1):
        insensitive = [[1 - by[s, P]["sensitivity"][f"encoder_{L}"][level - 2] for P in Ps] for s in complete]
        accurate = [[by[s, P]["accuracy"][level - 1] for P in Ps] for s in complete]
        out.append({"level": level, "reset": level - 1, "block": f"encoder_{L}", "seeds": complete,
                    "insensitive": p_star_statistics(Ps, insensitive, 0.5),
                    "accurate": p_star_statistics(Ps, accurate, 0.5)})
    return out


def by_P(rows: list[dict]) -> list[dict]:
    """Per P: the seed mean and standard error of every S and of A_l."""
    out = []
    for P in sorted({r["P"] for r in rows}):
        group = [r for r in rows if r["P"] == P]
        n = len(group)
        mean = lambda key: {k: np.mean([r[key][k] for r in group], 0).tolist() for k in group[0][key]}
        se = lambda key: {k: (np.std([r[key][k] for r in group], 0, ddof=1) / np.sqrt(n)).tolist() if n > 1 else None
                          for k in group[0][key]}
        out.append({"P": P, "n_seeds": n, "sensitivity": mean("sensitivity"), "sensitivity_se": se("sensitivity"),
                    "initial": mean("initial"), "tokens": np.mean([r["tokens"] for r in group], 0).tolist(),
                    "accuracy": np.mean([r["accuracy"] for r in group], 0).tolist()})
    return out


def run(config, workdir) -> dict:
    sc = config.sensitivity
    rows = []
    for run_dir, results in runs.trained_rhm_runs(sc.sources, "sensitivity.sources"):
        rows.append(measure_run(config, run_dir, results))
        logging.info("%s: S = %s", rows[-1]["name"], {k: np.round(v, 3).tolist() for k, v in rows[-1]["sensitivity"].items()})
    L = len(rows[0]["accuracy"])
    results = {"task": "sensitivity", "t": sc.t, "num_data": sc.num_data, "reset": sc.reset, "L": L, "runs": rows,
               "by_P": by_P(rows), "crossings": crossings(rows, L)}
    lines = []
    for c in results["crossings"]:
        s, a = c["insensitive"], c["accurate"]
        lines.append(f"level {c['level']}: {c['block']} insensitive to R_{c['reset']} (S < 1/2) at P = {s['p_star']:.4g} "
                     f"[{s['ci'][0]:.4g}, {s['ci'][1]:.4g}]; A_{c['level']} > 1/2 at P = {a['p_star']:.4g} "
                     f"[{a['ci'][0]:.4g}, {a['ci'][1]:.4g}]")
    return finish(config, workdir, results, "sensitivity.json", figures.plot_sensitivity, "\n".join(lines))
