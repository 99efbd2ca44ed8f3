"""The ``rhm`` task (paper Sec. 3): train the U-Net D3PM on an RHM, generate, measure.

Offline (``data.train_size`` distinct sequences, epochs, early stopping on the validation
bound) or online (fresh samples at every step); then, with the best parameters, generate
``eval.num_generated`` sequences and measure A_1..A_L (both definitions), the fraction of
copies of training points, of valid and of valid novel sequences, and the test variational
bound next to the BP oracle's. Writes ``results.json`` and ``generated.npy``.
"""
from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.tree_util import Partial

from rhmdiff import config_check as check
from rhmdiff import evaluate, rhm, train
from rhmdiff import workdir as workdir_lib
from rhmdiff._util import log_softmax, num_params
from rhmdiff.data import rhm_data
from rhmdiff.diffusion import d3pm
from rhmdiff.files import write_json, write_npy
from rhmdiff.models import unet

MUTABLE = ("eval.num_generated", "eval.batch_size")


def grammar_from_config(config) -> rhm.Grammar:
    c = config.rhm
    return rhm.make_grammar(jax.random.PRNGKey(c.seed), c.v, c.m, c.s, c.L)


def schedule_from_config(config) -> d3pm.Schedule:
    c = config.diffusion
    return d3pm.make_schedule(c.schedule, c.T, c.beta_min, c.beta_max)


def model_from_config(config, g: rhm.Grammar):
    """``config.model.variant``: ``"rhmdiff"`` (:class:`rhmdiff.models.unet.UNet`, sum skips,
    time embedding; ``model.time_conditioning``) or ``"reference"`` (the authors' network,
    :class:`rhmdiff.models.unet.ReferenceUNet`: concatenated skips, LayerNorm, the
    standardized prior probabilities as its time conditioning)."""
    if config.model.variant == "reference":
        alpha_bars = (1.0,) + tuple(float(a) for a in np.asarray(schedule_from_config(config).alpha_bars))
        return unet.ReferenceUNet(v=g.v, s=g.s, L=g.L, width=config.model.width, alpha_bars=alpha_bars)
    return unet.UNet(v=g.v, s=g.s, L=g.L, width=config.model.width, T=config.diffusion.T,
                     time_conditioning=config.model.time_conditioning)


def validate_training(config) -> None:
    """The fields of RHM training (the ``rhm`` task and the tasks that train ``rhm`` runs)."""
    check.optimizer(config)
    check.integer(config, "train.num_steps", 1)
    check.integer(config, "model.width", 1)
    check.choice(config, "model.variant", unet.VARIANTS)
    check.choice(config, "model.time_conditioning", ("embedding", "none"))
    check.choice(config, "diffusion.objective", d3pm.OBJECTIVES)
    check.real(config, "diffusion.hybrid_coeff", 0.0, float("inf"), low_open=False)
    if check.integer(config, "data.val_size", 0) < 1:
        raise check.ConfigError("data.val_size", "must be >= 1: early stopping needs a validation set")
    online = check.flag(config, "data.online")
    batch_size, train_size = config.train.batch_size, check.get(config, "data.train_size")
    if not online and batch_size > train_size:
        raise check.ConfigError("train.batch_size", f"must be <= data.train_size = {train_size} "
                                f"(offline training), got {batch_size}")


def validate_generation(config) -> None:
    """The fields that the ``rhm`` and ``oracle`` tasks share: grammar, diffusion, generation."""
    check.seed(config)
    check.grammar(config)
    check.d3pm_diffusion(config)
    check.integer(config, "eval.num_generated", 1)
    check.integer(config, "eval.batch_size", 1)


def validate(config) -> None:
    validate_generation(config)
    validate_training(config)


def rhm_loss_fn(model, schedule: d3pm.Schedule, v: int, hybrid_coeff: float, objective: str = "hybrid"):
    """``loss_fn(params, x0, keys)`` for :func:`rhmdiff.train.fit`: the D3PM objective of
    :func:`rhmdiff.diffusion.d3pm.loss_terms` (``"hybrid"`` or ``"vb"``) with one key per
    sequence (its t and noise)."""

    def loss_fn(params, x0, keys):
        t, x_t = jax.vmap(lambda k, x: d3pm.noise(k, schedule, x, v))(keys, x0)
        return d3pm.loss_terms(schedule, x0, x_t, t, model.apply(params, x_t, t), v, hybrid_coeff, objective)

    return loss_fn


def make_val_loss(key, model, schedule: d3pm.Schedule, val_x, v: int, batch_size: int):
    """``params -> {"val_loss", "val_ce_nats"}``: the variational bound (bits per token,
    Monte-Carlo over t) on the validation set with fixed noise, spread over all devices
    (:func:`rhmdiff.evaluate.map_examples`). The steps t are stratified
    (``t = 1 + floor(T (i + 1/2) / N)`` over a fixed shuffle of the N sequences), so
    evaluations differ only through the parameters and the estimate has low variance."""
    n = len(val_x)
    k_perm, k_noise = jax.random.split(key)
    t_all = 1 + (schedule.T * (2 * np.arange(n) + 1)) // (2 * n)
    t_all = np.asarray(jax.random.permutation(k_perm, t_all), np.int32)
    keys = np.asarray(train.example_keys(k_noise, 0, 0, n))

    def per_sequence(params, x0, t, keys):
        """The bound's one-step estimate and the cross-entropy of each sequence (nats per token)."""
        x_t = jax.vmap(lambda k, x, tt: d3pm.q_sample(k, schedule, x, tt, v))(keys, x0, t)
        logits = model.apply(params, x_t, t)
        vb = schedule.T * d3pm.vb_terms(schedule, x0, x_t, t, logits, v).mean(-1) + d3pm.prior_kl(
            schedule, x0, v).mean(-1)
        ce = -jnp.take_along_axis(log_softmax(logits, -1), x0[..., None], -1)[..., 0].mean(-1)
        return vb, ce

    def val_loss(params):
        vb, ce = evaluate.map_examples(per_sequence, np.asarray(val_x), t_all, keys, shared=params,
                                       batch_size=batch_size)
        return {"val_loss": float(np.mean(vb, dtype=np.float64)) / math.log(2),
                "val_ce_nats": float(np.mean(ce, dtype=np.float64))}

    return val_loss


def splits_from_config(config, g: rhm.Grammar) -> dict:
    """The run's disjoint train / validation / test splits (:func:`rhm_data.make_splits`)."""
    k_data = jax.random.split(jax.random.PRNGKey(config.seed), 7)[0]
    return rhm_data.make_splits(k_data, g, 0 if config.data.online else config.data.train_size,
                                config.data.val_size, config.data.test_size)


def setup(config) -> dict:
    """Everything the task derives from its config: grammar ``g``, ``schedule``, ``model``,
    data ``splits``, the PRNG ``keys`` of generation and evaluation, and ``fit_kwargs`` for
    :func:`rhmdiff.train.fit` (init_params, loss_fn, batches, validate, lr_scale)."""
    g, schedule = grammar_from_config(config), schedule_from_config(config)
    model = model_from_config(config, g)
    _, k_init, k_batches, k_val, k_gen, k_vb, k_rand = jax.random.split(jax.random.PRNGKey(config.seed), 7)
    splits = splits_from_config(config, g)
    train_x = np.asarray(splits["train"][0])
    if config.data.online:
        held_out = np.concatenate([np.asarray(splits["val"][0]), np.asarray(splits["test"][0])])
        batches = lambda start, num, rows: rhm_data.online_batches(
            k_batches, g, config.train.batch_size, start, num, exclude=held_out)[:, rows]
    else:
        batches = lambda start, num, rows: rhm_data.offline_batches(
            k_batches, train_x, config.train.batch_size, start, num)[:, rows]
    init_params = lambda: model.init(k_init, jnp.zeros((1, g.d), jnp.int32), jnp.ones((1,), jnp.int32))
    fit_kwargs = dict(
        init_params=init_params, batches=batches,
        loss_fn=rhm_loss_fn(model, schedule, g.v, config.diffusion.hybrid_coeff, config.diffusion.objective),
        validate=make_val_loss(k_val, model, schedule, np.asarray(splits["val"][0]), g.v, config.eval.batch_size),
        lr_scale=unet.mup_lr_scale(config.model.width) if config.train.optimizer == "sgd" else 1.0)
    return dict(g=g, schedule=schedule, model=model, splits=splits, train_x=train_x, fit_kwargs=fit_kwargs,
                keys=dict(generate=k_gen, vb=k_vb, random=k_rand))


def run(config, workdir, stop_at: int | None = None) -> dict | None:
    """Train, generate, measure (module docstring); ``stop_at`` interrupts training after
    that step (as a preemption would) and returns None."""
    s = setup(config)
    g, schedule, model, splits, train_x = (s[k] for k in ("g", "schedule", "model", "splits", "train_x"))
    n_params = num_params(jax.eval_shape(s["fit_kwargs"]["init_params"]))
    logging.info("U-Net width %d: %d parameters", config.model.width, n_params)
    fitted = train.fit_until_done(config, workdir, stop_at, **s["fit_kwargs"])
    if fitted is None:
        return None
    seconds = {"training": fitted["seconds"]}

    t0 = time.perf_counter()
    x = evaluate.generate(s["keys"]["generate"], model, fitted["params"], schedule, config.eval.num_generated,
                          g.d, g.v, config.eval.batch_size)
    seconds["generation"] = time.perf_counter() - t0
    random_x = jax.random.randint(s["keys"]["random"], x.shape, 0, g.v)

    test_x = np.asarray(splits["test"][0])
    vb = {}
    if len(test_x):
        t0 = time.perf_counter()
        for name, logits_fn in (("test_vb_bits", Partial(model.apply, fitted["params"])),
                                ("oracle_vb_bits", evaluate.oracle_logits_fn(g, schedule))):
            bound = evaluate.nll_bound(s["keys"]["vb"], logits_fn, schedule, test_x, g.v, config.eval.batch_size)
            vb[name] = float(np.mean(bound, dtype=np.float64)) / math.log(2)
        seconds["vb_bounds"] = time.perf_counter() - t0

    results = {
        "task": "rhm",
        **evaluate.generation_metrics(g, x, train_x),
        "random_accuracy": [float(a) for a in rhm.level_accuracy(g, random_x)],
        "train_size": None if config.data.online else int(len(train_x)),
        "online": bool(config.data.online),
        "steps": fitted["steps"],
        "best_step": fitted["best_step"],
        "stopped_early": fitted["stopped_early"],
        "skipped_updates": fitted["skipped_updates"],
        "val_loss": fitted["best_val_loss"],
        "val_loss_units": "variational bound, bits per token",
        **vb,
        "entropy_bits_per_token": math.log2(rhm.num_sequences(g)) / g.d,
        "num_params": n_params,
        "seconds": seconds,
        **workdir_lib.provenance(config),
    }
    if jax.process_index() == 0:
        write_npy(workdir / "generated.npy", x)
        write_json(workdir / "results.json", results)
        print(summary(results))
    return results


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
