"""One trainer for every task: pmap data parallelism, optax, early stopping, orbax
checkpoints with exact resume, metrics (``metrics.jsonl`` + TensorBoard), progress bar.

The task supplies four things to :func:`fit`:

* ``init_params() -> params``: the initial parameters (traced inside ``pmap``, so a large
  model is created on its devices directly, without host copies);
* ``loss_fn(params, batch, keys) -> (objective, metrics)`` on one device's batch, with one
  PRNG key per example;
* ``batches(start, num, rows) -> array[num, len(rows), ...]``: rows ``rows`` (a slice: this
  process's share) of the global batches of steps ``start .. start+num-1`` (host side; a
  pure function of the step, so resumes are exact, and hosts never read each other's rows);
  the next chunk's batches are built in a background thread while the current chunk runs;
* ``validate(params) -> dict`` with a ``"val_loss"`` entry (lower is better).

Every field of ``config.train`` it reads, with its default and meaning, is in
:func:`rhmdiff.config_base.train_config`.

Data parallelism: the global batch is cut into one slice per process
(``jax.process_index()``), then one per local device (``jax.local_device_count()``);
gradients and metrics are averaged with ``lax.pmean`` over the devices of all processes.
The key of example ``i`` of the global batch at step ``n`` is ``fold_in(fold_in(key, n), i)``
(each device gets the index of its first example as a pmap input), so the trajectory does
not depend on the number of devices or processes. Steps run in chunks of
``train.steps_per_call`` inside one ``lax.scan`` (faster for the RHM U-Net's matmuls and for
the MD4 transformer, measured); with ``steps_per_call = 1`` each step is one call without a
loop (XLA:CPU runs convolution-heavy steps much faster outside ``lax.scan``: the image U-Net
~20x). Training metrics are summed on the devices and fetched when they are logged.

Early stopping (paper Sec. 3.1, :class:`EarlyStopping`): every ``train.eval_every`` steps the
validation loss is measured; the best parameters are kept (``workdir/best``) and training
stops after ``train.patience`` evaluations without improvement (or at ``num_steps``).

Checkpoints (:mod:`rhmdiff.checkpoints`): the train state with the early-stopping state and
the partial metric sums, after every evaluation, every ``train.checkpoint_every`` steps, and
on a preemption (then :class:`Preempted` follows). Rerunning the same command resumes from
the newest checkpoint that loads; the result is identical to an uninterrupted run. If
checkpoints exist and none loads, the run stops with a :class:`CheckpointError`
(``config.restart`` starts over instead, clearing ``checkpoints/``, ``best/``, ``stages/``
and the metrics).

Preemption: on one process, SIGTERM (what SLURM, Kubernetes and TPU maintenance send) sets a
flag; with ``jax.distributed`` the decision is JAX's preemption sync point, which every
process reaches at the same step (JAX's own SIGTERM notifier, installed by
``jax.distributed.initialize``, is left in place), so all processes save the same step and
stop together. ``train.max_nonfinite`` non-finite steps in a row stop the run
(``FloatingPointError``).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import signal
import threading
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax import struct
from jax.experimental import multihost_utils

from rhmdiff._util import example_keys, num_params, progress
from rhmdiff.checkpoints import CheckpointError, Checkpoints, barrier, to_host
from rhmdiff.files import as_path, write_json
from rhmdiff.metrics import MetricWriter

AXIS = "devices"
OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("constant", "cosine")
# What the trainer writes into a workdir (a task that trains declares these among its outputs).
OUTPUTS = (*Checkpoints.NAMES, "unreadable_checkpoints", "metrics.jsonl", "tensorboard", "train_state.json")
# optax.apply_if_finite gives up after this many rejected updates in a row and applies the next
# one; rhmdiff never lets it: fit stops the run after train.max_nonfinite in a row instead.
_NEVER_APPLY_NONFINITE = 2**31 - 1


class Preempted(Exception):
    """Training stopped on a preemption notice (SIGTERM) or a Ctrl-C (SIGINT) after saving a
    checkpoint; ``signum`` is the signal (the command exits ``128 + signum``)."""

    def __init__(self, message: str, signum: int = signal.SIGTERM):
        super().__init__(message, int(signum))
        self.message, self.signum = message, int(signum)

    def __str__(self):
        return self.message


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any = None  # exponential moving average of params (train.ema_decay > 0)


# ----------------------------------------------------------------------------- optimizer

def learning_rate(lr: float, schedule: str = "constant", warmup_steps: int = 0, num_steps: int = 1):
    """``lr`` after a linear warmup from 0 over ``warmup_steps``: constant, or ``"cosine"``
    decay to 0 at ``num_steps`` (MD4's schedule). A float when constant without warmup."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    if schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, max(num_steps, warmup_steps + 1))
    return optax.linear_schedule(0.0, lr, warmup_steps) if warmup_steps else lr


def make_optimizer(name: str, lr: float, momentum: float = 0.9, lr_scale: float = 1.0, *,
                   lr_schedule: str = "constant", warmup_steps: int = 0, num_steps: int = 1,
                   weight_decay: float = 0.0, grad_clip: float = 0.0, b2: float = 0.999):
    """``"sgd"``: SGD with (heavy-ball) momentum at learning rate ``lr * lr_scale``
    (``lr_scale`` = the model's muP factor, e.g. :func:`rhmdiff.models.unet.mup_lr_scale`);
    ``"adam"`` / ``"adamw"`` (decoupled ``weight_decay``): Adam at ``lr`` (not muP-scaled).
    The rate follows :func:`learning_rate`; ``grad_clip > 0`` clips the global gradient norm.
    Updates whose loss or gradients are not finite are skipped, however many in a row
    (``optax.apply_if_finite``, counted in the state); :func:`fit` stops the run after
    ``train.max_nonfinite`` in a row."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    rate = learning_rate(lr * lr_scale if name == "sgd" else lr, lr_schedule, warmup_steps, num_steps)
    if name == "sgd":
        inner = optax.sgd(rate, momentum=momentum or None)
    elif name == "adam":
        inner = optax.adam(rate, b2=b2)
    else:
        inner = optax.adamw(rate, b2=b2, weight_decay=weight_decay)
    if grad_clip:
        inner = optax.chain(optax.clip_by_global_norm(grad_clip), inner)
    return optax.apply_if_finite(inner, _NEVER_APPLY_NONFINITE)


def optimizer_from_config(tc, lr_scale: float = 1.0, num_steps: int | None = None):
    """:func:`make_optimizer` from ``config.train``. A decaying schedule reaches 0 at
    ``train.lr_decay_steps`` when set (MD4 decays over its own horizon, longer than the
    paper's one epoch), else at the run's ``num_steps`` (default ``train.num_steps``)."""
    horizon = tc.lr_decay_steps or (tc.num_steps if num_steps is None else num_steps)
    return make_optimizer(tc.optimizer, tc.lr, tc.momentum, lr_scale, lr_schedule=tc.lr_schedule,
                          warmup_steps=tc.warmup_steps, num_steps=horizon, weight_decay=tc.weight_decay,
                          grad_clip=tc.grad_clip, b2=tc.b2)


def skipped_updates(opt_state) -> int:
    """Number of updates skipped so far for non-finite loss or gradients."""
    return int(opt_state.total_notfinite)


# ----------------------------------------------------------------------------- state and step

def initial_state_fn(init_params: Callable, tx, ema_decay: float = 0.0, ema_debias: bool = True):
    """``(_) -> TrainState`` at step 0: ``init_params()``, the optimizer's state and, with
    ``ema_decay``, the EMA (zeros when ``ema_debias``, else the initial parameters; see
    :func:`ema_params`). Under ``jax.pmap`` it creates the state on the devices, with no host copy."""

    def initial_state(_):
        params = init_params()
        ema = jax.tree_util.tree_map(jnp.zeros_like if ema_debias else jnp.asarray, params) if ema_decay else None
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), ema_params=ema)

    return initial_state


def ema_params(state: TrainState, decay: float, debias: bool):
    """The parameters to evaluate when an EMA is kept. ``debias=False`` (MD4 and
    improved-diffusion): the average started at the initial weights, used as it is.
    ``debias=True``: it started at zero and is divided by ``1 - decay^step`` (Adam's
    correction), i.e. a weighted mean of the parameters seen so far, so early stages are not
    dominated by the initialization; the parameters themselves at step 0."""
    step = int(state.step)
    if not debias:
        return state.ema_params
    if step == 0:
        return state.params
    return jax.tree_util.tree_map(lambda e: e / (1.0 - decay**step), state.ema_params)


def evaluated_params(tc) -> Callable:
    """``state -> parameters`` that validation, the best parameters and the stages use: the
    EMA with ``train.ema_decay``, else the parameters."""
    if tc.ema_decay:
        return lambda state: ema_params(state, tc.ema_decay, tc.ema_debias)
    return lambda state: state.params


def device_pmap(fn, devices, **pmap_kwargs):
    """``jax.pmap(fn)`` over the trainer's axis ``AXIS``: over ``devices`` in one process, over
    every global device with several (each process feeds its local ones; a subset of devices
    only makes sense in a single process). States made by it are placed like the training
    chunk's outputs, so the chunk compiles once: a pmap with another axis name places them
    otherwise, and the chunk compiled again on its second call."""
    return jax.pmap(fn, axis_name=AXIS, devices=devices if jax.process_count() == 1 else None, **pmap_kwargs)


def make_chunk_fn(loss_fn, tx, key, per_device: int, devices, ema_decay: float = 0.0):
    """pmapped ``(state, first, steps[n], batches[n, per_device, ...]) -> (state, metrics[n])``,
    ``first``: the global index of the device's first example in every batch. The state is
    donated (updated in place); ``metrics["notfinite_in_a_row"]`` is the optimizer's count of
    consecutive skipped updates after each step."""
    # one device: no mean to take (XLA:CPU still copies every gradient through an all-reduce,
    # ~10% of a width-1024 step; benchmarks/profile_step.py)
    mean = (lambda tree: tree) if len(devices) == 1 and jax.process_count() == 1 else (
        lambda tree: jax.lax.pmean(tree, AXIS))

    def one_step(state, inputs, first):
        step, batch = inputs
        keys = example_keys(jax.random.fold_in(key, step), per_device, first)
        (objective, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, keys)
        grads = mean(grads)
        metrics = mean(dict(metrics, objective=objective))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = state.ema_params
        if ema_decay:
            ema = jax.tree_util.tree_map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, ema, params)
        metrics["notfinite_in_a_row"] = opt_state.notfinite_count
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema), metrics

    def chunk(state, first, steps, batches):
        if steps.shape[0] == 1:  # no loop: XLA:CPU runs convolutions inside a while loop ~20x slower
            state, metrics = one_step(state, (steps[0], batches[0]), first)
            return state, jax.tree_util.tree_map(lambda m: m[None], metrics)
        return jax.lax.scan(lambda st, inp: one_step(st, inp, first), state, (steps, batches))

    return device_pmap(chunk, devices, donate_argnums=0)


def first_replica(tree):
    """Replica 0 of a pmapped tree as arrays on its device, without a copy on CPU devices (they
    share the replica's memory; while they are alive, a chunk that donates the state copies it
    instead of updating it in place); on other devices a copy there (no host copy)."""
    def first(x):
        if not isinstance(x, jax.Array):
            return x
        local = x.addressable_data(0)
        if local.device.platform == "cpu":
            return jax.device_put(np.asarray(local)[0], local.device)  # a view of the replica's buffer
        return local.reshape(local.shape[1:])
    return jax.tree_util.tree_map(first, tree)


def replicated(leaves: list, treedef, devices):
    """The tree ``treedef`` of the host arrays ``leaves`` (a restored checkpoint) as a pmapped tree
    over ``devices``, placed like the training chunk's outputs. The list is emptied leaf by leaf,
    each host array dropped once its replicas exist, so the tree is never held twice."""
    put, out = device_pmap(lambda x: x, devices), []
    while leaves:
        x = leaves.pop(0)
        out.append(put(np.broadcast_to(x, (len(devices),) + np.shape(x))))
        del x
    return jax.tree_util.tree_unflatten(treedef, out)


class Layout(NamedTuple):
    """Where the rows of every global batch go: ``per_device`` rows on each of ``devices``;
    this process holds the global rows ``rows``, its device k those from ``firsts[k]``."""
    devices: list
    per_device: int
    rows: slice
    firsts: np.ndarray

    @property
    def num_devices(self) -> int:
        """The devices of all processes that train."""
        return len(self.devices) * jax.process_count()

    @classmethod
    def of(cls, devices, batch_size: int) -> Layout:
        devices = list(devices or jax.local_devices())
        if jax.process_count() > 1 and devices != jax.local_devices():
            raise ValueError("with several processes, training uses all local devices (devices=None)")
        n_dev, n_proc = len(devices), jax.process_count()
        if batch_size % (n_dev * n_proc):
            raise ValueError(f"train.batch_size = {batch_size} must be divisible by the number of "
                             f"devices ({n_proc} processes x {n_dev} local devices)")
        per_device = batch_size // (n_dev * n_proc)
        first = jax.process_index() * n_dev * per_device
        return cls(devices, per_device, slice(first, first + n_dev * per_device),
                   first + per_device * np.arange(n_dev, dtype=np.int32))

    def host_batches(self, batches: Callable, start: int, end: int):
        """``(steps, x)`` of steps ``start .. end-1`` for the pmapped chunk: ``[devices, n]`` and
        ``[devices, n, per_device, ...]`` (host arrays)."""
        n_dev, rows = len(self.devices), self.per_device * len(self.devices)
        x = np.asarray(batches(start, end - start, self.rows))
        if x.shape[1] != rows:
            raise ValueError(f"batches returned {x.shape[1]} rows, expected {rows} ({self.rows})")
        x = x.reshape((end - start, n_dev, self.per_device) + x.shape[2:]).swapaxes(0, 1)
        return np.broadcast_to(np.arange(start, end, dtype=np.int32), (n_dev, end - start)), x


# ----------------------------------------------------------------------------- bookkeeping

@dataclasses.dataclass(frozen=True)
class Periodic:
    """The steps at which one periodic action happens: every multiple of ``every`` (0: none)
    and the steps ``at``."""
    every: int = 0
    at: tuple[int, ...] = ()

    def __call__(self, step: int) -> bool:
        return (self.every > 0 and step % self.every == 0) or step in self.at

    def next_after(self, step: int) -> float:
        """The first step after ``step`` at which it happens (inf: none)."""
        multiple = [(step // self.every + 1) * self.every] if self.every else []
        return min(multiple + [s for s in self.at if s > step], default=math.inf)


class Schedule:
    """When the trainer validates, logs, checkpoints, keeps a stage and stops, and so where each
    chunk of steps ends: at the next of these events, or after ``train.steps_per_call`` steps.
    ``stop_at`` ends the invocation after that step as a kill would (the run resumes later)."""

    def __init__(self, tc, num_steps: int, keep_steps, stop_at: int | None = None):
        self.validate = Periodic(tc.eval_every, (num_steps,))
        self.log = Periodic(tc.log_every)
        self.checkpoint = Periodic(tc.checkpoint_every)
        self.stage = Periodic(at=tuple(sorted(int(s) for s in keep_steps)))
        self.num_steps, self.stop_at, self.steps_per_call = num_steps, stop_at, tc.steps_per_call

    def interrupted(self, step: int) -> bool:
        """Whether ``stop_at`` ends this invocation at ``step``."""
        return self.stop_at is not None and step >= self.stop_at

    def last(self, step: int) -> bool:
        """Whether no step follows ``step`` in this invocation (whatever early stopping decides)."""
        return step >= self.num_steps or self.interrupted(step)

    def chunk_end(self, step: int) -> int:
        ends = [step + self.steps_per_call, self.num_steps, self.stage.next_after(step)]
        ends += [action.next_after(step) for action in (self.validate, self.log, self.checkpoint)]
        if self.stop_at is not None:
            ends.append(max(self.stop_at, step + 1))
        return int(min(ends))


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Early stopping on the validation loss (paper Sec. 3.1): the best loss and its step, and
    the evaluations since; saved with every checkpoint (:meth:`record`)."""
    patience: int
    best_val_loss: float = math.inf
    best_step: int = -1
    evals_without_improvement: int = 0

    @property
    def should_stop(self) -> bool:
        return self.evals_without_improvement >= self.patience

    def update(self, step: int, val_loss: float) -> EarlyStopping:
        if val_loss < self.best_val_loss:
            return dataclasses.replace(self, best_val_loss=float(val_loss), best_step=step, evals_without_improvement=0)
        return dataclasses.replace(self, evals_without_improvement=self.evals_without_improvement + 1)

    def record(self) -> dict:
        return {"best_val_loss": self.best_val_loss, "best_step": self.best_step,
                "evals_without_improvement": self.evals_without_improvement}

    @classmethod
    def from_record(cls, patience: int, record: dict) -> EarlyStopping:
        return cls(patience, **{k: record[k] for k in cls(patience).record()})


class MetricSums:
    """Training metrics summed on the devices since the last log (the sums and their count
    go into checkpoints, so a resumed run logs the same means), and the training speed: the
    steps per second of the chunks run since the last log, leaving out the first chunk of each
    length in this invocation (it includes the compilation)."""

    def __init__(self, record: dict | None = None):
        record = record or {}
        self.sums = {k: jnp.asarray(v, jnp.float32) for k, v in record.get("train_sums", {}).items()}
        self.count = record.get("train_count", 0)
        self.timed_steps, self.timed_seconds, self._compiled = 0, 0.0, set()

    def add(self, metrics: dict, steps: int, seconds: float) -> None:
        """The metrics of a chunk of ``steps`` steps that took ``seconds`` (wall time)."""
        for name, values in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + jnp.sum(values)
        self.count += steps
        if steps in self._compiled:
            self.timed_steps, self.timed_seconds = self.timed_steps + steps, self.timed_seconds + seconds
        self._compiled.add(steps)

    def means(self) -> dict:
        """``train/<name>`` means and ``train/steps_per_second`` (absent until a chunk ran
        after the compilation); then starts over."""
        out = {f"train/{k}": float(v) / self.count for k, v in jax.device_get(self.sums).items()}
        if self.timed_steps:
            out["train/steps_per_second"] = self.timed_steps / max(self.timed_seconds, 1e-9)
        self.sums, self.count, self.timed_steps, self.timed_seconds = {}, 0, 0, 0.0
        return out

    def record(self) -> dict:
        return {"train_sums": {k: float(v) for k, v in jax.device_get(self.sums).items()}, "train_count": self.count}


@dataclasses.dataclass
class Fitted:
    """What :func:`fit` returns: the best parameters (the last ones without a validation
    improvement), where training stopped and why, and the seconds it took."""
    params: Any
    best_step: int
    best_val_loss: float
    steps: int
    stopped_early: bool
    skipped_updates: int
    done: bool  # False when stop_at interrupted it
    seconds: float


# ----------------------------------------------------------------------------- the loop

def _distributed() -> bool:
    """Whether ``jax.distributed.initialize()`` ran in this process."""
    try:
        from jax._src import distributed
        return distributed.global_state.client is not None
    except (ImportError, AttributeError):  # another JAX layout: several processes imply it
        return jax.process_count() > 1


class _Preemption:
    """Context manager giving ``reached() -> int``, called once per chunk on every process: the
    signal on which every process stops at this chunk (0: none). With ``jax.distributed``: JAX's
    preemption sync point (its notifier catches SIGTERM; nothing here replaces it), whose ids
    must be consecutive: the chunk counter. Otherwise (main thread only) SIGTERM sets it, and
    so does a first Ctrl-C when SIGINT has Python's default handler (a second Ctrl-C raises
    ``KeyboardInterrupt`` at once); the previous handlers are restored on exit."""

    def __enter__(self):
        self._signum, self._previous, self._calls = 0, {}, 0
        self._jax = _distributed()
        if not self._jax and threading.current_thread() is threading.main_thread():
            self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._stop)
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._stop)
        return self

    def _stop(self, signum, _frame):
        if signum == signal.SIGINT == self._signum:
            raise KeyboardInterrupt
        if signum == signal.SIGINT:
            logging.warning("Ctrl-C: stopping after this chunk of steps, with a checkpoint (Ctrl-C again: at once)")
        self._signum = self._signum or signum

    def reached(self) -> int:
        self._calls += 1
        if self._jax:
            return signal.SIGTERM if multihost_utils.reached_preemption_sync_point(self._calls) else 0
        return self._signum

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        return False


class _BatchFeed:
    """The host batches of each chunk; the next chunk's are built in a background thread while
    the current chunk runs."""

    def __init__(self, build: Callable, schedule: Schedule):
        self._build, self._schedule = build, schedule
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rhmdiff-batches")
        self._next = None  # (start, future)

    def take(self, start: int, end: int):
        future = self._next[1] if self._next and self._next[0] == start else self._pool.submit(self._build, start, end)
        self._next = None
        if not self._schedule.last(end):
            self._next = (end, self._pool.submit(self._build, end, self._schedule.chunk_end(end)))
        return future.result()

    def close(self):
        self._pool.shutdown(wait=False, cancel_futures=True)


def _start_over(workdir, ckpt: Checkpoints) -> Checkpoints:
    """``config.restart``: clear the checkpoints, best and stage parameters and the metrics."""
    ckpt.close()
    if jax.process_index() == 0:
        for name in OUTPUTS:
            path = workdir / name
            if path.exists() and name != "unreadable_checkpoints":
                path.rmtree() if path.is_dir() else path.unlink()
    barrier("rhmdiff restart cleared")
    logging.warning("restart: training %s from step 0", workdir)
    return Checkpoints(workdir)


def _restore_or_initialize(config, workdir, initial_state: Callable, abstract, layout: Layout):
    """``(checkpoints, pmapped state, step, early stopping, metric sums)``: from the newest
    checkpoint that loads (warning when it was trained on another number of devices), else at
    step 0."""
    ckpt, devices = Checkpoints(workdir), layout.devices
    try:
        restored = restore_latest(ckpt, abstract, devices)
    except CheckpointError:
        if not config.restart:
            ckpt.close()
            raise
        ckpt, restored = _start_over(workdir, ckpt), None
    patience = config.train.patience
    if restored is None:
        logging.info("initializing %d parameters on %d devices", num_params(abstract.params), len(devices))
        state, step, stopping, sums = device_pmap(initial_state, devices)(np.zeros(len(devices))), 0, \
            EarlyStopping(patience), MetricSums()
    else:
        state, record = restored
        step = int(first_replica(state.step))
        stopping, sums = EarlyStopping.from_record(patience, record), MetricSums(record)
        logging.info("resumed from step %d of %s", step, workdir)
        _warn_other_devices(record, layout.num_devices)
    if jax.process_index() == 0:  # best and stage parameters saved after the last train state (a kill in between)
        ckpt.forget_after(step, stopping.best_step)
    barrier("rhmdiff resume cleaned")
    return ckpt, state, step, stopping, sums


def restore_latest(ckpt: Checkpoints, abstract, devices):
    """``(pmapped state over devices, its JSON record)`` of the newest checkpoint of ``ckpt``
    that loads, or None: restored as host arrays, then moved to the devices one leaf at a time
    (:func:`replicated`), so that the state is never held twice."""
    restored = ckpt.restore_latest(abstract)
    if not restored:  # (no checkpoint)
        return None
    leaves, treedef = jax.tree_util.tree_flatten(restored[0])
    record = restored[1]
    del restored  # the host state now lives in leaves only, which replicated() empties
    return replicated(leaves, treedef, devices), record


def _warn_other_devices(record: dict, num_devices: int) -> None:
    """One warning line when a checkpoint's train state was trained on another number of devices."""
    trained_on = record.get("devices")
    if trained_on is not None and trained_on != num_devices:
        logging.warning("resuming a run trained on %d devices on %d devices: the gradients are now averaged in "
                        "another order, so from here on the trajectory differs from an uninterrupted run by float "
                        "rounding", trained_on, num_devices)


def _meta(stopping: EarlyStopping, sums: MetricSums, num_devices: int) -> dict:
    """The JSON record saved with a train state: the early-stopping state, the partial metric sums
    and the number of devices that trained it."""
    return {**stopping.record(), **sums.record(), "devices": num_devices}


def _train_chunk(chunk_fn, state, layout: Layout, feed: _BatchFeed, step: int, end: int, sums: MetricSums):
    """Steps ``step .. end-1`` as one chunk: the new state and the optimizer's count of non-finite
    steps in a row at its end; the metrics and the chunk's wall time go to ``sums``."""
    t0 = time.perf_counter()
    state, metrics = chunk_fn(state, layout.firsts, *feed.take(step, end))
    metrics = first_replica(metrics)
    in_a_row = int(metrics.pop("notfinite_in_a_row")[-1])  # waits for the chunk
    sums.add(metrics, end - step, time.perf_counter() - t0)
    return state, in_a_row


def fit(config, workdir, *, init_params: Callable, loss_fn: Callable, batches: Callable, validate: Callable,
        lr_scale: float = 1.0, num_steps: int | None = None, keep_steps=None, stop_at: int | None = None,
        devices=None) -> Fitted:
    """Train (or resume) with ``config.train`` and seed ``config.seed`` (module docstring).

    ``num_steps`` and ``keep_steps`` replace ``train.num_steps`` / ``train.keep_steps`` when
    the task derives them (e.g. one epoch of a corpus). ``stop_at``: stop after that step as a
    kill would (no checkpoint unless the step is an evaluation, which saves one; the run
    resumes from the last checkpoint on the next call); the result then has ``done = False``.
    ``devices``: the local devices to use (default: all of ``jax.local_devices()``).
    Raises :class:`Preempted` after a preemption or a Ctrl-C (a checkpoint saved). Every way
    out, an error included, waits for the checkpoints being written."""
    t0, tc, workdir = time.perf_counter(), config.train, as_path(workdir)
    num_steps = tc.num_steps if num_steps is None else num_steps
    layout = Layout.of(devices, tc.batch_size)
    tx = optimizer_from_config(tc, lr_scale, num_steps)
    initial_state = initial_state_fn(init_params, tx, tc.ema_decay, tc.ema_debias)
    abstract = jax.eval_shape(initial_state, 0)
    ckpt, state, step, stopping, sums = _restore_or_initialize(config, workdir, initial_state, abstract, layout)
    schedule = Schedule(tc, num_steps, tc.keep_steps if keep_steps is None else keep_steps, stop_at)
    evaluated = evaluated_params(tc)
    chunk_fn = make_chunk_fn(loss_fn, tx, jax.random.fold_in(jax.random.PRNGKey(config.seed), 1),  # diffusion noise
                             layout.per_device, layout.devices, tc.ema_decay)
    done = stopping.should_stop or step >= num_steps
    preempted = interrupted = 0
    feed = bar = writer = None
    try:
        with _Preemption() as preemption:  # from here on (the metrics file written next), a stop saves a checkpoint
            writer = MetricWriter(workdir, step)
            feed = _BatchFeed(lambda start, end: layout.host_batches(batches, start, end), schedule)
            bar = progress(total=num_steps, initial=step, desc="training", unit="step", disable=done)
            while not (done or preempted or interrupted):
                end = schedule.chunk_end(step)
                state, in_a_row = _train_chunk(chunk_fn, state, layout, feed, step, end, sums)
                bar.update(end - step)
                step = end
                if in_a_row >= tc.max_nonfinite:
                    raise FloatingPointError(
                        f"{in_a_row} training steps in a row had a non-finite loss or gradient (up to step {step}; "
                        f"train.max_nonfinite = {tc.max_nonfinite}): lower train.lr; the last checkpoint is unchanged")
                if schedule.stage(step):
                    ckpt.save_stage(step, evaluated(first_replica(state)))
                preempted, interrupted = preemption.reached(), schedule.interrupted(step)
                if schedule.validate(step):
                    stopping = _validate(step, first_replica(state), tc, validate, evaluated, stopping, sums, writer,
                                         ckpt, layout.num_devices)
                    bar.set_postfix(best_val=f"{stopping.best_val_loss:.4g}", refresh=False)
                    done = stopping.should_stop or step >= num_steps
                    continue
                if schedule.log(step):
                    writer.write(step, sums.means())
                if (schedule.checkpoint(step) or preempted) and not interrupted:
                    ckpt.save_latest(step, first_replica(state), _meta(stopping, sums, layout.num_devices))
        _close_all(feed, bar)
        last = evaluated(first_replica(state)) if stopping.best_step < 0 else None  # no validation kept a best
        skipped = skipped_updates(first_replica(state.opt_state))
        del state  # (the best parameters are restored next)
        fitted = _finish(workdir, abstract, last, skipped, step, stopping, done, preempted, ckpt, writer,
                         layout.num_devices, t0)
    except BaseException:  # an error or a second Ctrl-C: the saves in flight still complete
        _close_all(feed, bar, ckpt, writer, quietly=True)
        raise
    _close_all(ckpt, writer)  # (the feed and the bar were closed after the loop)
    return fitted


def _close_all(*parts, quietly: bool = False) -> None:
    """Close every part (the batch feed, the progress bar, the checkpoints, the metric writer;
    None: not made yet); ``quietly`` (an error is on its way out already): a failure to close is
    a warning."""
    for part in (p for p in parts if p is not None):
        try:
            part.close()
        except Exception as e:  # noqa: BLE001 -- the error that stopped the run is the one to report
            if not quietly:
                raise
            logging.warning("closing %s after the error: %s", type(part).__name__, str(e).splitlines()[0][:200])


def _validate(step: int, state, tc, validate: Callable, evaluated: Callable, stopping: EarlyStopping,
              sums: MetricSums, writer: MetricWriter, ckpt: Checkpoints, num_devices: int) -> EarlyStopping:
    """One evaluation: validation loss, early stopping, the best parameters, the log line and
    a checkpoint (also when the run stops here: a kill after this evaluation loses nothing)."""
    if tc.check_replicas:  # debug: every process holds the same parameters
        multihost_utils.assert_equal(to_host(state.params), f"parameters differ across processes at step {step}")
    val = validate(evaluated(state))
    scalars = sums.means() if sums.count else {}
    scalars.update({f"val/{k}": float(v) for k, v in val.items()})
    scalars["train/skipped_updates"] = skipped_updates(state.opt_state)
    updated = stopping.update(step, val["val_loss"])
    if updated.best_step == step:
        ckpt.save_best(step, evaluated(state))
    writer.write(step, scalars)
    logging.info("step %d: %s", step, ", ".join(f"{k} {v:.5g}" for k, v in scalars.items()))
    ckpt.save_latest(step, state, _meta(updated, sums, num_devices))
    return updated


def _finish(workdir, abstract, last, skipped: int, step: int, stopping: EarlyStopping, done: bool, preempted: int,
            ckpt: Checkpoints, writer: MetricWriter, num_devices: int, t0: float) -> Fitted:
    """After the loop: the best parameters restored (``last``, the last evaluated parameters,
    when no validation kept a best), ``train_state.json``, :class:`Preempted`."""
    stopped = "interrupted (Ctrl-C)" if preempted == signal.SIGINT else "preempted"
    if preempted and not done:
        logging.warning("%s at step %d: checkpoint saved; rerun the same command to resume", stopped, step)
    if done and stopping.should_stop:
        logging.info("early stopping at step %d, best validation loss %.5g at step %d",
                     step, stopping.best_val_loss, stopping.best_step)
    ckpt.wait()
    best = last
    if stopping.best_step >= 0:
        best = ckpt.restore_best(jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract.params),
                                 stopping.best_step)
    stopped_early = done and stopping.should_stop
    if jax.process_index() == 0:
        write_json(workdir / "train_state.json", dict(stopping.record(), stopped_early=stopped_early, done=done,
                                                      steps=step, devices=num_devices))
    if preempted and not done:
        raise Preempted(f"{stopped} at step {step}; checkpoint saved in {workdir}", preempted)
    return Fitted(params=best, best_step=stopping.best_step, best_val_loss=stopping.best_val_loss, steps=step,
                  stopped_early=stopped_early, skipped_updates=skipped, done=done, seconds=time.perf_counter() - t0)
