"""The evaluation loops that ``bench_eval.py`` times and ``profile_step.py --case`` profiles:
each as the library runs it (one loop on the device) and as a reference host loop of T
jitted steps on the same keys (the same outputs, up to the order of float additions)."""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.tree_util import Partial
from measure import unet_forward_flops

from rhmdiff import evaluate, rhm
from rhmdiff._util import example_keys, step_keys
from rhmdiff.diffusion import d3pm, md4
from rhmdiff.models import transformer, unet


_sampler_step = jax.jit(lambda f, ks, sch, x, t, v: d3pm.reverse_step(f, ks, sch, x, t, v), static_argnums=5)
_initial = jax.jit(d3pm.initial_noise, static_argnums=(1, 2))


def d3pm_loop_sampler(fn, keys, schedule, d, v):
    """The reference: x_T, then one jitted call per step t = T .. 1."""
    x = _initial(keys, d, v)
    for t in range(schedule.T, 0, -1):
        x = _sampler_step(fn, keys, schedule, x, t, v)
    return x


def bound_term(fn, keys, schedule, x0, t, v):
    return d3pm.bound_terms(fn, keys, schedule, x0, t[None], v)[0]


_bound_term = jax.jit(bound_term, static_argnums=5)


def d3pm_loop_bound(fn, keys, schedule, x0, v):
    """The reference: one jitted call per step t, summed on the host side."""
    total = d3pm.prior_kl(schedule, x0, v).mean(-1)
    for t in range(1, schedule.T + 1):
        total = total + _bound_term(fn, keys, schedule, x0, jnp.asarray(t), v)
    return total


@functools.partial(jax.jit, static_argnums=(0, 5, 6))
def _md4_step(schedule, f, ks, x, i, T, mask):
    t, s = md4.sampling_time(i, T), md4.sampling_time(i - 1, T)
    alpha_s = jnp.where(i == 1, 1.0, schedule.alpha(s))
    logits = f(x, jnp.full(x.shape[:1], t))
    sk = step_keys(ks, i)
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
    gflop: float | None = None  # the U-Net's forward FLOPs over all steps (bench_unet's count)


def cases(num: int, width: int, T: int) -> dict[str, Case]:
    """The benchmark's cases by name, set up on the ``configs/rhm_L3.py`` grammar (module
    docstring); calling a case's ``loop`` / ``device`` runs it."""
    g = rhm.make_grammar(jax.random.PRNGKey(0), 8, 3, 2, 3)
    schedule = d3pm.linear_schedule(T)
    model = unet.UNet(v=g.v, s=g.s, L=g.L, width=width, T=T)
    params = jax.jit(lambda: unet.init_params(model, jax.random.PRNGKey(1), g.d))()
    keys = example_keys(jax.random.PRNGKey(2), num)
    x0 = rhm.sample(jax.random.PRNGKey(3), g, num)[0]
    gflop = T * num * unet_forward_flops(g.v, g.s, g.L, width) / 1e9
    probabilities = evaluate.probabilities(model.apply, params)
    drop = Partial(d3pm._drop_key, probabilities)
    oracle_draw = Partial(d3pm._oracle_posterior_draw, g, schedule)
    unet_logits = Partial(model.apply, params)
    oracle = evaluate.oracle_logits_fn(g, schedule)
    tf = transformer.Transformer(vocab_size=64, num_layers=2, num_heads=4, head_dim=32, cond_dim=64, mlp_multiple_of=32,
                                 max_len=128)
    tparams = jax.jit(lambda: transformer.init_params(tf, jax.random.PRNGKey(4), 128))()
    masking = md4.MaskingSchedule("linear")
    tkeys = keys[:64]
    return {
        "d3pm_sampler": Case(lambda: d3pm_loop_sampler(drop, keys, schedule, g.d, g.v),
                             lambda: d3pm.sample_each(keys, probabilities, schedule, g.d, g.v), T, gflop=gflop),
        "oracle_sampler": Case(lambda: d3pm_loop_sampler(oracle_draw, keys, schedule, g.d, g.v),
                               lambda: d3pm.oracle_sample_each(keys, g, schedule), T),
        "d3pm_bound": Case(lambda: d3pm_loop_bound(unet_logits, keys, schedule, x0, g.v),
                           lambda: d3pm.nll_bound_each(keys, unet_logits, schedule, x0, g.v), T, exact=False,
                           gflop=gflop),
        "oracle_bound": Case(lambda: d3pm_loop_bound(oracle, keys, schedule, x0, g.v),
                             lambda: d3pm.nll_bound_each(keys, oracle, schedule, x0, g.v), T, exact=False),
        "md4_sampler": Case(lambda: md4_loop_sampler(Partial(tf.apply, tparams), tkeys, masking, 128, 64, 128),
                            lambda: md4.sample_each(tkeys, Partial(tf.apply, tparams), masking, 128, 64, T=128), 128),
    }


CASES = ("d3pm_sampler", "oracle_sampler", "d3pm_bound", "oracle_bound", "md4_sampler")
