"""One-step gradient descent (paper App. B, Eqs. 20-24).

A perceptron ``f_nu(x; W) = sum_mu W[nu, mu] x_mu`` with softmax output (Eq. 20) predicts
the token X_{s+1} from the first s-tuple X_{1:s}, given as the one-hot of its index mu among
the tuples seen. W starts at log P^(X_{s+1} = nu) for every mu (assumption ii) and takes one
gradient step of size eta on the empirical cross-entropy (Eq. 21). Then
``W = log P^(nu) + eta C^_P(nu, mu)`` (Eq. 23): each column is the empirical token-tuple
correlation, equal for synonyms up to sampling noise of size (v^2 m P)^{-1/2}, so synonyms
become separable once P >> P_2 = v m^3 / (1 - m/v^{s-1}). Separability is scored by
clustering the columns (k-means, purity w.r.t. the true parents, unseen tuples = failures).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rhmdiff import rhm
from rhmdiff.analysis import clustering


def one_step_update(tuple_index, next_token, num_tuples: int, v: int, eta: float):
    """``(W_0, dW)``, both ``[v, num_tuples]``: the initialization ``W_0[nu, mu] = log P^(nu)``
    and the change of W after one GD step of size ``eta`` on the cross-entropy of the
    Eq. (20) model (the gradient comes from jax.grad; Eq. 22 says ``dW = eta C^_P``)."""
    idx, y = jnp.asarray(tuple_index), jnp.asarray(next_token)
    prior = jnp.bincount(y, length=v) / len(y)
    w0 = jnp.tile(jnp.log(prior)[:, None], (1, num_tuples))

    def loss(w):
        logits = w[:, idx].T  # f_nu(x) = W[nu, mu(x)]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits, -1), y[:, None], -1))

    return np.asarray(w0), np.asarray(-eta * jax.grad(loss)(w0))


def synonym_separability(key, tokens, g: rhm.Grammar, eta: float = 1.0) -> float:
    """Train the one-step model on ``tokens`` and score how well k-means on the columns of
    ``dW = eta C^_P`` groups the first s-tuples into their parents' classes."""
    x = np.asarray(tokens)
    values, index = np.unique(clustering.tuple_codes(x[:, :g.s], g.v), return_inverse=True)
    if len(values) < 2:
        return 0.0
    _, dw = one_step_update(index, x[:, g.s], len(values), g.v, eta)
    return clustering.score_synonym_clusters(key, values, dw.T, g, 1, g.m * len(clustering.first_symbols(g, 1)))
