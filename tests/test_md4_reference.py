"""rhmdiff.diffusion.md4 against numpy: top-p on unsorted logits, the schedules and sampling
grids in closed form, and every part of the ELBO (diffusion, reconstruction at t = 0, prior)
re-derived from the inputs the model was actually given, with the antithetic times of loss."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rhmdiff.diffusion import md4

V, D = 4, 3
W = np.random.default_rng(1).normal(size=(D, V + 1, V)) * 1.3


def test_top_p_filter_on_unsorted_logits_against_a_loop():
    """Rows in different orders: keep the most probable tokens until their mass reaches p
    (the token that crosses p included), by sorting in numpy."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 6)) * 2.0
    top_p = jax.jit(md4._top_p_filter)  # p traced: one compilation
    for p in (0.2, 0.5, 0.75, 0.95, 1.0):
        got = np.isfinite(np.asarray(top_p(jnp.asarray(logits, jnp.float32), p)))
        for idx in np.ndindex(2, 3):
            probs = np.exp(logits[idx] - logits[idx].max())
            probs /= probs.sum()
            order = np.argsort(-probs)
            keep, mass = np.zeros(6, bool), 0.0
            for k in order:
                if mass >= p:
                    break
                keep[k], mass = True, mass + probs[k]
            np.testing.assert_array_equal(got[idx], keep, err_msg=f"p={p} row {idx}")
    kept = np.asarray(top_p(jnp.asarray(logits, jnp.float32), 0.5))
    np.testing.assert_array_equal(kept[np.isfinite(kept)], np.float32(logits)[np.isfinite(kept)])


def test_schedules_and_sampling_grids_in_closed_form():
    """alpha(t) = (1 - 2 eps) a(t) + eps at interior times, w(t) = -alpha'(t) / (1 - alpha(t)) with
    alpha' written out, for the three schedules; the grids i / T and cos(pi/2 (1 - i/T))."""
    eps, t = 0.05, np.array([0.1, 0.35, 0.6, 0.9])
    forms = {"linear": (1 - t, -np.ones_like(t)),
             "cosine": (1 - np.cos(np.pi / 2 * (1 - t)), -np.pi / 2 * np.sin(np.pi / 2 * (1 - t))),
             "poly": (1 - t**3, -3 * t**2)}
    for name, (a, da) in forms.items():
        s = md4.MaskingSchedule(name, eps=eps, power=3.0)
        alpha = (1 - 2 * eps) * a + eps
        np.testing.assert_allclose(s.alpha(t), alpha, rtol=1e-6)
        np.testing.assert_allclose(s.dalpha(t), (1 - 2 * eps) * da, rtol=1e-6)
        np.testing.assert_allclose(s.weight(t), -(1 - 2 * eps) * da / (1 - alpha), rtol=1e-5)
    i = np.array([0, 3, 8])
    np.testing.assert_allclose(md4.sampling_time(i, 8, "uniform"), i / 8)
    np.testing.assert_allclose(md4.sampling_time(i, 8, "cosine"), np.cos(np.pi / 2 * (1 - i / 8)), atol=1e-7)
    with pytest.raises(ValueError, match="power"):
        md4.MaskingSchedule("poly", power=0.0)


def _recording_model():
    """A model whose logits depend on the other tokens of x_t; each call's (x_t, t), in the
    order of the calls in the program, lands in ``calls`` when the compiled program runs."""
    calls, traced = {}, []

    def fn(x_t, t):
        k = len(traced)  # the call's rank, at trace time
        traced.append(k)
        jax.debug.callback(lambda x, tt: calls.__setitem__(k, (np.asarray(x), np.asarray(tt))), x_t, t)
        return jnp.stack([jnp.asarray(W)[i][x_t[:, (i + 1) % D]] for i in range(D)], 1) + 0.0 * t[:, None, None]
    return fn, calls


def _masked_ce(x0, x_t, mask_id):
    """Per sequence, the sum over masked positions of -log softmax(W-logits)[x_0]."""
    logits = np.stack([W[i][x_t[:, (i + 1) % D]] for i in range(D)], 1)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -np.take_along_axis(logp, x0[..., None], -1)[..., 0]
    return np.where(x_t == mask_id, ce, 0.0).sum(-1)


def test_elbo_parts_from_the_inputs_the_model_was_given():
    """elbo_each, the model's inputs recorded by a callback: the diffusion part is w(t) times
    the masked cross-entropy at the recorded x_t, per token; the reconstruction part the masked
    cross-entropy of the recorded x_0' with the model asked at t = 0, each token masked there with
    probability 1 - alpha(0) = eps; x_t masks with probability 1 - alpha(t); the prior eps log V.
    A sequence's parts do not depend on the batch it is in."""
    schedule = md4.MaskingSchedule("linear", eps=0.2)
    n = 3000
    rng = np.random.default_rng(2)
    x0 = rng.integers(0, V, (n, D))
    t = rng.uniform(0.05, 0.95, n).astype(np.float32)
    keys = jax.random.split(jax.random.PRNGKey(4), n)
    fn, calls = _recording_model()
    elbo = jax.jit(md4.elbo_each, static_argnums=(2, 3, 5))
    out = {k: np.asarray(v) for k, v in elbo(keys, jnp.asarray(t), fn, schedule, x0, V).items()}
    jax.effects_barrier()
    (x_t, t_seen), (x_r, t_r) = calls[0], calls[1]
    np.testing.assert_array_equal(t_seen, t)
    np.testing.assert_array_equal(t_r, 0.0)
    for noisy in (x_t, x_r):
        assert np.all((noisy == x0) | (noisy == V))
    w = (1 - 0.4) / (1 - ((1 - 0.4) * (1 - t) + 0.2))
    np.testing.assert_allclose(out["diffusion"], w * _masked_ce(x0, x_t, V) / D, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["reconstruction"], _masked_ce(x0, x_r, V) / D, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["prior"], 0.2 * np.log(V), rtol=1e-6)
    tol = 4 * np.sqrt(0.25 / (n * D))
    assert (x_r == V).mean() == pytest.approx(0.2, abs=tol)
    late = t > 0.5
    assert (x_t[late] == V).mean() == pytest.approx(np.mean(1 - ((1 - 0.4) * (1 - t[late]) + 0.2)), abs=2 * tol)
    alone = jax.jit(md4.elbo_each, static_argnums=(2, 3, 5))(keys[7:9], jnp.asarray(t[7:9]), fn, schedule, x0[7:9], V)
    for k in out:
        np.testing.assert_allclose(np.asarray(alone[k]), out[k][7:9], rtol=1e-6)


def test_loss_times_are_antithetic_and_its_bound_is_the_mean_of_the_parts():
    """loss: t_b = (u + b/B) mod 1, so the sorted times are spaced by exactly 1/B; the objective
    is the sum of the three parts' batch means, and bits = nats / log 2."""
    schedule = md4.MaskingSchedule("cosine", eps=0.1)
    fn, calls = _recording_model()
    x0 = np.random.default_rng(3).integers(0, V, (16, D))
    total, metrics = jax.jit(md4.loss, static_argnums=(1, 2, 4))(jax.random.PRNGKey(5), fn, schedule, x0, V)
    jax.effects_barrier()
    t = np.sort(calls[0][1])
    assert 0 <= t[0] < 1 / 16 and t[-1] < 1
    np.testing.assert_allclose(np.diff(t), 1 / 16, atol=1e-6)
    parts = float(metrics["diffusion"]) + float(metrics["reconstruction"]) + float(metrics["prior"])
    assert float(total) == pytest.approx(parts, rel=1e-6)
    assert float(metrics["bits_per_token"]) == pytest.approx(float(total) / np.log(2), rel=1e-6)
    for top_p in (0.0, 1.5):
        with pytest.raises(ValueError, match="top_p"):
            md4.sample_each(jax.random.split(jax.random.PRNGKey(0), 2), fn, schedule, D, V, T=2, top_p=top_p)
    with pytest.raises(ValueError, match="grid"):
        md4.sample_each(jax.random.split(jax.random.PRNGKey(0), 2), fn, schedule, D, V, T=2, grid="log")
