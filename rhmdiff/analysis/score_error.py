"""How far a trained denoiser is from the Bayes-optimal one, per diffusion time and per level
of the tree (the RHM's exact posterior p(x_0 | x_t) comes from belief propagation).

At a step t, for sequences x_0 of the grammar and their noisy x_t (each drawn from its own
key), with the network's per-token prediction ``q_theta(x_0^i | x_t)`` and the exact
marginals ``p(x_0^i | x_t)`` (:func:`rhmdiff.bp.marginals` of the uniform-noise evidence):

* ``token_kl``: ``KL(p(x_0^i | x_t) || q_theta(x_0^i | x_t))`` averaged over tokens, nats --
  the error of the denoiser, the quantity its cross-entropy training minimizes;
* ``vb_excess``: the network's variational-bound term ``L_t`` minus the oracle's at the same
  x_t, nats per token (how much of the bound the error costs at that t);
* ``level_kl[l]`` (l = 1..L): the error at the level-l latents. A denoiser gives per-token
  marginals only; the level-l posteriors they *imply* are read off by belief propagation
  with those marginals as the evidence of the tokens (``M_l(q) = bp.level_marginals(g,
  log q)[l]``), and compared with what the same map gives for the exact marginals:
  ``KL(M_l(p) || M_l(q_theta))`` averaged over the level-l nodes. The map is not the exact
  posterior (a token's marginal already contains the evidence of the others), so for
  reference ``map_floor[l] = KL(p(h_l | x_t) || M_l(p))`` is reported too; the error is 0
  exactly when the network's marginals are the exact ones.

Every quantity is per sequence (error bars over sequences); :func:`score_errors` evaluates a
grid of steps.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rhmdiff import bp, rhm
from rhmdiff._util import log_softmax
from rhmdiff.diffusion import d3pm

TINY = 1e-30


def log_grid(T: int, num: int) -> np.ndarray:
    """``num`` log-spaced distinct steps in [1, T] (fewer after rounding)."""
    return np.unique(np.round(np.logspace(0, np.log10(T), num)).astype(int))


def categorical_kl(p, log_q):
    """KL(p || q) over the last axis from probabilities ``p`` and log-probabilities ``log_q``."""
    return jnp.sum(jnp.where(p > 0, p * (jnp.log(jnp.maximum(p, TINY)) - log_q), 0.0), -1)


def implied_levels(g: rhm.Grammar, probs):
    """``M_l`` of per-token marginals ``probs [B, d, v]``: the level marginals that belief
    propagation gives with them as the tokens' evidence (list over levels 0..L)."""
    return bp.level_marginals(g, jnp.log(jnp.maximum(probs, TINY)))


@jax.jit
def _errors_at(g: rhm.Grammar, schedule: d3pm.Schedule, logits_fn, keys, x0, tt):
    x_t = jax.vmap(lambda k, x, t: d3pm.q_sample(jax.random.fold_in(k, t), schedule, x, t, g.v))(keys, x0, tt)
    exact = bp.level_marginals(g, bp.uniform_noise_evidence(x_t, schedule.alpha_bar(tt), g.v))
    log_model = log_softmax(logits_fn(x_t, tt))
    log_oracle = jnp.log(jnp.maximum(exact[0], TINY))
    token_kl = categorical_kl(exact[0], log_model).mean(-1)
    vb_excess = (d3pm.vb_terms(schedule, x0, x_t, tt, log_model, g.v)
                 - d3pm.vb_terms(schedule, x0, x_t, tt, log_oracle, g.v)).mean(-1)
    implied_model, implied_exact = implied_levels(g, jnp.exp(log_model)), implied_levels(g, exact[0])
    level_kl = jnp.stack([categorical_kl(implied_exact[l], jnp.log(jnp.maximum(implied_model[l], TINY))).mean(-1)
                          for l in range(1, g.L + 1)], -1)
    map_floor = jnp.stack([categorical_kl(exact[l], jnp.log(jnp.maximum(implied_exact[l], TINY))).mean(-1)
                           for l in range(1, g.L + 1)], -1)
    return {"token_kl": token_kl, "vb_excess": vb_excess, "level_kl": level_kl, "map_floor": map_floor}


def errors_at(g: rhm.Grammar, schedule: d3pm.Schedule, logits_fn, keys, x0, t) -> dict:
    """The errors of the denoiser ``logits_fn(x_t, t) -> logits of x_0`` (a
    ``jax.tree_util.Partial``) on ``x0 [B, d]`` at step ``t`` (an int, or one per sequence),
    sequence i noised with ``fold_in(keys[i], t)``: ``token_kl [B]``, ``vb_excess [B]``,
    ``level_kl [B, L]``, ``map_floor [B, L]`` (nats; module docstring)."""
    x0 = jnp.asarray(x0)
    return _errors_at(g, schedule, logits_fn, keys, x0, jnp.broadcast_to(jnp.asarray(t, jnp.int32), x0.shape[:1]))


def summarize(values) -> dict:
    """Mean and standard error over the leading (sequence) axis."""
    values = np.asarray(values, np.float64)
    return {"mean": values.mean(0).tolist(), "stderr": (values.std(0) / np.sqrt(len(values))).tolist()}
