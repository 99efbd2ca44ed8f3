"""The ``rhm`` task (paper Sec. 3): train the U-Net D3PM on an RHM, generate, measure.

Offline (``data.train_size`` distinct sequences, epochs, early stopping on the validation
bound) or online (fresh samples at every step); then, with the best parameters, generate
``eval.num_generated`` sequences and measure A_1..A_L (both definitions), the fraction of
copies of training points (next to what a perfect sampler would copy), of valid and of valid
novel sequences, and the test variational bound next to the BP oracle's. With
``eval.stage_generated`` > 0, also A_l of that many sequences generated at every step of
``train.keep_steps`` (paper Fig. 1b: the levels against training time). Writes
``results.json`` (and ``results.png`` with the stages) and ``generated.npy``.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.tree_util import Partial

from rhmdiff import config_check as check
from rhmdiff import evaluate, from_config, rhm, theory, train
from rhmdiff._util import example_keys, log_softmax, num_params
from rhmdiff.analysis import figures
from rhmdiff.checkpoints import Checkpoints
from rhmdiff.data import rhm_data
from rhmdiff.diffusion import d3pm
from rhmdiff.files import write_npy
from rhmdiff.models import unet
from rhmdiff.tasks import finish

MUTABLE = ("eval.num_generated", "eval.batch_size", "eval.stage_generated")
OUTPUTS = (*train.OUTPUTS, "results.json", "results.png", "generated.npy")


def validate(config) -> None:
    check.generation(config)
    check.rhm_training(config)
    check.integer(config, "eval.stage_generated", 0)
    check.integer(config, "eval.val_draws", 1)


def rhm_loss_fn(model, schedule: d3pm.Schedule, v: int, hybrid_coeff: float, objective: str = "hybrid"):
    """``loss_fn(params, x0, keys)`` for :func:`rhmdiff.train.fit`: the D3PM objective of
    :func:`rhmdiff.diffusion.d3pm.loss_terms` (``"hybrid"`` or ``"vb"``) with one key per
    sequence (its t and noise)."""

    def loss_fn(params, x0, keys):
        t, x_t = jax.vmap(lambda k, x: d3pm.noise(k, schedule, x, v))(keys, x0)
        return d3pm.loss_terms(schedule, x0, x_t, t, model.apply(params, x_t, t), v, hybrid_coeff, objective)

    return loss_fn


def make_val_loss(key, model, schedule: d3pm.Schedule, val_x, v: int, batch_size: int, draws: int = 1):
    """``params -> {"val_loss", "val_ce_nats"}``: the variational bound (bits per token,
    Monte-Carlo over t) on the validation set with fixed noise, spread over all devices
    (:func:`rhmdiff.evaluate.map_examples`). Each sequence is noised ``draws`` times; the N x
    draws steps t are stratified (``t = 1 + floor(T (i + 1/2) / (N draws))`` over a fixed
    shuffle), so evaluations differ only through the parameters, and the estimate's noise
    (one draw: ~0.2 bits per token at N = 256, measured in the docs) falls as 1/sqrt(N draws)."""
    n = len(val_x) * draws
    k_perm, k_noise = jax.random.split(key)
    t_all = 1 + (schedule.T * (2 * np.arange(n) + 1)) // (2 * n)
    t_all = np.asarray(jax.random.permutation(k_perm, t_all), np.int32).reshape(len(val_x), draws)
    keys = np.asarray(example_keys(jax.random.fold_in(k_noise, 0), n)).reshape(len(val_x), draws, -1)

    def per_sequence(params, x0, t, keys):
        """The bound's estimate and the cross-entropy of each sequence (nats per token), each
        the mean over its draws."""
        x0, t, keys = jnp.repeat(x0, draws, axis=0), t.reshape(-1), keys.reshape((-1,) + keys.shape[2:])
        x_t = jax.vmap(lambda k, x, tt: d3pm.q_sample(k, schedule, x, tt, v))(keys, x0, t)
        logits = model.apply(params, x_t, t)
        vb = schedule.T * d3pm.vb_terms(schedule, x0, x_t, t, logits, v).mean(-1) + d3pm.prior_kl(
            schedule, x0, v).mean(-1)
        ce = -jnp.take_along_axis(log_softmax(logits, -1), x0[..., None], -1)[..., 0].mean(-1)
        return vb.reshape(-1, draws).mean(-1), ce.reshape(-1, draws).mean(-1)

    def val_loss(params):
        vb, ce = evaluate.map_examples(per_sequence, np.asarray(val_x), t_all, keys, shared=params,
                                       batch_size=max(1, batch_size // draws))
        return {"val_loss": float(np.mean(vb, dtype=np.float64)) / math.log(2),
                "val_ce_nats": float(np.mean(ce, dtype=np.float64))}

    return val_loss


@dataclasses.dataclass
class Setup:
    """Everything the task derives from its config: the grammar ``g``, the diffusion
    ``schedule``, the ``model``, the data ``splits``, the PRNG keys of generation, of the test
    bounds and of the random baseline, and the keyword arguments of :func:`rhmdiff.train.fit`."""
    g: rhm.Grammar
    schedule: d3pm.Schedule
    model: Any
    splits: dict
    fit_kwargs: dict
    generate_key: jax.Array
    vb_key: jax.Array
    random_key: jax.Array

    @property
    def train_x(self) -> np.ndarray:
        return np.asarray(self.splits["train"][0])


def setup(config) -> Setup:
    g, schedule = from_config.grammar(config), from_config.d3pm_schedule(config)
    model = from_config.unet_model(config, g)
    _, k_init, k_batches, k_val, k_gen, k_vb, k_rand = from_config.rhm_keys(config)
    splits = from_config.splits(config, g)
    train_x = np.asarray(splits["train"][0])
    if config.data.online:
        held_out = np.concatenate([np.asarray(splits["val"][0]), np.asarray(splits["test"][0])])
        batches = lambda start, num, rows: rhm_data.online_batches(
            k_batches, g, config.train.batch_size, start, num, exclude=held_out)[:, rows]
    else:
        batches = lambda start, num, rows: rhm_data.offline_batches(
            k_batches, train_x, config.train.batch_size, start, num)[:, rows]
    fit_kwargs = dict(
        init_params=lambda: unet.init_params(model, k_init, g.d), batches=batches,
        loss_fn=rhm_loss_fn(model, schedule, g.v, config.diffusion.hybrid_coeff, config.diffusion.objective),
        validate=make_val_loss(k_val, model, schedule, np.asarray(splits["val"][0]), g.v, config.eval.batch_size,
                               config.eval.val_draws),
        lr_scale=unet.mup_lr_scale(config.model.width) if config.train.optimizer == "sgd" else 1.0)
    return Setup(g, schedule, model, splits, fit_kwargs, k_gen, k_vb, k_rand)


def run(config, workdir, stop_at: int | None = None) -> dict | None:
    """Train, generate, measure (module docstring); ``stop_at`` interrupts training after
    that step (as a preemption would) and returns None."""
    prep = setup(config)
    g, model = prep.g, prep.model
    n_params = num_params(jax.eval_shape(prep.fit_kwargs["init_params"]))
    logging.info("U-Net width %d: %d parameters", config.model.width, n_params)
    fitted = train.fit(config, workdir, stop_at=stop_at, **prep.fit_kwargs)
    if not fitted.done:
        return None
    seconds = {"training": fitted.seconds}

    t0 = time.perf_counter()
    x = evaluate.generate(prep.generate_key, model, fitted.params, prep.schedule, config.eval.num_generated, g.d, g.v,
                          config.eval.batch_size)
    seconds["generation"] = time.perf_counter() - t0
    random_x = jax.random.randint(prep.random_key, x.shape, 0, g.v)

    test_x = np.asarray(prep.splits["test"][0])
    vb = {}
    if len(test_x):
        t0 = time.perf_counter()
        for name, logits_fn in (("test_vb_bits", Partial(model.apply, fitted.params)),
                                ("oracle_vb_bits", evaluate.oracle_logits_fn(g, prep.schedule))):
            bound = evaluate.nll_bound(prep.vb_key, logits_fn, prep.schedule, test_x, g.v, config.eval.batch_size)
            vb[name] = float(np.mean(bound, dtype=np.float64)) / math.log(2)
        seconds["vb_bounds"] = time.perf_counter() - t0

    results = {
        "task": "rhm",
        **evaluate.generation_metrics(g, x, prep.train_x),
        "random_accuracy": [float(a) for a in rhm.level_accuracy(g, random_x)],
        "train_size": None if config.data.online else int(len(prep.train_x)),
        "online": bool(config.data.online),
        "steps": fitted.steps,
        "best_step": fitted.best_step,
        "stopped_early": fitted.stopped_early,
        "skipped_updates": fitted.skipped_updates,
        "val_loss": fitted.best_val_loss,
        "val_loss_units": "variational bound, bits per token",
        **vb,
        "entropy_bits_per_token": math.log2(rhm.num_sequences(g)) / g.d,
        "num_params": n_params,
        "seconds": seconds,
    }
    if config.eval.stage_generated:
        t0 = time.perf_counter()
        results["stages"] = stage_metrics(config, workdir, prep)
        results["P_l"] = theory.sample_complexities(g.v, g.m, g.s, g.L)
        seconds["stages"] = time.perf_counter() - t0
    if jax.process_index() == 0:
        write_npy(workdir / "generated.npy", x)
    plot = figures.plot_stages if results.get("stages") else None
    return finish(config, workdir, results, plot=plot, summary=summary(results))


def stage_metrics(config, workdir, prep: Setup) -> list[dict]:
    """At every step kept by ``train.keep_steps``: A_l of ``eval.stage_generated`` sequences
    generated with the parameters of that step, each with its binomial standard error
    ``sqrt(A (1 - A) / N)``, and the number of training sequences seen so far (steps x batch;
    all fresh when ``data.online``)."""
    g, n = prep.g, config.eval.stage_generated
    ckpt = Checkpoints(workdir)
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, jax.eval_shape(prep.fit_kwargs["init_params"]))
    rows = []
    for step in ckpt.stage_steps():
        x = evaluate.generate(jax.random.fold_in(prep.generate_key, step), prep.model, ckpt.restore_stage(step, abstract),
                              prep.schedule, n, g.d, g.v, config.eval.batch_size)
        acc = np.asarray(rhm.level_accuracy(g, x), np.float64)
        rows.append({"step": step, "samples_seen": step * config.train.batch_size, "num_generated": n,
                     "accuracy": acc.tolist(), "accuracy_se": np.sqrt(acc * (1 - acc) / n).tolist(),
                     "memorized_fraction": float(evaluate.copies_of(x, prep.train_x).mean())})
        logging.info("stage %d: A_l = %s", step, np.round(acc, 3).tolist())
    ckpt.close()
    return rows


def summary(results: dict) -> str:
    """Human-readable lines of a ``rhm`` results dict."""
    acc = " ".join(f"A_{l + 1}={a:.3f}" for l, a in enumerate(results["accuracy"]))
    lines = [f"accuracy of {results['num_generated']} generated sequences: {acc}",
             f"copies of training points: {results['memorized_fraction']:.3f}, valid and novel: "
             f"{results['novel_valid_fraction']:.3f}",
             f"best step {results['best_step']} of {results['steps']}, val VB {results['val_loss']:.4f} bits/token"]
    if "test_vb_bits" in results:
        lines.append(f"test VB {results['test_vb_bits']:.4f} bits/token (BP oracle {results['oracle_vb_bits']:.4f}, "
                     f"entropy {results['entropy_bits_per_token']:.4f})")
    return "\n".join(lines)
