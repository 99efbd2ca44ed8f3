"""The ``oracle`` task: the Bayes-optimal (BP) denoiser as a D3PM sampler on an RHM.

Samples ``eval.num_generated`` sequences with the exact oracle sampler (x_0 ~ p(x_0 | x_t)
drawn jointly by BP, then x_{t-1} ~ q(x_{t-1} | x_t, x_0)) and with the factorized sampler
(per-token marginals, i.e. a perfect D3PM denoiser), measures A_1..A_L of each, and the
oracle's variational bound on ``data.test_size`` held-out sequences next to the data entropy
log2(num_sequences)/d. Writes ``results.json``.
"""
from __future__ import annotations

import math
import time

import jax
import numpy as np
from absl import logging

from rhmdiff._util import example_keys
from rhmdiff import config_check as check
from rhmdiff import evaluate, from_config, rhm
from rhmdiff.data.rhm_data import make_splits
from rhmdiff.diffusion import d3pm
from rhmdiff.tasks import finish

MUTABLE = ("eval.num_generated", "eval.batch_size")
OUTPUTS = ("results.json",)


def validate(config) -> None:
    check.generation(config)


def run(config, workdir) -> dict:
    g, schedule = from_config.grammar(config), from_config.d3pm_schedule(config)
    key_data, key_exact, key_fact, key_vb = jax.random.split(jax.random.PRNGKey(config.seed), 4)
    num = config.eval.num_generated
    accuracy, tuple_accuracy, seconds = {}, {}, {}
    for name, exact, key in (("exact", True, key_exact), ("factorized", False, key_fact)):
        t0 = time.perf_counter()
        x = evaluate.map_examples(lambda _, keys: d3pm.oracle_sample_each(keys, g, schedule, exact),
                                  example_keys(key, num), batch_size=config.eval.batch_size,
                                  desc=f"{name} oracle sampler")
        seconds[f"{name}_sampler"] = time.perf_counter() - t0
        accuracy[name] = [float(a) for a in rhm.level_accuracy(g, x)]
        tuple_accuracy[name] = [float(a) for a in rhm.tuple_accuracy(g, x)]
        logging.info("%s oracle sampler: A_l = %s (%.1f s)", name, np.round(accuracy[name], 4).tolist(),
                     seconds[f"{name}_sampler"])

    test = make_splits(key_data, g, config.data.train_size, config.data.val_size, config.data.test_size)["test"][0]
    entropy = math.log2(rhm.num_sequences(g)) / g.d
    vb_bits = None
    if len(test):
        t0 = time.perf_counter()
        bound = evaluate.nll_bound(key_vb, evaluate.oracle_logits_fn(g, schedule), schedule, test, g.v,
                                   config.eval.batch_size)
        vb_bits = float(np.mean(bound, dtype=np.float64)) / math.log(2)
        seconds["vb_bound"] = time.perf_counter() - t0
        logging.info("oracle VB bound %.4f bits/token, entropy %.4f bits/token", vb_bits, entropy)

    results = {
        "task": "oracle",
        "accuracy": accuracy["exact"],
        "tuple_accuracy": tuple_accuracy["exact"],
        "factorized_accuracy": accuracy["factorized"],
        "factorized_tuple_accuracy": tuple_accuracy["factorized"],
        "num_generated": num,
        "vb_bits_per_token": vb_bits,
        "entropy_bits_per_token": entropy,
        "num_held_out": int(len(test)),
        "log10_num_sequences": math.log10(rhm.num_sequences(g)),
        "seconds": seconds,
    }
    return finish(config, workdir, results, summary=summary(results))


def summary(results: dict) -> str:
    """Human-readable lines of an ``oracle`` results dict."""
    acc = lambda values: " ".join(f"A_{l + 1}={a:.3f}" for l, a in enumerate(values))
    lines = [f"exact BP-oracle sampler, {results['num_generated']} sequences: {acc(results['accuracy'])}",
             f"factorized sampler (per-token marginals): {acc(results['factorized_accuracy'])}"]
    if results["vb_bits_per_token"] is not None:
        lines.append(f"oracle VB {results['vb_bits_per_token']:.4f} bits/token on {results['num_held_out']} held-out "
                     f"sequences (entropy {results['entropy_bits_per_token']:.4f})")
    return "\n".join(lines)
