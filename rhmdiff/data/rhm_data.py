"""RHM data sets: disjoint train / validation / test splits of distinct sequences."""
from __future__ import annotations

from rhmdiff import rhm


def make_splits(key, g: rhm.Grammar, train_size: int, val_size: int, test_size: int) -> dict:
    """``{"train", "val", "test"}`` -> ``(tokens, labels)``, cut from a single
    :func:`rhmdiff.rhm.sample_distinct` draw so that the splits are disjoint.

    The draw is uniform without replacement, so each split is itself a uniform draw of
    distinct sequences. Raises ValueError if the three sizes exceed the language."""
    sizes = {name: rhm._check_num(n, f"{name}_size")
             for name, n in (("train", train_size), ("val", val_size), ("test", test_size))}
    total = sum(sizes.values())
    if total > rhm.num_sequences(g):
        raise ValueError(f"train_size + val_size + test_size = {total} exceeds the "
                         f"{rhm.num_sequences(g)} sequences of the grammar")
    x, y = rhm.sample_distinct(key, g, total)
    out, start = {}, 0
    for name, n in sizes.items():
        out[name] = (x[start:start + n], y[start:start + n])
        start += n
    return out
