"""rhmdiff.bp where test_bp.py does not look: evidence the grammar cannot produce, the draw of
one sequence per key, the evidence builders on batches of batches and their refusals, each
against the enumerated language or a plain numpy loop."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import enumerate_language
from scipy import stats
from scipy.special import logsumexp

from rhmdiff import bp, rhm

# one compiled program per batch shape (the eager vmap of posterior_sample_each traces op by op)
_each = jax.jit(bp.posterior_sample_each)


@pytest.fixture(scope="module")
def grammar():
    g = rhm.make_grammar(jax.random.PRNGKey(21), 3, 2, 2, 2)  # 24 sequences of 4 tokens among 81
    return g, enumerate_language(g)


def test_impossible_evidence_gives_nan_marginals_minus_inf_likelihood_and_no_draw(grammar):
    """A fully observed sequence outside the language (hard evidence, likelihood 0) next to
    a possible one in the same batch: NaN marginals and root posterior, log-likelihood -inf and
    an all -1 draw for it; the possible one is unaffected (brute force over the language)."""
    g, lang = grammar
    words = np.array([e[0] for e in lang])
    inside = {tuple(w) for w in words}
    bad = next(x for x in itertools.product(range(g.v), repeat=g.d) if x not in inside)
    partial = np.array(words[5])
    partial[[0, 3]] = g.v  # two masked tokens
    ev = bp.mask_evidence(jnp.array([bad, partial]), g.v, g.v)
    marg, root = np.asarray(bp.marginals(g, ev)), np.asarray(bp.root_posterior(g, ev))
    ll = np.asarray(bp.log_likelihood(g, ev))
    assert np.isnan(marg[0]).all() and np.isnan(root[0]).all() and ll[0] == -np.inf
    consistent = np.all((words == partial) | (partial == g.v), 1)  # the sequences the evidence allows
    assert ll[1] == pytest.approx(np.log(consistent.sum() / len(words)), abs=1e-5)
    w = consistent / consistent.sum()
    np.testing.assert_allclose(marg[1], np.stack([np.bincount(words[:, i], w, g.v) for i in range(g.d)]), atol=1e-6)
    roots = np.array([e[1][-1][0] for e in lang])
    np.testing.assert_allclose(root[1], np.bincount(roots, w, g.v), atol=1e-6)
    for draw in (bp.posterior_sample(jax.random.PRNGKey(0), g, ev),
                 _each(jax.random.split(jax.random.PRNGKey(1), 2), g, ev)):
        draw = np.asarray(draw)
        np.testing.assert_array_equal(draw[0], -1)
        assert tuple(draw[1]) in inside and consistent[[tuple(r) for r in words].index(tuple(draw[1]))]


def test_posterior_sample_each_draws_each_sequence_from_its_own_key(grammar):
    """posterior_sample_each: sequence i's draw depends on keys[i] and its own evidence only
    (a permuted batch gives the permuted draws), and ~6000 draws of one noisy evidence, each
    with its own key, follow the exact posterior over the language (chi-square)."""
    g, lang = grammar
    words = np.array([e[0] for e in lang])
    x = words[[3, 17, 8, 11]]
    noisy = np.where(np.arange(g.d) % 3 == 0, (x + 1) % g.v, x)
    ev4 = bp.uniform_noise_evidence(noisy, jnp.array([0.3, 0.6, 0.45, 0.8]), g.v)
    n = 6000  # rows 0..3: four evidences; the others: evidence 0 again
    ev = jnp.concatenate([ev4, jnp.broadcast_to(ev4[0], (n - 4, g.d, g.v))])
    keys = jax.random.split(jax.random.PRNGKey(3), n)
    perm = np.concatenate([[2, 0, 3, 1], np.arange(4, n)])
    a = np.asarray(_each(keys, g, ev))
    b = np.asarray(_each(keys[perm], g, ev[perm]))
    np.testing.assert_array_equal(a[perm], b)
    draws = a[np.r_[0, 4:n]]
    e0 = np.asarray(ev[0], np.float64)
    logw = e0[np.arange(g.d), words].sum(1)
    post = np.exp(logw - logsumexp(logw))
    index = {tuple(w): i for i, w in enumerate(words)}
    counts = np.bincount([index[tuple(r)] for r in draws], minlength=len(words))
    assert stats.chisquare(counts, post * len(draws)).pvalue > 1e-4


def test_evidence_builders_on_batches_of_batches_and_their_refusals():
    """uniform_noise_evidence with alpha_bar per leading index of x_t [2, 3, d] (broadcast from
    the left), against a loop; mask_evidence with a mask id above v; refusals: tokens out of
    range, a mask id that is a symbol, a token that is neither a symbol nor the mask."""
    v, d = 4, 5
    x = np.random.default_rng(0).integers(0, v, (2, 3, d))
    ab = np.array([0.25, 0.7])
    got = np.exp(np.asarray(bp.uniform_noise_evidence(x, ab, v)))
    for i, j, k in itertools.product(range(2), range(3), range(d)):
        expected = np.full(v, (1 - ab[i]) / v)
        expected[x[i, j, k]] += ab[i]
        np.testing.assert_allclose(got[i, j, k], expected, rtol=1e-6)
    masked = np.where(x == 1, v + 2, x)
    got = np.asarray(bp.mask_evidence(masked, v + 2, v))
    for i, j, k in itertools.product(range(2), range(3), range(d)):
        expected = np.zeros(v) if masked[i, j, k] == v + 2 else np.where(np.arange(v) == x[i, j, k], 0.0, -np.inf)
        np.testing.assert_array_equal(got[i, j, k], expected)
    with pytest.raises(ValueError, match="x_t"):
        bp.uniform_noise_evidence(np.array([[0, v]]), 0.5, v)
    for mask_id in (0, v - 1):
        with pytest.raises(ValueError, match="mask_id"):
            bp.mask_evidence(np.array([[0, 1]]), mask_id, v)
    with pytest.raises(ValueError, match="x_t"):
        bp.mask_evidence(np.array([[0, v]]), v + 2, v)
