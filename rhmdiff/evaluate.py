"""Generation and its metrics: the ``rhm`` task (train the paper's U-Net D3PM, generate,
measure A_l, memorization and creativity, test VB next to the BP oracle's) and the
``oracle`` task (the BP-oracle D3PM sampler)."""
from __future__ import annotations

import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.tree_util import Partial

from rhmdiff import rhm, train
from rhmdiff._util import num_params, write_json, write_npy
from rhmdiff.data import rhm_data
from rhmdiff.data.rhm_data import make_splits
from rhmdiff.diffusion import d3pm
from rhmdiff.models.unet import UNet, mup_lr_scale


def grammar_from_config(config) -> rhm.Grammar:
    c = config.rhm
    return rhm.make_grammar(jax.random.PRNGKey(c.seed), c.v, c.m, c.s, c.L)


def schedule_from_config(config) -> d3pm.Schedule:
    c = config.diffusion
    return d3pm.make_schedule(c.schedule, c.T, c.beta_min, c.beta_max)


def oracle_logits_fn(g: rhm.Grammar, schedule: d3pm.Schedule):
    """``(x_t, t) -> log p(x_0 | x_t)`` of the BP oracle, for :func:`d3pm.nll_bound`."""
    denoise = d3pm.oracle_denoiser(g, schedule)
    return lambda x_t, t: jnp.log(denoise(x_t, t))


def run_oracle(config, workdir: str) -> dict:
    """Sample ``eval.num_generated`` sequences with the exact and the factorized BP-oracle
    samplers, measure A_1..A_L of each, and the oracle's variational bound (bits per token)
    on held-out data next to the data entropy log2(num_sequences)/d. Writes results.json."""
    os.makedirs(workdir, exist_ok=True)
    g, schedule = grammar_from_config(config), schedule_from_config(config)
    key_data, key_exact, key_fact, key_vb = jax.random.split(jax.random.PRNGKey(config.seed), 4)
    num = config.eval.num_generated
    accuracy, seconds = {}, {}
    for name, exact, key in (("exact", True, key_exact), ("factorized", False, key_fact)):
        t0 = time.perf_counter()
        x = jax.block_until_ready(d3pm.oracle_sample(key, g, schedule, num, exact=exact, progress=True))
        seconds[f"{name}_sampler"] = time.perf_counter() - t0
        accuracy[name] = [float(a) for a in rhm.level_accuracy(g, x)]
        logging.info("%s oracle sampler: A_l = %s (%.1f s)", name, np.round(accuracy[name], 4).tolist(),
                     seconds[f"{name}_sampler"])

    test = make_splits(key_data, g, config.data.train_size, config.data.val_size, config.data.test_size)["test"][0]
    entropy = math.log2(rhm.num_sequences(g)) / g.d
    vb_bits = None
    if len(test):
        t0 = time.perf_counter()
        bound = d3pm.nll_bound(key_vb, oracle_logits_fn(g, schedule), schedule, test, g.v, progress=True)
        vb_bits = float(bound.mean()) / math.log(2)
        seconds["vb_bound"] = time.perf_counter() - t0
        logging.info("oracle VB bound %.4f bits/token, entropy %.4f bits/token", vb_bits, entropy)

    results = {
        "task": "oracle",
        "accuracy": accuracy["exact"],
        "factorized_accuracy": accuracy["factorized"],
        "num_generated": num,
        "vb_bits_per_token": vb_bits,
        "entropy_bits_per_token": entropy,
        "num_held_out": int(len(test)),
        "log10_num_sequences": math.log10(rhm.num_sequences(g)),
        "seconds": seconds,
        "config": config.to_dict(),
    }
    write_json(os.path.join(workdir, "results.json"), results)
    return results


def copies_of(generated, train_x) -> np.ndarray:
    """``bool[N]``: whether each generated sequence equals some training sequence."""
    generated, train_x = np.ascontiguousarray(generated), np.ascontiguousarray(train_x, generated.dtype)
    as_bytes = lambda a: a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()
    return np.isin(as_bytes(generated), as_bytes(train_x))


def model_from_config(config, g: rhm.Grammar) -> UNet:
    return UNet(v=g.v, s=g.s, L=g.L, width=config.model.width, T=config.diffusion.T,
                time_conditioning=config.model.time_conditioning)


def rhm_loss_fn(model: UNet, schedule: d3pm.Schedule, v: int, hybrid_coeff: float):
    """``loss_fn(params, x0, keys)`` for :func:`rhmdiff.train.fit`: the D3PM objective of
    :func:`rhmdiff.diffusion.d3pm.loss_terms` with one key per sequence (its t and noise)."""

    def loss_fn(params, x0, keys):
        t, x_t = jax.vmap(lambda k, x: d3pm.noise(k, schedule, x, v))(keys, x0)
        return d3pm.loss_terms(schedule, x0, x_t, t, model.apply(params, x_t, t), v, hybrid_coeff)

    return loss_fn


def make_val_loss(key, model: UNet, schedule: d3pm.Schedule, val_x, v: int, batch_size: int):
    """``params -> {"val_loss", "val_ce_nats"}``: the variational bound (bits per token,
    Monte-Carlo over t) on the validation set with fixed noise. The steps t are stratified
    (``t = 1 + floor(T (i + 1/2) / N)`` over a fixed shuffle of the N sequences), so
    evaluations differ only through the parameters and the estimate has low variance."""
    n = len(val_x)
    if n == 0:
        raise ValueError("data.val_size must be >= 1 for training (early stopping needs a validation set)")
    k_perm, k_noise = jax.random.split(key)
    t_all = 1 + (schedule.T * (2 * np.arange(n) + 1)) // (2 * n)
    t_all = np.asarray(jax.random.permutation(k_perm, t_all), np.int32)

    @jax.jit
    def batch_terms(params, x0, t, keys):
        """Sums over the batch of the per-token VB estimate and CE (nats)."""
        x_t = jax.vmap(lambda k, x, tt: d3pm.q_sample(k, schedule, x, tt, v))(keys, x0, t)
        _, metrics = d3pm.loss_terms(schedule, x0, x_t, t, model.apply(params, x_t, t), v)
        return metrics["vb_nats"] * len(x0), metrics["ce_nats"] * len(x0)

    keys = train.example_keys(k_noise, 0, 0, n)

    def val_loss(params):
        vb = ce = 0.0
        for i in range(0, n, batch_size):
            sl = slice(i, i + batch_size)
            b_vb, b_ce = batch_terms(params, val_x[sl], t_all[sl], keys[sl])
            vb, ce = vb + float(b_vb), ce + float(b_ce)
        return {"val_loss": vb / n / math.log(2), "val_ce_nats": ce / n}

    return val_loss


def generate(key, model: UNet, params, schedule: d3pm.Schedule, num: int, d: int, v: int,
             batch_size: int, progress: bool = True) -> np.ndarray:
    """``num`` sequences from the trained D3PM (ancestral sampler), in batches."""
    denoise = Partial(lambda p, x_t, t: jax.nn.softmax(model.apply(p, x_t, t), -1), params)
    out = [np.asarray(d3pm.sample(jax.random.fold_in(key, i), denoise, schedule,
                                  (min(batch_size, num - i), d), v, progress))
           for i in range(0, num, batch_size)]
    return np.concatenate(out)


def rhm_setup(config) -> dict:
    """Everything the ``rhm`` task derives from its config: grammar ``g``, ``schedule``,
    ``model``, data ``splits``, the PRNG ``keys`` of generation and evaluation, and
    ``fit_kwargs`` for :func:`rhmdiff.train.fit` (params, loss_fn, batches, validate, lr_scale)."""
    g, schedule = grammar_from_config(config), schedule_from_config(config)
    model = model_from_config(config, g)
    k_data, k_init, k_batches, k_val, k_gen, k_vb, k_rand = jax.random.split(jax.random.PRNGKey(config.seed), 7)
    splits = make_splits(k_data, g, 0 if config.data.online else config.data.train_size,
                         config.data.val_size, config.data.test_size)
    train_x = np.asarray(splits["train"][0])
    if config.data.online:
        batches = lambda start, num, rows: rhm_data.online_batches(
            k_batches, g, config.train.batch_size, start, num)[:, rows]
    else:
        batches = lambda start, num, rows: rhm_data.offline_batches(
            k_batches, train_x, config.train.batch_size, start, num)[:, rows]
    params = model.init(k_init, jnp.zeros((1, g.d), jnp.int32), jnp.ones((1,), jnp.int32))
    fit_kwargs = dict(
        params=params, loss_fn=rhm_loss_fn(model, schedule, g.v, config.diffusion.hybrid_coeff), batches=batches,
        validate=make_val_loss(k_val, model, schedule, np.asarray(splits["val"][0]), g.v, config.eval.batch_size),
        lr_scale=mup_lr_scale(config.model.width) if config.train.optimizer == "sgd" else 1.0)
    return dict(g=g, schedule=schedule, model=model, splits=splits, train_x=train_x, fit_kwargs=fit_kwargs,
                keys=dict(generate=k_gen, vb=k_vb, random=k_rand))


def run_rhm(config, workdir: str, stop_at: int | None = None) -> dict | None:
    """Train the U-Net D3PM on an RHM (offline: ``data.train_size`` distinct sequences,
    early stopping on the validation VB; online: fresh samples every step), then with the
    best parameters generate ``eval.num_generated`` sequences and measure A_1..A_L, the
    fraction of copies of training points, the fraction of valid and novel sequences, and
    the test VB next to the BP oracle's on the same test set. Writes results.json and the
    generated sequences (``generated.npy``, int32 [num_generated, d]).
    ``stop_at`` interrupts training after that step (as a preemption would) and returns None."""
    os.makedirs(workdir, exist_ok=True)
    setup = rhm_setup(config)
    g, schedule, model, splits, train_x = (setup[k] for k in ("g", "schedule", "model", "splits", "train_x"))
    k_gen, k_vb, k_rand = (setup["keys"][k] for k in ("generate", "vb", "random"))
    n_params = num_params(setup["fit_kwargs"]["params"])
    logging.info("U-Net width %d: %d parameters", config.model.width, n_params)
    fitted = train.fit_until_done(config, workdir, stop_at, **setup["fit_kwargs"])
    if fitted is None:
        return None
    seconds = {"training": fitted["seconds"]}

    t0 = time.perf_counter()
    x = generate(k_gen, model, fitted["params"], schedule, config.eval.num_generated, g.d, g.v,
                 config.eval.batch_size)
    seconds["generation"] = time.perf_counter() - t0
    if jax.process_index() == 0:
        write_npy(os.path.join(workdir, "generated.npy"), x)
    valid = np.asarray(rhm.is_valid(g, x))
    copies = copies_of(x, train_x) if len(train_x) else np.zeros(len(x), bool)
    random_x = jax.random.randint(k_rand, x.shape, 0, g.v)

    test_x = np.asarray(splits["test"][0])
    vb = {}
    if len(test_x):
        t0 = time.perf_counter()
        for name, logits_fn in (("test_vb_bits", Partial(model.apply, fitted["params"])),
                                ("oracle_vb_bits", oracle_logits_fn(g, schedule))):
            vb[name] = float(d3pm.nll_bound(k_vb, logits_fn, schedule, test_x, g.v, progress=True).mean()) / math.log(2)
        seconds["vb_bounds"] = time.perf_counter() - t0

    results = {
        "task": "rhm",
        "accuracy": [float(a) for a in rhm.level_accuracy(g, x)],
        # A_l of the generated sequences that are not copies of training points (NaN if all are)
        "novel_accuracy": ([float(a) for a in rhm.level_accuracy(g, x[~copies])] if (~copies).any()
                           else [float("nan")] * g.L),
        "num_generated": int(len(x)),
        "memorized_fraction": float(copies.mean()),
        "valid_fraction": float(valid.mean()),
        "novel_valid_fraction": float((valid & ~copies).mean()),
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
        "config": config.to_dict(),
    }
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, "results.json"), results)
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
