"""rhmdiff.analysis.onestep on a grammar where not every symbol can occur first: what
synonym_separability hands to the clustering (the tuple codes seen, the columns eta C^_P of the
next token X_{s+1}, the number of first tuples the language allows), against counting in numpy
and the enumerated language; exact correlations (every sequence once) separate the synonyms
perfectly; one_step_update with classes never seen."""
import jax
import numpy as np
import pytest
from conftest import enumerate_language

from rhmdiff import rhm
from rhmdiff.analysis import clustering, onestep

# one_step_update runs eagerly (its operations compile once per shape): the three tests share one
# shape (the 64 sequences of the grammar, its first tuples) and one worker
pytestmark = pytest.mark.xdist_group("onestep_reference")


@pytest.fixture(scope="module")
def grammar():
    """v = 8, m = 2, s = 2, L = 2: the first seed whose first level-1 latent misses a symbol."""
    for seed in range(100):
        g = rhm.make_grammar(jax.random.PRNGKey(seed), 8, 2, 2, 2)
        lang = enumerate_language(g)
        firsts = {e[1][0][0] for e in lang}
        if len(firsts) < g.v:
            return g, lang
    raise AssertionError("no such grammar among 100 seeds")


def test_separability_is_given_the_counted_correlations_and_the_possible_first_tuples(grammar, monkeypatch):
    g, lang = grammar
    words = np.array([e[0] for e in lang])
    first_tuples = {tuple(w[:g.s]) for w in words}
    assert len(first_tuples) < g.m * g.v  # fewer than m v first tuples can occur here
    x = words[np.random.default_rng(1).permutation(len(words))]  # every sequence once, in random order
    seen = []
    monkeypatch.setattr(clustering, "score_synonym_clusters",
                        lambda *args: seen.append(args) or 0.5)
    assert onestep.synonym_separability(jax.random.PRNGKey(2), x, g, eta=0.3) == 0.5
    (_, values, vectors, g_seen, level, num_possible), = seen
    codes = x[:, 0] * g.v + x[:, 1]  # base-v codes of the first s-tuple
    expected_values = np.unique(codes)
    np.testing.assert_array_equal(values, expected_values)
    joint = np.zeros((g.v, len(expected_values)))  # P^(X_{s+1} = nu, tuple = mu), by counting
    for c, nu in zip(codes, x[:, g.s]):
        joint[nu, np.searchsorted(expected_values, c)] += 1 / len(x)
    corr = joint - joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    np.testing.assert_allclose(vectors, 0.3 * corr.T, atol=1e-6)
    assert level == 1 and g_seen is g and num_possible == len(first_tuples)


def test_exact_correlations_separate_every_synonym_class(grammar):
    """Every sequence of the language once: synonymous first tuples have equal columns, so the
    score is exactly 1 (every possible first tuple seen, every cluster pure)."""
    g, lang = grammar
    words = np.array([e[0] for e in lang])
    assert onestep.synonym_separability(jax.random.PRNGKey(3), words, g) == 1.0


def test_one_step_update_with_classes_never_seen(grammar):
    """X_{s+1} never takes the values 2, 3 and 6: W_0 is log 0 = -inf there and the step leaves
    those rows unchanged (dW = eta C^_P = 0); the other rows are the counted correlations."""
    g, lang = grammar
    k = len({e[0][:g.s] for e in lang})  # the shapes of the other tests
    rng = np.random.default_rng(4)
    idx, y = rng.integers(0, k, len(lang)), rng.choice([0, 1, 4, 5, 7], len(lang))
    w0, dw = onestep.one_step_update(idx, y, k, g.v, eta=2.0)
    joint = np.zeros((g.v, k))
    np.add.at(joint, (y, idx), 1 / len(lang))
    corr = joint - joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    np.testing.assert_allclose(dw, 2.0 * corr, atol=1e-6)
    assert np.all(w0[[2, 3, 6]] == -np.inf)
    seen = [0, 1, 4, 5, 7]
    np.testing.assert_allclose(w0[seen], np.log(joint.sum(1)[seen])[:, None].repeat(k, 1), rtol=1e-6)
