"""Peak resident memory of a few training steps of an RHM preset, printed as JSON.

    python benchmarks/bench_memory.py [--config configs/rhm_L3.py:paper] [--steps 3]

The steps go through the trainer's own path (``rhmdiff.train``: the state created inside
``pmap`` on the device, the step donating it, so parameters, gradients and momentum are the
only large buffers) on one device. Printed: the parameter count, the bytes that a step needs
at the least (parameters, gradients and momentum, float32), the process's peak resident set
size after initialization and after the steps, and the milliseconds per step.
"""
import argparse
import json
import os
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from rhmdiff import train  # noqa: E402
from rhmdiff.config_base import sibling_config  # noqa: E402
from rhmdiff.models import unet  # noqa: E402
from rhmdiff.tasks import rhm as rhm_task  # noqa: E402


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/rhm_L3.py:paper", help="configs/FILE.py[:preset] of task rhm")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--width", type=int, default=None, help="override model.width")
    args = parser.parse_args()
    path, _, preset = args.config.partition(":")
    c = sibling_config(os.path.abspath(path), os.path.basename(path)[:-3]).get_config(*([preset] if preset else []))
    if args.width:
        c.model.width = args.width
    g = rhm_task.grammar_from_config(c)
    model = rhm_task.model_from_config(c, g)
    schedule = rhm_task.schedule_from_config(c)
    loss = rhm_task.rhm_loss_fn(model, schedule, g.v, c.diffusion.hybrid_coeff, c.diffusion.objective)
    tx = train.optimizer_from_config(c.train, unet.mup_lr_scale(c.model.width) if c.train.optimizer == "sgd" else 1.0)
    devices = jax.local_devices()[:1]
    init = train.initial_state_fn(lambda: model.init(jax.random.PRNGKey(1), jnp.zeros((1, g.d), jnp.int32),
                                                     jnp.ones((1,), jnp.int32)), tx)
    rss0 = peak_rss_gb()
    state = train.device_pmap(init, devices)(np.zeros(1))
    jax.block_until_ready(state)
    n_params = sum(int(np.prod(x.shape[1:])) for x in jax.tree_util.tree_leaves(state.params))
    rss_init = peak_rss_gb()
    chunk = train._make_chunk_fn(loss, tx, jax.random.PRNGKey(0), c.train.batch_size, devices)
    x = np.asarray(jax.random.randint(jax.random.PRNGKey(2), (1, 1, c.train.batch_size, g.d), 0, g.v), np.int32)
    times = []
    for step in range(args.steps):
        t0 = time.perf_counter()
        state, metrics = chunk(state, np.zeros((1,), np.int32), np.full((1, 1), step, np.int32), x)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    moments = (1 if c.train.momentum else 0) if c.train.optimizer == "sgd" else 2  # momentum / Adam's two
    print(json.dumps({
        "config": args.config, "variant": c.model.variant, "width": c.model.width, "parameters": n_params,
        "batch": c.train.batch_size, "optimizer": c.train.optimizer,
        "needed_gb": round(4 * n_params * (2 + moments) / 1e9, 2),  # parameters, gradients, optimizer moments
        "peak_rss_gb_before": round(rss0, 2), "peak_rss_gb_after_init": round(rss_init, 2),
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "first_step_s": round(times[0], 2), "ms_per_step": round(1e3 * float(np.median(times[1:] or times)), 1),
        "loss": float(np.asarray(metrics["objective"]).ravel()[-1])}))


if __name__ == "__main__":
    main()
