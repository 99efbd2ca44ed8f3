"""Generation and metrics that several tasks share (no task runs here).

* :func:`map_examples`: any per-example computation (sampling, bounds, validation losses,
  features) spread over every device of every process; the result does not depend on the
  number of devices, because every example draws its randomness from its own key;
* :func:`generate`, :func:`nll_bound`: D3PM sequences and variational bounds of a denoiser
  (the trained U-Net or the BP oracle, :func:`oracle_logits_fn`); :func:`md4_samples` and
  :func:`image_samples`: MD4 text and Improved-DDPM images;
* :func:`generation_metrics`: A_l (per sequence and per position), copies of training points,
  valid and valid-novel fractions (paper Sec. 3.2: memorization and creativity);
* :func:`stage_samples`: samples of every training stage a run kept (Fig. 4, Fig. 5).
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from jax.tree_util import Partial

from rhmdiff import rhm
from rhmdiff.checkpoints import Checkpoints
from rhmdiff._util import example_keys, progress, softmax
from rhmdiff.data import images
from rhmdiff.diffusion import d3pm, gaussian, md4
from rhmdiff.files import as_path, read_npy


def map_examples(fn, *inputs, shared=None, batch_size: int, desc: str | None = None, pmapped: bool = False):
    """``fn(shared, *batch) -> outputs`` applied to all N examples of ``inputs`` (arrays with a
    leading axis N; ``fn`` must treat examples independently) on every device of every
    process: call c gives device g of the G global devices the examples
    ``c G b + g b .. + b - 1`` (``b = min(batch_size, ceil(N / G))``; the last call is padded
    and the padding dropped). ``shared`` (e.g. network parameters) is sent to every device.
    ``pmapped``: ``fn`` takes the local devices' batches stacked (``[local devices, b, ...]``)
    and spreads them itself (e.g. a host loop of pmapped steps); otherwise it is pmapped here.
    Returns the outputs of all N examples, as numpy arrays, on every process."""
    n = len(inputs[0])
    local, procs = jax.local_device_count(), jax.process_count()
    per_device = max(1, min(batch_size, -(-n // (local * procs))))
    per_call = per_device * local * procs
    pfn = fn if pmapped else jax.pmap(fn, in_axes=(None,) + (0,) * len(inputs))
    host_inputs = [np.asarray(a) for a in inputs]
    outs = []
    for c in progress(range(-(-n // per_call)), desc=desc, leave=False, disable=desc is None):
        first = c * per_call + jax.process_index() * local * per_device
        idx = np.minimum(first + np.arange(local * per_device), n - 1).reshape(local, per_device)
        out = jax.tree_util.tree_map(lambda a: np.asarray(a).reshape((-1,) + a.shape[2:]),
                                     jax.device_get(pfn(shared, *[a[idx] for a in host_inputs])))
        if procs > 1:
            out = jax.tree_util.tree_map(np.asarray, multihost_utils.process_allgather(out, tiled=True))
        outs.append(out)
    return jax.tree_util.tree_map(lambda *parts: np.concatenate(parts)[:n], *outs)


def oracle_logits_fn(g: rhm.Grammar, schedule: d3pm.Schedule):
    """``(x_t, t) -> log p(x_0 | x_t)`` of the BP oracle, for :func:`d3pm.nll_bound`."""
    return Partial(_log_oracle, d3pm.oracle_denoiser(g, schedule))


def _log_oracle(denoise, x_t, t):
    return jnp.log(denoise(x_t, t))


def probabilities(apply, params):
    """The denoiser ``(x_t, t) -> p(x_0 | x_t)`` of a network's ``apply`` and ``params``, as
    a ``Partial`` whose parameters are traced arguments."""
    return Partial(functools.partial(_softmax_of, apply), params)


def _softmax_of(apply, params, x_t, t):
    return softmax(apply(params, x_t, t), -1)


def generate(key, model, params, schedule: d3pm.Schedule, num: int, d: int, v: int, batch_size: int) -> np.ndarray:
    """``num`` sequences from the trained D3PM (ancestral sampler; sequence i from the key
    ``fold_in(key, i)``), spread over all devices: int32 ``[num, d]``."""
    fn = lambda p, keys: d3pm.sample_each(keys, probabilities(model.apply, p), schedule, d, v)
    return map_examples(fn, example_keys(key, num), shared=params, batch_size=batch_size,
                        desc="generating")


def nll_bound(key, logits_fn, schedule: d3pm.Schedule, x0, v: int, batch_size: int) -> np.ndarray:
    """:func:`rhmdiff.diffusion.d3pm.nll_bound` (nats per token of each sequence), spread over
    all devices; ``logits_fn`` a ``Partial`` (e.g. of the network's parameters)."""
    fn = lambda f, keys, x: d3pm.nll_bound_each(keys, f, schedule, x, v)
    return map_examples(fn, example_keys(key, len(x0)), np.asarray(x0), shared=logits_fn,
                        batch_size=batch_size, desc="variational bound")


def md4_samples(key, model, params, schedule: md4.MaskingSchedule, num: int, seq_len: int, vocab_size: int,
                batch_size: int, steps: int, top_p: float | None, grid: str) -> np.ndarray:
    """``int32[num, seq_len]`` sequences from MD4's ancestral sampler (sequence i from
    ``fold_in(key, i)``), spread over all devices."""
    fn = lambda p, keys: md4.sample_each(keys, Partial(model.apply, p), schedule, seq_len, vocab_size, T=steps,
                                         top_p=top_p, grid=grid)
    return map_examples(fn, example_keys(key, num), shared=params, batch_size=batch_size, desc="MD4 samples")


def image_samples(key, model, params, schedule: gaussian.GaussianSchedule, num: int, size: int, batch_size: int,
                  steps: int) -> np.ndarray:
    """``uint8[num, size, size, 3]`` images from the Gaussian ancestral sampler over ``steps``
    respaced steps (image i from ``fold_in(key, i)``), spread over all devices."""
    respaced = gaussian.respace(schedule, steps)
    fn = lambda p, keys: images.to_uint8(gaussian.sample_each(keys, Partial(model.apply, p), respaced,
                                                              (size, size, 3), step_map=jax.pmap))
    return map_examples(fn, example_keys(key, num), shared=params, batch_size=batch_size, desc="DDPM samples",
                        pmapped=True)


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
    (A_l of the sequences that are not copies; NaN if all are), ``memorized_fraction`` next to
    ``copy_null`` (the fraction a sampler of the exact distribution would copy: the RHM is
    uniform over its language, so P / number of sequences), ``valid_fraction`` and
    ``novel_valid_fraction`` (valid and not a copy: creativity)."""
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
        "copy_null": len(train_x) / rhm.num_sequences(g),
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
    ckpt = Checkpoints(run_dir)
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
