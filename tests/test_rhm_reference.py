"""rhmdiff.rhm where test_rhm.py does not look: decode on the sorted-codes lookup (v**s above
the dense table), the chunked sampler's keys, the size limits at their boundaries, and the
synonym reset with valid and invalid subtrees side by side at a level above 1."""
import itertools

import jax
import numpy as np
import pytest

from rhmdiff import rhm


def brute_latents(g, tokens):
    """decode by the definition, in Python: per level, each s-tuple looked up in a dictionary
    of productions (-1 if absent or if it holds a -1)."""
    rules = np.asarray(g.rules)
    out = []
    h = np.asarray(tokens).tolist()
    for level in range(1, g.L + 1):
        table = {tuple(rules[level - 1, a, j]): a for a in range(g.v) for j in range(g.m)}
        h = [[table.get(tuple(row[i:i + g.s]), -1) if -1 not in row[i:i + g.s] else -1
              for i in range(0, len(row), g.s)] for row in h]
        out.append(np.array(h))
    return out


def test_decode_on_the_sorted_code_lookup_matches_the_definition():
    """v = 48, s = 4: 48^4 > DENSE_TABLE_MAX tuple codes, so parents are found by searchsorted.
    Valid samples, samples with a token changed, random tokens, and tuples of productions of
    the wrong level, against the dictionary lookup."""
    g = rhm.make_grammar(jax.random.PRNGKey(4), 48, 3, 4, 2)
    assert g.v**g.s > rhm.DENSE_TABLE_MAX
    rng = np.random.default_rng(0)
    x = np.array(rhm.sample(jax.random.PRNGKey(5), g, 60)[0])
    x[20:40, rng.integers(0, 16, 20)] = rng.integers(0, 48, 20)  # one token changed (mostly invalid)
    x[40:50] = rng.integers(0, 48, (10, 16))
    level2 = np.asarray(g.rules[1]).reshape(-1, 4)  # level-2 productions used as token tuples
    x[50:] = np.concatenate([level2[rng.integers(0, len(level2), 10)]] * 4, 1)
    got = rhm.decode(g, x)
    for level, expected in enumerate(brute_latents(g, x)):
        np.testing.assert_array_equal(np.asarray(got[level]), expected, err_msg=f"level {level + 1}")
    assert np.asarray(got[0])[:20].min() >= 0 and (np.asarray(got[0])[40:] == -1).mean() > 0.9


def test_sample_chunks_draw_each_chunk_from_its_own_key():
    """Chunk i is sample(fold_in(key, i), g, its size): different chunks, different sequences."""
    g = rhm.make_grammar(jax.random.PRNGKey(0), 4, 2, 2, 2)
    key = jax.random.PRNGKey(7)
    chunks = list(rhm.sample_chunks(key, g, 25, chunk_size=10))
    assert [len(c[0]) for c in chunks] == [10, 10, 5]
    for i, (x, y) in enumerate(chunks):
        ex, ey = rhm.sample(jax.random.fold_in(key, i), g, len(x))
        np.testing.assert_array_equal(x, np.asarray(ex))
        np.testing.assert_array_equal(y, np.asarray(ey))
    assert not np.array_equal(chunks[0][0], chunks[1][0])


def test_size_limits_at_their_boundaries():
    """m = v^{s-1} (every tuple valid) and d = s^L = 2^16 tokens are allowed, one more is not;
    sizes that are bools or floats are refused, naming the size."""
    rhm.check_sizes(3, 9, 3, 1)
    with pytest.raises(ValueError, match="m must be <="):
        rhm.check_sizes(3, 10, 3, 1)
    rhm.check_sizes(2, 1, 2, 16)
    rhm.check_sizes(2, 1, 4, 8)
    for s, L in ((2, 17), (4, 9), (3, 11)):
        with pytest.raises(ValueError, match="L must keep"):
            rhm.check_sizes(2, 1, s, L)
    with pytest.raises(ValueError, match="s too large"):
        rhm.check_sizes(2, 1, 31, 1)
    for args, name in (((True, 1, 2, 2), "v"), ((3, True, 2, 2), "m"), ((3, 1, 2.0, 2), "s"), ((3, 1, 2, True), "L")):
        with pytest.raises(ValueError, match=f"^{name} must be an integer"):
            rhm.check_sizes(*args)
    assert rhm.language_size(3, 2, 3, 2) == 3 * 2**4 and rhm.make_grammar(jax.random.PRNGKey(0), 3, 2, 3, 2).num_nodes == 4


def test_reset_at_level_2_redraws_valid_subtrees_and_keeps_invalid_ones():
    """s = 3, L = 2: of a sequence whose first level-1 tuple is no production (its level-1 and
    -2 latents invalid, the root too) and whose other level-1 latents include the symbol 0, the
    reset at level 1 keeps the invalid tuple exactly and replaces the two valid ones by another
    production of the same latent; at level 2, with a valid root (0), every level-1 tuple is
    redrawn below a new production of the root (counted over draws against the enumeration)."""
    v, m, s, L = 3, 2, 3, 2
    g = rhm.make_grammar(jax.random.PRNGKey(9), v, m, s, L)
    rules = np.asarray(g.rules)
    pool, roots = (np.array(a) for a in rhm.sample(jax.random.PRNGKey(10), g, 50))
    first = rhm.decode(g, pool)[0]
    # a sequence with the symbol 0 among its level-1 latents 2, 3, one with the root 0
    pick = [next(i for i in range(50) if 0 in first[i, 1:]), next(i for i in range(50) if roots[i] == 0)]
    x, y = pool[pick], roots[pick]
    prods = {tuple(p) for p in rules[0].reshape(-1, s)}
    bad = next(t for t in itertools.product(range(v), repeat=s) if t not in prods)
    x[0, :s] = bad
    n = 400
    r = np.asarray(rhm.reset_synonyms(jax.random.PRNGKey(11), g, np.repeat(x[:1], n, 0), 1))
    np.testing.assert_array_equal(r[:, :s], np.broadcast_to(bad, (n, s)))
    lat = brute_latents(g, x[:1])[0][0]
    for k in (1, 2):
        tuples = {tuple(t) for t in r[:, k * s:(k + 1) * s]}
        others = {tuple(rules[0, lat[k], j]) for j in range(m)} - {tuple(x[0, k * s:(k + 1) * s])}
        assert tuples == others  # m = 2: the other production, always
    r = np.asarray(rhm.reset_synonyms(jax.random.PRNGKey(12), g, np.repeat(x[1:], n, 0), 2))
    root = int(y[1])
    current = next(j for j in range(m) if tuple(rules[1, root, j]) == tuple(brute_latents(g, x[1:])[0][0]))
    allowed = set()
    for j in (j for j in range(m) if j != current):
        for cs in itertools.product(range(m), repeat=s):
            allowed.add(sum((tuple(rules[0, c, k]) for c, k in zip(rules[1, root, j], cs)), ()))
    seen = {tuple(row) for row in r}
    assert seen <= allowed and len(seen) > 0.9 * len(allowed)  # 8 outcomes, 400 draws
