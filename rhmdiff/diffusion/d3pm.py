"""Uniform-transition D3PM (Austin et al. 2021; Hoogeboom et al. 2021), x0-parameterization.

Forward process (paper Section 2.1): ``Q_t = (1 - beta_t) I + beta_t/v 11^T``, so
``q(x_t | x_0) = alpha_bar_t onehot(x_0) + (1 - alpha_bar_t)/v`` with
``alpha_bar_t = prod_{k<=t} (1 - beta_k)`` -- closed forms, no T x v x v tables.

Time convention: ``t`` is an integer in ``[0, T]``; ``t = 0`` is clean data
(``alpha_bar_0 = 1``), ``x_T`` is (close to) uniform. ``schedule.betas[t-1]`` and
``schedule.alpha_bars[t-1]`` belong to step ``t``. Per-sequence ``t`` (shape ``[B]``)
broadcasts against tokens ``[B, d]``.

Reverse model: a denoiser returns ``p(x_0 | x_t)`` per token (probabilities, or logits for
the loss) and ``p(x_{t-1} | x_t) = sum_a p(x_0 = a | x_t) q(x_{t-1} | x_t, x_0 = a)``
(:func:`q_posterior_logits`), which is the exact per-token reverse kernel when the
denoiser is exact (e.g. the BP oracle).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.tree_util import Partial
from tqdm.auto import tqdm

from rhmdiff import bp
from rhmdiff._util import as_argument, expand_right
from rhmdiff.rhm import Grammar

SCHEDULES = ("linear", "cosine")
OBJECTIVES = ("hybrid",)


@struct.dataclass
class Schedule:
    """Noise schedule: ``betas`` and ``alpha_bars`` float32[T] (entry t-1 for step t)."""

    betas: jax.Array
    alpha_bars: jax.Array

    @property
    def T(self) -> int:
        return self.betas.shape[0]

    def alpha_bar(self, t):
        """alpha_bar_t for integer t in [0, T] (alpha_bar_0 = 1)."""
        return jnp.concatenate([jnp.ones((1,), self.alpha_bars.dtype), self.alpha_bars])[t]

    def beta(self, t):
        """beta_t for integer t in [1, T]."""
        return self.betas[t - 1]


def _from_betas(betas: np.ndarray) -> Schedule:
    betas = np.asarray(betas, np.float64)
    if not np.all((betas > 0) & (betas < 1)):
        raise ValueError("every beta_t must lie in (0, 1)")
    return Schedule(betas=jnp.asarray(betas, jnp.float32),
                    alpha_bars=jnp.asarray(np.cumprod(1.0 - betas), jnp.float32))


def _check_T(T) -> int:
    if not isinstance(T, (int, np.integer)) or isinstance(T, bool) or T < 1:
        raise ValueError(f"T must be an integer >= 1, got {T!r}")
    return int(T)


def linear_schedule(T: int = 1000, beta_min: float = 1e-4, beta_max: float = 0.02) -> Schedule:
    """beta_t linearly spaced from ``beta_min`` to ``beta_max`` (paper Appendix C: linear, T=1000).

    The defaults (Ho et al. 2020) give sum_t beta_t ~ 10 and alpha_bar_T ~ 4e-5, i.e. x_T
    uniform; they are the authors' PyTorch schedule (0.001 -> 0.1 at T = 200) rescaled to
    T = 1000 (same sum of betas)."""
    T = _check_T(T)
    if not 0 < beta_min <= beta_max < 1:
        raise ValueError(f"need 0 < beta_min <= beta_max < 1, got beta_min={beta_min}, beta_max={beta_max}")
    return _from_betas(np.linspace(beta_min, beta_max, T))


def cosine_schedule(T: int = 1000, offset: float = 0.008) -> Schedule:
    """Cosine schedule (Nichol & Dhariwal 2021): alpha_bar(t) = f(t)/f(0),
    f(t) = cos((t/T + offset)/(1 + offset) * pi/2)^2, betas clipped to [1e-8, 0.999]."""
    T = _check_T(T)
    f = np.cos((np.arange(T + 1) / T + offset) / (1 + offset) * np.pi / 2) ** 2
    return _from_betas(np.clip(1.0 - f[1:] / f[:-1], 1e-8, 0.999))


def make_schedule(name: str, T: int, beta_min: float = 1e-4, beta_max: float = 0.02) -> Schedule:
    """Schedule by name: ``"linear"`` (uses beta_min, beta_max) or ``"cosine"``."""
    if name == "linear":
        return linear_schedule(T, beta_min, beta_max)
    if name == "cosine":
        return cosine_schedule(T)
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")


def q_probs(schedule: Schedule, x0, t, v: int):
    """q(x_t | x_0) = alpha_bar_t onehot(x_0) + (1 - alpha_bar_t)/v, float32 ``[..., v]``."""
    x0 = jnp.asarray(x0)
    ab = expand_right(schedule.alpha_bar(t), x0.ndim)[..., None]
    return ab * jax.nn.one_hot(x0, v, dtype=jnp.float32) + (1.0 - ab) / v


def q_sample(key, schedule: Schedule, x0, t, v: int):
    """Draw x_t ~ q(x_t | x_0): keep each token with probability alpha_bar_t, otherwise
    replace it by a uniform symbol (which may equal the original)."""
    x0 = jnp.asarray(x0)
    k_keep, k_new = jax.random.split(key)
    ab = expand_right(schedule.alpha_bar(t), x0.ndim)
    keep = jax.random.uniform(k_keep, x0.shape) < ab
    return jnp.where(keep, x0, jax.random.randint(k_new, x0.shape, 0, v, dtype=x0.dtype))


def q_posterior_logits(schedule: Schedule, x0_probs, x_t, t, v: int):
    """log p(x_{t-1} | x_t) = log sum_a x0_probs[a] q(x_{t-1} | x_t, x_0 = a) (unnormalized
    only by float rounding), for soft ``x0_probs [..., v]`` and integer ``t`` in [1, T].

    With ``w_a = x0_probs[a] / q(x_t | x_0 = a)``, Bayes' rule gives
    ``q(x_{t-1} = c | x_t) ∝ Q_t[c, x_t] (alpha_bar_{t-1} w_c + (1 - alpha_bar_{t-1})/v sum_a w_a)``.
    At t = 1 this is ``x0_probs`` itself."""
    x_t = jnp.asarray(x_t)
    x0_probs = jnp.asarray(x0_probs, jnp.float32)
    beta = expand_right(schedule.beta(t), x_t.ndim)[..., None]
    ab_t = expand_right(schedule.alpha_bar(t), x_t.ndim)[..., None]
    ab_prev = expand_right(schedule.alpha_bar(t - 1), x_t.ndim)[..., None]
    onehot = jax.nn.one_hot(x_t, v, dtype=jnp.float32)
    q_t_given_x0 = ab_t * onehot + (1.0 - ab_t) / v  # q(x_t | x_0 = a), as a function of a
    w = x0_probs / q_t_given_x0
    fact1 = (1.0 - beta) * onehot + beta / v  # q(x_t | x_{t-1} = c)
    fact2 = ab_prev * w + (1.0 - ab_prev) / v * w.sum(-1, keepdims=True)
    return jnp.log(fact1) + jnp.log(fact2)


def _kl_categorical(p_logits, q_logits):
    """KL(p || q) over the last axis, from (unnormalized) logits; 0 log 0 = 0."""
    log_p = jax.nn.log_softmax(p_logits, -1)
    log_q = jax.nn.log_softmax(q_logits, -1)
    p = jnp.exp(log_p)
    return jnp.sum(jnp.where(p > 0, p * (log_p - jnp.where(p > 0, log_q, 0.0)), 0.0), -1)


def prior_kl(schedule: Schedule, x0, v: int):
    """KL(q(x_T | x_0) || uniform) per token, nats, ``[...]`` (constant of the bound)."""
    q = q_probs(schedule, x0, schedule.T, v)
    return jnp.sum(q * jnp.log(q * v), -1)


def vb_terms(schedule: Schedule, x0, x_t, t, x0_logits, v: int):
    """Per-token term of the variational bound at step t, nats ``[..., d]``:
    ``KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))`` for t >= 2 and
    ``-log p(x_0 | x_1)`` for t = 1, with p from the denoiser's ``x0_logits``."""
    x0_probs = jax.nn.softmax(x0_logits, -1)
    model_logits = q_posterior_logits(schedule, x0_probs, x_t, t, v)
    true_logits = q_posterior_logits(schedule, jax.nn.one_hot(x0, v), x_t, t, v)
    kl = _kl_categorical(true_logits, model_logits)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(x0_logits, -1), x0[..., None], -1)[..., 0]
    return jnp.where(expand_right(t, x0.ndim) == 1, nll, kl)


def noise(key, schedule: Schedule, x0, v: int):
    """Draw ``t ~ U{1..T}`` per sequence and ``x_t ~ q(x_t | x_0)``: ``(t int[...], x_t)``
    for ``x0 int[..., d]`` (``t`` has the leading shape, one step per sequence)."""
    x0 = jnp.asarray(x0)
    k_t, k_noise = jax.random.split(key)
    t = jax.random.randint(k_t, x0.shape[:-1], 1, schedule.T + 1)
    return t, q_sample(k_noise, schedule, x0, t, v)


def loss_terms(schedule: Schedule, x0, x_t, t, x0_logits, v: int, hybrid_coeff: float = 0.0):
    """The objective and metrics of :func:`loss` for given ``(t, x_t)`` and denoiser logits."""
    term = vb_terms(schedule, x0, x_t, t, x0_logits, v).mean()
    ce = -jnp.take_along_axis(jax.nn.log_softmax(x0_logits, -1), x0[..., None], -1).mean()
    vb = schedule.T * term + prior_kl(schedule, x0, v).mean()
    metrics = {"vb_nats": vb, "vb_bits": vb / np.log(2.0), "ce_nats": ce}
    return term + hybrid_coeff * ce, metrics


def loss(key, logits_fn, schedule: Schedule, x0, v: int, hybrid_coeff: float = 0.0):
    """D3PM training loss on a batch ``x0 int[B, d]`` with ``t ~ U{1..T}`` per sequence.

    ``logits_fn(x_t, t) -> x0 logits [B, d, v]`` (log-probabilities are fine).
    Returns ``(objective, metrics)``:

    * ``objective = mean_{B, d} L_t + hybrid_coeff * CE``, nats per token, where ``L_t``
      is :func:`vb_terms` at the sampled t and ``CE = -log p(x_0 | x_t)`` (Austin et al.'s
      hybrid loss; their convention of not multiplying L_t by T).
    * ``metrics["vb_nats"]``: the unbiased estimate ``T * mean L_t + prior KL`` of the full
      bound, nats per token (``vb_bits`` in bits), and ``metrics["ce_nats"]``.
    """
    x0 = jnp.asarray(x0)
    t, x_t = noise(key, schedule, x0, v)
    return loss_terms(schedule, x0, x_t, t, logits_fn(x_t, t), v, hybrid_coeff)


def nll_bound(key, logits_fn, schedule: Schedule, x0, v: int, progress: bool = False):
    """The full variational bound on -log p(x_0), per token in nats, summing every step
    t = 1..T (one x_t draw each) plus the prior KL: ``float32[B]`` per sequence.
    Pass a network as ``jax.tree_util.Partial(apply, params)`` to keep its parameters out
    of the compiled program's constants."""
    x0 = jnp.asarray(x0)

    @jax.jit
    def term(fn, k, t):
        tt = jnp.full((x0.shape[0],), t)
        x_t = q_sample(k, schedule, x0, tt, v)
        return vb_terms(schedule, x0, x_t, tt, fn(x_t, tt), v).mean(-1)

    logits_fn = as_argument(logits_fn)
    total = prior_kl(schedule, x0, v).mean(-1)
    for t in tqdm(range(1, schedule.T + 1), desc="VB bound", disable=not progress, leave=False):
        total = total + term(logits_fn, jax.random.fold_in(key, t), t)
    return total


def _reverse_process(key, x0_probs_fn, schedule: Schedule, shape, v: int, progress: bool):
    """Ancestral sampling x_T ~ uniform, x_{t-1} ~ p(x_{t-1} | x_t), t = T..1."""

    @jax.jit
    def step(fn, k, x, t):
        k_x0, k_step = jax.random.split(k)
        tt = jnp.full(shape[:1], t)
        logits = q_posterior_logits(schedule, fn(k_x0, x, tt), x, tt, v)
        return jax.random.categorical(k_step, logits, axis=-1).astype(jnp.int32)

    x0_probs_fn = as_argument(x0_probs_fn)
    k_init, key = jax.random.split(key)
    x = jax.random.randint(k_init, shape, 0, v, dtype=jnp.int32)
    for t in tqdm(range(schedule.T, 0, -1), desc="reverse steps", disable=not progress, leave=False):
        x = step(x0_probs_fn, jax.random.fold_in(key, t), x, t)
    return x


def _drop_key(denoise_fn, k, x, t):
    return denoise_fn(x, t)


def sample(key, denoise_fn, schedule: Schedule, shape, v: int, progress: bool = False):
    """Ancestral sampling from T to 0 with ``denoise_fn(x_t, t) -> p(x_0 | x_t) [..., v]``
    (probabilities; the trained U-Net or the BP oracle). Returns int32 ``shape``.
    Pass a network as ``jax.tree_util.Partial(probs_fn, params)`` to keep its parameters
    out of the compiled program's constants."""
    return _reverse_process(key, Partial(_drop_key, as_argument(denoise_fn)), schedule, tuple(shape), v,
                            progress)


def oracle_denoiser(g: Grammar, schedule: Schedule):
    """The Bayes-optimal denoiser E[x_0 | x_t] of the RHM (exact BP marginals)."""
    return lambda x_t, t: bp.marginals(g, bp.uniform_noise_evidence(x_t, schedule.alpha_bar(t), g.v))


def oracle_sample(key, g: Grammar, schedule: Schedule, num: int, exact: bool = True,
                  progress: bool = False):
    """Generate ``num`` sequences with the BP oracle.

    ``exact=True``: at every step draw x_0 ~ p(x_0 | x_t) jointly (``bp.posterior_sample``)
    and x_{t-1} ~ q(x_{t-1} | x_t, x_0), so every x_{t-1} is an exact draw of the reverse
    process and the output is an exact RHM sample. ``exact=False``: the factorized sampler
    that uses the per-token marginals (what a perfect D3PM denoiser would do)."""
    if exact:
        def x0_probs_fn(k, x, t):
            ev = bp.uniform_noise_evidence(x, schedule.alpha_bar(t), g.v)
            return jax.nn.one_hot(bp.posterior_sample(k, g, ev), g.v)
        return _reverse_process(key, x0_probs_fn, schedule, (num, g.d), g.v, progress)
    return sample(key, oracle_denoiser(g, schedule), schedule, (num, g.d), g.v, progress)
