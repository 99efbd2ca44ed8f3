"""Generation and metrics that several tasks share (no task runs here).

* :func:`generate`: sequences from a trained D3PM denoiser (the ancestral sampler);
* :func:`oracle_logits_fn`: the BP oracle's ``log p(x_0 | x_t)``, for bounds and comparisons;
* :func:`generation_metrics`: A_l (per sequence and per position), copies of training points,
  valid and valid-novel fractions (paper Sec. 3.2: memorization and creativity);
* :func:`stage_samples`: samples of every training stage a run kept (Fig. 4, Fig. 5).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.tree_util import Partial

from rhmdiff import rhm, train
from rhmdiff.diffusion import d3pm
from rhmdiff.files import as_path, read_npy


def oracle_logits_fn(g: rhm.Grammar, schedule: d3pm.Schedule):
    """``(x_t, t) -> log p(x_0 | x_t)`` of the BP oracle, for :func:`d3pm.nll_bound`."""
    denoise = d3pm.oracle_denoiser(g, schedule)
    return lambda x_t, t: jnp.log(denoise(x_t, t))


def generate(key, model, params, schedule: d3pm.Schedule, num: int, d: int, v: int, batch_size: int,
             progress: bool = True) -> np.ndarray:
    """``num`` sequences from the trained D3PM (ancestral sampler), in batches."""
    denoise = Partial(lambda p, x_t, t: jax.nn.softmax(model.apply(p, x_t, t), -1), params)
    out = [np.asarray(d3pm.sample(jax.random.fold_in(key, i), denoise, schedule,
                                  (min(batch_size, num - i), d), v, progress))
           for i in range(0, num, batch_size)]
    return np.concatenate(out)


def copies_of(generated, train_x) -> np.ndarray:
    """``bool[N]``: whether each generated sequence equals some training sequence."""
    generated = np.ascontiguousarray(generated)
    if len(train_x) == 0:
        return np.zeros(len(generated), bool)
    train_x = np.ascontiguousarray(train_x, generated.dtype)
    as_bytes = lambda a: a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()
    return np.isin(as_bytes(generated), as_bytes(train_x))


def generation_metrics(g: rhm.Grammar, x, train_x) -> dict:
    """Metrics of generated sequences ``x`` of grammar ``g`` trained on ``train_x``:
    ``accuracy`` (A_l, the fraction of sequences whose level-l symbols are all valid),
    ``tuple_accuracy`` (the authors' A_l: valid level-l positions, averaged), ``novel_accuracy``
    (A_l of the sequences that are not copies; NaN if all are), ``memorized_fraction``,
    ``valid_fraction`` and ``novel_valid_fraction`` (valid and not a copy: creativity)."""
    x = np.asarray(x)
    valid = np.asarray(rhm.is_valid(g, x))
    copies = copies_of(x, train_x)
    novel = x[~copies]
    return {
        "accuracy": [float(a) for a in rhm.level_accuracy(g, x)],
        "tuple_accuracy": [float(a) for a in rhm.tuple_accuracy(g, x)],
        "novel_accuracy": ([float(a) for a in rhm.level_accuracy(g, novel)] if len(novel)
                           else [float("nan")] * g.L),
        "num_generated": int(len(x)),
        "memorized_fraction": float(copies.mean()),
        "valid_fraction": float(valid.mean()),
        "novel_valid_fraction": float((valid & ~copies).mean()),
    }


def stage_samples(run_dir, out_dir, abstract_params, generate_fn: Callable, save: Callable, field: str) -> dict:
    """``{step: samples}`` for every stage kept in ``run_dir/stages``: read back from
    ``out_dir/stage_<step>/samples.npy`` when present, else ``generate_fn(step, params)`` with
    the stage's parameters (shapes from ``abstract_params``) and ``save(stage_dir, samples)`` on
    process 0, which must write ``samples.npy`` there. ``field`` names the config field that
    pointed at ``run_dir``, for the error message."""
    run_dir, out_dir = as_path(run_dir), as_path(out_dir)
    ckpt = train.Checkpoints(run_dir)
    steps = ckpt.stage_steps()
    if not steps:
        ckpt.close()
        raise FileNotFoundError(f"{field}: {run_dir}/stages holds no kept parameters yet")
    target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract_params)
    out = {}
    for step in steps:
        stage_dir = out_dir / f"stage_{step:09d}"
        path = stage_dir / "samples.npy"
        if path.exists():
            out[step] = read_npy(path)
            continue
        logging.info("stage %d: generating samples", step)
        out[step] = generate_fn(step, ckpt.restore_stage(step, target))
        if jax.process_index() == 0:
            stage_dir.mkdir(parents=True, exist_ok=True)
            save(stage_dir, out[step])
    ckpt.close()
    return out
