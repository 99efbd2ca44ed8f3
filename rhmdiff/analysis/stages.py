"""Samples of every kept training stage, for the per-stage analyses (Fig. 4, Fig. 5).

A run with ``train.keep_steps`` keeps the (EMA) parameters of those steps in
``<run_dir>/stages``; the analyses generate samples from each once and read them back on
reruns, so an interrupted analysis resumes where it stopped.
"""
from __future__ import annotations

import json
import os
from typing import Callable

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from rhmdiff import train


def run_config(run_dir: str, field: str, task: str) -> ml_collections.ConfigDict:
    """The config a ``task`` run stored in ``run_dir/config.json``; ``field`` names the
    flag or config field that pointed there, for the error message."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{field}: {run_dir} holds no config.json of a {task} run")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def stage_samples(run_dir: str, out_dir: str, abstract_params, generate: Callable, save: Callable,
                  field: str) -> dict:
    """``{step: samples}`` for every stage kept in ``run_dir/stages``: read back from
    ``out_dir/stage_<step>/samples.npy`` when present, else ``generate(step, params)`` with the
    stage's parameters (shapes from ``abstract_params``) and ``save(stage_dir, samples)`` on
    process 0, which must write ``samples.npy`` there."""
    ckpt = train.Checkpoints(run_dir)
    steps = ckpt.stage_steps()
    if not steps:
        ckpt.close()
        raise FileNotFoundError(f"{field}: {run_dir}/stages holds no kept parameters yet")
    target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract_params)
    out = {}
    for step in steps:
        stage_dir = os.path.join(out_dir, f"stage_{step:09d}")
        path = os.path.join(stage_dir, "samples.npy")
        if os.path.exists(path):
            out[step] = np.load(path)
            continue
        logging.info("stage %d: generating samples", step)
        out[step] = generate(step, ckpt.restore_stage(step, target))
        if jax.process_index() == 0:
            os.makedirs(stage_dir, exist_ok=True)
            save(stage_dir, out[step])
    ckpt.close()
    return out
