"""rhmdiff.diffusion.d3pm against explicit transition matrices, and the BP oracle sampler."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from rhmdiff._util import example_keys
from rhmdiff import rhm
from rhmdiff.diffusion import d3pm


def explicit_matrices(schedule, v):
    """Q_t and Qbar_t = Q_1 ... Q_t as explicit float64 v x v matrices, t = 0..T."""
    betas = np.asarray(schedule.betas, np.float64)
    qs = [np.eye(v)] + [(1 - b) * np.eye(v) + b / v * np.ones((v, v)) for b in betas]
    qbars = [np.eye(v)]
    for q in qs[1:]:
        qbars.append(qbars[-1] @ q)
    return qs, qbars


@pytest.mark.parametrize("schedule", [d3pm.linear_schedule(30, 0.01, 0.3), d3pm.cosine_schedule(30)])
def test_closed_form_alpha_bar_and_q_probs(schedule):
    v = 5
    _, qbars = explicit_matrices(schedule, v)
    x0 = jnp.arange(v)
    for t in range(0, schedule.T + 1):
        probs = np.asarray(d3pm.q_probs(schedule, x0, jnp.full((v,), t), v))
        np.testing.assert_allclose(probs, qbars[t], atol=1e-5)


def test_default_linear_schedule_reaches_uniform():
    sch = d3pm.linear_schedule()
    assert sch.T == 1000 and float(sch.alpha_bars[-1]) < 1e-4
    assert float(d3pm.cosine_schedule().alpha_bars[-1]) < 1e-4


def test_posterior_is_bayes_rule():
    v, schedule = 4, d3pm.linear_schedule(20, 0.02, 0.4)
    qs, qbars = explicit_matrices(schedule, v)
    rng = np.random.default_rng(0)
    for t in (1, 2, 7, 20):
        for x0 in range(v):
            for xt in range(v):
                joint = qs[t][:, xt] * qbars[t - 1][x0, :]  # q(x_t | x_{t-1}) q(x_{t-1} | x_0)
                expected = joint / qbars[t][x0, xt]
                logits = d3pm.q_posterior_logits(schedule, jax.nn.one_hot(x0, v), jnp.array(xt), jnp.array(t), v)
                np.testing.assert_allclose(np.exp(np.asarray(logits)), expected, atol=1e-5)
        # soft x0: the mixture sum_a p(a) q(x_{t-1} | x_t, x_0 = a)
        p = rng.dirichlet(np.ones(v))
        xt = 2
        mix = sum(p[a] * qs[t][:, xt] * qbars[t - 1][a, :] / qbars[t][a, xt] for a in range(v))
        logits = d3pm.q_posterior_logits(schedule, jnp.asarray(p), jnp.array(xt), jnp.array(t), v)
        np.testing.assert_allclose(np.exp(np.asarray(logits)), mix, atol=1e-5)


def test_q_sample_frequencies():
    v, schedule = 4, d3pm.linear_schedule(10, 0.05, 0.2)
    n = 40000
    x0 = jnp.zeros((n,), jnp.int32)
    xt = np.asarray(d3pm.q_sample(jax.random.PRNGKey(0), schedule, x0, jnp.full((n,), 6), v))
    expected = np.asarray(d3pm.q_probs(schedule, jnp.array(0), 6, v), np.float64)
    expected = expected / expected.sum() * n
    assert stats.chisquare(np.bincount(xt, minlength=v), expected).pvalue > 1e-4


def test_loss_vanishes_for_the_true_x0():
    v, schedule = 6, d3pm.linear_schedule(50)
    x0 = jax.random.randint(jax.random.PRNGKey(0), (8, 16), 0, v)
    for t in (1, 2, 25, 50):
        tt = jnp.full((8,), t)
        xt = d3pm.q_sample(jax.random.PRNGKey(t), schedule, x0, tt, v)
        exact = 30.0 * jax.nn.one_hot(x0, v)  # logits of (almost surely) the true x_0
        np.testing.assert_allclose(d3pm.vb_terms(schedule, x0, xt, tt, exact, v), 0.0, atol=1e-5)
        wrong = 30.0 * jax.nn.one_hot((x0 + 1) % v, v)
        assert float(d3pm.vb_terms(schedule, x0, xt, tt, wrong, v).mean()) > 0.01
    obj, metrics = d3pm.loss(jax.random.PRNGKey(1), lambda x, t: 30.0 * jax.nn.one_hot(x0, v), schedule, x0, v)
    assert abs(float(obj)) < 1e-5
    np.testing.assert_allclose(metrics["vb_nats"], d3pm.prior_kl(schedule, x0, v).mean(), atol=1e-4)


def test_loss_of_uniform_denoiser_and_hybrid():
    v, schedule = 4, d3pm.linear_schedule(100)
    x0 = jax.random.randint(jax.random.PRNGKey(0), (64, 8), 0, v)
    uniform = lambda x, t: jnp.zeros(x.shape + (v,))
    obj, metrics = d3pm.loss(jax.random.PRNGKey(1), uniform, schedule, x0, v, hybrid_coeff=0.5)
    np.testing.assert_allclose(metrics["ce_nats"], np.log(v), rtol=1e-5)
    assert float(obj) > 0.5 * np.log(v)
    # the bound of a uniform model is at least the entropy of uniform tokens, log v per token
    bound = d3pm.nll_bound(jax.random.PRNGKey(2), uniform, schedule, x0, v)
    assert float(bound.mean()) >= np.log(v) - 1e-3


def test_oracle_samplers_generate_valid_data():
    g = rhm.make_grammar(jax.random.PRNGKey(0), 8, 3, 2, 3)
    schedule = d3pm.linear_schedule(1000)
    exact = d3pm.oracle_sample(jax.random.PRNGKey(1), g, schedule, 256, exact=True)
    chex.assert_shape(exact, (256, 8))
    assert bool(rhm.is_valid(g, exact).all())
    factorized = d3pm.oracle_sample(jax.random.PRNGKey(2), g, schedule, 256, exact=False)
    assert float(rhm.is_valid(g, factorized).mean()) >= 0.99
    # exact samples are spread over the language like i.i.d. RHM samples (roots ~ uniform)
    roots = np.asarray(rhm.decode(g, exact)[-1][:, 0])
    assert stats.chisquare(np.bincount(roots, minlength=8)).pvalue > 1e-4


def test_oracle_bound_close_to_entropy():
    """The VB bound of the exact denoiser upper-bounds the entropy per token, tightly."""
    g = rhm.make_grammar(jax.random.PRNGKey(0), 4, 2, 2, 3)
    schedule = d3pm.linear_schedule(200, 5e-4, 0.1)
    x0, _ = rhm.sample(jax.random.PRNGKey(1), g, 512)
    logits_fn = lambda x, t: jnp.log(d3pm.oracle_denoiser(g, schedule)(x, t))
    bound = np.asarray(d3pm.nll_bound(jax.random.PRNGKey(2), logits_fn, schedule, x0, g.v))
    entropy = np.log(rhm.num_sequences(g)) / g.d
    se = bound.std() / np.sqrt(len(bound))
    assert entropy - 4 * se <= bound.mean() <= entropy + 0.05


def test_sampler_with_constant_denoiser():
    """A denoiser that always predicts the same distribution p gives x_0 ~ p per token."""
    v, schedule = 3, d3pm.linear_schedule(50, 0.01, 0.3)
    p = np.array([0.7, 0.2, 0.1])
    x = np.asarray(d3pm.sample(jax.random.PRNGKey(0), lambda x, t: jnp.broadcast_to(p, x.shape + (v,)),
                               schedule, (4000, 2), v))
    assert stats.chisquare(np.bincount(x.ravel(), minlength=v), p * x.size).pvalue > 1e-4


def test_bad_schedule_raises():
    with pytest.raises(ValueError, match="schedule"):
        d3pm.make_schedule("quadratic", 10)
    with pytest.raises(ValueError, match="T"):
        d3pm.linear_schedule(0)
    with pytest.raises(ValueError, match="beta"):
        d3pm.linear_schedule(10, 0.5, 0.1)


class TestVariants(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_public_functions(self):
        sch = d3pm.linear_schedule(100)
        x0 = jnp.array([[0, 1, 2], [3, 0, 1]])
        t = jnp.array([3, 60])
        q = self.variant(lambda s, x, tt: d3pm.q_probs(s, x, tt, 4))(sch, x0, t)
        chex.assert_shape(q, (2, 3, 4))
        np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-6)
        logits = self.variant(lambda s, p, x, tt: d3pm.q_posterior_logits(s, p, x, tt, 4))(
            sch, jax.nn.one_hot(x0, 4), x0, t)
        chex.assert_shape(logits, (2, 3, 4))
        obj, metrics = self.variant(lambda k, s, x: d3pm.loss(k, lambda xt, tt: jnp.zeros(xt.shape + (4,)), s, x, 4))(
            jax.random.PRNGKey(0), sch, x0)
        chex.assert_shape(obj, ())
        assert np.isfinite(float(metrics["vb_bits"]))


@pytest.mark.parametrize("objective", ["vb", "hybrid"])
def test_objectives_against_explicit_transition_matrices(objective):
    """The per-token training objective from explicit v x v matrices (float64): for t >= 2
    KL(q(x_{t-1} | x_t, x_0) || sum_a p(a | x_t) q(x_{t-1} | x_t, a)), at t = 1
    -log p(x_0 | x_1), averaged over tokens ("vb": the authors' loss, not multiplied by T);
    "hybrid" adds hybrid_coeff times -log p(x_0 | x_t); the reported bound is T x that mean
    plus the prior KL(q(x_T | x_0) || uniform)."""
    v, schedule = 4, d3pm.linear_schedule(12, 0.02, 0.3)
    qs, qbars = explicit_matrices(schedule, v)
    rng = np.random.default_rng(1)
    B, d = 6, 5
    x0 = rng.integers(0, v, (B, d))
    t = np.array([1, 2, 5, 9, 12, 1])
    x_t = rng.integers(0, v, (B, d))
    logits = rng.normal(size=(B, d, v)) * 2
    p0 = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)

    def posterior(a, xt, tt):  # q(x_{t-1} = . | x_t, x_0 = a)
        joint = qs[tt][:, xt] * qbars[tt - 1][a, :]
        return joint / joint.sum()

    terms, ce = np.zeros((B, d)), np.zeros((B, d))
    for b in range(B):
        for i in range(d):
            tt, a, xt = t[b], x0[b, i], x_t[b, i]
            ce[b, i] = -np.log(p0[b, i, a])
            if tt == 1:
                terms[b, i] = ce[b, i]
                continue
            true = posterior(a, xt, tt)
            model = sum(p0[b, i, c] * posterior(c, xt, tt) for c in range(v))
            terms[b, i] = np.sum(np.where(true > 0, true * np.log(true / model), 0.0))
    prior = np.mean([np.sum(qbars[schedule.T][a] * np.log(qbars[schedule.T][a] * v)) for a in x0.ravel()])
    obj, metrics = d3pm.loss_terms(schedule, jnp.asarray(x0), jnp.asarray(x_t), jnp.asarray(t),
                                   jnp.asarray(logits, jnp.float32), v, hybrid_coeff=0.7, objective=objective)
    expected = terms.mean() + (0.7 * ce.mean() if objective == "hybrid" else 0.0)
    assert float(obj) == pytest.approx(expected, rel=1e-4)
    assert float(metrics["vb_nats"]) == pytest.approx(schedule.T * terms.mean() + prior, rel=1e-4)
    assert float(metrics["ce_nats"]) == pytest.approx(ce.mean(), rel=1e-4)


def test_exact_oracle_sampler_draws_every_sequence_equally_often():
    """The exact BP-oracle sampler returns exact RHM samples: chi-square of its counts over
    the enumerated language (uniform: every sequence has probability 1/|language|)."""
    from conftest import enumerate_language
    g = rhm.make_grammar(jax.random.PRNGKey(2), 3, 2, 2, 2)
    lang = [e[0] for e in enumerate_language(g)]
    schedule = d3pm.linear_schedule(30, 0.05, 0.7)
    assert float(schedule.alpha_bars[-1]) < 1e-5  # x_T uniform, as the sampler starts
    n = 60 * len(lang)
    x = np.asarray(d3pm.oracle_sample(jax.random.PRNGKey(3), g, schedule, n))
    index = {w: i for i, w in enumerate(lang)}
    counts = np.bincount([index[tuple(row)] for row in x], minlength=len(lang))  # KeyError: not in the language
    assert stats.chisquare(counts).pvalue > 1e-4


def test_reverse_step_draws_from_the_posterior_mixture():
    """One ancestral step from x_t with a fixed x_0 prediction p: x_{t-1} ~ sum_a p(a)
    q(x_{t-1} | x_t, x_0 = a), the mixture built here from explicit matrices (chi-square)."""
    v, schedule = 3, d3pm.linear_schedule(10, 0.05, 0.3)
    qs, qbars = explicit_matrices(schedule, v)
    p = np.array([0.5, 0.3, 0.2])
    t, xt, n = 6, 1, 40000
    keys = example_keys(jax.random.PRNGKey(5), n)
    fn = lambda k, x, tt: jnp.broadcast_to(jnp.asarray(p, jnp.float32), x.shape + (v,))
    out = np.asarray(d3pm.reverse_step(fn, keys, schedule, jnp.full((n, 1), xt, jnp.int32), t, v))[:, 0]
    mix = sum(p[a] * qs[t][:, xt] * qbars[t - 1][a, :] / qbars[t][a, xt] for a in range(v))
    assert stats.chisquare(np.bincount(out, minlength=v), mix * n).pvalue > 1e-4


def test_noise_draws_every_step_from_1_to_T():
    """Training steps t ~ U{1..T} per sequence (chi-square), x_t ~ q(x_t | x_0) at that t."""
    schedule, v = d3pm.linear_schedule(20, 0.01, 0.2), 5
    x0 = jnp.zeros((20000, 3), jnp.int32)
    t, x_t = jax.vmap(lambda k, x: d3pm.noise(k, schedule, x, v))(example_keys(jax.random.PRNGKey(0), 20000), x0)
    t = np.asarray(t)
    assert t.min() == 1 and t.max() == 20
    assert stats.chisquare(np.bincount(t, minlength=21)[1:]).pvalue > 1e-4
    kept = (np.asarray(x_t) == 0).mean(1)
    ab = np.asarray(schedule.alpha_bar(jnp.asarray(t)))
    assert np.mean(kept) == pytest.approx(np.mean(ab + (1 - ab) / v), abs=0.01)
