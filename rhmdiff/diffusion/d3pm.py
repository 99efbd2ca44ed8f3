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

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.tree_util import Partial

from rhmdiff import bp
from rhmdiff._util import as_argument, example_keys, expand_right, log_softmax, softmax, step_keys
from rhmdiff.rhm import Grammar

SCHEDULES = ("linear", "cosine")
OBJECTIVES = ("hybrid", "vb")


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
    log_p = log_softmax(p_logits, -1)
    log_q = log_softmax(q_logits, -1)
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
    x0_probs = softmax(x0_logits, -1)
    model_logits = q_posterior_logits(schedule, x0_probs, x_t, t, v)
    true_logits = q_posterior_logits(schedule, jax.nn.one_hot(x0, v), x_t, t, v)
    kl = _kl_categorical(true_logits, model_logits)
    nll = -jnp.take_along_axis(log_softmax(x0_logits, -1), x0[..., None], -1)[..., 0]
    return jnp.where(expand_right(t, x0.ndim) == 1, nll, kl)


def noise(key, schedule: Schedule, x0, v: int):
    """Draw ``t ~ U{1..T}`` per sequence and ``x_t ~ q(x_t | x_0)``: ``(t int[...], x_t)``
    for ``x0 int[..., d]`` (``t`` has the leading shape, one step per sequence)."""
    x0 = jnp.asarray(x0)
    k_t, k_noise = jax.random.split(key)
    t = jax.random.randint(k_t, x0.shape[:-1], 1, schedule.T + 1)
    return t, q_sample(k_noise, schedule, x0, t, v)


def loss_terms(schedule: Schedule, x0, x_t, t, x0_logits, v: int, hybrid_coeff: float = 0.0,
               objective: str = "hybrid"):
    """The objective and metrics of :func:`loss` for given ``(t, x_t)`` and denoiser logits."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    term = vb_terms(schedule, x0, x_t, t, x0_logits, v).mean()
    ce = -jnp.take_along_axis(log_softmax(x0_logits, -1), x0[..., None], -1).mean()
    vb = schedule.T * term + prior_kl(schedule, x0, v).mean()
    metrics = {"vb_nats": vb, "vb_bits": vb / np.log(2.0), "ce_nats": ce}
    return (term + hybrid_coeff * ce if objective == "hybrid" else term), metrics


def loss(key, logits_fn, schedule: Schedule, x0, v: int, hybrid_coeff: float = 0.0, objective: str = "hybrid"):
    """D3PM training loss on a batch ``x0 int[B, d]`` with ``t ~ U{1..T}`` per sequence.

    ``logits_fn(x_t, t) -> x0 logits [B, d, v]`` (log-probabilities are fine).
    Returns ``(objective, metrics)``:

    * ``"hybrid"``: ``mean_{B, d} L_t + hybrid_coeff * CE``, nats per token, where ``L_t``
      is :func:`vb_terms` at the sampled t and ``CE = -log p(x_0 | x_t)`` (Austin et al.'s
      hybrid loss; their convention of not multiplying L_t by T);
    * ``"vb"``: ``mean_{B, d} L_t`` alone -- the KL of the posteriors at one t per sequence,
      averaged over tokens, as the paper's and the authors' code's loss (the variational
      bound divided by T, up to the prior term);
    * ``metrics["vb_nats"]``: the unbiased estimate ``T * mean L_t + prior KL`` of the full
      bound, nats per token (``vb_bits`` in bits), and ``metrics["ce_nats"]``.
    """
    x0 = jnp.asarray(x0)
    t, x_t = noise(key, schedule, x0, v)
    return loss_terms(schedule, x0, x_t, t, logits_fn(x_t, t), v, hybrid_coeff, objective)


def bound_terms(fn, keys, schedule: Schedule, x0, t, v: int):
    """``L_t`` (:func:`vb_terms`, nats, mean over tokens) of every sequence at each step of
    ``t int[k]``: ``float32[k, B]``; x_t drawn from ``fold_in(keys[i], t)``. The k steps go
    through the network as one batch of k * B sequences."""
    k, (b, d) = t.shape[0], x0.shape
    x_t = jax.vmap(lambda tt: jax.vmap(lambda kk, x: q_sample(kk, schedule, x, tt, v))(step_keys(keys, tt), x0))(t)
    tt = jnp.repeat(t, b)
    x0k = jnp.broadcast_to(x0, (k, b, d)).reshape(k * b, d)
    x_t = x_t.reshape(k * b, d)
    return vb_terms(schedule, x0k, x_t, tt, fn(x_t, tt), v).mean(-1).reshape(k, b)


@functools.partial(jax.jit, static_argnames=("v", "t_chunk"))
def _nll_bound(fn, keys, schedule: Schedule, x0, v: int, t_chunk: int):
    T = schedule.T
    n_chunks = -(-T // t_chunk)

    def body(total, c):
        t = 1 + c * t_chunk + jnp.arange(t_chunk)
        terms = bound_terms(fn, keys, schedule, x0, jnp.minimum(t, T), v)
        for j in range(t_chunk):  # in the order of t: the same sums as a loop over t
            total = total + jnp.where(t[j] <= T, terms[j], 0.0)
        return total, None

    return jax.lax.scan(body, prior_kl(schedule, x0, v).mean(-1), jnp.arange(n_chunks))[0]


def nll_bound_each(keys, logits_fn, schedule: Schedule, x0, v: int, t_chunk: int | None = None):
    """:func:`nll_bound` with one key per sequence, ``keys[i]`` for ``x0[i]``, as one loop on
    the device; ``t_chunk`` steps share each network call (default: enough for ~1024
    sequences per call: larger calls were not faster on CPU)."""
    x0 = jnp.asarray(x0)
    t_chunk = t_chunk or max(1, min(schedule.T, 1024 // x0.shape[0]))
    return _nll_bound(as_argument(logits_fn), keys, schedule, x0, v, t_chunk)


def nll_bound(key, logits_fn, schedule: Schedule, x0, v: int):
    """The full variational bound on -log p(x_0), per token in nats, summing every step
    t = 1..T (one x_t draw each, from the sequence's key ``fold_in(key, i)``) plus the prior
    KL: ``float32[B]`` per sequence. Pass a network as ``jax.tree_util.Partial(apply,
    params)`` to keep its parameters out of the compiled program's constants."""
    x0 = jnp.asarray(x0)
    return nll_bound_each(example_keys(key, x0.shape[0]), logits_fn, schedule, x0, v)


def reverse_step(fn, keys, schedule: Schedule, x, t, v: int):
    """One ancestral step ``x_t -> x_{t-1}`` of every sequence of ``x [B, d]`` at step ``t``:
    ``fn(keys_x0 [B], x_t, t [B]) -> p(x_0 | x_t)`` and ``x_{t-1} ~ p(x_{t-1} | x_t)``, the
    randomness of sequence i from ``fold_in(keys[i], t)``."""
    split = jax.vmap(jax.random.split)(step_keys(keys, t))
    tt = jnp.full(x.shape[:1], t)
    logits = q_posterior_logits(schedule, fn(split[:, 0], x, tt), x, tt, v)
    return jax.vmap(lambda k, lg: jax.random.categorical(k, lg, axis=-1))(split[:, 1], logits).astype(jnp.int32)


def initial_noise(keys, d: int, v: int):
    """x_T uniform, sequence i from ``fold_in(keys[i], 0)`` (0 is no reverse step)."""
    return jax.vmap(lambda k: jax.random.randint(k, (d,), 0, v, dtype=jnp.int32))(step_keys(keys, 0))


@functools.partial(jax.jit, static_argnames=("d", "v"))
def _reverse_process(fn, keys, schedule: Schedule, d: int, v: int):
    """Ancestral sampling x_T ~ uniform, x_{t-1} ~ p(x_{t-1} | x_t), t = T..1, on the device."""
    T = schedule.T
    step = lambda i, x: reverse_step(fn, keys, schedule, x, T - i, v)
    return jax.lax.fori_loop(0, T, step, initial_noise(keys, d, v))


def _drop_key(denoise_fn, k, x, t):
    return denoise_fn(x, t)


def sample_each(keys, denoise_fn, schedule: Schedule, d: int, v: int):
    """:func:`sample` of one sequence per key (``keys [B]``): int32 ``[B, d]``."""
    return _reverse_process(Partial(_drop_key, as_argument(denoise_fn)), keys, schedule, d, v)


def sample(key, denoise_fn, schedule: Schedule, shape, v: int):
    """Ancestral sampling from T to 0 with ``denoise_fn(x_t, t) -> p(x_0 | x_t) [..., v]``
    (probabilities; the trained U-Net or the BP oracle). Returns int32 ``shape`` = (B, d);
    sequence i is drawn from the key ``fold_in(key, i)``. Pass a network as
    ``jax.tree_util.Partial(probs_fn, params)`` to keep its parameters out of the compiled
    program's constants."""
    num, d = shape
    return sample_each(example_keys(key, num), denoise_fn, schedule, d, v)


def oracle_denoiser(g: Grammar, schedule: Schedule):
    """The Bayes-optimal denoiser E[x_0 | x_t] of the RHM (exact BP marginals)."""
    return Partial(_oracle_marginals, g, schedule)


def _oracle_marginals(g, schedule, x_t, t):
    return bp.marginals(g, bp.uniform_noise_evidence(x_t, schedule.alpha_bar(t), g.v))


def _oracle_posterior_draw(g, schedule, keys, x_t, t):
    ev = bp.uniform_noise_evidence(x_t, schedule.alpha_bar(t), g.v)
    return jax.nn.one_hot(bp.posterior_sample_each(keys, g, ev), g.v)


def oracle_sample_each(keys, g: Grammar, schedule: Schedule, exact: bool = True):
    """:func:`oracle_sample` of one sequence per key (``keys [B]``): int32 ``[B, d]``."""
    if exact:
        return _reverse_process(Partial(_oracle_posterior_draw, g, schedule), keys, schedule, g.d, g.v)
    return sample_each(keys, oracle_denoiser(g, schedule), schedule, g.d, g.v)


def oracle_sample(key, g: Grammar, schedule: Schedule, num: int, exact: bool = True):
    """Generate ``num`` sequences with the BP oracle (sequence i from ``fold_in(key, i)``).

    ``exact=True``: at every step draw x_0 ~ p(x_0 | x_t) jointly (``bp.posterior_sample``)
    and x_{t-1} ~ q(x_{t-1} | x_t, x_0), so every x_{t-1} is an exact draw of the reverse
    process and the output is an exact RHM sample. ``exact=False``: the factorized sampler
    that uses the per-token marginals (what a perfect D3PM denoiser would do)."""
    return oracle_sample_each(example_keys(key, num), g, schedule, exact)
