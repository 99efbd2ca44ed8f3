"""Small helpers shared by several modules."""
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np


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


def log_softmax(x, axis: int = -1):
    """``x - logsumexp(x)``: the same values as ``jax.nn.log_softmax``, in the form that XLA:CPU
    fuses well after the network's read-out (the ``jax.nn`` versions made a width-256 U-Net's
    forward pass with probabilities ~1.7x slower at batch 1024: benchmarks/bench_eval.py)."""
    return x - jax.nn.logsumexp(x, axis, keepdims=True)


def softmax(x, axis: int = -1):
    """``exp(log_softmax(x))`` (see :func:`log_softmax`)."""
    return jnp.exp(log_softmax(x, axis))


def example_keys(key, num: int, first=0):
    """One PRNG key per example: ``fold_in(key, first + i)`` for ``i < num``, so an example's
    draws depend on its index only (not on the batch or the device it lands on)."""
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(first + jnp.arange(num))


def step_keys(keys, step):
    """``fold_in(keys[i], step)`` for every example's key: its draws at one step of a loop."""
    return jax.vmap(lambda k: jax.random.fold_in(k, step))(keys)


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


def progress(iterable=None, **kwargs):
    """A tqdm progress bar shown only on process 0 and only when stderr is a terminal (so
    logs of batch jobs stay free of carriage-return noise)."""
    from tqdm.auto import tqdm
    hidden = kwargs.pop("disable", False)
    show = jax.process_index() == 0 and sys.stderr.isatty() and not hidden
    return tqdm(iterable, disable=not show, **kwargs)


def quiet_orbax() -> None:
    """orbax logs every checkpoint step at INFO; keep its warnings and errors only."""
    import logging as std_logging

    from absl import logging
    logging.get_absl_handler().addFilter(
        lambda record: "orbax" not in record.pathname or record.levelno >= std_logging.WARNING)
