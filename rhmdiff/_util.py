"""Small helpers shared by several modules."""
import contextlib
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils


def is_concrete(x) -> bool:
    """True when ``x`` holds values (not a tracer inside jit/vmap), so they can be checked."""
    return not isinstance(x, jax.core.Tracer)


def expand_right(a, ndim: int):
    """Append trailing singleton axes to ``a`` until it has ``ndim`` axes.

    Lets a per-sequence quantity (shape ``[B]``) broadcast against per-token arrays
    (shape ``[B, d]`` or ``[B, d, v]``).
    """
    a = jnp.asarray(a)
    if a.ndim > ndim:
        raise ValueError(f"cannot broadcast an array of shape {a.shape} to {ndim} axes")
    return a.reshape(a.shape + (1,) * (ndim - a.ndim))


def num_params(params) -> int:
    """Number of scalar parameters of a parameter tree."""
    return int(sum(np.prod(np.shape(p)) for p in jax.tree_util.tree_leaves(params)))


def as_argument(fn):
    """``fn`` as a pytree that jitted code takes as an *argument*: a ``jax.tree_util.Partial``
    keeps its bound arrays (e.g. network parameters) as traced inputs instead of baking
    them into the compiled program as constants."""
    return fn if isinstance(fn, jax.tree_util.Partial) else jax.tree_util.Partial(fn)


def numpy_rng(key) -> np.random.Generator:
    """A numpy Generator seeded deterministically from a JAX PRNG key (raw or typed)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key, dtype=np.uint32).ravel().tolist())


def natural_order(path: str):
    """Sort key that orders embedded numbers by value (P128 before P1024)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


@contextlib.contextmanager
def atomic_write(path, mode: str = "w"):
    """Open ``path + ".tmp"`` for writing and rename it to ``path`` once the block has
    finished: readers never see a half-written file."""
    tmp = f"{path}.tmp"
    with open(tmp, mode) as f:
        yield f
    os.replace(tmp, path)


def write_npy(path, array) -> None:
    """Write ``array`` as ``.npy`` atomically."""
    with atomic_write(path, "wb") as f:
        np.save(f, np.asarray(array))


def write_json(path, obj) -> None:
    """Write ``obj`` as JSON atomically."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def prepare_once(prepare, field: str, output: str) -> None:
    """Run ``prepare()`` (tokenize or convert a data set into the file ``output``) on process 0
    only; on a multi-host run, every process then waits until it is done and checks that it
    sees ``output`` (``field`` names the config field to fix otherwise)."""
    if jax.process_index() == 0:
        prepare()
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"rhmdiff {field} ready")
        if not os.path.exists(output):
            raise FileNotFoundError(f"{field}: {output} is not visible from process {jax.process_index()}: "
                                    "put it on a shared filesystem")
