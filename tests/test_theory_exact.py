"""rhmdiff.theory, formula by formula: against exact averages over *every* unambiguous rule set
of one level of a tiny grammar (enumerated here, independent of rhm.make_grammar), closed forms
written out in the test, and a plain loop for the correlation curve. Generic sizes (s = 3,
v != m) so that a v**(s-1) written as v, or a v*v*m written as v*m*m, shows."""
import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from rhmdiff import theory


def all_rule_sets(v, m, s):
    """Every level of an unambiguous grammar: int[G, v, m, s], all ways of giving each of the v
    symbols an m-subset of the v**s tuples, the subsets disjoint (the order of a symbol's
    productions does not matter for any quantity here). Uniform rules = uniform over these."""
    tuples = list(itertools.product(range(v), repeat=s))

    def rec(avail, k):
        if k == v:
            yield []
            return
        for comb in itertools.combinations(sorted(avail), m):
            for rest in rec(avail - set(comb), k + 1):
                yield [comb] + rest

    return np.array([[[tuples[i] for i in comb] for comb in gr] for gr in rec(set(range(len(tuples))), 0)])


# (v, m, s): 7560, 420 and 560 rule sets; f = 2/3, 1/2, 3/4
SIZES = [(3, 2, 2), (2, 2, 3), (2, 3, 3)]


@pytest.fixture(scope="module")
def rule_sets():
    return {size: all_rule_sets(*size) for size in SIZES}


def position_probs(G, v, m, k):
    """p[g, a, mu]: the fraction of symbol a's productions with mu at position k."""
    return np.stack([(G[:, :, :, k] == mu).sum(2) for mu in range(v)], -1) / m


@pytest.mark.parametrize("size", SIZES)
def test_rule_moments_and_level_factor_are_exact_averages_over_all_rule_sets(size, rule_sets):
    """Eqs. (15)-(16) are exact: <p(mu|mu_1)^2> and <p(mu|mu_1) p(mu|nu_1)> (nu_1 != mu_1) over
    every rule set, at every position of the tuple; Eq. (18)'s factor is v(<p^2> - <p p'>) and
    its closed form v^{s-1}(v-1) / (m (v^s - 1)), and it is the factor of Eq. (14)+(17): the
    mean square of sum_mu1 p(mu|mu1) C(mu1) over the rules, for C with zero sum and
    exchangeable entries (covariance delta - 1/v), divided by <C^2> = 1 - 1/v."""
    v, m, s = size
    G = rule_sets[size]
    square, cross = theory.rule_moments(v, m, s)
    for k in range(s):
        p = position_probs(G, v, m, k)
        assert square == pytest.approx((p**2).mean(), rel=1e-12)
        off = [(p[:, a, :] * p[:, b, :]).mean() for a in range(v) for b in range(v) if a != b]
        assert cross == pytest.approx(np.mean(off), rel=1e-12)
    lf = theory.level_factor(v, m, s)
    assert lf == pytest.approx(v ** (s - 1) * (v - 1) / (m * (v**s - 1)), rel=1e-12)
    p = position_probs(G, v, m, 0)  # [g, mu1, mu]
    cov_c = np.eye(v) - 1.0 / v
    quad = np.einsum("gam,gbm,ab->", p, p, cov_c) / (len(G) * v)  # averaged over rule sets and mu
    assert lf == pytest.approx(quad / (1 - 1 / v), rel=1e-12)
    assert theory.level_factor(1000, 7, 3) == pytest.approx(1 / 7, rel=2e-3)  # -> 1/m for v >> 1


@pytest.mark.parametrize("size", SIZES)
def test_marginal_spread_below_the_root_is_the_exact_relative_variance(size, rule_sets):
    """One level below the root (uniform), q(a) = P[h = a] = (1/v) sum_b n_ba / m: its relative
    variance <(q(a) - 1/v)^2> v^2 over every rule set is exactly marginal_spread(.., L, L-1), at
    every position; at the root it is 0."""
    v, m, s = size
    G = rule_sets[size]
    for k in range(s):
        q = position_probs(G, v, m, k).mean(1)  # [g, a]: uniform parent
        exact = ((q - 1 / v) ** 2).mean() * v * v
        for L in (1, 2, 4):
            assert theory.marginal_spread(v, m, s, L, L - 1 if L > 1 else 1) == pytest.approx(
                exact if L > 1 else 0.0, rel=1e-12, abs=1e-15)
    for L in (1, 3):
        assert theory.marginal_spread(v, m, s, L, L) == 0.0


def test_marginal_spread_recursion_closed_form():
    """spread_{L-k} = c (1 + 1/m + ... + 1/m^{k-1}) with c = (1 - 1/v)(v^s - v m)/(m (v^s - 1)):
    the geometric sum, at generic sizes, every level; a level outside [1, L] is refused."""
    for v, m, s, L in [(5, 3, 3, 5), (7, 2, 2, 4), (4, 4, 2, 3)]:
        c = Fraction(v - 1, v) * Fraction(v**s - v * m, m * (v**s - 1))
        for level in range(1, L + 1):
            k = L - level
            expected = c * sum(Fraction(1, m**j) for j in range(k))
            assert theory.marginal_spread(v, m, s, L, level) == pytest.approx(float(expected), rel=1e-12, abs=1e-300)
    for bad in (0, 4):
        with pytest.raises(ValueError, match="level"):
            theory.marginal_spread(5, 3, 3, 3, bad)
    with pytest.raises(ValueError, match="^L must"):
        theory.marginal_spread(5, 3, 3, 0, 1)


@pytest.mark.parametrize("size", SIZES)
def test_sibling_covariance_entry_variance_is_exact(size, rule_sets):
    """Two tokens of one production (L = 1, uniform root): P(a, b) = (number of the v m rules
    with a at i and b at j) / (v m), and its variance over every rule set is exactly the
    per-entry sigma^2 of token_token_correlation, which at L = 1 is (v - 1) sigma."""
    v, m, s = size
    G = rule_sets[size]
    ttc = theory.token_token_correlation(v, m, s, 1, 1)
    for i, j in itertools.combinations(range(s), 2):
        P = np.zeros((len(G), v, v))
        rows = np.arange(len(G))
        for a in range(v):
            for jj in range(m):
                np.add.at(P, (rows, G[:, a, jj, i], G[:, a, jj, j]), 1 / (v * m))
        sigma2 = ((P - 1 / v**2) ** 2).mean()
        assert ttc == pytest.approx((v - 1) * math.sqrt(sigma2), rel=1e-12)


def test_token_token_correlation_closed_form_at_every_level():
    """||C||_F = (v-1) sqrt(sigma^2 (1 + spread_l) lf^{2(l-1)}) with sigma^2 = (1 - v^-2)(v^s - v m)
    / ((v^s - 1) v^3 m), spread_l and lf written out here; large v: sqrt((1-f)/(v m)) m^{1-l}."""
    for v, m, s, L in [(5, 3, 3, 3), (9, 2, 2, 4), (6, 5, 2, 2)]:
        c = (1 - 1 / v) * (v**s - v * m) / (m * (v**s - 1))
        lf = v ** (s - 1) * (v - 1) / (m * (v**s - 1))
        sigma2 = (1 - 1 / v**2) * (v**s - v * m) / ((v**s - 1) * v**3 * m)
        for level in range(1, L + 1):
            spread = c * sum(m**-j for j in range(L - level))
            expected = (v - 1) * math.sqrt(sigma2 * (1 + spread) * lf ** (2 * (level - 1)))
            assert theory.token_token_correlation(v, m, s, L, level) == pytest.approx(expected, rel=1e-12)
    v, m, s = 40000, 6, 2
    f = m / v ** (s - 1)
    for level in (1, 2, 3):  # at the root's children (no marginal spread)
        asymptotic = math.sqrt((1 - f) / (v * m)) * m ** (1 - level)
        assert theory.token_token_correlation(v, m, s, level, level) == pytest.approx(asymptotic, rel=2e-4)


def test_token_tuple_correlation_and_its_large_v_limit():
    """Eqs. (11), (18): sqrt((1 - f)/(v^3 m^4) lf^{l-2}) with f = m / v^{s-1} (s = 3: not m / v);
    correlation_magnitude (Eq. 19) is its v, m -> infinity limit; level >= 2."""
    for v, m, s in [(5, 3, 3), (4, 2, 2), (3, 7, 3)]:
        f = m / v ** (s - 1)
        lf = v ** (s - 1) * (v - 1) / (m * (v**s - 1))
        for level in (2, 3, 5):
            expected = math.sqrt((1 - f) / (v**3 * m**4) * lf ** (level - 2))
            assert theory.token_tuple_correlation(v, m, s, level) == pytest.approx(expected, rel=1e-12)
            assert theory.correlation_magnitude(v, m, s, level) == pytest.approx(
                math.sqrt((1 - f) / (v**3 * m ** (level + 2))), rel=1e-12)
    v, m = 1000, 5
    for level in (2, 3, 4):
        assert theory.token_tuple_correlation(v, m, 3, level) == pytest.approx(
            theory.correlation_magnitude(v, m, 3, level), rel=2e-3)
    for fn in (theory.token_tuple_correlation, theory.correlation_magnitude):
        with pytest.raises(ValueError, match="level"):
            fn(5, 3, 3, 1)


def test_sample_complexity_and_sampling_noise_closed_forms_at_s3():
    """Eq. (6) P_l = v m^{l+1} / (1 - m / v^{s-1}) at s = 3 (f = 3/25), infinite when every
    tuple is valid (m = v^{s-1}); the noise (v^2 m P)^{-1/2} with v != m; the two meet at P_l."""
    v, m, s = 5, 3, 3
    assert theory.sample_complexities(v, m, s, 4) == pytest.approx(
        [v * m ** (l + 1) / (1 - m / 25) for l in (1, 2, 3, 4)], rel=1e-12)
    assert theory.sample_complexity(2, 4, 3, 2) == math.inf and theory.sample_complexity(2, 3, 3, 2) < math.inf
    assert theory.sampling_noise(5, 3, 7.0) == pytest.approx((25 * 3 * 7.0) ** -0.5, rel=1e-12)
    for level in (2, 3):
        P = theory.sample_complexity(v, m, s, level)
        assert theory.correlation_magnitude(v, m, s, level) == pytest.approx(theory.sampling_noise(v, m, P), rel=1e-12)
    for bad in (0, 1.5, True):  # named as the level (not as the grammar's L)
        with pytest.raises(ValueError, match="^level must"):
            theory.sample_complexity(v, m, s, bad)
    assert theory.sample_complexity(v, m, s, np.int64(2)) == pytest.approx(v * m**3 / (1 - m / 25), rel=1e-12)
    with pytest.raises(ValueError, match="P"):
        theory.sampling_noise(5, 3, 0)
    if hasattr(theory, "top_rule_chance"):  # f: the fraction of the v^s tuples that are productions
        assert theory.top_rule_chance(5, 3, 3) == pytest.approx(5 * 3 / 5**3, rel=1e-12)
        assert theory.top_rule_chance(8, 4, 2) == 0.5


def test_token_correlation_curve_is_the_mean_over_pairs_by_a_plain_loop():
    """Entry t: the mean over i < d - t of token_token_correlation at the level of the lowest
    common ancestor of leaves i and i + t, found here from their base-s digits (s = 3, L = 2
    and s = 2, L = 3)."""
    for v, m, s, L in [(5, 3, 3, 2), (4, 3, 2, 3)]:
        d = s**L

        def lca(i, j, s=s, L=L):
            di = np.base_repr(i, s).zfill(L)
            dj = np.base_repr(j, s).zfill(L)
            common = next((k for k in range(L) if di[k] != dj[k]), L)  # shared leading digits
            return L - common

        curve = theory.token_correlation_curve(v, m, s, L)
        assert curve.shape == (d,) and np.isnan(curve[0])
        for t in range(1, d):
            expected = np.mean([theory.token_token_correlation(v, m, s, L, lca(i, i + t)) for i in range(d - t)])
            assert curve[t] == pytest.approx(expected, rel=1e-12), t
        assert theory.tree_distance(s, 4, 4) == 0
