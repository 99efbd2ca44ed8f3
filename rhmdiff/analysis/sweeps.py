"""The ``sweep`` task: train the D3PM U-Net over a grid of P (and m, seeds), collect A_l(P)
(paper Fig. 1a and its inset) and the sample complexity P* vs m (Fig. 2): the P where
``sweep.metric``'s A_L (``accuracy``: all generated sequences; ``novel_accuracy``: those
that are not copies of training points, so memorization does not count) crosses
``sweep.threshold``.

Every grid point is one ordinary ``rhm`` run (:func:`rhmdiff.evaluate.run_rhm`) in its own
subdirectory ``m{m}_P{P}_seed{seed}``; finished points (with a results.json) are skipped on
rerun and unfinished ones resume from their checkpoints. Points whose P + val + test exceed
the grammar's number of sequences are skipped and listed. Writes ``sweep.json`` and
``sweep.png``.
"""
from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
from absl import logging

from rhmdiff import evaluate, rhm
from rhmdiff._util import write_json
from rhmdiff.analysis import figures
from rhmdiff.analysis.sample_complexity import fit_power_law, p_star


def point_config(config, m: int, P: int, seed: int) -> ml_collections.ConfigDict:
    """The ``rhm`` config of one grid point (the sweep's config with m, P and seed set)."""
    c = ml_collections.ConfigDict(config.to_dict())
    c.task = "rhm"
    c.rhm.m = m
    c.data.train_size = P
    c.seed = seed
    return c


def run(config, workdir: str) -> dict:
    sw = config.sweep
    os.makedirs(workdir, exist_ok=True)
    points, skipped = [], []
    for m in sw.m_values:
        size = rhm.language_size(config.rhm.v, m, config.rhm.s, config.rhm.L)
        for P in sw.train_sizes:
            for seed in sw.seeds:
                name = f"m{m}_P{P}_seed{seed}"
                if P + config.data.val_size + config.data.test_size > size:
                    skipped.append(name)
                    continue
                subdir = os.path.join(workdir, name)
                path = os.path.join(subdir, "results.json")
                if os.path.exists(path):
                    with open(path) as f:
                        res = json.load(f)
                    logging.info("%s: done before, skipped", name)
                else:
                    logging.info("%s: training", name)
                    res = evaluate.run_rhm(point_config(config, m, P, seed), subdir)
                points.append({"m": m, "P": P, "seed": seed, **{k: res[k] for k in (
                    "accuracy", "novel_accuracy", "memorized_fraction", "novel_valid_fraction", "val_loss",
                    "best_step", "steps") if k in res}})
    summary = []
    for m in sw.m_values:
        Ps = sorted({p["P"] for p in points if p["m"] == m})
        if len(Ps) < 2:
            continue
        top = [np.mean([p[sw.metric][-1] for p in points if (p["m"], p["P"]) == (m, P)]) for P in Ps]
        summary.append({"m": m, "train_sizes": Ps, "A_L": top, "p_star": p_star(Ps, top, sw.threshold)})
    results = {"task": "sweep", "L": config.rhm.L, "v": config.rhm.v, "s": config.rhm.s, "threshold": sw.threshold,
               "metric": sw.metric,
               "points": points, "skipped": skipped, "p_star": summary, "config": config.to_dict()}
    finite = [row for row in summary if np.isfinite(row["p_star"])]
    if len(finite) >= 2:
        results["exponent"], results["prefactor"] = fit_power_law([r["m"] for r in finite],
                                                                   [r["p_star"] for r in finite])
    write_json(os.path.join(workdir, "sweep.json"), results)
    figures.plot_sweep(results, os.path.join(workdir, "sweep.png"))
    for row in summary:
        print(f"m={row['m']}: A_L(P) = {np.round(row['A_L'], 3).tolist()} at P = {row['train_sizes']}, "
              f"P* = {row['p_star']:.4g}")
    if "exponent" in results:
        print(f"P* vs m exponent {results['exponent']:.2f} (theory L + 1 = {config.rhm.L + 1})")
    return results
