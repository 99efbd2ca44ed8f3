"""rhmdiff.diffusion.gaussian against numpy re-derivations from the betas: every schedule array
(unsorted random betas, the clipped t = 0 log variance), the decoder NLL of the t = 0 branch
of the VB term, the reverse step at an interior frac and with clipping, the hybrid objective of
a respaced process, and the whole ancestral sampler as a plain loop."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from rhmdiff._util import example_keys
from rhmdiff.diffusion import gaussian

BETAS = np.array([0.02, 0.31, 0.07, 0.45, 0.12, 0.6])  # not monotone


def numpy_schedule(betas):
    ab = np.cumprod(1 - betas)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    var = betas * (1 - ab_prev) / (1 - ab)
    log_var = np.log(np.concatenate([[var[1]], var[1:]]))
    return {"betas": betas, "alpha_bar": ab, "alpha_bar_prev": ab_prev, "posterior_variance": var,
            "posterior_log_variance": log_var, "posterior_coef_x0": betas * np.sqrt(ab_prev) / (1 - ab),
            "posterior_coef_xt": (1 - ab_prev) * np.sqrt(1 - betas) / (1 - ab)}


def numpy_step(ref, x_t, t, eps, v, clip):
    """Mean and log variance of the reverse step (Improved DDPM Eqs. 11-15), per example t."""
    ab = ref["alpha_bar"][t][:, None]
    x0 = x_t / np.sqrt(ab) - np.sqrt(1 / ab - 1) * eps
    if clip:
        x0 = np.clip(x0, -1, 1)
    mean = ref["posterior_coef_x0"][t][:, None] * x0 + ref["posterior_coef_xt"][t][:, None] * x_t
    frac = (v + 1) / 2
    log_var = frac * np.log(ref["betas"][t])[:, None] + (1 - frac) * ref["posterior_log_variance"][t][:, None]
    return mean, log_var


def test_schedule_arrays_from_unsorted_betas_and_the_one_step_schedule():
    s = gaussian.from_betas(BETAS)
    for name, expected in numpy_schedule(BETAS).items():
        np.testing.assert_allclose(np.asarray(getattr(s, name)), expected, rtol=2e-6, err_msg=name)
    assert float(s.posterior_variance[0]) == 0.0  # the clipped log variance replaces it at t = 0
    np.testing.assert_array_equal(s.timesteps, np.arange(6))
    one = gaussian.from_betas([0.3])
    np.testing.assert_allclose(one.posterior_log_variance, [np.log(0.3)], rtol=1e-6)
    with pytest.raises(ValueError, match="betas"):
        gaussian.from_betas([0.1, 1.0])
    r = gaussian.respace(s, 3)  # keeps steps 0, 2 (rounded from 2.5), 5 of the six
    np.testing.assert_array_equal(r.timesteps, [0, 2, 5])
    ab = np.cumprod(1 - BETAS)[[0, 2, 5]]
    np.testing.assert_allclose(r.betas, 1 - ab / np.concatenate([[1.0], ab[:-1]]), rtol=1e-5)
    np.testing.assert_allclose(r.posterior_variance, numpy_schedule(np.asarray(r.betas, np.float64))[
        "posterior_variance"], rtol=1e-5)


def test_vb_term_at_t0_is_the_decoder_nll_with_the_standard_deviation_of_the_log_variance():
    """At t = 0 the term is -log P(8-bit bin of x_0) under N(mean, exp(log_var)) (scale
    exp(log_var / 2)), edge bins open, in bits per dimension; at t > 0 in the same batch the
    Gaussian KL. Scipy's normal cdf is the reference."""
    s = gaussian.from_betas(BETAS)
    x0 = np.array([[-1.0, 0.2, 1.0, -0.4], [0.6, -1.0, 0.0, 1.0]], np.float32)
    x_t = np.array([[0.3, -0.1, 0.8, 0.2], [0.1, 0.4, -0.6, 0.9]], np.float32)
    mean = np.array([[-0.9, 0.25, 0.9, -0.3], [0.5, -0.8, 0.1, 0.7]], np.float32)
    log_var = np.log(np.array([[0.01, 0.04, 0.09, 0.0025], [0.02, 0.05, 0.3, 0.1]], np.float32))
    t = jnp.array([0, 3])
    got = np.asarray(jax.jit(gaussian.vb_term)(s, x0, x_t, t, mean, log_var))
    d = stats.norm(mean[0], np.exp(0.5 * log_var[0]))
    upper = np.where(x0[0] > 0.999, 1.0, d.cdf(x0[0] + 1 / 255))
    lower = np.where(x0[0] < -0.999, 0.0, d.cdf(x0[0] - 1 / 255))
    assert got[0] == pytest.approx(-np.log(upper - lower).mean() / np.log(2), rel=1e-4)
    ref = numpy_schedule(BETAS)
    mu = ref["posterior_coef_x0"][3] * x0[1] + ref["posterior_coef_xt"][3] * x_t[1]
    tv = ref["posterior_variance"][3]
    kl = 0.5 * (log_var[1] - np.log(tv) + tv / np.exp(log_var[1]) + (mu - mean[1]) ** 2 / np.exp(log_var[1]) - 1)
    assert got[1] == pytest.approx(kl.mean() / np.log(2), rel=1e-4)


def test_reverse_step_at_an_interior_frac_with_and_without_clipping():
    """p_mean_variance at frac = 0.35 and 0.8, t = 0 (clipped log variance) and t > 0, the
    predicted x_0 clipped to [-1, 1] or not, against numpy; q_sample and predict_x0 invert."""
    s = gaussian.from_betas(BETAS)
    ref = numpy_schedule(BETAS)
    t = np.array([0, 2, 5])
    x_t = np.array([[0.9, -1.4], [2.5, 0.1], [-0.3, 1.7]], np.float32)
    eps = np.array([[-0.8, 0.4], [0.2, -1.1], [1.3, -0.5]], np.float32)
    v = np.array([[-0.3, 0.6], [0.6, -0.3], [-0.3, 0.6]], np.float32)
    for clip in (False, True):
        mean, log_var = jax.jit(gaussian.p_mean_variance, static_argnums=5)(s, x_t, t, eps, v, clip)
        e_mean, e_log_var = numpy_step(ref, x_t, t, eps, v, clip)
        np.testing.assert_allclose(mean, e_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(log_var, e_log_var, rtol=1e-5)
    x0 = np.array([[0.3, -0.9], [0.5, 0.1], [-0.2, 0.7]], np.float32)
    @jax.jit
    def there_and_back():
        noisy = gaussian.q_sample(s, x0, t, eps)
        return noisy, gaussian.predict_x0(s, noisy, t, eps)

    xt, back = there_and_back()
    np.testing.assert_allclose(xt, np.sqrt(ref["alpha_bar"][t])[:, None] * x0
                               + np.sqrt(1 - ref["alpha_bar"][t])[:, None] * eps, rtol=1e-5)
    np.testing.assert_allclose(back, x0, atol=2e-5)


def test_hybrid_objective_of_a_respaced_process_sees_the_original_steps():
    """hybrid_each on respace(T = 12 -> 4): the model is called with the original steps
    (0, 4, 7, 11), mse against the noise, loss = mse + lam T vb with T = 4 (numpy); hybrid_loss
    draws example i's step and noise from fold_in(key, i), its steps uniform over 0..T-1."""
    base = gaussian.from_betas(np.linspace(0.05, 0.4, 12))
    s = gaussian.respace(base, 4)
    np.testing.assert_array_equal(s.timesteps, [0, 4, 7, 11])

    def model_fn(x_t, tt):  # eps depends on the step it is given
        return 0.5 * x_t + 0.01 * tt[:, None], jnp.full_like(x_t, 0.2)

    x0 = np.array([[0.1, -0.5, 0.9], [0.7, 0.2, -1.0], [-0.3, 0.4, 0.0], [1.0, -1.0, 0.5]], np.float32)
    t = np.array([2, 0, 3, 1])
    noise = np.array([[0.3, -1.2, 0.5], [1.1, 0.0, -0.4], [-0.7, 0.9, 0.2], [0.05, 0.6, -1.5]], np.float32)

    @jax.jit
    def run(key):  # everything in one compiled program
        out = gaussian.hybrid_each(model_fn, s, x0, t, noise, 0.01)
        objective, _ = gaussian.hybrid_loss(key, model_fn, s, x0, 0.01)
        tt, nn = jax.vmap(lambda i: gaussian.noise(jax.random.fold_in(key, i), s, (3,)))(jnp.arange(4))
        direct = gaussian.hybrid_each(model_fn, s, x0, tt, nn, 0.01)["loss"].mean()
        steps = jax.vmap(lambda k: gaussian.noise(k, s, ())[0])(example_keys(key, 400))
        return out, objective, direct, steps

    out, objective, direct, steps = jax.tree.map(np.asarray, run(jax.random.PRNGKey(3)))
    ref = numpy_schedule(np.asarray(s.betas, np.float64))
    x_t = np.sqrt(ref["alpha_bar"][t])[:, None] * x0 + np.sqrt(1 - ref["alpha_bar"][t])[:, None] * noise
    original = np.array([7, 0, 11, 4])[:, None]  # the original steps of t = 2, 0, 3, 1
    np.testing.assert_allclose(out["mse"], ((noise - 0.5 * x_t - 0.01 * original) ** 2).mean(1), rtol=1e-5)
    np.testing.assert_allclose(out["loss"], out["mse"] + 0.01 * 4 * out["vb"], rtol=1e-6)
    assert float(objective) == pytest.approx(float(direct), rel=1e-6)
    assert set(steps.tolist()) == {0, 1, 2, 3}


def test_ancestral_sampler_is_the_plain_loop():
    """gaussian.sample with a linear model, clipping on, on a 3-step schedule: image b starts at
    N(0, I) from fold_in(fold_in(key, b), T), and step i adds exp(log_var / 2) times the noise of
    fold_in(fold_in(key, b), i) to the mean, except at the last step i = 0 (numpy means)."""
    s = gaussian.from_betas([0.1, 0.35, 0.8])
    ref = numpy_schedule(np.array([0.1, 0.35, 0.8]))
    w = jnp.array([1.6, -0.7])
    model_fn = lambda x, tt: (w * x + 0.1 * tt[:, None], jnp.tanh(x))
    key, shape = jax.random.PRNGKey(5), (3, 2)
    got = np.asarray(gaussian.sample(key, jax.tree_util.Partial(model_fn), s, shape, clip=True))
    for b in range(3):
        k = jax.random.fold_in(key, b)
        x = np.asarray(jax.random.normal(jax.random.fold_in(k, 3), (2,)), np.float64)[None]
        for i in (2, 1, 0):
            eps = np.asarray(w) * x + 0.1 * i
            mean, log_var = numpy_step(ref, x, np.array([i]), eps, np.tanh(x), clip=True)
            z = np.asarray(jax.random.normal(jax.random.fold_in(k, i), (2,)))
            x = mean + (np.exp(0.5 * log_var) * z if i > 0 else 0.0)
        np.testing.assert_allclose(got[b], x[0], rtol=1e-4, atol=1e-5)
    assert math.isfinite(float(np.abs(got).max()))
