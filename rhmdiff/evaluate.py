"""Generation and its metrics; the ``oracle`` task (BP-oracle D3PM sampler)."""
from __future__ import annotations

import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from rhmdiff import rhm
from rhmdiff._util import write_json
from rhmdiff.data.rhm_data import make_splits
from rhmdiff.diffusion import d3pm


def grammar_from_config(config) -> rhm.Grammar:
    c = config.rhm
    return rhm.make_grammar(jax.random.PRNGKey(c.seed), c.v, c.m, c.s, c.L)


def schedule_from_config(config) -> d3pm.Schedule:
    c = config.diffusion
    return d3pm.make_schedule(c.schedule, c.T, c.beta_min, c.beta_max)


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
        denoise = d3pm.oracle_denoiser(g, schedule)
        logits_fn = lambda x_t, t: jnp.log(denoise(x_t, t))
        t0 = time.perf_counter()
        bound = d3pm.nll_bound(key_vb, logits_fn, schedule, test, g.v, progress=True)
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
