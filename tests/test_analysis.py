"""Theory formulas, token correlations and the clustering algorithm against direct computations."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rhmdiff._util import example_keys
from rhmdiff import rhm, theory
from rhmdiff.analysis import clustering, correlations


def test_sample_complexity_closed_form():
    assert theory.sample_complexity(8, 3, 2, 1) == pytest.approx(8 * 9 / (1 - 3 / 8))
    assert theory.sample_complexities(32, 8, 2, 3) == pytest.approx(
        [32 * 8 ** (l + 1) / (1 - 8 / 32) for l in (1, 2, 3)])
    assert theory.sample_complexity(4, 4, 2, 2) == math.inf  # every tuple valid
    assert theory.correlation_magnitude(8, 3, 2, 3) == pytest.approx(math.sqrt((1 - 3 / 8) / (8**3 * 3**5)))
    # P_l is where the correlation magnitude of Eq. (5) meets the sampling noise (v^2 m P)^(-1/2)
    for level in (2, 3, 4):
        P = theory.sample_complexity(16, 4, 2, level)
        assert theory.correlation_magnitude(16, 4, 2, level) == pytest.approx(theory.sampling_noise(16, 4, P))
    with pytest.raises(ValueError, match="level"):
        theory.sample_complexity(8, 3, 2, 0)
    with pytest.raises(ValueError, match="m"):
        theory.sample_complexity(8, 9, 2, 1)


def test_rule_moments_match_random_grammars():
    """Eqs. (15)-(16) against the moments of p(mu | mu_1) = (number of mu_1's rules with mu
    first) / m over 400 random grammars."""
    v, m, s = 4, 3, 2
    square, cross = [], []
    for seed in range(400):
        rules = np.asarray(rhm.make_grammar(jax.random.PRNGKey(seed), v, m, s, 1).rules[0])
        p = np.stack([np.bincount(rules[a, :, 0], minlength=v) for a in range(v)]) / m  # p[mu_1, mu]
        square.append((p**2).mean())
        cross.append(((p.sum(0) ** 2 - (p**2).sum(0)) / (v * (v - 1))).mean())
    expected_square, expected_cross = theory.rule_moments(v, m, s)
    assert np.mean(square) == pytest.approx(expected_square, rel=0.03)
    assert np.mean(cross) == pytest.approx(expected_cross, rel=0.03)
    assert theory.level_factor(v, m, s) == pytest.approx(v * (expected_square - expected_cross))
    assert theory.level_factor(10**4, 5, 2) == pytest.approx(1 / 5, rel=1e-3)


def test_tree_distance_is_the_level_of_the_common_ancestor():
    s, L = 3, 3
    i, j = np.meshgrid(np.arange(s**L), np.arange(s**L), indexing="ij")
    expected = np.array([[next(level for level in range(L + 1) if a // s**level == b // s**level)
                          for b in range(s**L)] for a in range(s**L)])
    np.testing.assert_array_equal(theory.tree_distance(s, i, j), expected)


@pytest.mark.parametrize("v,m,L,rel", [(32, 2, 3, 0.05), (64, 4, 2, 0.05), (8, 3, 3, 0.25)])
def test_token_correlation_theory_matches_enumerated_languages(v, m, L, rel):
    """The population correlation (every sequence of the language once: no sampling noise),
    averaged over 8 grammars, against the theory curve; v = 8 is far from the large-v limit."""
    measured = np.mean([correlations.token_correlation(
        np.asarray(rhm.sample_distinct(jax.random.PRNGKey(0), g, rhm.num_sequences(g))[0]), v)
        for g in (rhm.make_grammar(jax.random.PRNGKey(seed), v, m, 2, L) for seed in range(8))], axis=0)
    curve = theory.token_correlation_curve(v, m, 2, L)
    assert np.isnan(curve[0])
    np.testing.assert_allclose(measured[1:], curve[1:], rtol=rel)
    # power law in the distance s^l: each level down the tree costs a factor ~1/m
    ratio = theory.token_token_correlation(10**4, m, 2, 6, 3) / theory.token_token_correlation(10**4, m, 2, 6, 2)
    assert ratio == pytest.approx(1 / m, rel=0.02)


def test_token_correlation_matches_direct_loop():
    rng = np.random.default_rng(0)
    v, n, d = 3, 200, 6
    x = rng.integers(0, v, (n, d))
    x[:, 3] = x[:, 0]  # a strong correlation at distance 3
    onehot = np.eye(v)[x]
    expected = [np.nan]
    for t in range(1, d):
        norms = []
        for i in range(d - t):
            a, b = onehot[:, i], onehot[:, i + t]
            cov = (a - a.mean(0)).T @ (b - b.mean(0)) / n  # population covariance, v x v
            norms.append(np.linalg.norm(cov))
        expected.append(np.mean(norms))
    got = correlations.token_correlation(x, v)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    assert got[3] > 2 * got[1]


def test_token_correlation_noise_floor():
    x = np.random.default_rng(1).integers(0, 5, (4000, 10))
    corr = correlations.token_correlation(x, 5)[1:]
    assert np.mean(corr) == pytest.approx(correlations.noise_floor(5, 4000), rel=0.15)


def test_token_correlation_decays_on_rhm_data():
    g = rhm.make_grammar(jax.random.PRNGKey(0), 8, 2, 2, 3)
    x, _ = rhm.sample(jax.random.PRNGKey(1), g, 20000)
    corr = correlations.token_correlation(x, 8)
    assert corr[1] > corr[2] > correlations.noise_floor(8, 20000)


@pytest.mark.parametrize("bad, match", [
    (dict(tokens=np.zeros((3, 4), np.float32)), "integer"),
    (dict(tokens=np.full((3, 4), 5)), r"\[0, v\)"),
    (dict(tokens=np.zeros(4, int)), r"\[N, d\]"),
])
def test_token_correlation_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        correlations.token_correlation(bad["tokens"], 4)


def test_cluster_purity():
    assert clustering.cluster_purity([0, 0, 1, 1], [2, 2, 3, 3]) == 1.0
    assert clustering.cluster_purity([0, 0, 0, 0], [2, 2, 3, 3]) == 0.5
    assert clustering.cluster_purity([0, 1, 0, 1], [0, 0, 1, 1]) == 0.5


@pytest.mark.parametrize("level", [1, 2])
@pytest.mark.parametrize("context", ["token", "tuple"])
def test_clustering_recovers_synonyms_from_exact_contexts(level, context):
    """On the whole language (each sequence once = the exact RHM distribution) the
    mean-context vectors are exact: synonyms share one vector, and when the v parents'
    vectors are distinct (checked: small grammars can tie) k-means groups exactly the synonyms."""
    g = rhm.make_grammar(jax.random.PRNGKey(0), 8, 2, 2, 3)
    x, _ = rhm.sample_distinct(jax.random.PRNGKey(0), g, rhm.num_sequences(g))
    x = np.asarray(x)
    codes = clustering.tuple_symbols(g, x, level) @ np.array([8, 1])
    ctx = x[:, :1] if context == "token" else x[:, :2]
    values, vectors = clustering.mean_contexts(codes, ctx, 8)
    direct = np.stack([np.eye(8)[ctx[codes == c]].reshape(-1, 8 * ctx.shape[1]).mean(0) for c in values])
    np.testing.assert_allclose(vectors, direct)
    parents = {a for a in range(8) for c in np.asarray(g.rules[level - 1, a]) @ np.array([8, 1]) if c in values}
    assert len(values) == 2 * len(parents) == 2 * len(np.unique(np.round(vectors, 9), axis=0))
    assert clustering.synonym_clustering_accuracy(jax.random.PRNGKey(1), x, g, level, context) == 1.0


def test_clustering_fails_without_data_and_rejects_bad_arguments():
    g = rhm.make_grammar(jax.random.PRNGKey(3), 8, 2, 2, 3)
    x, _ = rhm.sample(jax.random.PRNGKey(0), g, 20)  # far below P_2 = 85
    assert clustering.synonym_clustering_accuracy(jax.random.PRNGKey(1), x, g, 1, "token") < 1.0
    with pytest.raises(ValueError, match="context"):
        clustering.synonym_clustering_accuracy(jax.random.PRNGKey(1), x, g, 1, "pair")
    with pytest.raises(ValueError, match="level"):
        clustering.synonym_clustering_accuracy(jax.random.PRNGKey(1), x, g, 3, "token")


def test_tuple_symbols_are_the_second_tuple_below_the_level():
    g = rhm.make_grammar(jax.random.PRNGKey(3), 4, 2, 2, 3)
    x, _ = rhm.sample(jax.random.PRNGKey(0), g, 50)
    x = np.asarray(x)
    np.testing.assert_array_equal(clustering.tuple_symbols(g, x, 1), x[:, 2:4])
    np.testing.assert_array_equal(clustering.tuple_symbols(g, x, 2), np.asarray(rhm.decode(g, x)[0])[:, 2:4])


def test_sensitivity_zero_for_invariant_features_and_ordered_for_random_features():
    """A function of the root is invariant to every R_l (S = 0); random features of the
    tokens are more sensitive to deeper resets, and close to 1 at the root's level."""
    from rhmdiff.analysis import sensitivity
    g = rhm.make_grammar(jax.random.PRNGKey(0), 8, 2, 2, 3)
    x, y = rhm.sample(jax.random.PRNGKey(1), g, 4000)
    w = jax.random.normal(jax.random.PRNGKey(2), (8 * 8, 64))

    def features(tokens):
        onehot = jax.nn.one_hot(tokens, 8).reshape(len(tokens), -1)
        root = jax.nn.one_hot(rhm.decode(g, tokens)[-1][:, 0], 8)
        return {"root": root, "random": jnp.tanh(onehot @ w)}

    S = sensitivity.relative_sensitivity(jax.random.PRNGKey(3), features, g, x, same_allowed=True)
    np.testing.assert_allclose(S["root"], 0.0)
    assert S["random"][0] < S["random"][1] < S["random"][2] < 1.0
    assert S["random"][2] > 0.8 and S["random"][0] > 0.1
    # the authors' reset (another production at level l) changes every level-(l-1) tuple: with
    # m = 2 a level-1 reset swaps every token pair for its synonym, which random features of the
    # tokens see as a change at least as large as an independent sequence
    S = sensitivity.relative_sensitivity(jax.random.PRNGKey(3), features, g, x)
    np.testing.assert_allclose(S["root"], 0.0)
    assert S["random"][0] > 1.0


def test_unet_sensitivity_has_one_entry_per_block_and_level():
    from rhmdiff.analysis import sensitivity
    from rhmdiff.models.unet import UNet
    g = rhm.make_grammar(jax.random.PRNGKey(0), 4, 2, 2, 3)
    x, _ = rhm.sample(jax.random.PRNGKey(1), g, 64)
    model = UNet(v=4, s=2, L=3, width=16, T=100)
    params = model.init(jax.random.PRNGKey(2), x[:1], jnp.ones((1,), jnp.int32))
    S = sensitivity.relative_sensitivity(jax.random.PRNGKey(3), sensitivity.unet_features(model, params, 1), g, x)
    assert sorted(S) == sorted([f"encoder_{k}" for k in (1, 2, 3)] + [f"decoder_{k}" for k in (1, 2, 3)])
    assert all(s.shape == (3,) and np.all(np.isfinite(s)) and np.all(s >= 0) for s in S.values())


def test_p_star_interpolates_in_log_p():
    from rhmdiff.analysis.sample_complexity import p_star, power_law_fit
    P = [10, 100, 1000, 10000]
    assert p_star(P, [0.1, 0.3, 0.7, 0.9], 0.5) == pytest.approx(10**2.5)
    assert math.isnan(p_star(P, [0.6, 0.7, 0.8, 0.9], 0.5))  # reached at the first P: below the grid
    assert p_star(P, [0.1, 0.2, 0.3, 0.4], 0.5) == math.inf
    # a synthetic family of sigmoids in log P with known P* = c m^3 gives back exponent 3
    ms = np.array([2, 3, 4, 6])
    grid = np.logspace(0, 6, 61)
    stars = [p_star(grid, 1 / (1 + (5 * m**3 / grid) ** 2), 0.5) for m in ms]
    np.testing.assert_allclose(stars, 5 * ms**3, rtol=0.02)
    fit = power_law_fit(ms, stars)
    assert fit["exponent"] == pytest.approx(3, abs=0.02) and fit["prefactor"] == pytest.approx(5, rel=0.05)
    with pytest.raises(ValueError, match="increasing"):
        p_star([10, 5], [0.1, 0.9])


def test_one_step_update_is_the_token_tuple_correlation():
    """Eq. (22)-(23): after one GD step from W_0 = log P^(nu), dW = eta C^_P(nu, mu) with
    C^_P(nu, mu) = P^(X_{s+1} = nu, tuple = mu) - P^(nu) P^(mu), computed here by counting."""
    from rhmdiff.analysis import onestep
    rng = np.random.default_rng(0)
    idx, y = rng.integers(0, 6, 500), rng.integers(0, 4, 500)
    w0, dw = onestep.one_step_update(idx, y, 6, 4, eta=0.7)
    joint = np.zeros((4, 6))
    np.add.at(joint, (y, idx), 1.0 / 500)
    corr = joint - joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    np.testing.assert_allclose(dw, 0.7 * corr, atol=1e-6)
    np.testing.assert_allclose(w0, np.tile(np.log(joint.sum(1))[:, None], (1, 6)), rtol=1e-6)


def test_one_step_separability_grows_with_p():
    from rhmdiff.analysis import onestep
    g = rhm.make_grammar(jax.random.PRNGKey(0), 8, 2, 2, 2)
    x, _ = rhm.sample(jax.random.PRNGKey(1), g, 20000)
    few = onestep.synonym_separability(jax.random.PRNGKey(2), x[:30], g)
    many = onestep.synonym_separability(jax.random.PRNGKey(2), x, g)
    assert few < 0.8 and many == 1.0


def exact_token_tuple_correlation(v, m, seeds):
    """RMS over grammars, tokens mu and valid tuples nu of C^(3)(mu, nu) = P[x_1 = mu,
    h^(1)_{3:4} = nu] - P[x_1 = mu] P[h^(1)_{3:4} = nu] (Eq. 2), exactly: every sequence of the
    language once (s = 2, L = 3, so the LCA of x_1 and the tuple is the root)."""
    squares = []
    for seed in range(seeds):
        g = rhm.make_grammar(jax.random.PRNGKey(seed), v, m, 2, 3)
        x, _ = rhm.sample_distinct(jax.random.PRNGKey(0), g, rhm.num_sequences(g))
        x = np.asarray(x)
        h1 = np.asarray(rhm.decode(g, x)[0])
        joint = np.zeros((v, v * v))
        np.add.at(joint, (x[:, 0], h1[:, 2] * v + h1[:, 3]), 1 / len(x))
        corr = joint - joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
        squares.append((corr[:, joint.sum(0) > 0] ** 2).mean())
    return np.sqrt(np.mean(squares))


def test_token_tuple_correlation_magnitude_matches_eq5():
    """Eq. (3)/(5) at level 3 is asymptotic in v, m: at v = 16 the exact magnitude is within
    15% of it, and its dependence on m follows m^{-5/2} (1 - m/v)^{1/2}."""
    exact = {m: exact_token_tuple_correlation(16, m, seeds=4) for m in (2, 4)}
    formula = {m: theory.correlation_magnitude(16, m, 2, 3) for m in (2, 4)}
    for m in (2, 4):
        assert exact[m] == pytest.approx(formula[m], rel=0.15)
        assert exact[m] == pytest.approx(theory.token_tuple_correlation(16, m, 2, 3), rel=0.15)
    assert exact[2] / exact[4] == pytest.approx(formula[2] / formula[4], rel=0.1)


def test_possible_symbols_match_the_enumerated_language():
    g = rhm.make_grammar(jax.random.PRNGKey(2), 4, 2, 2, 3)
    x, _ = rhm.sample_distinct(jax.random.PRNGKey(0), g, rhm.num_sequences(g))
    latents = rhm.decode(g, x)
    for level in (1, 2):
        for p in range(2 ** (3 - level)):
            seen = np.unique(np.asarray(latents[level - 1])[:, p])
            np.testing.assert_array_equal(clustering.possible_symbols(g, level, p), seen)
    np.testing.assert_array_equal(clustering.possible_symbols(g, 2, 1), clustering.possible_parents(g, 2))


@pytest.mark.parametrize("context", ["token", "tuple"])
def test_distant_context_clustering_exact_on_the_language_and_needs_more_data(context):
    """Every lower latent estimated against the distant first token (or tuple): exact on the
    whole language; on samples it needs more data than clustering with the true latents below."""
    g = rhm.make_grammar(jax.random.PRNGKey(0), 8, 2, 2, 3)
    x, _ = rhm.sample_distinct(jax.random.PRNGKey(0), g, rhm.num_sequences(g))
    assert clustering.distant_context_clustering_accuracy(jax.random.PRNGKey(1), np.asarray(x), g, context) == 1.0
    x, _ = rhm.sample(jax.random.PRNGKey(2), g, 1000)
    x = np.asarray(x)
    deep = clustering.distant_context_clustering_accuracy(jax.random.PRNGKey(1), x, g, context)
    assert deep < 0.8 < clustering.synonym_clustering_accuracy(jax.random.PRNGKey(1), x, g, 2, context)


def _local_context_vectors(g, language, context):
    """E[context | level-1 tuple], by a plain loop over the enumerated language (every sequence
    once: the exact distribution), the context of the tuple at level-1 position p being its
    sibling (p xor 1) tuple's nearest token (or whole tuple), for the two child positions
    side by side: {tuple: vector}."""
    from collections import defaultdict
    sums, counts = defaultdict(lambda: np.zeros(2 * (1 if context == "token" else 2) * g.v)), defaultdict(int)
    for tokens, _ in language:
        for p in range(len(tokens) // 2):
            tup, sib = tokens[2 * p:2 * p + 2], tokens[2 * (p ^ 1):2 * (p ^ 1) + 2]
            ctx = [sib[0]] if p % 2 == 0 else [sib[1]]
            ctx = ctx if context == "token" else list(sib)
            vec = np.zeros((2, len(ctx), g.v))
            vec[p % 2, np.arange(len(ctx)), ctx] = 1
            sums[tup] += vec.ravel()
            counts[tup, p % 2] += 1
    return {t: np.concatenate([(v.reshape(2, -1)[c] / max(counts[t, c], 1)) for c in (0, 1)]) for t, v in sums.items()}


@pytest.mark.parametrize("context", ["token", "tuple"])
def test_hierarchical_clustering_finds_the_synonym_classes_level_by_level(context):
    """The paper's mechanism on an enumerated grammar whose latents are known: from the whole
    language (exact statistics) the level-1 classes learned from local context, pooled over
    positions, are exactly the synonym classes (where the exact context vectors, computed here
    in a plain loop, separate the parents), and the top tuple of estimated classes clusters
    perfectly; on samples it needs more data than with the true latents below, fewer than the
    distant-context variant, and is perfect with enough."""
    from conftest import enumerate_language
    g = rhm.make_grammar(jax.random.PRNGKey(0), 8, 2, 2, 3)
    language = enumerate_language(g)
    rules = np.asarray(g.rules)
    parent = {tuple(rules[0, a, j]): a for a in range(g.v) for j in range(g.m)}
    vectors = _local_context_vectors(g, language, context)
    by_parent = {a: [vectors[t] for t, b in parent.items() if b == a] for a in range(g.v)}
    separable = all(np.linalg.norm(by_parent[a][0] - by_parent[b][0]) > 1e-9 for a in range(g.v) for b in range(a))
    assert separable  # this grammar's parents differ in their exact local contexts
    x = np.array([t for t, _ in language])
    (classes,) = clustering.hierarchical_classes(jax.random.PRNGKey(1), x, g, context)
    found = {t: classes[clustering.tuple_codes(np.array(t), g.v)] for t in parent}
    for a in range(g.v):  # one class per parent, the same for all its productions
        assert len({found[t] for t, b in parent.items() if b == a}) == 1
    assert len(set(found.values())) == g.v
    assert clustering.hierarchical_clustering_accuracy(jax.random.PRNGKey(1), x, g, context) == 1.0
    samples = np.asarray(rhm.sample(jax.random.PRNGKey(2), g, 400)[0])
    true_latents = clustering.synonym_clustering_accuracy(jax.random.PRNGKey(1), samples, g, 2, context)
    distant = clustering.distant_context_clustering_accuracy(jax.random.PRNGKey(1), samples, g, context)
    hierarchical = clustering.hierarchical_clustering_accuracy(jax.random.PRNGKey(1), samples, g, context)
    assert distant <= hierarchical <= true_latents, (distant, hierarchical, true_latents)
    many = np.asarray(rhm.sample(jax.random.PRNGKey(3), g, 50_000)[0])
    assert clustering.hierarchical_clustering_accuracy(jax.random.PRNGKey(1), many, g, context) == 1.0


def test_score_error_is_zero_for_the_oracle_and_closed_form_for_a_uniform_denoiser():
    """The oracle as the network: every error 0. A network that predicts the uniform
    distribution: token KL = log v - H(p(x_0^i | x_t)) with the exact posterior from brute
    force over the enumerated language, and its implied level posteriors are the grammar's
    prior marginals (counted over the language)."""
    from conftest import enumerate_language
    from jax.tree_util import Partial

    from rhmdiff import evaluate
    from rhmdiff.analysis import score_error
    from rhmdiff.diffusion import d3pm
    g = rhm.make_grammar(jax.random.PRNGKey(3), 3, 2, 2, 3)
    lang = enumerate_language(g)
    schedule = d3pm.linear_schedule(40, 0.02, 0.3)
    x0 = np.asarray(rhm.sample(jax.random.PRNGKey(4), g, 24)[0])
    keys = example_keys(jax.random.PRNGKey(5), len(x0))
    uniform = Partial(lambda x_t, t: jnp.zeros(x_t.shape + (g.v,)))
    words = np.array([e[0] for e in lang])
    priors = {level: np.stack([np.bincount(lat[:, j], minlength=g.v) for j in range(lat.shape[1])]) / len(lang)
              for level in range(1, g.L + 1) for lat in [np.array([e[1][level - 1] for e in lang])]}
    for t in (1, 6, 25):
        exact = score_error.errors_at(g, schedule, evaluate.oracle_logits_fn(g, schedule), keys, x0, t)
        for name in ("token_kl", "vb_excess", "level_kl"):
            np.testing.assert_allclose(exact[name], 0.0, atol=2e-5, err_msg=name)
        got = score_error.errors_at(g, schedule, uniform, keys, x0, t)
        ab = float(schedule.alpha_bar(t))
        x_t = np.asarray(jax.vmap(lambda k, x: d3pm.q_sample(jax.random.fold_in(k, t), schedule, x, t, g.v))(keys, x0))
        for i in range(len(x0)):  # p(x_0 = w | x_t) over the language, by brute force
            like = np.prod(np.where(words == x_t[i], ab + (1 - ab) / g.v, (1 - ab) / g.v), 1)
            post = like / like.sum()
            marg = np.stack([np.bincount(words[:, j], post, g.v) for j in range(g.d)])
            h = -np.sum(np.where(marg > 0, marg * np.log(np.maximum(marg, 1e-300)), 0), 1)
            assert float(got["token_kl"][i]) == pytest.approx(np.mean(np.log(g.v) - h), abs=2e-5)
            # the level posteriors the exact marginals imply, against the uniform denoiser's: the priors
            implied = score_error.implied_levels(g, jnp.asarray(marg[None], jnp.float32))
            for level in range(1, g.L + 1):
                p, q = np.asarray(implied[level][0], np.float64), priors[level]
                kl = np.sum(np.where(p > 0, p * np.log(np.maximum(p, 1e-300) / q), 0), 1).mean()
                assert float(got["level_kl"][i, level - 1]) == pytest.approx(kl, abs=2e-5)
    prior = score_error.implied_levels(g, jnp.full((1, g.d, g.v), 1.0 / g.v))
    for level in range(1, g.L + 1):  # uniform evidence: the grammar's prior marginals (each sequence equally likely)
        np.testing.assert_allclose(prior[level][0], priors[level], atol=1e-6)


def test_p_star_statistics_and_exponent_interval_against_numpy():
    """Synthetic sweeps: per seed a sigmoid in log P crossing 1/2 at P*_seed = c m^4 e^{noise};
    the per-seed P*, their geometric mean and t-interval, and the pooled log-log fit of P* vs m
    with its t-interval, each against a re-derivation in numpy (the t quantiles of 2 and 10
    degrees of freedom from a table), and the intervals cover the truth."""
    from rhmdiff.analysis.sample_complexity import p_star_statistics, power_law_fit, t_interval
    rng = np.random.default_rng(0)
    grid = np.logspace(1, 6, 41)
    ms, seeds, true_exponent, c = np.array([2, 3, 4, 6]), 3, 4.0, 7.0
    per_m, xs, ys = {}, [], []
    for m in ms:
        stars = c * m**true_exponent * np.exp(rng.normal(0, 0.2, seeds))
        curves = [1 / (1 + (s / grid) ** 1.5) for s in stars]  # A(P) = 1/2 exactly at P = s
        st = p_star_statistics(grid, curves, 0.5)
        np.testing.assert_allclose(st["per_seed"], stars, rtol=0.01)  # the grid interpolation
        logs = np.log(st["per_seed"])
        se = logs.std(ddof=1) / np.sqrt(seeds)
        t2 = 4.302652729911275  # Student t, 97.5%, 2 degrees of freedom
        assert st["p_star"] == pytest.approx(np.exp(logs.mean()), rel=1e-9)
        np.testing.assert_allclose(st["ci"], np.exp([logs.mean() - t2 * se, logs.mean() + t2 * se]), rtol=1e-9)
        assert st["ci"][0] < c * m**true_exponent < st["ci"][1]
        per_m[m] = st
        xs += [m] * seeds
        ys += list(st["per_seed"])
    fit = power_law_fit(xs, ys)
    lx, ly = np.log(xs), np.log(ys)
    slope = np.sum((lx - lx.mean()) * (ly - ly.mean())) / np.sum((lx - lx.mean()) ** 2)
    residual = ly - ly.mean() - slope * (lx - lx.mean())
    se = np.sqrt(np.sum(residual**2) / (len(lx) - 2) / np.sum((lx - lx.mean()) ** 2))
    t10 = 2.2281388519649385  # 97.5%, 10 degrees of freedom
    assert fit["exponent"] == pytest.approx(slope, rel=1e-9) and fit["n"] == 12
    np.testing.assert_allclose(fit["ci"], [slope - t10 * se, slope + t10 * se], rtol=1e-9)
    assert fit["ci"][0] < true_exponent < fit["ci"][1] and fit["ci"][1] - fit["ci"][0] < 1.0
    assert fit["prefactor"] == pytest.approx(np.exp(ly.mean() - slope * lx.mean()), rel=1e-9)
    # a seed that never crosses: no finite P*, only a lower bound (the smallest crossing seed)
    curves = [1 / (1 + (s / grid) ** 1.5) for s in (1e3, 2e3, 1e9)]
    st = p_star_statistics(grid, curves, 0.5)
    assert st["p_star"] == math.inf and st["n_crossed"] == 2 and st["ci"][0] == pytest.approx(1e3, rel=0.01)
    # a seed above the threshold from the grid's first point (P = 10): not a P* of 10 but an upper
    # bound, the geometric mean with that seed counted at 10; a sweep of such seeds has no exponent
    curves = [1 / (1 + (s / grid) ** 1.5) for s in (1e3, 4e3, 1.0)]
    st = p_star_statistics(grid, curves, 0.5)
    assert math.isnan(st["p_star"]) and st["n_below"] == 1 and st["n_crossed"] == 2
    assert st["ci"][0] == 0 and st["ci"][1] == pytest.approx((1e3 * 4e3 * 10) ** (1 / 3), rel=0.01)
    curves.append(1 / (1 + (1e9 / grid) ** 1.5))  # and one that never crosses: no bound at all
    assert p_star_statistics(grid, curves, 0.5)["ci"] == [0, math.inf]
    t = t_interval([1.0, 2.0, 4.0])
    assert t["mean"] == pytest.approx(7 / 3) and t["se"] == pytest.approx(np.std([1, 2, 4], ddof=1) / np.sqrt(3))


def test_exponents_pooled_over_sweeps_against_numpy():
    """Two synthetic sweeps over disjoint m (as with two step budgets): the pooled exponent of
    P* vs m is numpy's least-squares slope over every finite per-seed P* of both (a seed that
    never crossed, stored as null, left out; a threshold crossed at one m only has no fit), and
    sweeps that share an m or differ in v are refused naming it."""
    from rhmdiff.analysis.sample_complexity import p_star_statistics, pool_sweeps
    rng = np.random.default_rng(1)
    grid = np.logspace(1, 5, 33)
    def sweep(ms, v=8):
        rows = []
        for m in ms:
            stars = 3.0 * m**2.5 * np.exp(rng.normal(0, 0.1, 3))
            curves = [1 / (1 + (s / grid) ** 2) for s in stars] + [np.full_like(grid, 0.1)]  # seed 3: no crossing
            rows.append({"m": m, "seeds": [0, 1, 2, 3], "thresholds": [p_star_statistics(grid, curves, t)
                                                                      for t in (0.5, 0.8)]})
        for row in rows:
            if row["m"] == 3:
                row["thresholds"][1]["per_seed"] = [None] * 4  # 0.8 never reached at m = 3
        as_json = lambda st: {**st, "per_seed": [None if p is None or not np.isfinite(p) else p
                                                 for p in st["per_seed"]]}
        rows = [{**r, "thresholds": [as_json(st) for st in r["thresholds"]]} for r in rows]
        return {"task": "sweep", "v": v, "s": 2, "L": 2, "thresholds": [0.5, 0.8], "p_star": rows}
    a, b = sweep([3, 4]), sweep([5])
    pooled = pool_sweeps([b, a])
    assert [row["m"] for row in pooled["p_star"]] == [3, 4, 5]
    for e in pooled["exponents"]:
        i = [0.5, 0.8].index(e["threshold"])
        pairs = [(row["m"], p) for row in a["p_star"] + b["p_star"] for p in row["thresholds"][i]["per_seed"]
                 if p is not None]
        lx, ly = np.log([m for m, _ in pairs]), np.log([p for _, p in pairs])
        assert e["exponent"] == pytest.approx(np.polyfit(lx, ly, 1)[0], rel=1e-9) and e["n"] == len(pairs)
        assert e["theory"] == 3 and e["of"] == "metric"
    assert [e["threshold"] for e in pooled["exponents"]] == [0.5, 0.8]
    assert pooled["exponents"][0]["n"] == 9 and pooled["exponents"][1]["n"] == 6  # m = 3 left out at 0.8
    assert pooled["exponents"][0]["ci"][0] < 2.5 < pooled["exponents"][0]["ci"][1]
    assert [e["threshold"] for e in pool_sweeps([a])["exponents"]] == [0.5]  # 0.8 at m = 4 only: no fit
    with pytest.raises(ValueError, match="m = 4"):
        pool_sweeps([a, sweep([4, 5])])
    with pytest.raises(ValueError, match="differ in v"):
        pool_sweeps([a, sweep([5], v=16)])


def test_floor_subtraction_and_effective_support_against_numpy():
    """The floor is removed in quadrature; the effective support 1 / sum p^2 is estimated from
    collisions without bias: on K equally likely sequences it is K on average, and on the
    whole enumerated language it is the language size."""
    from rhmdiff.analysis.correlations import effective_support, noise_floor, subtract_floor
    np.testing.assert_allclose(subtract_floor([np.nan, 0.05, 0.01], 0.03), [np.nan, 0.04, 0.0])
    rng = np.random.default_rng(0)
    support = rng.integers(0, 8, (50, 8))  # 50 sequences (almost surely distinct)
    estimates = [effective_support(support[rng.integers(0, 50, 400)]) for _ in range(200)]
    assert np.mean(estimates) == pytest.approx(50, rel=0.03)
    draws = support[rng.integers(0, 50, 400)]
    _, counts = np.unique(draws, axis=0, return_counts=True)
    assert effective_support(draws) == pytest.approx(400 * 399 / np.sum(counts * (counts - 1)))
    assert effective_support(np.arange(10).reshape(5, 2)) == math.inf
    # the noise floor is the expected norm of the covariance of independent uniform tokens
    norms = []
    for _ in range(200):
        a, b = rng.integers(0, 8, 2000), rng.integers(0, 8, 2000)
        joint = np.zeros((8, 8))
        np.add.at(joint, (a, b), 1 / 2000)
        norms.append(np.linalg.norm(joint - np.outer(joint.sum(1), joint.sum(0))))
    assert np.mean(norms) == pytest.approx(noise_floor(8, 2000), rel=0.03)


def test_nearest_distances_against_a_loop():
    """The Hamming distance to the nearest reference row, against a plain double loop, across
    chunk boundaries; a copy is at distance 0."""
    from rhmdiff.analysis.correlations import nearest_distances
    rng = np.random.default_rng(1)
    ref, x = rng.integers(0, 3, (40, 6)), rng.integers(0, 3, (301, 6))
    x[:5] = ref[7:12]
    expected = [min(sum(int(a != b) for a, b in zip(row, r)) for r in ref) for row in x]
    np.testing.assert_array_equal(nearest_distances(x, ref, chunk_size=64), expected)
    assert (nearest_distances(x, ref)[:5] == 0).all()
    with pytest.raises(ValueError, match="reference"):
        nearest_distances(x, ref[:, :5])


def test_the_top_rule_above_chance():
    """A model that has the levels below right and draws the top-level tuple at random satisfies
    the top rule with probability f = m / v^{s-1} (counted here over all tuples of an enumerated
    grammar): A_L above chance is then 0; every sequence valid gives 1."""
    from rhmdiff.tasks.sweep import above_chance
    g = rhm.make_grammar(jax.random.PRNGKey(0), 8, 3, 2, 2)
    rules = np.asarray(g.rules)
    productions = {tuple(rules[1, a, j]) for a in range(g.v) for j in range(g.m)}
    f = len(productions) / g.v**g.s
    assert theory.top_rule_chance(8, 3, 2) == pytest.approx(f)
    assert above_chance([0.9, 0.9 * f], f) == pytest.approx(0.0, abs=1e-12)
    assert above_chance([0.9, 0.9], f) == pytest.approx(1.0)
    assert above_chance([0.8, 0.6, 0.5], 0.5) == pytest.approx((0.5 / 0.6 - 0.5) / 0.5)


def test_log_axes_within_a_decade_get_labelled_ticks(tmp_path):
    """A log axis spanning less than a decade (P* of two m) is ticked at 1, 2, 5 x 10^k with
    plain labels; an axis whose ticks were set explicitly keeps them."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rhmdiff.analysis import figures
    fig, ax = plt.subplots()
    ax.plot([3, 4], [150, 800])
    ax.set(xscale="log", yscale="log")
    ax.set_xticks([3, 4], ["3", "4"])
    figures._save(fig, str(tmp_path / "f.png"))
    lo, hi = ax.get_ylim()
    shown = [y for y in ax.yaxis.get_major_locator().tick_values(lo, hi) if lo <= y <= hi]
    assert shown == pytest.approx([200, 500])
    assert ax.yaxis.get_major_formatter()(200, 0) == "200"
    assert list(ax.xaxis.get_major_locator().tick_values(3, 4)) == [3, 4]
    assert (tmp_path / "f.png").stat().st_size > 0
    assert [figures._count(n, "seed") for n in (1, 3)] == ["1 seed", "3 seeds"]  # figure titles
