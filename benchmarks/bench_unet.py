"""Speed of one U-Net D3PM training step, printed as JSON.

    python benchmarks/bench_unet.py [--variant rhmdiff|reference] [--widths 256 1024 4096] [--steps 100]

For each width C: milliseconds per training step at batch 32 on the ``configs/rhm_L3.py``
grammar ((v, m, s, L) = (8, 3, 2, 3), T = 1000) -- the trainer's own pmapped step (forward,
backward, optimizer update), run ``--steps`` at a time inside one ``lax.scan`` as in
training, median over ``--repeats`` after a warm-up -- with SGD + momentum (``ms_per_step``)
and with Adam (``adam_ms_per_step``). Next to it: the step's FLOPs counted from the layer
shapes (matmuls only, forward x 3 for forward + backward), the achieved GFLOP/s, the GFLOP/s
of a plain jitted C x C by C x C float32 matmul measured in the same run (the machine's
practical peak at that size) and their ratio ``fraction_of_matmul_peak``. ``--variant
reference`` is the authors' architecture (concatenated skips, LayerNorm;
``rhmdiff.models.unet.ReferenceUNet``).
"""
import argparse
import json

import jax
from measure import config, matmul_gflops, rhm_step, timed, unet_forward_flops

from rhmdiff.models import unet


def step_ms(variant: str, width: int, optimizer: str, steps: int, repeats: int) -> float:
    c = config("rhm_L3")
    c.model.update(variant=variant, width=width)
    c.train.update(optimizer=optimizer, lr=0.1 if optimizer == "sgd" else 1e-4, steps_per_call=steps)
    step, x = rhm_step(c)
    return 1e3 * timed(lambda: step.run(x), repeats).median_s / steps


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
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"device": str(jax.devices()[0]), "results": rows}, indent=1))


if __name__ == "__main__":
    main()
