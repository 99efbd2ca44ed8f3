"""Improved-DDPM Gaussian diffusion against explicit computations."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from rhmdiff.diffusion import gaussian


def test_cosine_schedule_closed_form_and_clipping():
    s = gaussian.cosine_schedule(4000)
    f = lambda t: np.cos((t / 4000 + 0.008) / 1.008 * np.pi / 2) ** 2
    t = np.array([0, 1, 1000, 3998])
    np.testing.assert_allclose(s.alpha_bar[t], f(t + 1) / f(0), rtol=1e-4)
    assert float(s.betas.max()) == pytest.approx(0.999) and float(s.betas.min()) > 0
    assert np.all(np.diff(np.asarray(s.alpha_bar)) < 0)
    with pytest.raises(ValueError, match="T"):
        gaussian.cosine_schedule(0)


def test_posterior_matches_gaussian_conditioning():
    """q(x_{t-1} | x_t, x_0) from Bayes' rule with precisions, computed independently."""
    s = gaussian.cosine_schedule(100)
    x0, x_t = jnp.array([0.3, -0.7]), jnp.array([1.2, 0.1])
    for t in (1, 40, 99):
        beta, ab_prev = float(s.betas[t]), float(s.alpha_bar[t - 1])
        precision = (1 - beta) / beta + 1 / (1 - ab_prev)
        var = 1 / precision
        mean = var * (math.sqrt(1 - beta) * np.asarray(x_t) / beta + math.sqrt(ab_prev) * np.asarray(x0) / (1 - ab_prev))
        m, v, logv = gaussian.q_posterior(s, x0, x_t, jnp.full((2,), t))
        np.testing.assert_allclose(m, mean, rtol=1e-4)
        np.testing.assert_allclose(v, var, rtol=1e-4)
        np.testing.assert_allclose(logv, np.log(var), rtol=1e-4)


def test_normal_kl_matches_numerical_integral():
    m1, lv1, m2, lv2 = 0.3, np.log(0.5), -0.2, np.log(1.7)
    p, q = stats.norm(m1, np.exp(lv1 / 2)), stats.norm(m2, np.exp(lv2 / 2))
    direct, _ = integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), -20, 20)
    assert float(gaussian.normal_kl(m1, lv1, m2, lv2)) == pytest.approx(direct, rel=1e-6)


def test_discretized_log_likelihood_is_a_distribution_over_256_bins():
    values = np.linspace(-1, 1, 256)
    mean, log_scale = 0.13, np.log(0.3)
    logp = np.asarray(gaussian.discretized_gaussian_log_likelihood(jnp.asarray(values), mean, log_scale))
    assert np.exp(logp).sum() == pytest.approx(1.0, abs=1e-5)
    d = stats.norm(mean, 0.3)
    i = 100
    assert np.exp(logp[i]) == pytest.approx(d.cdf(values[i] + 1 / 255) - d.cdf(values[i] - 1 / 255), rel=1e-4)
    assert np.exp(logp[0]) == pytest.approx(d.cdf(-1 + 1 / 255), rel=1e-4)
    assert np.exp(logp[-1]) == pytest.approx(1 - d.cdf(1 - 1 / 255), rel=1e-4)


def test_respacing_keeps_the_marginals():
    s = gaussian.cosine_schedule(4000)
    r = gaussian.respace(s, 250)
    assert r.T == 250 and int(r.timesteps[-1]) == 3999 and int(r.timesteps[0]) == 0
    np.testing.assert_allclose(r.alpha_bar, np.asarray(s.alpha_bar)[np.asarray(r.timesteps)], rtol=1e-5)


def _exact_gaussian_model(schedule, mu, sigma, v_out):
    """The exact eps-predictor E[eps | x_t] for data ~ N(mu, sigma^2) and a fixed v."""
    def model_fn(x_t, t):
        ab = schedule.alpha_bar[jnp.searchsorted(schedule.timesteps, t)][:, None]
        eps = jnp.sqrt(1 - ab) * (x_t - jnp.sqrt(ab) * mu) / (ab * sigma**2 + 1 - ab)
        return eps, jnp.full_like(x_t, v_out)
    return model_fn


@pytest.mark.parametrize("v_out", [-1.0, 1.0])
def test_sampler_with_the_exact_score_recovers_a_gaussian(v_out):
    """With the exact denoiser, ancestral sampling over T = 1000 steps (either end of the
    learned-variance interval) returns the data distribution N(0.3, 0.2^2). (With few
    respaced steps the beta~ end is too narrow: the kernel omits Var[x_0 | x_t].)"""
    s = gaussian.respace(gaussian.cosine_schedule(1000), 1000)
    x = np.asarray(gaussian.sample(jax.random.PRNGKey(0), _exact_gaussian_model(s, 0.3, 0.2, v_out), s,
                                   (20000, 1), clip=False))
    assert x.mean() == pytest.approx(0.3, abs=0.01)
    assert x.std() == pytest.approx(0.2, rel=0.03)


def test_hybrid_loss_terms_and_variance_only_vb_gradient():
    s = gaussian.cosine_schedule(50)
    x0 = jax.random.uniform(jax.random.PRNGKey(0), (16, 4), minval=-1, maxval=1)

    def loss(params):
        fn = lambda x_t, t: (params["a"] * x_t, jnp.tanh(params["b"]) * jnp.ones_like(x_t))
        return gaussian.hybrid_loss(jax.random.PRNGKey(1), fn, s, x0)

    params = {"a": jnp.float32(0.5), "b": jnp.float32(0.2)}
    (objective, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params)
    assert objective == pytest.approx(float(metrics["mse"] + 0.001 * 50 * metrics["vb"]), rel=1e-5)
    assert metrics["vb"] > 0
    # the eps parameter gets no gradient from the vb term (stop-gradient on the mean)
    mse_only = jax.grad(lambda p: loss(p)[1]["mse"])(params)
    assert float(grads["a"]) == pytest.approx(float(mse_only["a"]), rel=1e-5)
    assert abs(float(grads["b"])) > 0


def test_learned_variance_ends_are_beta_and_beta_tilde():
    """v = +1 gives the forward variance beta_t, v = -1 the posterior variance
    beta~_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) (explicit formula); the VB term
    at t > 0 is the Gaussian KL of the true posterior from the model's step, in bits/dim."""
    s = gaussian.cosine_schedule(30)
    betas = np.asarray(s.betas, np.float64)
    ab = np.cumprod(1 - betas)
    t = jnp.array([3, 10, 25])
    beta_tilde = betas * (1 - np.append(1, ab[:-1])) / (1 - ab)
    x_t, eps = jnp.zeros((3, 2)), jnp.zeros((3, 2))
    for v, expected in ((1.0, betas), (-1.0, beta_tilde)):
        _, log_var = gaussian.p_mean_variance(s, x_t, t, eps, jnp.full_like(x_t, v))
        np.testing.assert_allclose(np.exp(np.asarray(log_var[:, 0])), expected[np.asarray(t)], rtol=1e-4)
    x0 = jnp.array([[0.5, -0.2], [0.1, 0.9], [-0.7, 0.3]])
    x_t = jnp.array([[0.3, 0.1], [-0.4, 0.2], [0.6, -0.5]])
    mean, log_var = jnp.array([[0.2, 0.0], [0.1, 0.1], [0.0, 0.2]]), jnp.log(jnp.full((3, 2), 0.05))
    coef0 = betas * np.sqrt(np.append(1, ab[:-1])) / (1 - ab)
    coeft = (1 - np.append(1, ab[:-1])) * np.sqrt(1 - betas) / (1 - ab)
    true_var = beta_tilde
    idx = np.asarray(t)
    mu = coef0[idx, None] * np.asarray(x0) + coeft[idx, None] * np.asarray(x_t)
    kl = 0.5 * (np.log(0.05 / true_var[idx, None]) + true_var[idx, None] / 0.05 + (mu - np.asarray(mean)) ** 2 / 0.05 - 1)
    got = gaussian.vb_term(s, x0, x_t, t, mean, log_var)
    np.testing.assert_allclose(np.asarray(got), kl.mean(1) / np.log(2), rtol=1e-4)
