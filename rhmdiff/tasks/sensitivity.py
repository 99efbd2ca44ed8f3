"""The ``sensitivity`` task (paper App. D.1, Fig. 6): S_{k,l} of every U-Net block of trained
``rhm`` models vs their number of training points P, next to 1 - A_l.

Reads every run directory matched by ``sensitivity.sources`` (glob patterns, e.g. the points
of a P sweep) that holds a ``results.json`` and ``best/`` parameters, draws
``sensitivity.num_data`` fresh sequences of the run's grammar and measures
:func:`rhmdiff.analysis.sensitivity.relative_sensitivity` of the block pre-activations at
diffusion time ``sensitivity.t``. ``sensitivity.reset``: ``"other"`` (the authors' R_l: the
production at level l is redrawn among the other m - 1) or ``"any"`` (among all m, so the
level-(l-1) tuple stays with probability 1/m). Writes ``sensitivity.json`` and ``sensitivity.png``.
"""
from __future__ import annotations

import jax
import numpy as np
from absl import logging

from rhmdiff import config_check as check
from rhmdiff import rhm, runs
from rhmdiff.analysis import figures, sensitivity
from rhmdiff.tasks import finish

MUTABLE = ("sensitivity.sources",)
OUTPUTS = ("sensitivity.json", "sensitivity.png")


def validate(config) -> None:
    check.seed(config)
    check.patterns(config, "sensitivity.sources")
    check.integer(config, "sensitivity.num_data", 2)
    check.integer(config, "sensitivity.t", 1)
    check.choice(config, "sensitivity.reset", ("other", "any"))


def run(config, workdir) -> dict:
    sc = config.sensitivity
    key = jax.random.PRNGKey(config.seed)
    rows = []
    for run_dir, results in runs.trained_rhm_runs(sc.sources, "sensitivity.sources"):
        stored, g, model, params = runs.restore_rhm(run_dir, results)
        if not 1 <= sc.t <= stored.diffusion.T:
            raise check.ConfigError("sensitivity.t", f"must lie in [1, T] = [1, {stored.diffusion.T}] of {run_dir}, "
                                    f"got {sc.t}")
        k_data, k_sens = jax.random.split(key)
        x = rhm.sample(k_data, g, sc.num_data)[0]
        s = sensitivity.relative_sensitivity(k_sens, sensitivity.unet_features(model, params, sc.t), g, x,
                                             same_allowed=sc.reset == "any")
        rows.append({"name": run_dir.name, "P": results["train_size"], "m": g.m, "accuracy": results["accuracy"],
                     "sensitivity": {k: v.tolist() for k, v in s.items()}})
        logging.info("%s: S = %s", rows[-1]["name"], {k: np.round(v, 3).tolist() for k, v in s.items()})
    results = {"task": "sensitivity", "t": sc.t, "num_data": sc.num_data, "reset": sc.reset, "runs": rows}
    lines = []
    for row in rows:
        deepest = max((k for k in row["sensitivity"] if k.startswith("encoder")), key=lambda k: int(k.split("_")[1]))
        lines.append(f"{row['name']} (P={row['P']}): {deepest} S_l = "
                     f"{np.round(row['sensitivity'][deepest], 3).tolist()}, "
                     f"1 - A_l = {np.round(1 - np.asarray(row['accuracy']), 3).tolist()}")
    return finish(config, workdir, results, "sensitivity.json", figures.plot_sensitivity, "\n".join(lines))
