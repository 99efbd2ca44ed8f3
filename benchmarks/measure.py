"""What the benchmark scripts share: timing, the machine's matmul rate, memory, FLOP counts,
configs, and the trainer's own step set up on one device. Imported by the scripts next to it
(a script's folder is on ``sys.path`` when it runs)."""
from __future__ import annotations

import os
import resource
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rhmdiff import train
from rhmdiff.config_base import sibling_config

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


class Timing(NamedTuple):
    median_s: float  # median over the timed calls
    first_s: float  # the first call (compilation included)
    out: object  # the last call's output


def timed(fn: Callable, repeats: int) -> Timing:
    """``fn()`` once (compilation), then ``repeats`` timed calls (each waited for)."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        runs.append(time.perf_counter() - t0)
    return Timing(float(np.median(runs)), first, out)


def matmul_gflops(n: int, repeats: int) -> float:
    """GFLOP/s of a plain jitted n x n by n x n float32 matmul: the machine's practical peak,
    measured in the same process as what it is compared with."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    return 2 * n**3 / timed(lambda: f(a, b), repeats).median_s / 1e9


def peak_rss_gb() -> float:
    """This process's peak resident set size so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def rss_gb() -> float:
    """This process's resident set size now (Linux's /proc; the peak so far elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1e6
    except (OSError, StopIteration):
        return peak_rss_gb()


class PeakRSS:
    """Context manager: the resident set size (GB) at the start of its block (``start_gb``), its
    peak during the block, sampled every 5 ms in a thread (``peak_gb``), and the seconds."""

    def __enter__(self):
        import threading
        self.start_gb = self.peak_gb = rss_gb()
        self._done, self._t0 = threading.Event(), time.perf_counter()

        def sample():
            while not self._done.wait(0.005):
                self.peak_gb = max(self.peak_gb, rss_gb())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t0
        self._done.set()
        self._thread.join()
        self.peak_gb = max(self.peak_gb, rss_gb())
        return False


def config(name: str, preset: str | None = None):
    """``configs/<name>.py``'s ``get_config(preset)``."""
    return sibling_config(os.path.join(CONFIGS, "x.py"), name).get_config(*([preset] if preset else []))


def unet_forward_flops(v: int, s: int, L: int, C: int, variant: str = "rhmdiff", time_dim: int = 32) -> int:
    """Multiply-add FLOPs (x2) of one U-Net forward pass on one sequence of d = s**L tokens."""
    d = s**L
    skip = 2 if variant == "reference" else 1  # the reference decoders and read-out see [h, skip]
    flops = 2 * d * v * C + 2 * d * skip * C * v  # embedding, read-out
    for k in range(1, L + 1):
        positions = d // s**k
        flops += 2 * positions * (s * C) * C  # encoder k: [n/s, sC] @ [sC, C]
        flops += 2 * positions * skip * C * (s * C)  # decoder k: [n, (2)C] @ [(2)C, sC]
        if variant == "rhmdiff":
            flops += 2 * 2 * time_dim * C  # time projections of encoder k and decoder k
    return flops


class TrainerStep:
    """The trainer's own pmapped chunk (:func:`rhmdiff.train.make_chunk_fn`) on one device,
    its state made as :func:`rhmdiff.train.fit` makes it (inside ``pmap``, on the device).
    ``run(x)`` runs ``len(x)`` steps on the batches ``x[n, batch, ...]``; the state is kept."""

    def __init__(self, loss_fn: Callable, init_params: Callable, tx, batch_size: int, ema_decay: float = 0.0,
                 ema_debias: bool = True):
        self.devices = jax.local_devices()[:1]
        self.chunk = train.make_chunk_fn(loss_fn, tx, jax.random.PRNGKey(0), batch_size, self.devices, ema_decay)
        initial = train.initial_state_fn(init_params, tx, ema_decay, ema_debias)
        self.state = train.device_pmap(initial, self.devices)(np.zeros(1))
        self.step = 0

    @property
    def num_params(self) -> int:
        return sum(int(np.prod(x.shape[1:])) for x in jax.tree_util.tree_leaves(self.state.params))

    def run(self, x) -> dict:
        steps = np.arange(self.step, self.step + len(x), dtype=np.int32)[None]
        self.state, metrics = self.chunk(self.state, np.zeros((1,), np.int32), steps, np.asarray(x)[None])
        self.step += len(x)
        return metrics


def rhm_step(c) -> tuple[TrainerStep, np.ndarray]:
    """The trainer's step of an ``rhm`` config ``c`` and one chunk of its training batches
    (``c.train.steps_per_call`` of them)."""
    from rhmdiff.tasks import rhm as rhm_task
    kw = rhm_task.setup(c).fit_kwargs
    tx = train.optimizer_from_config(c.train, kw["lr_scale"])
    step = TrainerStep(kw["loss_fn"], kw["init_params"], tx, c.train.batch_size)
    return step, np.asarray(kw["batches"](0, c.train.steps_per_call, slice(None)))
