"""Speed of one U-Net D3PM training step, printed as JSON.

    python benchmarks/bench_unet.py [--widths 256 1024 4096] [--steps 100] [--repeats 5]

For each width C: milliseconds per training step at batch 32, (v, m, s, L) = (8, 3, 2, 3),
T = 1000 -- the trainer's own pmapped step (forward, backward, pmean, optimizer update),
run ``--steps`` at a time inside one ``lax.scan`` as in training, median over ``--repeats``
after a warm-up. Next to it: the step's FLOPs counted from the layer shapes (matmuls only,
forward x 3 for forward + backward), the achieved GFLOP/s, and the GFLOP/s of a plain jitted
C x C by C x C float32 matmul measured in the same run (the machine's practical peak).
``speedup_vs_authors`` compares with the authors' PyTorch U-Net on this 2-core machine class
(FINDINGS.md: ~16 ms at width 256, ~218 ms at width 1024; their step uses Adam,
concatenated skips and LayerNorm: ``adam_ms_per_step`` is our step with Adam).
"""
import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from rhmdiff import train
from rhmdiff.config_base import sibling_config
from rhmdiff.tasks import rhm as rhm_task

AUTHORS_MS = {256: 16.0, 1024: 218.0}


def unet_forward_flops(v: int, s: int, L: int, C: int, time_dim: int = 32) -> int:
    """Multiply-add FLOPs (x2) of one U-Net forward pass on one sequence of d = s**L tokens."""
    d = s**L
    flops = 2 * d * v * C + 2 * d * C * v  # embedding, unembedding
    for k in range(1, L + 1):
        positions = d // s**k
        flops += 2 * positions * (s * C) * C  # encoder k: [n/s, sC] @ [sC, C]
        flops += 2 * positions * C * (s * C)  # decoder k: [n, C] @ [C, sC]
        flops += 2 * 2 * time_dim * C  # time projections of encoder k and decoder k
    return flops


def median_seconds(fn, repeats):
    jax.block_until_ready(fn())
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        runs.append(time.perf_counter() - t0)
    return float(np.median(runs))


def step_ms(width: int, optimizer: str, steps: int, repeats: int) -> float:
    c = sibling_config(__file__.replace("benchmarks", "configs"), "rhm_L3").get_config()
    c.model.width = width
    c.train.update(optimizer=optimizer, lr=0.1 if optimizer == "sgd" else 1e-4)
    setup = rhm_task.setup(c)
    kw = setup["fit_kwargs"]
    tx = train.make_optimizer(optimizer, c.train.lr, c.train.momentum, kw["lr_scale"])
    devices = jax.local_devices()[:1]
    chunk = train._make_chunk_fn(kw["loss_fn"], tx, jax.random.PRNGKey(0), c.train.batch_size, devices)
    params = kw["init_params"]()
    state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
    box = [jax.tree_util.tree_map(lambda a: jnp.asarray(a)[None], state)]
    x = kw["batches"](0, steps, slice(None))[None]
    step_ids = np.arange(steps, dtype=np.int32)[None]

    def run():
        box[0], metrics = chunk(box[0], np.zeros((1,), np.int32), step_ids, x)
        return metrics

    return 1e3 * median_seconds(run, repeats) / steps


def matmul_gflops(n: int, repeats: int) -> float:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    return 2 * n**3 / median_seconds(lambda: f(a, b), repeats) / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    v, s, L, batch = 8, 2, 3, 32
    rows = []
    for C in args.widths:
        steps = max(2, args.steps * 256 // C)
        flops = 3 * batch * unet_forward_flops(v, s, L, C)
        ms = step_ms(C, "sgd", steps, args.repeats)
        row = {"width": C, "batch": batch, "ms_per_step": ms, "gflop_per_step": flops / 1e9,
               "gflops": flops / ms / 1e6, "matmul_gflops": matmul_gflops(C, args.repeats),
               "adam_ms_per_step": step_ms(C, "adam", steps, args.repeats)}
        row["fraction_of_matmul_peak"] = row["gflops"] / row["matmul_gflops"]
        if C in AUTHORS_MS:
            row["authors_ms_per_step"] = AUTHORS_MS[C]
            row["speedup_vs_authors"] = AUTHORS_MS[C] / row["adam_ms_per_step"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"device": str(jax.devices()[0]), "results": rows}, indent=1))


if __name__ == "__main__":
    main()
