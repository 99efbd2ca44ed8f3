"""Speed of one U-Net D3PM training step, printed as JSON.

    python benchmarks/bench_unet.py [--variant rhmdiff|reference] [--widths 256 1024 4096] [--steps 100]

For each width C: milliseconds per training step at batch 32, (v, m, s, L) = (8, 3, 2, 3),
T = 1000 -- the trainer's own pmapped step (forward, backward, pmean, optimizer update),
run ``--steps`` at a time inside one ``lax.scan`` as in training, median over ``--repeats``
after a warm-up -- with SGD + momentum (``ms_per_step``) and with Adam (``adam_ms_per_step``).
Next to it: the step's FLOPs counted from the layer shapes (matmuls only, forward x 3 for
forward + backward), the achieved GFLOP/s, the GFLOP/s of a plain jitted C x C by C x C
float32 matmul measured in the same run (the machine's practical peak) and their ratio
``fraction_of_matmul_peak``. ``--variant reference`` is the authors' architecture
(concatenated skips, LayerNorm; ``rhmdiff.models.unet.ReferenceUNet``); for it,
``authors_ms_per_step`` is the authors' PyTorch step (Adam, same architecture, batch 32, width
256: ~16 ms, width 1024: ~218 ms), timed by an earlier rhmdiff session on a 2-core CPU machine
of the class CI runs on -- a constant from another process and day, not a measurement of this
run, so ``speedup_vs_authors`` is indicative only.
"""
import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from rhmdiff import train
from rhmdiff.config_base import sibling_config
from rhmdiff.models import unet
from rhmdiff.tasks import rhm as rhm_task

AUTHORS_MS = {256: 16.0, 1024: 218.0}  # the authors' PyTorch step with Adam (module docstring)


def unet_forward_flops(v: int, s: int, L: int, C: int, variant: str = "rhmdiff", time_dim: int = 32) -> int:
    """Multiply-add FLOPs (x2) of one U-Net forward pass on one sequence of d = s**L tokens."""
    d = s**L
    skip = 2 if variant == "reference" else 1  # the reference decoders and read-out see [h, skip]
    flops = 2 * d * v * C + 2 * d * skip * C * v  # embedding, read-out
    for k in range(1, L + 1):
        positions = d // s**k
        flops += 2 * positions * (s * C) * C  # encoder k: [n/s, sC] @ [sC, C]
        flops += 2 * positions * skip * C * (s * C)  # decoder k: [n, (2)C] @ [(2)C, sC]
        if variant == "rhmdiff":
            flops += 2 * 2 * time_dim * C  # time projections of encoder k and decoder k
    return flops


def median_seconds(fn, repeats):
    """``(median seconds of repeats calls after a first one, the last call's output)``."""
    out = jax.block_until_ready(fn())
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        runs.append(time.perf_counter() - t0)
    return float(np.median(runs)), out


def train_chunk(variant: str, width: int, optimizer: str, steps: int):
    """A function running ``steps`` training steps of the trainer's own pmapped chunk (one
    device, batch 32, the ``rhm_L3`` grammar), returning their metrics."""
    c = sibling_config(__file__.replace("benchmarks", "configs"), "rhm_L3").get_config()
    c.model.update(variant=variant, width=width)
    c.train.update(optimizer=optimizer, lr=0.1 if optimizer == "sgd" else 1e-4)
    setup = rhm_task.setup(c)
    kw = setup["fit_kwargs"]
    tx = train.make_optimizer(optimizer, c.train.lr, c.train.momentum, kw["lr_scale"])
    devices = jax.local_devices()[:1]
    chunk = train._make_chunk_fn(kw["loss_fn"], tx, jax.random.PRNGKey(0), c.train.batch_size, devices)
    box = [train.device_pmap(train.initial_state_fn(kw["init_params"], tx), devices)(np.zeros(1))]
    x = kw["batches"](0, steps, slice(None))[None]
    step_ids = np.arange(steps, dtype=np.int32)[None]

    def run():
        box[0], metrics = chunk(box[0], np.zeros((1,), np.int32), step_ids, x)
        return metrics

    return run


def step_ms(variant: str, width: int, optimizer: str, steps: int, repeats: int) -> float:
    return 1e3 * median_seconds(train_chunk(variant, width, optimizer, steps), repeats)[0] / steps


def matmul_gflops(n: int, repeats: int) -> float:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    return 2 * n**3 / median_seconds(lambda: f(a, b), repeats)[0] / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=unet.VARIANTS, default="rhmdiff")
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    v, s, L, batch = 8, 2, 3, 32
    rows = []
    for C in args.widths:
        steps = max(2, args.steps * 256 // C)
        flops = 3 * batch * unet_forward_flops(v, s, L, C, args.variant)
        ms = step_ms(args.variant, C, "sgd", steps, args.repeats)
        row = {"variant": args.variant, "width": C, "batch": batch, "ms_per_step": ms, "gflop_per_step": flops / 1e9,
               "gflops": flops / ms / 1e6, "matmul_gflops": matmul_gflops(C, args.repeats),
               "adam_ms_per_step": step_ms(args.variant, C, "adam", steps, args.repeats)}
        row["fraction_of_matmul_peak"] = row["gflops"] / row["matmul_gflops"]
        if args.variant == "reference" and C in AUTHORS_MS:
            row["authors_ms_per_step"] = AUTHORS_MS[C]
            row["speedup_vs_authors"] = AUTHORS_MS[C] / row["adam_ms_per_step"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"device": str(jax.devices()[0]), "results": rows}, indent=1))


if __name__ == "__main__":
    main()
