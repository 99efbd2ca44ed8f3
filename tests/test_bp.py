"""rhmdiff.bp against the brute-force posterior over the enumerated language."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from rhmdiff import bp, rhm


def brute_posterior(lang, log_ev):
    """Posterior weights over the language (uniform prior: every sequence has p = 1/N)."""
    seqs = np.array([e[0] for e in lang])
    d = seqs.shape[1]
    logw = np.asarray(log_ev, np.float64)[np.arange(d), seqs].sum(-1)  # [N]
    log_like = logsumexp(logw) - np.log(len(lang))
    return np.exp(logw - logsumexp(logw)), log_like, seqs


def evidences(g, key):
    """A few evidence tables of each kind: uniform noise, masking, arbitrary."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    x, _ = rhm.sample(k1, g, 3)
    noisy = jnp.where(jax.random.uniform(k2, x.shape) < 0.4, jax.random.randint(k3, x.shape, 0, g.v), x)
    masked = jnp.where(jax.random.uniform(k4, x.shape) < 0.5, g.v, x)
    arbitrary = 2.0 * jax.random.normal(k2, (2, g.d, g.v))
    return jnp.concatenate([bp.uniform_noise_evidence(noisy, 0.3, g.v),
                            bp.mask_evidence(masked, g.v, g.v), arbitrary])


def test_marginals_likelihood_root_match_brute_force(tiny):
    g, lang = tiny
    ev = evidences(g, jax.random.PRNGKey(0))
    marg = np.asarray(bp.marginals(g, ev))
    ll = np.asarray(bp.log_likelihood(g, ev))
    root = np.asarray(bp.root_posterior(g, ev))
    levels = bp.level_marginals(g, ev)
    chex.assert_shape(marg, (len(ev), g.d, g.v))
    for b in range(len(ev)):
        w, log_like, seqs = brute_posterior(lang, ev[b])
        np.testing.assert_allclose(ll[b], log_like, rtol=1e-4, atol=1e-4)
        expected = np.stack([np.bincount(seqs[:, i], weights=w, minlength=g.v) for i in range(g.d)])
        np.testing.assert_allclose(marg[b], expected, atol=2e-5)
        for level in range(1, g.L + 1):
            lat = np.array([e[1][level - 1] for e in lang])  # [N, s**(L-l)]
            exp_l = np.stack([np.bincount(lat[:, i], weights=w, minlength=g.v) for i in range(lat.shape[1])])
            np.testing.assert_allclose(levels[level][b], exp_l, atol=2e-5)
        np.testing.assert_allclose(root[b], levels[g.L][b, 0], atol=1e-6)


def test_posterior_sample_frequencies(tiny):
    g, lang = tiny
    ev = evidences(g, jax.random.PRNGKey(1))[jnp.array([0, 3])]  # one noisy, one masked
    index = {e[0]: i for i, e in enumerate(lang)}
    n = 20000
    for b in range(len(ev)):
        w, _, _ = brute_posterior(lang, ev[b])
        draws = np.asarray(bp.posterior_sample(jax.random.PRNGKey(b), g, jnp.broadcast_to(ev[b], (n, g.d, g.v))))
        counts = np.bincount([index[tuple(r)] for r in draws], minlength=len(lang))
        support = w > 1e-12
        assert counts[~support].sum() == 0
        expected = w[support] * n
        assert stats.chisquare(counts[support], expected).pvalue > 1e-4


def test_posterior_sample_respects_observations():
    g = rhm.make_grammar(jax.random.PRNGKey(0), 8, 3, 2, 3)
    x, _ = rhm.sample(jax.random.PRNGKey(1), g, 64)
    masked = jnp.where(jax.random.uniform(jax.random.PRNGKey(2), x.shape) < 0.6, g.v, x)
    draws = bp.posterior_sample(jax.random.PRNGKey(3), g, bp.mask_evidence(masked, g.v, g.v))
    assert bool(rhm.is_valid(g, draws).all())
    np.testing.assert_array_equal(np.where(masked == g.v, draws, masked), draws)


def test_deep_tree_near_deterministic_evidence_is_finite():
    g = rhm.make_grammar(jax.random.PRNGKey(0), 4, 2, 2, 8)  # d = 256
    x, _ = rhm.sample(jax.random.PRNGKey(1), g, 4)
    for alpha_bar in (1.0 - 1e-7, 0.999, 0.5, 1e-6):
        ev = bp.uniform_noise_evidence(x, alpha_bar, g.v)
        marg = np.asarray(bp.marginals(g, ev))
        assert np.isfinite(marg).all() and np.isfinite(np.asarray(bp.log_likelihood(g, ev))).all()
        np.testing.assert_allclose(marg.sum(-1), 1.0, atol=1e-4)
        if alpha_bar > 0.99:
            assert (marg.argmax(-1) == np.asarray(x)).all()
    masked = jnp.where(jax.random.uniform(jax.random.PRNGKey(2), x.shape) < 0.9, g.v, x)
    marg = np.asarray(bp.marginals(g, bp.mask_evidence(masked, g.v, g.v)))
    assert np.isfinite(marg).all()
    np.testing.assert_allclose(marg.sum(-1), 1.0, atol=1e-4)
    draws = bp.posterior_sample(jax.random.PRNGKey(3), g, bp.mask_evidence(masked, g.v, g.v))
    assert bool(rhm.is_valid(g, draws).all())


def test_evidence_builders():
    x = jnp.array([[0, 2, 1]])
    ev = np.exp(np.asarray(bp.uniform_noise_evidence(x, 0.6, 3)))
    np.testing.assert_allclose(ev[0, 1], [0.4 / 3, 0.4 / 3, 0.6 + 0.4 / 3], rtol=1e-6)
    per_seq = bp.uniform_noise_evidence(jnp.array([[0, 1], [1, 1]]), jnp.array([1.0, 0.0]), 2)
    np.testing.assert_allclose(np.exp(per_seq[0, 0]), [1, 0]); np.testing.assert_allclose(np.exp(per_seq[1, 0]), [0.5, 0.5])
    me = np.asarray(bp.mask_evidence(jnp.array([[3, 1]]), 3, 3))
    np.testing.assert_array_equal(me[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(me[0, 1], [-np.inf, 0, -np.inf])


def test_bad_evidence_shape_raises():
    g = rhm.make_grammar(jax.random.PRNGKey(0), 4, 2, 2, 2)
    with pytest.raises(ValueError, match="log_ev"):
        bp.marginals(g, jnp.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="log_ev"):
        bp.posterior_sample(jax.random.PRNGKey(0), g, jnp.zeros((4,)))


class TestVariants(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_public_functions(self):
        g = rhm.make_grammar(jax.random.PRNGKey(0), 4, 2, 2, 3)
        x, _ = rhm.sample(jax.random.PRNGKey(1), g, 6)
        ev = self.variant(lambda xx: bp.uniform_noise_evidence(xx, 0.5, 4))(x)
        marg = self.variant(bp.marginals)(g, ev.reshape(2, 3, 8, 4))
        chex.assert_shape(marg, (2, 3, 8, 4))
        chex.assert_trees_all_close(marg.reshape(6, 8, 4), bp.marginals(g, ev), atol=1e-6)
        chex.assert_shape(self.variant(bp.log_likelihood)(g, ev), (6,))
        chex.assert_shape(self.variant(bp.root_posterior)(g, ev), (6, 4))
        draws = self.variant(bp.posterior_sample)(jax.random.PRNGKey(2), g, ev)
        chex.assert_shape(draws, (6, 8))
        chex.assert_type(draws, jnp.int32)


def test_pmap_over_devices_matches_single_device():
    """The same BP and sampling code runs data-parallel under pmap (4 fake CPU devices)."""
    n_dev = jax.local_device_count()
    assert n_dev >= 2
    g = rhm.make_grammar(jax.random.PRNGKey(0), 8, 3, 2, 3)
    keys = jax.random.split(jax.random.PRNGKey(1), n_dev)
    x = jax.pmap(lambda k: rhm.sample(k, g, 16)[0])(keys)  # [n_dev, 16, d]
    chex.assert_shape(x, (n_dev, 16, g.d))
    assert bool(rhm.is_valid(g, x.reshape(-1, g.d)).all())
    ev = bp.uniform_noise_evidence(x, 0.4, g.v)
    np.testing.assert_allclose(jax.pmap(lambda e: bp.marginals(g, e))(ev), bp.marginals(g, ev), atol=1e-6)
    draws = jax.pmap(lambda k, e: bp.posterior_sample(k, g, e))(keys, ev)
    assert bool(rhm.is_valid(g, draws.reshape(-1, g.d)).all())
