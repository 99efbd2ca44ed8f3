"""rhmdiff.data.rhm_data: the online stream with held-out sequences among its candidates (they
are never drawn, each one replaced as documented, the stream uniform over the others), each
step's draw from its own key, and the splits' and batches' refusals."""
import jax
import numpy as np
import pytest
from scipy import stats

from rhmdiff import rhm
from rhmdiff.data import rhm_data


@pytest.fixture(scope="module")
def small():
    g = rhm.make_grammar(jax.random.PRNGKey(2), 2, 2, 2, 2)  # 16 sequences of 4 tokens
    words = np.asarray(rhm.sample_distinct(jax.random.PRNGKey(0), g, rhm.num_sequences(g))[0])
    return g, words


def test_online_stream_never_draws_held_out_sequences(small):
    """Two of the 16 sequences held out (a list of rows): step n's row b is row b of
    sample(fold_in(key, n)) if that one is not held out, else row b of the first attempt a = 1,
    2, ... of sample(fold_in(fold_in(key, n), a)) that is not (a plain loop); no held-out row in
    160 draws, the others equally often (chi-square), and without exclusions the plain draws."""
    g, words = small
    held = words[[3, 10]]
    held_set = {tuple(w) for w in held}
    key, start, num, batch = jax.random.PRNGKey(5), 3, 20, 8
    got = rhm_data.online_batches(key, g, batch, start, num, exclude=[list(w) for w in held])
    plain = rhm_data.online_batches(key, g, batch, start, num)
    assert got.shape == (num, batch, g.d) and got.dtype == np.int32
    attempts = 24  # P(a row held out 24 times in a row) = 8^-24

    @jax.jit
    def candidates(key):  # [num, attempts, batch, d]: attempt 0 from fold_in(key, n), a > 0 from fold_in(that, a)
        def per_step(n):
            k = jax.random.fold_in(key, n)
            keys = jax.numpy.concatenate([k[None], jax.vmap(lambda a: jax.random.fold_in(k, a))(
                jax.numpy.arange(1, attempts))])
            return jax.vmap(lambda kk: rhm.sample(kk, g, batch)[0])(keys)
        return jax.vmap(per_step)(jax.numpy.arange(start, start + num))

    cand = np.asarray(candidates(key))
    np.testing.assert_array_equal(plain, cand[:, 0])
    expected = np.empty_like(got)
    for j in range(num):
        for b in range(batch):
            a = 0
            while tuple(cand[j, a, b]) in held_set:
                a += 1
            expected[j, b] = cand[j, a, b]
    np.testing.assert_array_equal(got, expected)
    rows = [tuple(r) for r in got.reshape(-1, g.d)]
    assert not held_set & set(rows)
    assert sum(tuple(r) in held_set for r in plain.reshape(-1, g.d)) >= 10  # there were held-out candidates
    kept = [tuple(w) for w in np.delete(words, [3, 10], 0)]
    counts = np.array([rows.count(w) for w in kept])
    assert counts.sum() == num * batch and stats.chisquare(counts).pvalue > 1e-4
    np.testing.assert_array_equal(rhm_data.online_batches(key, g, batch, start, num, exclude=np.zeros((0, g.d))), plain)


def test_splits_and_batches_refuse_bad_sizes_by_name(small):
    g, _ = small
    for kwargs, name in (({"train_size": -1, "val_size": 2, "test_size": 2}, "train_size"),
                         ({"train_size": 4, "val_size": 1.5, "test_size": 2}, "val_size"),
                         ({"train_size": 4, "val_size": 2, "test_size": True}, "test_size")):
        with pytest.raises(ValueError, match=name):
            rhm_data.make_splits(jax.random.PRNGKey(0), g, **kwargs)
    splits = rhm_data.make_splits(jax.random.PRNGKey(0), g, 10, 3, 3)  # the whole language
    assert sorted(map(tuple, np.concatenate([splits[k][0] for k in ("train", "val", "test")]))) == sorted(
        map(tuple, np.asarray(rhm.sample_distinct(jax.random.PRNGKey(1), g, 16)[0])))
    with pytest.raises(ValueError, match="batch_size"):
        rhm_data.offline_batches(jax.random.PRNGKey(0), np.zeros((5, 4), np.int32), 0, 0, 1)
