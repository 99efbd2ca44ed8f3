"""Speed of evaluation: samplers and variational bounds as one loop on the device vs the
earlier host loop of T jitted steps, in the same run and on the same keys, printed as JSON.

    python benchmarks/bench_eval.py [--num 1024] [--width 256] [--T 1000] [--repeats 3] [--cases ...]

Cases (the ``configs/rhm_L3.py`` grammar, v=8, m=3, s=2, L=3, and its U-Net at ``--width``
with random weights): the D3PM ancestral sampler of the U-Net, the exact BP-oracle sampler,
the U-Net's and the oracle's full variational bound (every t of T summed), and MD4's
sampler on a small transformer. For each: ``loop_s`` (the step function jitted once and
called T times from Python, the way rhmdiff 0.1 ran them), ``device_s`` (the library's
``lax.fori_loop`` / ``lax.scan`` version, several t per network call for the bounds),
``speedup`` and ``identical`` (the same integers for the samplers; for the bounds the
largest relative difference, from a different order of float additions inside one call).
For the U-Net cases also ``v0_1_s``: the host loop with ``jax.nn.softmax`` / ``log_softmax``
as rhmdiff 0.1 had them (the same values up to float rounding; XLA:CPU fuses them badly
after the read-out, see :func:`rhmdiff._util.log_softmax`) and ``speedup_vs_v0_1``.
For the U-Net cases also ``gflop`` (the U-Net's forward FLOPs over the T network calls of
every sequence, ``bench_unet.py``'s count), ``gflops`` (achieved by the faster path) and
``matmul_bound_s``: ``gflop`` at the GFLOP/s of a plain 1024 x 1024 matmul measured in the
same run (``matmul_gflops``, printed first) -- the time the network's matmuls alone need at
this machine's practical peak, a floor under any implementation with the same outputs.
Timings are medians of ``--repeats`` runs after a compile run. ``--cases`` picks some of
:data:`CASES`; :func:`cases` builds them (``profile_step.py --case`` profiles one).
"""
import argparse
import functools
import json
import os
import sys
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from rhmdiff import evaluate, rhm  # noqa: E402
from rhmdiff.diffusion import d3pm, md4  # noqa: E402
from rhmdiff.models.transformer import Transformer  # noqa: E402
from rhmdiff.models.unet import UNet  # noqa: E402
from bench_unet import matmul_gflops, median_seconds, unet_forward_flops  # noqa: E402


_sampler_step = jax.jit(lambda f, ks, sch, x, t, v: d3pm.reverse_step(f, ks, sch, x, t, v), static_argnums=5)
_initial = jax.jit(d3pm.initial_noise, static_argnums=(1, 2))


def d3pm_loop_sampler(fn, keys, schedule, d, v):
    """rhmdiff 0.1's structure: x_T, then one jitted call per step t = T .. 1."""
    x = _initial(keys, d, v)
    for t in range(schedule.T, 0, -1):
        x = _sampler_step(fn, keys, schedule, x, t, v)
    return x


def bound_term(fn, keys, schedule, x0, t, v):
    return d3pm.bound_terms(fn, keys, schedule, x0, t[None], v)[0]


_bound_term = jax.jit(bound_term, static_argnums=5)
_v0_1_bound_term = jax.jit(lambda *a: bound_term(*a), static_argnums=5)  # traced once with jax.nn's softmax


def d3pm_loop_bound(fn, keys, schedule, x0, v, term=_bound_term):
    """rhmdiff 0.1's structure: one jitted call per step t, summed on the host side."""
    total = d3pm.prior_kl(schedule, x0, v).mean(-1)
    for t in range(1, schedule.T + 1):
        total = total + term(fn, keys, schedule, x0, jnp.asarray(t), v)
    return total


def jax_nn_probabilities(apply, params, x_t, t):
    return jax.nn.softmax(apply(params, x_t, t), -1)


def v0_1_bound(fn, keys, schedule, x0, v):
    """:func:`d3pm_loop_bound` with the ``jax.nn`` softmax functions inside the bound terms."""
    with jax_nn_softmax():
        return d3pm_loop_bound(fn, keys, schedule, x0, v, term=_v0_1_bound_term)


class jax_nn_softmax:
    """Within the block, rhmdiff's softmax helpers are ``jax.nn``'s (as in rhmdiff 0.1)."""

    def __enter__(self):
        self.saved = d3pm.softmax, d3pm.log_softmax
        d3pm.softmax, d3pm.log_softmax = jax.nn.softmax, jax.nn.log_softmax

    def __exit__(self, *exc):
        d3pm.softmax, d3pm.log_softmax = self.saved
        return False


@functools.partial(jax.jit, static_argnums=(0, 5, 6))
def _md4_step(schedule, f, ks, x, i, T, mask):
    t, s = md4.sampling_time(i, T), md4.sampling_time(i - 1, T)
    alpha_s = jnp.where(i == 1, 1.0, schedule.alpha(s))
    logits = f(x, jnp.full(x.shape[:1], t))
    sk = jax.vmap(lambda k: jax.random.fold_in(k, i))(ks)
    return jax.vmap(lambda k, lg, xx: md4.reverse_step(k, lg, xx, schedule.alpha(t), alpha_s, mask))(sk, logits, x)


def md4_loop_sampler(fn, keys, schedule, seq_len, vocab, T):
    x = jnp.full((keys.shape[0], seq_len), vocab, jnp.int32)
    for i in range(T, 0, -1):
        x = _md4_step(schedule, fn, keys, x, i, T, vocab)
    return x


class Case(NamedTuple):
    loop: Callable  # the host loop: T jitted steps called from Python
    device: Callable  # the library's loop on the device
    steps: int  # diffusion steps (network calls per sequence)
    exact: bool = True  # integer outputs (samplers) rather than float bounds
    v0_1: Callable | None = None  # rhmdiff 0.1's host loop with jax.nn's softmax
    gflop: float | None = None  # the U-Net's forward FLOPs over all steps (bench_unet's count)


def cases(num: int, width: int, T: int) -> dict[str, Case]:
    """The benchmark's cases by name, set up on the ``configs/rhm_L3.py`` grammar (module
    docstring); calling a case's ``loop`` / ``device`` runs it."""
    g = rhm.make_grammar(jax.random.PRNGKey(0), 8, 3, 2, 3)
    schedule = d3pm.linear_schedule(T)
    model = UNet(v=g.v, s=g.s, L=g.L, width=width, T=T)
    params = jax.jit(model.init)(jax.random.PRNGKey(1), jnp.zeros((1, g.d), jnp.int32), jnp.ones((1,), jnp.int32))
    keys = d3pm.sequence_keys(jax.random.PRNGKey(2), num)
    x0 = rhm.sample(jax.random.PRNGKey(3), g, num)[0]
    gflop = T * num * unet_forward_flops(g.v, g.s, g.L, width) / 1e9
    unet = evaluate.probabilities(model.apply, params)
    drop = Partial(d3pm._drop_key, unet)
    old_unet = Partial(d3pm._drop_key, Partial(functools.partial(jax_nn_probabilities, model.apply), params))
    oracle_draw = Partial(d3pm._oracle_posterior_draw, g, schedule)
    unet_logits = Partial(model.apply, params)
    oracle = evaluate.oracle_logits_fn(g, schedule)
    tf = Transformer(vocab_size=64, num_layers=2, num_heads=4, head_dim=32, cond_dim=64, mlp_multiple_of=32, max_len=128)
    tparams = jax.jit(tf.init)(jax.random.PRNGKey(4), jnp.zeros((1, 128), jnp.int32), jnp.zeros((1,)))
    masking = md4.MaskingSchedule("linear")
    tkeys = keys[:64]
    return {
        "d3pm_sampler": Case(lambda: d3pm_loop_sampler(drop, keys, schedule, g.d, g.v),
                             lambda: d3pm.sample_each(keys, unet, schedule, g.d, g.v), T,
                             v0_1=lambda: d3pm_loop_sampler(old_unet, keys, schedule, g.d, g.v), gflop=gflop),
        "oracle_sampler": Case(lambda: d3pm_loop_sampler(oracle_draw, keys, schedule, g.d, g.v),
                               lambda: d3pm.oracle_sample_each(keys, g, schedule), T),
        "d3pm_bound": Case(lambda: d3pm_loop_bound(unet_logits, keys, schedule, x0, g.v),
                           lambda: d3pm.nll_bound_each(keys, unet_logits, schedule, x0, g.v), T, exact=False,
                           v0_1=lambda: v0_1_bound(unet_logits, keys, schedule, x0, g.v), gflop=gflop),
        "oracle_bound": Case(lambda: d3pm_loop_bound(oracle, keys, schedule, x0, g.v),
                             lambda: d3pm.nll_bound_each(keys, oracle, schedule, x0, g.v), T, exact=False),
        "md4_sampler": Case(lambda: md4_loop_sampler(Partial(tf.apply, tparams), tkeys, masking, 128, 64, 128),
                            lambda: md4.sample_each(tkeys, Partial(tf.apply, tparams), masking, 128, 64, T=128), 128),
    }


CASES = ("d3pm_sampler", "oracle_sampler", "d3pm_bound", "oracle_bound", "md4_sampler")


def compare(name: str, case: Case, repeats: int, matmul_gflops: float) -> dict:
    loop_s, a = median_seconds(case.loop, repeats)
    device_s, b = median_seconds(case.device, repeats)
    a, b = np.asarray(a), np.asarray(b)
    row = {"case": name, "loop_s": round(loop_s, 3), "device_s": round(device_s, 3),
           "speedup": round(loop_s / device_s, 2)}
    if case.v0_1 is not None:
        old_s, _ = median_seconds(case.v0_1, repeats)
        row.update(v0_1_s=round(old_s, 3), speedup_vs_v0_1=round(old_s / device_s, 2))
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
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    args = parser.parse_args()
    peak = matmul_gflops(1024, args.repeats)
    print(json.dumps({"backend": jax.default_backend(), "devices": jax.device_count(), "matmul_gflops": round(peak, 1),
                      **vars(args)}))
    setup = cases(args.num, args.width, args.T)
    for name in args.cases:
        compare(name, setup[name], args.repeats, peak)


if __name__ == "__main__":
    main()
