"""Speed of evaluation: samplers and variational bounds as one loop on the device vs a host
loop of T jitted steps, in the same run and on the same keys, printed as JSON.

    python benchmarks/bench_eval.py [--num 1024] [--width 256] [--T 1000] [--repeats 3] [--cases ...]

Cases (``eval_cases.py``; the ``configs/rhm_L3.py`` grammar, v=8, m=3, s=2, L=3, and its U-Net
at ``--width`` with random weights): the D3PM ancestral sampler of the U-Net, the exact
BP-oracle sampler, the U-Net's and the oracle's full variational bound (every t of T summed),
and MD4's sampler on a small transformer. For each: ``loop_s`` (the step function jitted once
and called T times from Python: the reference), ``device_s`` (the library's ``lax.fori_loop``
/ ``lax.scan`` version, several t per network call for the bounds), ``speedup`` and
``identical`` (the same integers for the samplers; for the bounds the largest relative
difference, from a different order of float additions inside one call). For the U-Net cases
also ``gflop`` (the U-Net's forward FLOPs over the T network calls of every sequence),
``gflops`` (achieved by the faster path) and ``matmul_bound_s``: ``gflop`` at the GFLOP/s of
a plain 1024 x 1024 matmul measured in the same run (``matmul_gflops``, printed first) -- the
time the network's matmuls alone need at this machine's practical peak, a floor under any
implementation with the same outputs. Timings are medians of ``--repeats`` runs after a
compile run.
"""
import argparse
import json

import eval_cases
import jax
import numpy as np
from measure import matmul_gflops, timed


def compare(name: str, case: eval_cases.Case, repeats: int, matmul_gflops: float) -> dict:
    loop_s, _, a = timed(case.loop, repeats)
    device_s, _, b = timed(case.device, repeats)
    a, b = np.asarray(a), np.asarray(b)
    row = {"case": name, "loop_s": round(loop_s, 3), "device_s": round(device_s, 3),
           "speedup": round(loop_s / device_s, 2)}
    if case.gflop is not None:
        row.update(gflop=case.gflop, gflops=round(case.gflop / min(loop_s, device_s), 1),
                   matmul_bound_s=case.gflop / matmul_gflops)
    if case.exact:
        row["identical"] = bool(np.array_equal(a, b))
    else:
        row["max_relative_difference"] = float(np.max(np.abs(a - b) / np.abs(a)))
    print(json.dumps(row), flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=1024)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--T", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", choices=eval_cases.CASES, default=list(eval_cases.CASES))
    args = parser.parse_args()
    peak = matmul_gflops(1024, args.repeats)
    print(json.dumps({"backend": jax.default_backend(), "devices": jax.device_count(), "matmul_gflops": round(peak, 1),
                      **vars(args)}))
    setup = eval_cases.cases(args.num, args.width, args.T)
    for name in args.cases:
        compare(name, setup[name], args.repeats, peak)


if __name__ == "__main__":
    main()
