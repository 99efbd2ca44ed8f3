"""The ``sweep`` task: train the D3PM U-Net over a grid of P (and m, seeds), collect A_l(P)
(paper Fig. 1a and its inset) and the sample complexity P* vs m (Fig. 2): the P where
``sweep.metric``'s A_L (``accuracy``: all generated sequences; ``novel_accuracy``: those
that are not copies of training points, so memorization does not count) crosses
``sweep.threshold``.

Every grid point is one ordinary ``rhm`` run (:mod:`rhmdiff.tasks.rhm`) in its own
workdir ``m{m}_P{P}_seed{seed}``: finished points are skipped on rerun, unfinished ones
resume from their checkpoints, and a point whose evaluation settings changed re-runs only
its evaluation. The grid itself, the threshold and the metric may change between reruns
(new points are trained, old ones kept). Points whose P + val + test exceed the grammar's
number of sequences are skipped and listed. Writes ``sweep.json`` and ``sweep.png``.
"""
from __future__ import annotations

import jax
import ml_collections
import numpy as np
from absl import logging

from rhmdiff import config_check as check
from rhmdiff import rhm
from rhmdiff import workdir as workdir_lib
from rhmdiff.analysis import figures
from rhmdiff.analysis.sample_complexity import fit_power_law, p_star
from rhmdiff.files import as_path, read_json, write_json
from rhmdiff.tasks import rhm as rhm_task

MUTABLE = ("sweep.train_sizes", "sweep.m_values", "sweep.seeds", "sweep.threshold", "sweep.metric",
           *rhm_task.MUTABLE)


def validate(config) -> None:
    rhm_task.validate(config)
    v, s, L = (check.get(config, f"rhm.{k}") for k in ("v", "s", "L"))
    for m in check.int_list(config, "sweep.m_values", 1):
        check.grammar_sizes(config, "sweep.m_values", v, m, s, L)
    batch_size = config.train.batch_size
    sizes = check.int_list(config, "sweep.train_sizes", 1)
    for P in sizes:
        if P < batch_size:
            raise check.ConfigError("sweep.train_sizes", f"every P must be >= train.batch_size = {batch_size}, got {P}")
    check.int_list(config, "sweep.seeds", 0)
    check.real(config, "sweep.threshold", 0.0, 1.0, high_open=False)
    check.choice(config, "sweep.metric", ("accuracy", "novel_accuracy"))
    held_out = config.data.val_size + config.data.test_size
    if all(min(sizes) + held_out > rhm.language_size(v, m, s, L) for m in config.sweep.m_values):
        raise check.ConfigError("sweep.train_sizes", f"every P + val_size + test_size exceeds the language of every "
                                f"m in {list(config.sweep.m_values)}: nothing to train")


def point_config(config, m: int, P: int, seed: int) -> ml_collections.ConfigDict:
    """The ``rhm`` config of one grid point (the sweep's config with m, P and seed set)."""
    c = ml_collections.ConfigDict(config.to_dict())
    del c.sweep
    c.task = "rhm"
    c.rhm.m = m
    c.data.train_size = P
    c.seed = seed
    return c


def run_point(config, subdir) -> dict:
    """The results of the ``rhm`` run ``config`` in ``subdir``: read back when it finished with
    exactly this config, else trained (or resumed) and evaluated."""
    path = subdir / "results.json"
    if path.exists():
        res = read_json(path)
        if res.get("config") == workdir_lib.experiment(config):
            logging.info("%s: done before, skipped", subdir.name)
            return res
    logging.info("%s: training", subdir.name)
    with workdir_lib.claim_all(config, subdir, rhm_task.MUTABLE):
        return rhm_task.run(config, subdir)


def run(config, workdir) -> dict:
    sw = config.sweep
    workdir = as_path(workdir)
    points, skipped = [], []
    for m in sw.m_values:
        size = rhm.language_size(config.rhm.v, m, config.rhm.s, config.rhm.L)
        for P in sw.train_sizes:
            for seed in sw.seeds:
                name = f"m{m}_P{P}_seed{seed}"
                if P + config.data.val_size + config.data.test_size > size:
                    skipped.append(name)
                    continue
                res = run_point(point_config(config, m, P, seed), workdir / name)
                points.append({"m": m, "P": P, "seed": seed, **{k: res[k] for k in (
                    "accuracy", "tuple_accuracy", "novel_accuracy", "memorized_fraction", "novel_valid_fraction",
                    "val_loss", "best_step", "steps") if k in res}})
    summary = []
    for m in sw.m_values:
        Ps = sorted({p["P"] for p in points if p["m"] == m})
        if len(Ps) < 2:
            continue
        top = [np.mean([p[sw.metric][-1] for p in points if (p["m"], p["P"]) == (m, P)]) for P in Ps]
        summary.append({"m": m, "train_sizes": Ps, "A_L": top, "p_star": p_star(Ps, top, sw.threshold)})
    results = {"task": "sweep", "L": config.rhm.L, "v": config.rhm.v, "s": config.rhm.s, "threshold": sw.threshold,
               "metric": sw.metric, "points": points, "skipped": skipped, "p_star": summary,
               **workdir_lib.provenance(config)}
    finite = [row for row in summary if np.isfinite(row["p_star"])]
    if len(finite) >= 2:
        results["exponent"], results["prefactor"] = fit_power_law([r["m"] for r in finite],
                                                                   [r["p_star"] for r in finite])
    if jax.process_index() == 0:
        write_json(workdir / "sweep.json", results)
        figures.plot_sweep(results, workdir / "sweep.png")
    for row in summary:
        print(f"m={row['m']}: A_L(P) = {np.round(row['A_L'], 3).tolist()} at P = {row['train_sizes']}, "
              f"P* = {row['p_star']:.4g}")
    if "exponent" in results:
        print(f"P* vs m exponent {results['exponent']:.2f} (theory L + 1 = {config.rhm.L + 1})")
    return results
