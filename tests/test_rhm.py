"""rhmdiff.rhm against brute-force enumeration of tiny grammars and closed forms."""
import collections
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from conftest import brute_valid
from rhmdiff import rhm


def test_make_grammar_is_unambiguous_and_uniform():
    v, m, s, L = 4, 3, 2, 2
    counts = collections.Counter()
    for seed in range(400):
        g = rhm.make_grammar(jax.random.PRNGKey(seed), v, m, s, L)
        chex.assert_shape(g.rules, (L, v, m, s))
        assert g.rules.dtype == jnp.int32
        for level in range(L):
            prods = [tuple(p) for p in np.asarray(g.rules[level]).reshape(-1, s)]
            assert len(set(prods)) == v * m  # distinct productions: unambiguous
            counts.update(prods[:m])  # productions given to symbol 0
    # every one of the v**s tuples is equally likely to be a production of symbol 0
    freq = np.array([counts[t] for t in itertools.product(range(v), repeat=s)])
    assert stats.chisquare(freq).pvalue > 1e-4


def test_make_grammar_large_alphabet():
    g = rhm.make_grammar(jax.random.PRNGKey(0), 64, 16, 4, 2)
    prods = np.asarray(g.rules).reshape(2, -1, 4)
    assert all(len(np.unique(p, axis=0)) == 64 * 16 for p in prods)
    x, _ = rhm.sample(jax.random.PRNGKey(1), g, 500)
    np.testing.assert_array_equal(rhm.level_accuracy(g, x), [1.0, 1.0])  # searchsorted lookup path
    assert rhm.level_accuracy(g, jax.random.randint(jax.random.PRNGKey(2), (500, 16), 0, 64))[0] < 0.1


@pytest.mark.parametrize("args", [(2, 3, 2, 2), (0, 1, 2, 2), (3, 0, 2, 2), (3, 1, 1, 2), (3, 1, 2, 0), (2**16, 1, 2, 2)])
def test_make_grammar_rejects_impossible_sizes(args):
    with pytest.raises(ValueError):
        rhm.make_grammar(jax.random.PRNGKey(0), *args)


def test_num_sequences_matches_enumeration(tiny):
    g, lang = tiny
    seqs = {e[0] for e in lang}
    assert len(seqs) == len(lang) == rhm.num_sequences(g)  # all derivations give distinct sequences
    assert isinstance(rhm.num_sequences(g), int)
    assert rhm.num_sequences(rhm.make_grammar(jax.random.PRNGKey(0), 32, 8, 2, 8)) == 32 * 8**255


def test_validity_matches_definition_on_all_sequences(tiny):
    g, lang = tiny
    seqs = {e[0] for e in lang}
    all_x = np.array(list(itertools.product(range(g.v), repeat=g.d)))
    if len(all_x) > 20000:
        all_x = all_x[np.random.default_rng(0).choice(len(all_x), 20000, replace=False)]
        all_x = np.concatenate([all_x, np.array(sorted(seqs))])
    valid = np.asarray(rhm.is_valid(g, all_x))
    assert all(valid[i] == (tuple(x) in seqs) == brute_valid(g, x) for i, x in enumerate(all_x))


def test_level_accuracy_of_random_sequences_closed_form():
    """Uniform random tokens: A_l = prod_{k<=l} f**(s**(L-k)), f = m / v**(s-1)
    (given valid children, parents are i.i.d. uniform). Exact over all v**d sequences."""
    v, m, s, L = 3, 2, 2, 2
    g = rhm.make_grammar(jax.random.PRNGKey(7), v, m, s, L)
    all_x = np.array(list(itertools.product(range(v), repeat=s**L)))
    f = m / v ** (s - 1)
    expected = np.cumprod([f ** (s ** (L - k)) for k in range(1, L + 1)])
    np.testing.assert_allclose(rhm.level_accuracy(g, all_x), expected, rtol=1e-6)
    # larger grammar, Monte Carlo
    v, m, s, L = 4, 3, 2, 3
    g = rhm.make_grammar(jax.random.PRNGKey(8), v, m, s, L)
    x = jax.random.randint(jax.random.PRNGKey(9), (200000, s**L), 0, v)
    f = m / v ** (s - 1)
    expected = np.cumprod([f ** (s ** (L - k)) for k in range(1, L + 1)])
    np.testing.assert_allclose(rhm.level_accuracy(g, x), expected, atol=4 * np.sqrt(0.25 / 200000))


def test_sample_is_uniform_over_language(tiny):
    g, lang = tiny
    index = {e[0]: i for i, e in enumerate(lang)}
    n = 40 * len(lang)
    x, y = rhm.sample(jax.random.PRNGKey(3), g, n)
    chex.assert_shape(x, (n, g.d))
    chex.assert_type([x, y], jnp.int32)
    counts = np.bincount([index[tuple(r)] for r in np.asarray(x)], minlength=len(lang))  # KeyError if invalid
    assert stats.chisquare(counts).pvalue > 1e-4
    roots = {e[0]: e[1][-1][0] for e in lang}
    assert all(roots[tuple(r)] == c for r, c in zip(np.asarray(x), np.asarray(y)))


def test_sample_chunks():
    g = rhm.make_grammar(jax.random.PRNGKey(0), 4, 2, 2, 3)
    chunks = list(rhm.sample_chunks(jax.random.PRNGKey(1), g, 2500, chunk_size=1000))
    assert [len(c[0]) for c in chunks] == [1000, 1000, 500]
    assert all(bool(rhm.is_valid(g, c[0]).all()) for c in chunks)


def test_decode_recovers_true_latents(tiny):
    g, lang = tiny
    x = np.array([e[0] for e in lang])
    latents = rhm.decode(g, x)
    assert len(latents) == g.L
    for level in range(1, g.L + 1):
        expected = np.array([e[1][level - 1] for e in lang])
        np.testing.assert_array_equal(latents[level - 1], expected)


def test_decode_propagates_invalid():
    g = rhm.make_grammar(jax.random.PRNGKey(0), 3, 2, 2, 2)
    x, _ = rhm.sample(jax.random.PRNGKey(1), g, 1)
    x = np.asarray(x).copy()
    prods = {tuple(p) for p in np.asarray(g.rules[0]).reshape(-1, 2)}
    bad = next(t for t in itertools.product(range(3), repeat=2) if t not in prods)
    x[0, :2] = bad
    lat = rhm.decode(g, x)
    assert lat[0][0, 0] == -1 and lat[1][0, 0] == -1 and lat[0][0, 1] >= 0
    np.testing.assert_array_equal(rhm.level_accuracy(g, x), [0.0, 0.0])


def test_sample_distinct_is_distinct_uniform_and_exhaustive(tiny):
    g, lang = tiny
    n = rhm.num_sequences(g)
    x, y = rhm.sample_distinct(jax.random.PRNGKey(0), g, n)
    assert {tuple(r) for r in np.asarray(x)} == {e[0] for e in lang}
    index = {e[0]: i for i, e in enumerate(lang)}
    counts = np.zeros(n)
    for seed in range(300):
        x, _ = rhm.sample_distinct(jax.random.PRNGKey(seed), g, 5)
        rows = [index[tuple(r)] for r in np.asarray(x)]
        assert len(set(rows)) == 5
        counts[rows] += 1
    assert stats.chisquare(counts).pvalue > 1e-4
    with pytest.raises(ValueError):
        rhm.sample_distinct(jax.random.PRNGKey(0), g, n + 1)


def test_sample_distinct_huge_language_dedup_path():
    g = rhm.make_grammar(jax.random.PRNGKey(0), 4, 2, 2, 7)  # 4 * 2**127 sequences
    assert rhm.num_sequences(g) > rhm.MAX_EXACT_INDEX
    x, y = rhm.sample_distinct(jax.random.PRNGKey(1), g, 3000)
    assert len(np.unique(np.asarray(x), axis=0)) == 3000
    assert bool(rhm.is_valid(g, x).all())


def test_sample_distinct_is_deterministic():
    g = rhm.make_grammar(jax.random.PRNGKey(0), 8, 3, 2, 3)
    a, _ = rhm.sample_distinct(jax.random.PRNGKey(5), g, 100)
    b, _ = rhm.sample_distinct(jax.random.PRNGKey(5), g, 100)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("level", [1, 2, 3])
def test_reset_synonyms_of_rhmdiff_0_1(level):
    """``same_allowed=True``: every choice below the kept latents redrawn among all m."""
    v, m, s, L = 4, 2, 2, 3
    g = rhm.make_grammar(jax.random.PRNGKey(0), v, m, s, L)
    n = 20000
    x, _ = rhm.sample(jax.random.PRNGKey(1), g, n)
    r = rhm.reset_synonyms(jax.random.PRNGKey(2), g, x, level, same_allowed=True)
    assert bool(rhm.is_valid(g, r).all())
    before, after = rhm.decode(g, x), rhm.decode(g, r)
    for l in range(level, L + 1):  # latents at and above `level` are kept
        np.testing.assert_array_equal(before[l - 1], after[l - 1])
    # each level-`level` subtree is unchanged iff all its s**0 + ... + s**(level-1) choices repeat
    width = s**level
    same = np.all(np.asarray(x).reshape(n, -1, width) == np.asarray(r).reshape(n, -1, width), -1)
    p = (1 / m) ** sum(s**k for k in range(level))
    assert abs(same.mean() - p) < 5 * np.sqrt(p * (1 - p) / same.size)
    # the first level-1 tuple changes to each of its synonyms with probability 1/m
    if level == 1:
        changed = np.any(np.asarray(x)[:, :s] != np.asarray(r)[:, :s], -1)
        assert abs(changed.mean() - (1 - 1 / m)) < 5 * np.sqrt(0.25 / n)


def test_reset_synonyms_keeps_invalid_subtrees():
    g = rhm.make_grammar(jax.random.PRNGKey(0), 3, 2, 2, 2)
    prods = {tuple(p) for p in np.asarray(g.rules[0]).reshape(-1, 2)}
    bad = next(t for t in itertools.product(range(3), repeat=2) if t not in prods)
    x = np.array([list(bad) + list(np.asarray(g.rules[0, 0, 0]))])
    r = np.asarray(rhm.reset_synonyms(jax.random.PRNGKey(1), g, x, 1))
    np.testing.assert_array_equal(r[0, :2], bad)


def test_bad_inputs_raise():
    g = rhm.make_grammar(jax.random.PRNGKey(0), 4, 2, 2, 2)
    with pytest.raises(ValueError, match="tokens"):
        rhm.decode(g, np.zeros((3, 5), np.int32))
    with pytest.raises(ValueError, match="tokens"):
        rhm.level_accuracy(g, np.full((3, 4), 4, np.int32))
    with pytest.raises(ValueError, match="level"):
        rhm.reset_synonyms(jax.random.PRNGKey(0), g, np.zeros((3, 4), np.int32), 3)
    with pytest.raises(ValueError, match="num"):
        rhm.sample(jax.random.PRNGKey(0), g, -1)
    with pytest.raises(ValueError, match="shape"):
        rhm.sample(jax.random.PRNGKey(0), rhm.Grammar(rules=g.rules, v=4, m=3, s=2, L=2), 3)


class TestVariants(chex.TestCase):
    """The public array functions give the same results with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_public_functions(self):
        g = rhm.make_grammar(jax.random.PRNGKey(0), 4, 2, 2, 3)
        x, y = self.variant(lambda k, gg: rhm.sample(k, gg, 16))(jax.random.PRNGKey(1), g)
        chex.assert_shape([x, y], [(16, 8), (16,)])
        np.testing.assert_array_equal(self.variant(rhm.level_accuracy)(g, x), [1, 1, 1])
        lat = self.variant(rhm.decode)(g, x)
        chex.assert_shape(lat, [(16, 4), (16, 2), (16, 1)])
        np.testing.assert_array_equal(lat[-1][:, 0], y)
        assert bool(self.variant(rhm.is_valid)(g, x).all())
        r = self.variant(lambda k, gg, xx: rhm.reset_synonyms(k, gg, xx, 2))(jax.random.PRNGKey(2), g, x)
        np.testing.assert_array_equal(rhm.decode(g, r)[1], lat[1])

    @chex.variants(with_jit=True, without_jit=True)
    def test_vmap_over_keys(self):
        g = rhm.make_grammar(jax.random.PRNGKey(0), 4, 2, 2, 2)
        fn = self.variant(jax.vmap(lambda k: rhm.sample(k, g, 3)[0]))
        x = fn(jax.random.split(jax.random.PRNGKey(0), 5))
        chex.assert_shape(x, (5, 3, 4))
        assert bool(rhm.is_valid(g, x.reshape(15, 4)).all())


def _brute_positions_valid(g, tokens):
    """Per level, which positions are valid: dictionary of productions, level by level, an
    invalid child making its parent invalid (written out in Python)."""
    rules = np.asarray(g.rules)
    h, out = list(tokens), []
    for level in range(1, g.L + 1):
        table = {tuple(rules[level - 1, a, j]): a for a in range(g.v) for j in range(g.m)}
        h = [table.get(tuple(h[i:i + g.s]), -1) if -1 not in h[i:i + g.s] else -1 for i in range(0, len(h), g.s)]
        out.append([p >= 0 for p in h])
    return out


def test_tuple_accuracy_is_the_fraction_of_valid_positions():
    """The authors' A_l: valid level-l positions averaged over positions and sequences
    (brute force), equal to the per-sequence A_l at l = L only."""
    g = rhm.make_grammar(jax.random.PRNGKey(4), 4, 2, 2, 3)
    x = np.array(rhm.sample(jax.random.PRNGKey(5), g, 300)[0])
    rng = np.random.default_rng(0)
    x[:150] = np.where(rng.random((150, 8)) < 0.15, rng.integers(0, 4, (150, 8)), x[:150])  # corrupt some tokens
    valid = [_brute_positions_valid(g, row) for row in x]
    expected = [np.mean([np.mean(v[l]) for v in valid]) for l in range(3)]
    per_sequence = [np.mean([all(v[l]) for v in valid]) for l in range(3)]
    np.testing.assert_allclose(rhm.tuple_accuracy(g, x), expected, rtol=1e-6)
    np.testing.assert_allclose(rhm.level_accuracy(g, x), per_sequence, rtol=1e-6)
    assert expected[0] > per_sequence[0] and expected[2] == per_sequence[2]


def test_reset_synonyms_draws_the_other_productions_uniformly():
    """The authors' R_l by enumeration: of one sequence, the reset at level l keeps the
    level-l latents, draws the production at level l among the m - 1 others and every choice
    below among all m; each of the (m-1)^(n_l) m^(below) outcomes has the same probability."""
    v, m, s, L, level = 3, 3, 2, 2, 2
    g = rhm.make_grammar(jax.random.PRNGKey(6), v, m, s, L)
    rules = np.asarray(g.rules)
    x = np.asarray(rhm.sample(jax.random.PRNGKey(7), g, 1)[0])
    root = int(rhm.decode(g, x)[1][0, 0])
    current = next(j for j in range(m) if list(rules[1, root, j]) == list(rhm.decode(g, x)[0][0]))
    outcomes = []
    for j in (j for j in range(m) if j != current):  # enumerate: another production of the root, then any below
        for c0, c1 in itertools.product(range(m), repeat=2):
            left, right = rules[1, root, j]
            outcomes.append(tuple(rules[0, left, c0]) + tuple(rules[0, right, c1]))
    n = 20000
    r = np.asarray(rhm.reset_synonyms(jax.random.PRNGKey(8), g, np.repeat(x, n, 0), level))
    index = {o: i for i, o in enumerate(outcomes)}
    counts = np.bincount([index[tuple(row)] for row in r], minlength=len(outcomes))  # KeyError: an outcome not allowed
    assert stats.chisquare(counts).pvalue > 1e-4


@pytest.mark.parametrize("huge", [False, True], ids=["exact-index", "dedup"])
def test_sample_distinct_comes_in_random_order(huge):
    """Both code paths (the index bijection, and i.i.d. draws with duplicates dropped for
    languages beyond 2^62 sequences) return the sequences in exchangeable order: the root
    and the first token are independent of the position in the draw (chi-square of the
    contingency table of quarter x value)."""
    g = rhm.make_grammar(jax.random.PRNGKey(11), 8, 4, 2, 6 if huge else 3)
    assert (rhm.num_sequences(g) > rhm.MAX_EXACT_INDEX) == huge
    n = 4000
    x, y = rhm.sample_distinct(jax.random.PRNGKey(12), g, n)
    quarter = np.arange(n) // (n // 4)
    for values in (np.asarray(y), np.asarray(x)[:, 0], np.asarray(x)[:, -1]):
        table = np.zeros((4, g.v))
        np.add.at(table, (quarter, values), 1)
        assert stats.chi2_contingency(table).pvalue > 1e-4


def test_rules_files_round_trip_and_are_checked(tmp_path):
    """A grammar written with save_rules reads back as the same grammar (same rules, same
    samples); rules that are ambiguous, out of range or of the wrong shape are refused with
    the reason, and a missing or unreadable file names the field."""
    g = rhm.make_grammar(jax.random.PRNGKey(3), 4, 2, 2, 3)
    path = tmp_path / "sub" / "rules.npy"
    rhm.save_rules(path, g)
    back = rhm.load_rules(path, "config.rhm.rules_file")
    assert (back.v, back.m, back.s, back.L) == (4, 2, 2, 3)
    np.testing.assert_array_equal(back.rules, g.rules)
    key = jax.random.PRNGKey(9)
    np.testing.assert_array_equal(rhm.sample(key, back, 64)[0], rhm.sample(key, g, 64)[0])
    rules = np.asarray(g.rules)
    ambiguous = rules.copy()
    ambiguous[1, 3, 1] = ambiguous[1, 0, 0]  # symbol 3 of level 2 shares a production with symbol 0
    with pytest.raises(ValueError, match="level 2 repeat a production"):
        rhm.from_rules(ambiguous)
    out_of_range = rules.copy()
    out_of_range[0, 0, 0, 1] = 4
    with pytest.raises(ValueError, match=r"\[0, v\) = \[0, 4\)"):
        rhm.from_rules(out_of_range)
    with pytest.raises(ValueError, match="shape"):
        rhm.from_rules(rules[0])
    with pytest.raises(ValueError, match="config.rhm.rules_file: no file"):
        rhm.load_rules(tmp_path / "missing.npy", "config.rhm.rules_file")
    (tmp_path / "text.npy").write_text("not an array")
    with pytest.raises(ValueError, match="config.rhm.rules_file: .* is not a .npy array"):
        rhm.load_rules(tmp_path / "text.npy", "config.rhm.rules_file")
