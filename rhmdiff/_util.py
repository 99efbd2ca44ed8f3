"""Small helpers shared by several modules."""
import logging as std_logging
import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm.std import tqdm


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


# Without a terminal, a progress bar is a log line at most this often (and at its end).
PROGRESS_LOG_SECONDS = 60.0


def progress(iterable=None, **kwargs):
    """A tqdm progress bar on process 0: on a terminal the bar (log lines are then written above
    it, :func:`_log_above_bars`); otherwise (a batch job's log) a log line with the count, the
    rate and the time left every ``PROGRESS_LOG_SECONDS`` and at the end (:class:`LoggedProgress`),
    without carriage returns."""
    hidden = kwargs.pop("disable", False)
    if jax.process_index() != 0 or hidden:
        return tqdm(iterable, disable=True, **kwargs)
    if sys.stderr.isatty():
        _log_above_bars()
        return tqdm(iterable, **kwargs)
    return LoggedProgress(iterable, file=_Discard(), mininterval=PROGRESS_LOG_SECONDS, miniters=1,
                          delay=PROGRESS_LOG_SECONDS, **kwargs)


class LoggedProgress(tqdm):
    """tqdm whose display is an absl log line: ``training: 300/1000 (30%) at 12.5 step/s, 00:24
    elapsed, ETA 00:56, best_val=1.8``."""

    def display(self, msg=None, pos=None):
        if msg == "":  # clearing a bar that does not stay (leave=False): nothing to log
            return True
        d = self.format_dict
        done = d["n"] - d["initial"]
        rate = d["rate"] or (done / d["elapsed"] if d["elapsed"] > 0 else 0.0)
        line = f"{d['prefix'] or 'progress'}: {d['n']}"
        if d["total"]:
            line += f"/{d['total']} ({100 * d['n'] / d['total']:.0f}%)"
        line += f" at {rate:.3g} {d['unit']}/s, {self.format_interval(d['elapsed'])} elapsed"
        if d["total"]:
            line += f", ETA {self.format_interval((d['total'] - d['n']) / rate) if rate > 0 else '?'}"
        if d["postfix"]:
            line += f", {d['postfix']}"
        logging.info("%s", line)
        return True


class _Discard:
    """A file that drops what is written (:class:`LoggedProgress` logs instead)."""

    def write(self, text):
        return len(text)

    def flush(self):
        pass


class _AboveBars:
    """A stream for absl's log handler that writes each line above the terminal's progress bars
    (``tqdm.write``), so that a log line does not break a bar."""

    def write(self, text):
        tqdm.write(text, file=sys.stderr, end="")

    def flush(self):
        sys.stderr.flush()


def _log_above_bars() -> None:
    """Send absl's log lines to stderr through :class:`_AboveBars` (terminal bars only)."""
    handler = logging.get_absl_handler().python_handler
    if handler.stream is sys.stderr:
        handler.setStream(_AboveBars())


def _readable(record) -> bool:
    """Whether a log record is kept by :func:`quiet_logs`."""
    if "orbax" in record.pathname and (record.levelno < std_logging.WARNING or str(record.msg).startswith(
            "Waiting for previous save")):  # (it counts the waits rhmdiff makes itself after a save)
        return False
    if record.name.endswith("xla_bridge") and "libtpu" in record.getMessage():
        return "tpu" in os.environ.get("JAX_PLATFORMS", "")
    return True


def quiet_logs() -> None:
    """Keep the log readable: orbax's INFO lines (one per checkpoint step) and its warning about
    the time spent waiting for a previous save are dropped, and so is JAX's line about the TPU
    backend when libtpu is not installed (the ``tpu`` extra) and ``JAX_PLATFORMS`` does not ask
    for a TPU. Other warnings and errors stay."""
    logging.get_absl_handler().addFilter(_readable)
