"""MD4 masked diffusion: schedules, masking rate, the continuous-time ELBO against the
discrete-time bound built from explicit transition matrices, and the sampler's invariants."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rhmdiff._util import step_keys
from rhmdiff.diffusion import md4

V, D = 3, 2  # tiny vocabulary and length; mask id = V
W = np.random.default_rng(0).normal(size=(D, V + 1, V)) * 1.5


def logits_fn(x_t, t):
    """A fixed model: position i's logits depend on the other token of x_t (not on t)."""
    return jnp.stack([jnp.asarray(W)[i][x_t[:, (i + 1) % D]] for i in range(D)], 1)


def model_probs(x_t):
    """p(x_0^i | x_t) per token, [D, V]; an unmasked token is carried over (as MD4's model)."""
    logits = np.asarray(logits_fn(jnp.asarray([x_t]), jnp.zeros(1)))[0]
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.array([p[i] if x_t[i] == V else np.eye(V)[x_t[i]] for i in range(D)])


@pytest.mark.parametrize("name,power", [("linear", 1.0), ("cosine", 1.0), ("poly", 2.0)])
def test_schedule_ends_derivative_and_masking_rate(name, power):
    s = md4.MaskingSchedule(name, eps=1e-3, power=power)
    assert float(s.alpha(0.0)) == pytest.approx(1 - 1e-3) and float(s.alpha(1.0)) == pytest.approx(1e-3)
    t = np.linspace(0.05, 0.95, 19)
    numeric = (np.asarray(s.alpha(t + 1e-3)) - np.asarray(s.alpha(t - 1e-3))) / 2e-3
    np.testing.assert_allclose(s.dalpha(t), numeric, rtol=1e-3, atol=1e-4)
    assert np.all(np.asarray(s.weight(t)) > 0)
    x0 = jnp.zeros((20000, 8), jnp.int32)
    x_t = md4.q_sample(jax.random.PRNGKey(0), s, x0, jnp.full((20000,), 0.3), V)
    assert float((x_t == V).mean()) == pytest.approx(1 - float(s.alpha(0.3)), abs=0.005)
    assert set(np.unique(x_t).tolist()) <= {0, V}


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="schedule"):
        md4.MaskingSchedule("quadratic")
    with pytest.raises(ValueError, match="eps"):
        md4.MaskingSchedule("linear", eps=0.7)


def discrete_bound(schedule, x0, T):
    """The discrete-time bound (nats per sequence) with T steps on [0, 1], from explicit
    per-token transition matrices: prior KL + sum_k E_q(x_k|x_0) KL(q(x_{k-1}|x_k,x_0) ||
    p(x_{k-1}|x_k)) + reconstruction at t = 0."""
    alpha = np.asarray(schedule.alpha(np.arange(T + 1) / T), np.float64)
    states = list(itertools.product(range(V + 1), repeat=D))

    def keep_matrix(a_from, a_to):  # Q: x_{k-1} -> x_k, over V symbols + mask
        q = np.zeros((V + 1, V + 1))
        q[np.arange(V), np.arange(V)] = a_to / a_from
        q[:V, V] = 1 - a_to / a_from
        q[V, V] = 1
        return q

    marg = np.eye(V + 1)[x0] @ keep_matrix(1.0, alpha[0])  # q(x_{t=0} | x_0) per token, [D, V+1]
    recon = sum(np.prod([marg[i, st[i]] for i in range(D)]) *
                sum(-np.log(model_probs(np.array(st))[i, x0[i]]) for i in range(D) if st[i] == V)
                for st in states)
    total = recon
    for k in range(1, T + 1):
        q = keep_matrix(alpha[k - 1], alpha[k])
        new = marg @ q
        for st in states:
            prob = np.prod([new[i, st[i]] for i in range(D)])
            if prob == 0:
                continue
            p0 = model_probs(np.array(st))
            for i in range(D):
                # posterior q(x_{k-1} | x_k, x_0) by Bayes, and the model's mixture over x_0
                post = marg[i] * q[:, st[i]]
                post /= post.sum()
                mix = np.zeros(V + 1)
                for a in range(V):
                    qa = np.eye(V + 1)[a] @ keep_matrix(1.0, alpha[k - 1]) * q[:, st[i]]
                    if qa.sum() > 0:  # x_0 = a can lead to this x_k (the model gives 0 to the others)
                        mix += p0[i, a] * qa / qa.sum()
                nz = post > 0
                total += prob * np.sum(post[nz] * np.log(post[nz] / mix[nz]))
        marg = new
    return total + D * alpha[-1] * np.log(V)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_continuous_elbo_matches_discrete_bound(name):
    """The loss function's Monte-Carlo estimate of the continuous-time ELBO equals the
    discrete-time bound with many steps (its T -> infinity limit)."""
    schedule = md4.MaskingSchedule(name, eps=0.01)
    x0 = np.array([1, 2])
    reference = discrete_bound(schedule, x0, T=400)
    batch = jnp.tile(jnp.asarray(x0)[None], (200_000, 1))
    estimate, metrics = jax.jit(lambda k: md4.loss(k, logits_fn, schedule, batch, V))(jax.random.PRNGKey(0))
    assert float(estimate) * D == pytest.approx(reference, rel=0.01)
    assert float(metrics["bits_per_token"]) == pytest.approx(float(estimate) / np.log(2))
    assert float(metrics["prior"]) == pytest.approx(0.01 * np.log(V), rel=1e-3)


def test_sampler_reveals_everything_and_never_changes_revealed_tokens():
    schedule = md4.MaskingSchedule("cosine")
    out = md4.sample(jax.random.PRNGKey(0), logits_fn, schedule, (64, D), V, T=50)
    assert out.shape == (64, D) and int(out.max()) < V and int(out.min()) >= 0
    x_t = jax.random.randint(jax.random.PRNGKey(1), (256, D), 0, V + 1)
    for i, key in enumerate(jax.random.split(jax.random.PRNGKey(2), 5)):
        x_s = md4.reverse_step(key, logits_fn(x_t, None), x_t, 0.2, 0.2 + 0.1 * i, V)
        revealed = np.asarray(x_t != V)
        np.testing.assert_array_equal(np.asarray(x_s)[revealed], np.asarray(x_t)[revealed])
    assert not bool((md4.reverse_step(key, logits_fn(x_t, None), x_t, 0.2, 1.0, V) == V).any())


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    kept = np.isfinite(np.asarray(md4._top_p_filter(logits, 0.7)))
    np.testing.assert_array_equal(kept, [[True, True, False, False]])
    x_t = jnp.full((500, 1), 4)
    draws = md4.reverse_step(jax.random.PRNGKey(0), jnp.tile(logits[:, None], (500, 1, 1)), x_t, 0.0, 1.0, 4,
                             top_p=0.01)
    assert set(np.unique(draws).tolist()) == {0}


@pytest.mark.parametrize("grid", ["uniform", "cosine"])
def test_sampler_reveals_the_expected_fraction_at_every_step(grid):
    """Started from all [MASK], a token is still masked after the step to time s with
    probability 1 - alpha(s) (alpha(0) = 1 at the last step), on either time grid; the
    device loop (md4.sample_each) is the same draw as this step-by-step loop."""
    schedule, T, n = md4.MaskingSchedule("linear", eps=0.02), 8, 4000
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(3), i))(jnp.arange(n))
    x = jnp.full((n, D), V, jnp.int32)
    for i in range(T, 0, -1):
        t, s = md4.sampling_time(i, T, grid), md4.sampling_time(i - 1, T, grid)
        alpha_s = 1.0 if i == 1 else float(schedule.alpha(s))
        keys_i = step_keys(keys, i)
        logits = logits_fn(x, jnp.full((n,), t))
        x = jax.vmap(lambda k, lg, xx: md4.reverse_step(k, lg, xx, schedule.alpha(t), alpha_s, V))(keys_i, logits, x)
        masked = float((np.asarray(x) == V).mean())
        assert masked == pytest.approx(1 - alpha_s, abs=4 * np.sqrt(0.25 / (n * D)) + 1e-9), (i, grid)
    device = md4.sample_each(keys, logits_fn, schedule, D, V, T=T, grid=grid)
    np.testing.assert_array_equal(np.asarray(device), np.asarray(x))


def test_sampler_draws_the_data_distribution_under_the_exact_denoiser():
    """Tokens independent with known marginals q_i: the exact denoiser predicts q_i for every
    masked token, and the sampler's outputs follow the product distribution (chi-square over
    all V^D sequences)."""
    from scipy import stats
    q = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    exact = lambda x_t, t: jnp.broadcast_to(jnp.log(jnp.asarray(q, jnp.float32)), x_t.shape + (V,))
    n = 30000
    x = np.asarray(md4.sample(jax.random.PRNGKey(4), exact, md4.MaskingSchedule("cosine"), (n, D), V, T=20))
    counts = np.bincount(x[:, 0] * V + x[:, 1], minlength=V * V)
    expected = np.outer(q[0], q[1]).ravel() * n
    assert stats.chisquare(counts, expected).pvalue > 1e-4
