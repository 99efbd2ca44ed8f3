"""RHM data: disjoint train / validation / test splits of distinct sequences (offline
learning, epochs over a fixed training set) and fresh samples every step (online learning)."""
from __future__ import annotations

import functools

import jax
import numpy as np

from rhmdiff import rhm
from rhmdiff._util import example_keys, numpy_rng, step_keys


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


def offline_batches(key, train_x, batch_size: int, start: int, num: int) -> np.ndarray:
    """Training batches ``start .. start+num-1`` of an epoch loop over ``train_x`` (P, d):
    ``int32[num, batch_size, d]``. Epoch ``e`` visits the data in the order of a
    permutation drawn from ``fold_in(key, e)``; the last incomplete batch of each epoch is
    dropped. A pure function of the step, so a resumed run sees the same batches."""
    P = len(train_x)
    if not 1 <= batch_size <= P:
        raise ValueError(f"batch_size must be in [1, train_size = {P}], got {batch_size}")
    per_epoch = P // batch_size
    train_x = np.asarray(train_x)
    out, perms = [], {}
    for step in range(start, start + num):
        epoch, i = divmod(step, per_epoch)
        if epoch not in perms:
            perms[epoch] = numpy_rng(jax.random.fold_in(key, epoch)).permutation(P)
        out.append(train_x[perms[epoch][i * batch_size:(i + 1) * batch_size]])
    return np.stack(out)


def online_batches(key, g: rhm.Grammar, batch_size: int, start: int, num: int, exclude=None) -> np.ndarray:
    """Fresh i.i.d. RHM samples for steps ``start .. start+num-1`` (online learning),
    ``int32[num, batch_size, d]``; step ``n`` draws from ``fold_in(key, n)``. A draw equal to a
    sequence of ``exclude`` (e.g. the validation and test sets) is replaced by another one
    (from ``fold_in(fold_in(key, n), attempt)``), so those sequences never enter training:
    the stream is the RHM's distribution restricted to the other sequences."""
    keys = example_keys(key, num, start)
    x = np.array(_online(keys, g, batch_size))
    if exclude is None or len(exclude) == 0:
        return x
    flat = x.reshape(-1, g.d)
    held_out = _as_rows(np.asarray(exclude, np.int32))
    for attempt in range(1, 1000):
        hits = np.flatnonzero(np.isin(_as_rows(flat), held_out))
        if not len(hits):
            return x
        # the whole attempt is drawn (the shape of the first draw: no new compilation per
        # number of hits), and the rows that were held out are taken from it
        fresh = np.asarray(_online(step_keys(keys, attempt), g, batch_size))
        flat[hits] = fresh[hits // batch_size, hits % batch_size]
    raise RuntimeError("online_batches: could not draw sequences outside the excluded set")


def _as_rows(a: np.ndarray) -> np.ndarray:
    """Each row of an int32 ``[N, d]`` array as one opaque value, for set operations."""
    a = np.ascontiguousarray(a, np.int32)
    return a.view(np.dtype((np.void, 4 * a.shape[1]))).ravel()


@functools.partial(jax.jit, static_argnums=2)
def _online(keys, g, batch_size):
    return jax.vmap(lambda k: rhm.sample(k, g, batch_size)[0])(keys)
