"""Masked (absorbing-state) diffusion in continuous time: MD4 (Shi et al. 2024), paper Eq. 25.

Forward process: every token independently stays itself with probability ``alpha(t)`` and
becomes ``[MASK]`` (id ``mask_id``, by convention the vocabulary size) otherwise, t in [0, 1].
Schedules (``eps`` keeps alpha inside [eps, 1 - eps], as in MD4):
``alpha(t) = (1 - 2 eps) a(t) + eps`` with ``a(t) = 1 - t`` (linear),
``1 - cos(pi/2 (1 - t))`` (cosine) or ``1 - t**power`` (poly).

Negative ELBO per sequence (nats), with ``w(t) = -alpha'(t) / (1 - alpha(t)) >= 0``:

    E_t~U(0,1) E_{x_t} [ w(t) sum_i 1[x_t^i = MASK] (-log p(x_0^i | x_t)) ]      (diffusion)
    + E_{x_0'} [ sum_i 1[x_0'^i = MASK] (-log p(x_0^i | x_0')) ]  at t = 0          (reconstruction)
    + d * eps * log V                                                              (prior)

The prior p(x_1) masks each token with probability 1 - eps and draws it uniformly from the
V symbols otherwise (so the prior term is KL(q(x_1 | x_0) || p(x_1)) = eps log V per token).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from rhmdiff._util import as_argument, example_keys, expand_right, log_softmax, softmax, step_keys

SCHEDULES = ("linear", "cosine", "poly")
GRIDS = ("uniform", "cosine")


@dataclasses.dataclass(frozen=True)
class MaskingSchedule:
    """alpha(t), its derivative and the ELBO weight, for t in [0, 1] (arrays broadcast)."""

    name: str = "linear"
    eps: float = 1e-4
    power: float = 1.0

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.name!r}")
        if not 0 <= self.eps < 0.5:
            raise ValueError(f"eps must be in [0, 0.5), got {self.eps!r}")
        if self.power <= 0:
            raise ValueError(f"power must be > 0, got {self.power!r}")

    def _a(self, t):
        if self.name == "linear":
            return 1.0 - t
        if self.name == "cosine":
            return 1.0 - jnp.cos(jnp.pi / 2 * (1.0 - t))
        return 1.0 - t**self.power

    def _da(self, t):
        if self.name == "linear":
            return -jnp.ones_like(t)
        if self.name == "cosine":
            return -jnp.pi / 2 * jnp.sin(jnp.pi / 2 * (1.0 - t))
        return -self.power * t ** (self.power - 1.0)

    def alpha(self, t):
        t = jnp.asarray(t, jnp.float32)
        return (1.0 - 2 * self.eps) * self._a(t) + self.eps

    def dalpha(self, t):
        t = jnp.asarray(t, jnp.float32)
        return (1.0 - 2 * self.eps) * self._da(t)

    def weight(self, t):
        """w(t) = -alpha'(t) / (1 - alpha(t)), the ELBO weight of a masked token's CE."""
        return -self.dalpha(t) / (1.0 - self.alpha(t))


def q_sample(key, schedule: MaskingSchedule, x0, t, mask_id: int):
    """x_t ~ q(x_t | x_0): each token kept with probability alpha(t), else ``mask_id``.
    ``t`` has the leading (per-sequence) shape of ``x0 [..., d]``."""
    x0 = jnp.asarray(x0)
    keep = jax.random.uniform(key, x0.shape) < expand_right(schedule.alpha(t), x0.ndim)
    return jnp.where(keep, x0, mask_id).astype(x0.dtype)


def _masked_ce(logits, x0, x_t, mask_id):
    """Per-sequence sum over masked positions of -log p(x_0^i | x_t), nats ``[...]``."""
    ce = -jnp.take_along_axis(log_softmax(logits, -1), x0[..., None], -1)[..., 0]
    return jnp.sum(jnp.where(x_t == mask_id, ce, 0.0), -1)


def diffusion_term(schedule: MaskingSchedule, x0, x_t, t, logits, mask_id: int):
    """``w(t) sum_i 1[x_t^i = MASK] (-log p(x_0^i | x_t))`` per sequence (nats ``[B]``): the
    one-sample estimate of the ELBO's diffusion part (what training minimizes; the
    reconstruction and prior parts are O(eps) and carry no useful gradient)."""
    return schedule.weight(t) * _masked_ce(logits, x0, x_t, mask_id)


def elbo_each(keys, t, logits_fn, schedule: MaskingSchedule, x0, vocab_size: int, mask_id: int | None = None):
    """MD4's negative ELBO of every sequence of ``x0 int[B, d]`` at its own time ``t [B]``,
    in nats per token: ``{"diffusion", "reconstruction", "prior"}`` each ``[B]``; the masks of
    sequence i come from ``keys[i]`` alone (independent of the batch it is computed in)."""
    x0 = jnp.asarray(x0)
    mask_id = vocab_size if mask_id is None else mask_id
    b, d = x0.shape
    split = jax.vmap(jax.random.split)(keys)
    x_t = jax.vmap(lambda k, x, tt: q_sample(k, schedule, x, tt, mask_id))(split[:, 0], x0, t)
    diffusion = diffusion_term(schedule, x0, x_t, t, logits_fn(x_t, t), mask_id)
    t0 = jnp.zeros((b,))
    x_r = jax.vmap(lambda k, x: q_sample(k, schedule, x, 0.0, mask_id))(split[:, 1], x0)
    recon = _masked_ce(logits_fn(x_r, t0), x0, x_r, mask_id)
    prior = jnp.full((b,), schedule.alpha(1.0) * np.log(vocab_size))
    return {"diffusion": diffusion / d, "reconstruction": recon / d, "prior": prior}


def loss(key, logits_fn, schedule: MaskingSchedule, x0, vocab_size: int, mask_id: int | None = None):
    """MD4's negative ELBO on a batch ``x0 int[B, d]``, one t per sequence (antithetic:
    t_b = (u + b/B) mod 1, MD4's variance reduction; sequence b's masks from
    ``fold_in(key, b)``). ``logits_fn(x_t, t) -> [B, d, V]`` over the V real symbols.
    Returns ``(objective, metrics)``: the objective is the bound in nats per token (averaged
    over the batch); metrics give it in bits per token and its ``diffusion``,
    ``reconstruction`` and ``prior`` parts (nats per token)."""
    x0 = jnp.asarray(x0)
    b = x0.shape[0]
    k_t, k_seq = jax.random.split(key)
    t = jnp.mod(jax.random.uniform(k_t) + jnp.arange(b) / b, 1.0)
    keys = example_keys(k_seq, b)
    parts = {k: v.mean() for k, v in elbo_each(keys, t, logits_fn, schedule, x0, vocab_size, mask_id).items()}
    total = parts["diffusion"] + parts["reconstruction"] + parts["prior"]
    return total, dict(parts, nats_per_token=total, bits_per_token=total / np.log(2.0))


def _top_p_filter(logits, top_p: float):
    """Logits with the tokens outside the smallest set of probability >= top_p set to -inf."""
    probs = softmax(logits, -1)
    order = jnp.argsort(-probs, -1)
    sorted_probs = jnp.take_along_axis(probs, order, -1)
    keep_sorted = jnp.cumsum(sorted_probs, -1) - sorted_probs < top_p  # always keeps the top token
    keep = jnp.zeros_like(keep_sorted).at[
        tuple(jnp.indices(order.shape)[:-1]) + (order,)].set(keep_sorted)
    return jnp.where(keep, logits, -jnp.inf)


def reverse_step(key, logits, x_t, alpha_t, alpha_s, mask_id: int, top_p: float | None = None):
    """One ancestral step t -> s < t: every masked token is revealed with probability
    (alpha_s - alpha_t) / (1 - alpha_t), its value drawn from the model (top-p filtered if
    given); revealed tokens never change. ``alpha_s = 1`` reveals every masked token."""
    k_reveal, k_value = jax.random.split(key)
    if top_p is not None:
        logits = _top_p_filter(logits, top_p)
    values = jax.random.categorical(k_value, logits, -1).astype(x_t.dtype)
    p_reveal = expand_right((alpha_s - alpha_t) / (1.0 - alpha_t), x_t.ndim)
    reveal = (x_t == mask_id) & (jax.random.uniform(k_reveal, x_t.shape) < p_reveal)
    return jnp.where(reveal, values, x_t)


def sampling_time(i, T: int, grid: str = "uniform"):
    """Time of step ``i`` (of T) of the sampler: ``i / T`` (``"uniform"``) or MD4's
    ``"cosine"`` grid ``cos(pi/2 (1 - i/T))``, denser near t = 1 (where sampling starts, all
    tokens masked: its slope vanishes there)."""
    t = i / T
    return jnp.cos(jnp.pi / 2 * (1.0 - t)) if grid == "cosine" else t


@functools.partial(jax.jit, static_argnames=("schedule", "seq_len", "vocab_size", "mask_id", "T", "top_p", "grid"))
def _sample(fn, keys, schedule: MaskingSchedule, seq_len: int, vocab_size: int, mask_id: int, T: int,
            top_p: float | None, grid: str):
    def body(j, x):
        i = T - j
        t, s = sampling_time(i, T, grid), sampling_time(i - 1, T, grid)
        alpha_s = jnp.where(i == 1, 1.0, schedule.alpha(s))
        logits = fn(x, jnp.full(x.shape[:1], t))
        keys_i = step_keys(keys, i)
        step = lambda k, lg, xx: reverse_step(k, lg, xx, schedule.alpha(t), alpha_s, mask_id, top_p)
        return jax.vmap(step)(keys_i, logits, x)

    x = jnp.full((keys.shape[0], seq_len), mask_id, jnp.int32)
    return jax.lax.fori_loop(0, T, body, x)


def sample_each(keys, logits_fn, schedule: MaskingSchedule, seq_len: int, vocab_size: int,
                mask_id: int | None = None, T: int = 1000, top_p: float | None = None, grid: str = "uniform"):
    """:func:`sample` of one sequence per key (``keys [B]``; step i of sequence b draws from
    ``fold_in(keys[b], i)``): int32 ``[B, seq_len]``, as one loop on the device."""
    mask_id = vocab_size if mask_id is None else mask_id
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")
    return _sample(as_argument(logits_fn), keys, schedule, seq_len, vocab_size, mask_id, T, top_p, grid)


def sample(key, logits_fn, schedule: MaskingSchedule, shape, vocab_size: int, mask_id: int | None = None,
           T: int = 1000, top_p: float | None = None, grid: str = "uniform"):
    """Ancestral sampling over T steps from x_1 = all [MASK] on the time ``grid``
    (:func:`sampling_time`); the last step reveals every token still masked, so the output
    holds no mask. Returns int32 ``shape`` = (B, seq_len); sequence b from ``fold_in(key, b)``.
    Pass a network as ``jax.tree_util.Partial(apply, params)`` to keep its parameters out
    of the compiled program's constants."""
    num, seq_len = shape
    keys = example_keys(key, num)
    return sample_each(keys, logits_fn, schedule, seq_len, vocab_size, mask_id, T, top_p, grid)
