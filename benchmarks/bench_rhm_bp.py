"""Speed of RHM sampling, validity checks and BP marginals, printed as JSON.

    python benchmarks/bench_rhm_bp.py [--repeats 5]

For each (v, m, s, L): samples/s of ``rhm.sample``, ``rhm.sample_distinct`` and
``rhm.level_accuracy`` at P = 2**17, and sequences/s of ``bp.marginals`` on B = 1024
noisy sequences (uniform D3PM evidence at alpha_bar = 0.5). Times are medians over
``--repeats`` runs after one warm-up call, whose time (compilation included) is reported
separately. Raw rates: there is no reference to divide by in this process.
"""
import argparse
import json

import jax
from measure import timed

from rhmdiff import bp, rhm

P, B = 2**17, 1024


def bench(v, m, s, L, repeats):
    g = rhm.make_grammar(jax.random.PRNGKey(0), v, m, s, L)
    key = jax.random.PRNGKey(1)
    x, _ = rhm.sample(key, g, P)
    x_noisy, _ = rhm.sample(key, g, B)
    ev = bp.uniform_noise_evidence(x_noisy, 0.5, v)
    n_distinct = min(P, rhm.num_sequences(g) // 2)  # (8, 3, 2, 3) has only 17496 sequences
    cases = {
        "sample": (lambda: rhm.sample(key, g, P), P),
        "sample_distinct": (lambda: rhm.sample_distinct(key, g, n_distinct), n_distinct),
        "level_accuracy": (lambda: rhm.level_accuracy(g, x), P),
        "bp_marginals": (lambda: bp.marginals(g, ev), B),
    }
    out = {"v": v, "m": m, "s": s, "L": L, "num_distinct": n_distinct}
    for name, (fn, n) in cases.items():
        timing = timed(fn, repeats)
        out[f"{name}_per_s"] = n / timing.median_s
        out[f"{name}_warmup_s"] = timing.first_s
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = [bench(*cfg, args.repeats) for cfg in ((8, 3, 2, 3), (32, 8, 2, 3), (32, 8, 2, 4))]
    print(json.dumps({"device": str(jax.devices()[0]), "P": P, "B": B, "results": results}, indent=1))


if __name__ == "__main__":
    main()
