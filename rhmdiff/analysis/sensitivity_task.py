"""The ``sensitivity`` task (paper App. D.1, Fig. 6): S_{k,l} of every U-Net block of trained
``rhm`` models vs their number of training points P, next to 1 - A_l.

Reads every run directory matched by ``sensitivity.sources`` (glob patterns, e.g. the points
of a P sweep) that holds a ``results.json`` and ``best/`` parameters, draws
``sensitivity.num_data`` fresh sequences of the run's grammar and measures
:func:`rhmdiff.analysis.sensitivity.relative_sensitivity` of the block pre-activations at
diffusion time ``sensitivity.t``. Writes ``sensitivity.json`` and ``sensitivity.png``.
"""
from __future__ import annotations

import glob
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from rhmdiff import rhm, train
from rhmdiff._util import natural_order, write_json
from rhmdiff.analysis import figures, sensitivity
from rhmdiff.evaluate import grammar_from_config, model_from_config


def run_sensitivity(run_dir: str, key, num_data: int, t: int) -> dict | None:
    """S_{k,l} of the best parameters of the ``rhm`` run in ``run_dir``, with its P and A_l
    (None for an online run, which has no P)."""
    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    if results.get("train_size") is None:
        logging.warning("%s: an online run has no training-set size P; skipped", run_dir)
        return None
    stored = ml_collections.ConfigDict(results["config"])
    if not 1 <= t <= stored.diffusion.T:
        raise ValueError(f"sensitivity.t: must lie in [1, T] = [1, {stored.diffusion.T}] of {run_dir}, got {t}")
    g = grammar_from_config(stored)
    model = model_from_config(stored, g)
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, g.d), jnp.int32),
                              jnp.ones((1,), jnp.int32))
    ckpt = train.Checkpoints(run_dir)
    params = ckpt.restore_best(jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract))
    ckpt.close()
    k_data, k_sens = jax.random.split(key)
    x = rhm.sample(k_data, g, num_data)[0]
    s = sensitivity.relative_sensitivity(k_sens, sensitivity.unet_features(model, params, t), g, x)
    return {"name": os.path.basename(os.path.normpath(run_dir)), "P": results["train_size"],
            "m": g.m, "accuracy": results["accuracy"], "sensitivity": {k: v.tolist() for k, v in s.items()}}


def run(config, workdir: str) -> dict:
    os.makedirs(workdir, exist_ok=True)
    sc = config.sensitivity
    dirs = sorted({os.path.dirname(p) for pattern in sc.sources
                   for p in glob.glob(os.path.join(pattern, "results.json"))
                   if os.path.isdir(os.path.join(os.path.dirname(p), "best"))}, key=natural_order)
    if not dirs:
        raise FileNotFoundError(f"sensitivity.sources: no run with results.json and best/ in {list(sc.sources)}")
    key = jax.random.PRNGKey(config.seed)
    rows = []
    for run_dir in dirs:
        row = run_sensitivity(run_dir, key, sc.num_data, sc.t)
        if row is None:
            continue
        rows.append(row)
        logging.info("%s: S = %s", rows[-1]["name"],
                     {k: np.round(v, 3).tolist() for k, v in rows[-1]["sensitivity"].items()})
    if not rows:
        raise FileNotFoundError(f"sensitivity.sources: only online runs (no P) in {list(sc.sources)}")
    results = {"task": "sensitivity", "t": sc.t, "num_data": sc.num_data, "runs": rows, "config": config.to_dict()}
    write_json(os.path.join(workdir, "sensitivity.json"), results)
    figures.plot_sensitivity(results, os.path.join(workdir, "sensitivity.png"))
    for row in rows:
        deepest = max((k for k in row["sensitivity"] if k.startswith("encoder")), key=lambda k: int(k.split("_")[1]))
        print(f"{row['name']} (P={row['P']}): {deepest} S_l = {np.round(row['sensitivity'][deepest], 3).tolist()}, "
              f"1 - A_l = {np.round(1 - np.asarray(row['accuracy']), 3).tolist()}")
    return results
