"""Gaussian diffusion of Improved DDPM (Nichol & Dhariwal 2021; paper Sec. 5.2, App. C).

Conventions of the improved-diffusion code: data ``x_0`` scaled to [-1, 1]; steps
``t = 0 .. T-1``, ``x_{t+1} ~ N(sqrt(1 - beta_t) x_t, beta_t I)``; ``alpha_bar[t]`` is the
product of ``1 - beta`` up to and including step t, so ``q(x_{t+1} | x_0) =
N(sqrt(alpha_bar[t]) x_0, (1 - alpha_bar[t]) I)`` and index t of every array below refers to
the noisy sample after t + 1 steps (called ``x_t`` in the code).

* :func:`cosine_schedule`: ``alpha_bar(t) = f(t) / f(0)``, ``f(t) = cos^2(pi/2 (t/T + s)/(1 + s))``,
  s = 0.008, betas clipped at 0.999 (their Eq. 17).
* Learned variance: the network outputs eps and ``v`` in [-1, 1] per dimension; the reverse
  variance is ``exp(frac log beta_t + (1 - frac) log beta~_t)``, ``frac = (v + 1) / 2`` (their
  Eq. 15; beta~ is the posterior variance).
* Hybrid objective (their Eq. 16): ``L_simple + lambda L_vlb`` with lambda = 0.001 and
  ``L_vlb = T E_t[L_t]``, i.e. ``mse + (T / 1000) L_t`` per example, ``L_t`` in bits per
  dimension with the mean held fixed (stop-gradient) so that L_vlb only trains the variance.
  ``L_0`` is the discretized Gaussian decoder NLL of 8-bit data, ``L_t`` (t > 0) the KL of
  the Gaussian posteriors.
* :func:`respace`: the same process on a subsequence of steps (e.g. 250 of 4000) for fast
  sampling; :func:`sample`: ancestral sampling.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rhmdiff._util import as_argument, example_keys, expand_right
from rhmdiff._util import progress as progress_bar


@struct.dataclass
class GaussianSchedule:
    """float64-computed schedule arrays (stored float32) for steps 0..T-1; ``timesteps``
    maps each step to the model's time input (the original step after :func:`respace`)."""

    betas: jax.Array
    alpha_bar: jax.Array
    alpha_bar_prev: jax.Array
    posterior_variance: jax.Array
    posterior_log_variance: jax.Array  # clipped: beta~_0 = 0 is replaced by beta~_1
    posterior_coef_x0: jax.Array
    posterior_coef_xt: jax.Array
    timesteps: jax.Array

    @property
    def T(self) -> int:
        return self.betas.shape[0]


def from_betas(betas, timesteps=None) -> GaussianSchedule:
    """The schedule of a sequence of betas (each in (0, 1))."""
    betas = np.asarray(betas, np.float64)
    if betas.ndim != 1 or not np.all((betas > 0) & (betas < 1)):
        raise ValueError("betas must be a 1-D array of values in (0, 1)")
    alpha_bar = np.cumprod(1.0 - betas)
    alpha_bar_prev = np.append(1.0, alpha_bar[:-1])
    var = betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
    log_var = np.log(np.append(var[1], var[1:])) if len(var) > 1 else np.log(betas)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    return GaussianSchedule(
        betas=f32(betas), alpha_bar=f32(alpha_bar), alpha_bar_prev=f32(alpha_bar_prev), posterior_variance=f32(var),
        posterior_log_variance=f32(log_var),
        posterior_coef_x0=f32(betas * np.sqrt(alpha_bar_prev) / (1.0 - alpha_bar)),
        posterior_coef_xt=f32((1.0 - alpha_bar_prev) * np.sqrt(1.0 - betas) / (1.0 - alpha_bar)),
        timesteps=jnp.asarray(np.arange(len(betas)) if timesteps is None else timesteps, jnp.int32))


def cosine_alpha_bar(t, T: int, s: float = 0.008):
    """Improved DDPM's ``alpha_bar`` at continuous time ``t`` in [0, T] (1 at t = 0)."""
    f = lambda u: np.cos((u / T + s) / (1 + s) * np.pi / 2) ** 2
    return f(np.asarray(t, np.float64)) / f(0.0)


def cosine_schedule(T: int = 4000, max_beta: float = 0.999) -> GaussianSchedule:
    """The cosine schedule: ``beta_t = min(1 - alpha_bar(t+1)/alpha_bar(t), max_beta)``."""
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be an integer >= 1, got {T!r}")
    t = np.arange(T)
    return from_betas(np.minimum(1.0 - cosine_alpha_bar(t + 1, T) / cosine_alpha_bar(t, T), max_beta))


def respace(schedule: GaussianSchedule, num_steps: int) -> GaussianSchedule:
    """The process restricted to ``num_steps`` evenly spaced steps of the original (keeping
    its last step): new betas ``1 - alpha_bar[k_i] / alpha_bar[k_{i-1}]`` so that each
    kept step has the original marginal ``alpha_bar``; the model still sees original steps."""
    T = schedule.T
    if not 1 <= num_steps <= T:
        raise ValueError(f"num_steps must be in [1, T = {T}], got {num_steps!r}")
    keep = np.unique(np.round(np.linspace(0, T - 1, num_steps)).astype(int))
    alpha_bar = np.asarray(schedule.alpha_bar, np.float64)[keep]
    betas = 1.0 - alpha_bar / np.append(1.0, alpha_bar[:-1])
    return from_betas(betas, np.asarray(schedule.timesteps)[keep])


def _at(a, t, ndim):
    return expand_right(a[t], ndim)


def q_sample(schedule: GaussianSchedule, x0, t, noise):
    """``x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) noise`` (t per example)."""
    return _at(jnp.sqrt(schedule.alpha_bar), t, x0.ndim) * x0 + _at(jnp.sqrt(1 - schedule.alpha_bar), t, x0.ndim) * noise


def q_posterior(schedule: GaussianSchedule, x0, x_t, t):
    """Mean, variance and (clipped) log variance of ``q(x_{t-1} | x_t, x_0)``."""
    n = x0.ndim
    mean = _at(schedule.posterior_coef_x0, t, n) * x0 + _at(schedule.posterior_coef_xt, t, n) * x_t
    return mean, _at(schedule.posterior_variance, t, n), _at(schedule.posterior_log_variance, t, n)


def predict_x0(schedule: GaussianSchedule, x_t, t, eps):
    n = x_t.ndim
    return _at(jnp.sqrt(1 / schedule.alpha_bar), t, n) * x_t - _at(jnp.sqrt(1 / schedule.alpha_bar - 1), t, n) * eps


def p_mean_variance(schedule: GaussianSchedule, x_t, t, eps, v, clip: bool = False):
    """Reverse-step mean and log variance from the network's ``eps`` and ``v`` (Eq. 15)."""
    frac = (v + 1) / 2
    log_var = frac * _at(jnp.log(schedule.betas), t, x_t.ndim) + (1 - frac) * _at(
        schedule.posterior_log_variance, t, x_t.ndim)
    x0 = predict_x0(schedule, x_t, t, eps)
    if clip:
        x0 = jnp.clip(x0, -1.0, 1.0)
    mean, _, _ = q_posterior(schedule, x0, x_t, t)
    return mean, log_var


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * jnp.exp(-logvar2))


def _std_normal_cdf(x):
    """Phi(x) via erfc, accurate in both tails."""
    return 0.5 * jax.scipy.special.erfc(-x / math.sqrt(2.0))


def discretized_gaussian_log_likelihood(x, mean, log_scale):
    """log P(bin of x) for 8-bit data scaled to [-1, 1] (bins of width 2/255; the edge bins
    extend to +-infinity) under N(mean, exp(log_scale)^2), elementwise, nats."""
    centered = x - mean
    inv_std = jnp.exp(-log_scale)
    cdf_plus = _std_normal_cdf(inv_std * (centered + 1.0 / 255))
    cdf_min = _std_normal_cdf(inv_std * (centered - 1.0 / 255))
    log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
    log_one_minus_cdf_min = jnp.log(jnp.maximum(_std_normal_cdf(-inv_std * (centered - 1.0 / 255)), 1e-12))
    log_mid = jnp.log(jnp.maximum(cdf_plus - cdf_min, 1e-12))
    return jnp.where(x < -0.999, log_cdf_plus, jnp.where(x > 0.999, log_one_minus_cdf_min, log_mid))


def vb_term(schedule: GaussianSchedule, x0, x_t, t, mean, log_var):
    """``L_t`` per example in bits per dimension: the decoder NLL at t = 0, else the KL of
    the true posterior from the model's reverse step."""
    true_mean, _, true_log_var = q_posterior(schedule, x0, x_t, t)
    axes = tuple(range(1, x0.ndim))
    kl = normal_kl(true_mean, true_log_var, mean, log_var).mean(axes) / math.log(2.0)
    nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var).mean(axes) / math.log(2.0)
    return jnp.where(t == 0, nll, kl)


def noise(key, schedule: GaussianSchedule, shape):
    """A uniform step t and standard normal noise of ``shape`` for one example."""
    k_t, k_noise = jax.random.split(key)
    return jax.random.randint(k_t, (), 0, schedule.T), jax.random.normal(k_noise, shape)


def hybrid_loss(key, model_fn, schedule: GaussianSchedule, x0, lam: float = 0.001):
    """Improved DDPM's hybrid objective on a batch ``x0 [B, ...]`` in [-1, 1], t uniform
    (image i's step and noise from ``fold_in(key, i)``); see :func:`hybrid_terms`."""
    keys = example_keys(key, x0.shape[0])
    t, eps = jax.vmap(lambda k: noise(k, schedule, x0.shape[1:]))(keys)
    return hybrid_terms(model_fn, schedule, x0, t, eps, lam)


def hybrid_each(model_fn, schedule: GaussianSchedule, x0, t, noise, lam: float = 0.001):
    """The hybrid objective of every example at given steps ``t [B]`` and ``noise``, with
    ``model_fn(x_t, t) -> (eps, v)``: ``{"mse", "vb" (bits/dim), "loss" = mse + lam T vb}``,
    each ``[B]``; the mean in the vb term is held fixed (stop-gradient), so L_vlb only trains
    the variance."""
    x_t = q_sample(schedule, x0, t, noise)
    eps, v = model_fn(x_t, schedule.timesteps[t])
    axes = tuple(range(1, x0.ndim))
    mse = jnp.mean((noise - eps) ** 2, axes)
    mean, log_var = p_mean_variance(schedule, x_t, t, jax.lax.stop_gradient(eps), v)
    vb = vb_term(schedule, x0, x_t, t, mean, log_var)
    return {"mse": mse, "vb": vb, "loss": mse + lam * schedule.T * vb}


def hybrid_terms(model_fn, schedule: GaussianSchedule, x0, t, noise, lam: float = 0.001):
    """The hybrid objective at given steps ``t [B]`` and ``noise``: ``(objective, metrics)``
    with the batch means of :func:`hybrid_each`."""
    metrics = {k: v.mean() for k, v in hybrid_each(model_fn, schedule, x0, t, noise, lam).items()}
    return metrics["loss"], metrics


def ancestral_step(model_fn, keys, schedule: GaussianSchedule, x, i, clip: bool = True):
    """One ancestral step of every image of ``x [B, ...]`` at step ``i``; image b's noise
    from ``fold_in(keys[b], i)`` (no noise at the last step, i = 0)."""
    t = jnp.full(x.shape[:1], i)
    eps, v = model_fn(x, schedule.timesteps[t])
    mean, log_var = p_mean_variance(schedule, x, t, eps, v, clip)
    noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, i), x.shape[1:]))(keys)
    return mean + jnp.where(i > 0, 1.0, 0.0) * jnp.exp(0.5 * log_var) * noise


def initial_noise(keys, schedule: GaussianSchedule, shape):
    """x_T ~ N(0, I), image b from ``fold_in(keys[b], T)``."""
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, schedule.T), shape))(keys)


def sample_each(keys, model_fn, schedule: GaussianSchedule, shape, clip: bool = True, progress: bool = False,
                step_map=jax.jit):
    """:func:`sample` of one image per key (``keys [B]``, ``shape`` of one image). The steps
    run as a host loop of ``step_map``-compiled steps (``jax.pmap`` with keys stacked per
    device): XLA:CPU runs convolutions much slower inside a device loop (see
    :mod:`rhmdiff.train`)."""
    model_fn = as_argument(model_fn)
    step = step_map(lambda fn, ks, x, i: ancestral_step(fn, ks, schedule, x, i, clip),
                    **({"in_axes": (None, 0, 0, None)} if step_map is jax.pmap else {}))
    x = step_map(lambda ks: initial_noise(ks, schedule, shape))(keys)
    for i in progress_bar(range(schedule.T - 1, -1, -1), desc="DDPM steps", disable=not progress, leave=False):
        x = step(model_fn, keys, x, i)
    return x


def sample(key, model_fn, schedule: GaussianSchedule, shape, clip: bool = True, progress: bool = False):
    """Ancestral sampling ``x_T ~ N(0, I)`` -> ``x_0`` with ``model_fn(x_t, t) -> (eps, v)``
    (a ``jax.tree_util.Partial`` keeps network parameters out of the compiled constants);
    ``clip`` clips the predicted x_0 to [-1, 1] at every step (images). ``shape`` = (B, ...);
    image b from the key ``fold_in(key, b)``."""
    keys = example_keys(key, shape[0])
    return sample_each(keys, model_fn, schedule, tuple(shape[1:]), clip, progress)
