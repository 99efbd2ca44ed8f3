"""Exact belief propagation on the RHM tree (paper Section 2.2, "Bayes-optimal denoising").

Observations enter as a log-likelihood table ``log_ev[..., i, a] = log p(obs_i | x_i = a)``
over the ``d = s**L`` visible tokens. On a tree, BP is exact:

* upward (inside) pass, in log space: for a level-l node with children c_1..c_s,
  ``up(a) = log (1/m) sum_j prod_k exp(up_{c_k}(rules[l-1, a, j, k]))``;
  ``log p(obs) = logsumexp_a (up_root(a) - log v)``.
* downward pass: the posterior of the (symbol a, production j) pair of each node,
  ``J(a, j) ∝ out(a) + sum_k up_{c_k}(rules[a, j, k]) - log m`` with ``out`` the outside
  message, is normalized, and the children's marginals are read off by summing J over the
  productions that put symbol b at position k (a matmul with a fixed one-hot table, full
  float32 precision). The child's outside message is ``log marginal - up``.
* exact posterior sampling (forward filtering, backward sampling): root from its
  posterior, then each node's production from ``J(a, .)`` given its sampled symbol.

Everything is log-space with -inf handled (hard evidence such as masking), costs
O(v*m*s) per node, and runs on a whole batch as one jitted, vmapped function.
Evidence that is impossible under the grammar (likelihood 0) gives NaN marginals.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rhmdiff._util import expand_right, is_concrete
from rhmdiff.rhm import Grammar, _check_grammar, production


def _upward(g: Grammar, log_ev):
    """Inside pass for one sequence ``log_ev [d, v]``.

    Returns ``ups`` (list over levels 0..L of ``[s**(L-l), v]`` log p(obs below | node = a))
    and ``joint`` (list over levels 1..L of ``[s**(L-l), v, m]``: sum_k up of the
    children under production j, i.e. log p(obs below | node = a, production j))."""
    ups, joint = [log_ev], [None]
    offset = g.v * jnp.arange(g.s)
    for l in range(1, g.L + 1):
        children = ups[-1].reshape(-1, g.s * g.v)  # [n, s*v]: child k's message at k*v + b
        jl = jnp.take(children, g.rules[l - 1] + offset, axis=1).sum(-1)  # [n, v, m]
        joint.append(jl)
        ups.append(jax.nn.logsumexp(jl, axis=-1) - np.log(g.m))
    return ups, joint


def _one_hot_children(g: Grammar, l: int):
    """[s, v*m, v]: entry (k, a*m+j, b) = 1 if production j of symbol a has b at position k."""
    return jax.nn.one_hot(g.rules[l - 1].reshape(g.v * g.m, g.s).T, g.v, dtype=jnp.float32)


def _marginals_all(g: Grammar, log_ev):
    """Posterior marginals of every node, one sequence: list over levels 0..L of
    ``[s**(L-l), v]`` probabilities."""
    ups, joint = _upward(g, log_ev)
    root_logits = ups[g.L] - np.log(g.v)
    marg = [None] * (g.L + 1)
    marg[g.L] = jax.nn.softmax(root_logits, axis=-1)
    outside = jnp.full_like(root_logits, -np.log(g.v))
    for l in range(g.L, 0, -1):
        n = joint[l].shape[0]
        logj = outside[:, :, None] + joint[l]  # [n, v, m], up to constants
        p = jax.nn.softmax(logj.reshape(n, g.v * g.m), axis=-1)
        child = jnp.einsum("nr,krb->nkb", p, _one_hot_children(g, l),
                           precision=jax.lax.Precision.HIGHEST).reshape(n * g.s, g.v)
        marg[l - 1] = child
        up = ups[l - 1]
        outside = jnp.where(jnp.isneginf(up), -jnp.inf, jnp.log(child) - jnp.where(jnp.isneginf(up), 0.0, up))
    return marg


def _log_likelihood(g: Grammar, log_ev):
    ups, _ = _upward(g, log_ev)
    return jax.nn.logsumexp(ups[g.L][0] - np.log(g.v))


def _posterior_sample(key, g: Grammar, log_ev):
    ups, joint = _upward(g, log_ev)
    keys = jax.random.split(key, g.L + 1)
    h = jax.random.categorical(keys[g.L], ups[g.L] - np.log(g.v), axis=-1)  # [1]
    for l in range(g.L, 0, -1):
        logits = jnp.take_along_axis(joint[l], h[:, None, None], axis=1)[:, 0]  # [n, m]
        j = jax.random.categorical(keys[l - 1], logits, axis=-1)
        h = production(g, l, h, j).reshape(-1)
    possible = jnp.isfinite(jax.nn.logsumexp(ups[g.L][0]))
    return jnp.where(possible, h, -1).astype(jnp.int32)


def _check_evidence(g: Grammar, log_ev):
    _check_grammar(g)
    log_ev = jnp.asarray(log_ev)
    if log_ev.ndim < 2 or tuple(log_ev.shape[-2:]) != (g.d, g.v):
        raise ValueError(f"log_ev must have shape [..., d, v] = [..., {g.d}, {g.v}], got {log_ev.shape}")
    return log_ev.astype(jnp.float32)


def _batched(fn, g: Grammar, log_ev, key=None):
    """Apply a one-sequence function to every sequence of ``log_ev [..., d, v]``."""
    batch = log_ev.shape[:-2]
    flat = log_ev.reshape((-1, g.d, g.v))
    if key is None:
        out = jax.vmap(lambda e: fn(g, e))(flat)
    else:
        keys = jax.random.split(key, flat.shape[0])
        out = jax.vmap(lambda k, e: fn(k, g, e))(keys, flat)
    return jax.tree.map(lambda a: a.reshape(batch + a.shape[1:]), out)


_level_marginals_jit = jax.jit(lambda g, e: _batched(_marginals_all, g, e))
_log_likelihood_jit = jax.jit(lambda g, e: _batched(_log_likelihood, g, e))
_posterior_sample_jit = jax.jit(lambda k, g, e: _batched(_posterior_sample, g, e, key=k))


def level_marginals(g: Grammar, log_ev):
    """Posterior marginals of all nodes: list over levels l = 0..L of float32
    ``[..., s**(L-l), v]`` (level 0: visible tokens, level L: the root)."""
    return _level_marginals_jit(g, _check_evidence(g, log_ev))


def marginals(g: Grammar, log_ev):
    """Exact posterior p(x_i = a | obs) of the visible tokens, float32 ``[..., d, v]``."""
    return level_marginals(g, log_ev)[0]


def root_posterior(g: Grammar, log_ev):
    """Exact posterior of the root class, float32 ``[..., v]``."""
    return level_marginals(g, log_ev)[g.L][..., 0, :]


def log_likelihood(g: Grammar, log_ev):
    """``log sum_x p_RHM(x) prod_i p(obs_i | x_i)``, float32 ``[...]``."""
    return _log_likelihood_jit(g, _check_evidence(g, log_ev))


def posterior_sample(key, g: Grammar, log_ev):
    """One exact joint draw ``x ~ p(x | obs)`` per sequence, int32 ``[..., d]``; a sequence
    whose evidence is impossible under the grammar (likelihood 0) comes back as all -1."""
    return _posterior_sample_jit(key, g, _check_evidence(g, log_ev))


def posterior_sample_each(keys, g: Grammar, log_ev):
    """:func:`posterior_sample` with one key per sequence: ``keys [B]``, ``log_ev [B, d, v]``
    (a sequence's draw does not depend on the others in the batch)."""
    return jax.vmap(lambda k, e: _posterior_sample(k, g, e))(keys, _check_evidence(g, log_ev))


def _check_observed(x_t, high: int, what: str):
    """``x_t`` as an integer array; ValueError if a (concrete) value lies outside [0, high)."""
    x_t = jnp.asarray(x_t)
    if not jnp.issubdtype(x_t.dtype, jnp.integer):
        raise ValueError(f"x_t must be integers, got dtype {x_t.dtype}")
    if is_concrete(x_t) and x_t.size and (int(x_t.min()) < 0 or int(x_t.max()) >= high):
        raise ValueError(f"x_t must lie in [0, {high}) ({what}), got values in [{int(x_t.min())}, {int(x_t.max())}]")
    return x_t


def uniform_noise_evidence(x_t, alpha_bar, v: int):
    """Evidence of uniform D3PM noise: ``log p(x_t = b | x_0 = a) = log(alpha_bar [a == b]
    + (1 - alpha_bar) / v)``. ``alpha_bar`` is a scalar or per-sequence (broadcast from the
    left against ``x_t``'s leading axes). Returns float32 ``[..., d, v]``. ValueError for
    tokens outside [0, v)."""
    x_t = _check_observed(x_t, v, "the v symbols")
    ab = expand_right(jnp.asarray(alpha_bar, jnp.float32), x_t.ndim)[..., None]
    probs = ab * jax.nn.one_hot(x_t, v, dtype=jnp.float32) + (1.0 - ab) / v
    return jnp.log(probs)


def mask_evidence(x_t, mask_id: int, v: int):
    """Evidence of masking: positions equal to ``mask_id`` get uniform evidence (0), the
    others 0 on the observed symbol and -inf elsewhere. Returns float32 ``[..., d, v]``.
    ValueError for a ``mask_id`` in [0, v) or tokens that are neither a symbol nor the mask."""
    if 0 <= mask_id < v:
        raise ValueError(f"mask_id must not be one of the v = {v} symbols, got {mask_id}")
    x_t = _check_observed(x_t, max(v, mask_id + 1), f"the v symbols or mask_id = {mask_id}")
    if is_concrete(x_t) and bool(((x_t >= v) & (x_t != mask_id)).any()):
        raise ValueError(f"x_t must hold symbols in [0, {v}) or mask_id = {mask_id}")
    observed = jax.nn.one_hot(x_t, v, dtype=jnp.bool_)
    masked = (x_t == mask_id)[..., None]
    return jnp.where(masked | observed, 0.0, -jnp.inf).astype(jnp.float32)
