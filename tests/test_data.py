"""Train / validation / test splits."""
import jax
import numpy as np
import pytest

from rhmdiff import rhm
from rhmdiff.data.rhm_data import make_splits


def test_splits_are_disjoint_and_valid():
    g = rhm.make_grammar(jax.random.PRNGKey(0), 4, 2, 2, 2)
    n = rhm.num_sequences(g)  # 4 * 2**3 = 32
    splits = make_splits(jax.random.PRNGKey(1), g, 20, 6, 6)
    rows = [{tuple(r) for r in np.asarray(splits[k][0])} for k in ("train", "val", "test")]
    assert [len(r) for r in rows] == [20, 6, 6]
    assert len(rows[0] | rows[1] | rows[2]) == n
    for k in splits:
        assert bool(rhm.is_valid(g, splits[k][0]).all())
        np.testing.assert_array_equal(rhm.decode(g, splits[k][0])[-1][:, 0], splits[k][1])
    with pytest.raises(ValueError, match="exceeds"):
        make_splits(jax.random.PRNGKey(1), g, 30, 2, 1)


def test_splits_are_exchangeable_draws():
    """Train, validation and test are uniform draws of one random order: the roots have the
    same distribution in each (chi-square homogeneity), none is biased to low indices."""
    from scipy import stats
    g = rhm.make_grammar(jax.random.PRNGKey(0), 8, 3, 2, 3)
    splits = make_splits(jax.random.PRNGKey(1), g, 3000, 1500, 1500)
    table = np.stack([np.bincount(np.asarray(splits[k][1]), minlength=8) for k in ("train", "val", "test")])
    assert stats.chi2_contingency(table).pvalue > 1e-4
