"""rhmdiff.analysis.score_error for a denoiser that is neither the oracle nor uniform, at a
different step per sequence (t = 1, the -log p(x_0 | x_1) branch of the bound, included):
every returned value -- token_kl, vb_excess, level_kl, map_floor -- against brute force over
the enumerated language and the D3PM posterior written out in numpy; and the helpers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import enumerate_language
from jax.tree_util import Partial
from scipy.special import rel_entr

from rhmdiff import rhm
from rhmdiff._util import example_keys
from rhmdiff.analysis import score_error
from rhmdiff.diffusion import d3pm


def _table_logits(table, x_t, t):
    """Position i's logits from the symbol at position i + 1 of x_t, and from t."""
    d = x_t.shape[-1]
    return jnp.stack([table[i][x_t[:, (i + 1) % d]] for i in range(d)], 1) + 0.03 * t[:, None, None]


def _kl(p, q):
    return rel_entr(p, q).sum(-1)


def test_every_error_against_brute_force_at_a_step_per_sequence():
    g = rhm.make_grammar(jax.random.PRNGKey(8), 3, 2, 2, 2)
    lang = enumerate_language(g)
    words = np.array([e[0] for e in lang])
    latents = [np.array([e[1][l] for e in lang]) for l in range(g.L)]
    schedule = d3pm.linear_schedule(20, 0.03, 0.4)
    table = np.random.default_rng(0).normal(size=(g.d, g.v, g.v))
    x0 = np.asarray(rhm.sample(jax.random.PRNGKey(9), g, 6)[0])
    t = np.array([1, 20, 3, 1, 9, 14])
    keys = example_keys(jax.random.PRNGKey(10), len(x0))
    got = {k: np.asarray(v, np.float64) for k, v in
           score_error.errors_at(g, schedule, Partial(_table_logits, jnp.asarray(table, jnp.float32)), keys, x0, t).items()}
    assert got["token_kl"].shape == (6,) and got["level_kl"].shape == got["map_floor"].shape == (6, g.L)
    ab = np.concatenate([[1.0], np.cumprod(1 - np.asarray(schedule.betas, np.float64))])
    betas = np.concatenate([[0.0], np.asarray(schedule.betas, np.float64)])
    x_t = np.asarray(jax.jit(jax.vmap(lambda k, x, tt: d3pm.q_sample(jax.random.fold_in(k, tt), schedule, x, tt, g.v)))(
        keys, jnp.asarray(x0), jnp.asarray(t)))

    def level_posteriors(weights):  # level-l marginals of the language weighted by `weights`
        w = weights / weights.sum()
        return [np.stack([np.bincount(lat[:, j], w, g.v) for j in range(lat.shape[1])]) for lat in latents]

    for i in range(len(x0)):
        like = np.where(words == x_t[i], ab[t[i]] + (1 - ab[t[i]]) / g.v, (1 - ab[t[i]]) / g.v).prod(1)
        p = np.stack([np.bincount(words[:, j], like / like.sum(), g.v) for j in range(g.d)])  # exact marginals
        logits = table[np.arange(g.d), x_t[i][(np.arange(g.d) + 1) % g.d]] + 0.03 * t[i]
        q = np.exp(logits - logits.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
        assert got["token_kl"][i] == pytest.approx(_kl(p, q).mean(), rel=2e-4, abs=1e-6)

        def term(probs, i=i):  # the bound's term at t[i] per token, the true x_0 = x0[i]
            if t[i] == 1:
                return -np.log(probs[np.arange(g.d), x0[i]])
            tt, out = t[i], []
            for j in range(g.d):
                fact1 = (1 - betas[tt]) * (np.arange(g.v) == x_t[i, j]) + betas[tt] / g.v  # q(x_t | x_{t-1} = c)
                post = lambda a, fact1=fact1: fact1 * (ab[tt - 1] * (np.arange(g.v) == a) + (1 - ab[tt - 1]) / g.v)
                true = post(x0[i, j]) / post(x0[i, j]).sum()
                model = sum(probs[j, a] * post(a) / post(a).sum() for a in range(g.v))
                out.append(_kl(true, model))
            return np.array(out)

        assert got["vb_excess"][i] == pytest.approx((term(q) - term(p)).mean(), rel=2e-3, abs=2e-6)
        implied_p = level_posteriors(np.prod(p[np.arange(g.d), words], 1))
        implied_q = level_posteriors(np.prod(q[np.arange(g.d), words], 1))
        exact = level_posteriors(like)
        for l in range(g.L):
            assert got["level_kl"][i, l] == pytest.approx(_kl(implied_p[l], implied_q[l]).mean(), rel=2e-3, abs=2e-6)
            assert got["map_floor"][i, l] == pytest.approx(_kl(exact[l], implied_p[l]).mean(), rel=2e-3, abs=2e-6)
    assert got["map_floor"].max() > 1e-3 and got["level_kl"].min() > 1e-3  # neither is 0 here


def test_helpers_log_grid_categorical_kl_and_summaries():
    np.testing.assert_array_equal(score_error.log_grid(1000, 4), [1, 10, 100, 1000])
    np.testing.assert_array_equal(score_error.log_grid(50, 7), [1, 2, 4, 7, 14, 26, 50])  # 50^(k/6), rounded
    np.testing.assert_array_equal(score_error.log_grid(3, 10), [1, 2, 3])
    p = np.array([[0.5, 0.5, 0.0], [0.1, 0.6, 0.3]])
    q = np.array([[0.25, 0.75, 0.0], [0.3, 0.3, 0.4]])
    got = np.asarray(score_error.categorical_kl(jnp.asarray(p), jnp.log(jnp.asarray(q))))
    np.testing.assert_allclose(got, rel_entr(p, q).sum(-1), rtol=1e-6)
    values = np.random.default_rng(1).normal(size=(400, 3)) * [1.0, 2.0, 0.5] + [0.0, 1.0, -2.0]
    s = score_error.summarize(values)
    np.testing.assert_allclose(s["mean"], values.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s["stderr"], values.std(0, ddof=1) / np.sqrt(400), rtol=2e-3)  # either convention
