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

Early stopping (paper Sec. 3.1): every ``train.eval_every`` steps the validation loss is
measured; the best parameters are kept (``workdir/best``) and training stops after
``train.patience`` evaluations without improvement (or at ``num_steps``).

Checkpoints (``workdir/checkpoints``, orbax ``CheckpointManager``): the train state, the
early-stopping bookkeeping and the partial metric sums, after every evaluation, every
``train.checkpoint_every`` steps, and on a preemption (then :class:`Preempted` follows).
Rerunning the same command resumes from the newest checkpoint that loads (unreadable ones
are moved to ``workdir/unreadable_checkpoints``); the result is identical to an
uninterrupted run. If checkpoints exist and none loads, the run stops with a
:class:`CheckpointError` (``config.restart`` starts over instead, clearing ``checkpoints/``,
``best/``, ``stages/`` and the metrics). Every save is checked, and the best parameters are
restored at the recorded best step or not at all.

Preemption: on one process, SIGTERM (what SLURM, Kubernetes and TPU maintenance send) sets a
flag; with ``jax.distributed`` the decision is JAX's preemption sync point, which every
process reaches at the same step (JAX's own SIGTERM notifier, installed by
``jax.distributed.initialize``, is left in place), so all processes save the same step and
stop together. ``train.max_nonfinite`` non-finite steps in a row stop the run
(``FloatingPointError``).

Optional ``config.train`` fields (defaults in brackets): ``lr_schedule`` ["constant"] or
"cosine" (decay to 0 at ``num_steps``), ``warmup_steps`` [0] (linear warmup from 0),
``lr_decay_steps`` [0: ``num_steps``] (horizon of the decay), ``weight_decay`` [0]
(``optimizer="adamw"``), ``grad_clip`` [0 = off] (global norm), ``b2`` [0.999] (Adam),
``ema_decay`` [0 = off]: an exponential moving average of the parameters is kept and used
for validation, the best parameters and the stages (``ema_debias`` [True]: started at zero
and bias-corrected; False: started at the initial weights, as MD4 and improved-diffusion;
:func:`ema_params`); ``keep_steps`` [()]: steps whose (EMA) parameters are kept for good in
``workdir/stages`` (e.g. log-spaced numbers of training tokens, for analyses per training
stage); ``checkpoint_every`` [0: at evaluations only]; ``log_every`` [0: at evaluations
only]: training metrics to ``metrics.jsonl`` and TensorBoard.
"""
from __future__ import annotations

import concurrent.futures
import datetime
import json
import math
import os
import signal
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax import struct
from jax.experimental import multihost_utils

from rhmdiff._util import num_params, progress
from rhmdiff.files import as_path, atomic_write, is_remote, write_json

AXIS = "devices"
OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("constant", "cosine")
MAX_CONSECUTIVE_NONFINITE = 100


class Preempted(Exception):
    """Training stopped on a preemption notice after saving a checkpoint."""


class CheckpointError(RuntimeError):
    """The checkpoints of a run cannot be used as they are; the message is one line."""


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any = None  # exponential moving average of params (train.ema_decay > 0)


def learning_rate(lr: float, schedule: str = "constant", warmup_steps: int = 0, num_steps: int = 1):
    """``lr`` after a linear warmup from 0 over ``warmup_steps``: constant, or ``"cosine"``
    decay to 0 at ``num_steps`` (MD4's schedule). A float when constant without warmup."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    if schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, max(num_steps, warmup_steps + 1))
    return optax.linear_schedule(0.0, lr, warmup_steps) if warmup_steps else lr


def make_optimizer(name: str, lr: float, momentum: float = 0.9, lr_scale: float = 1.0,
                   max_nonfinite: int = MAX_CONSECUTIVE_NONFINITE, *, lr_schedule: str = "constant",
                   warmup_steps: int = 0, num_steps: int = 1, weight_decay: float = 0.0, grad_clip: float = 0.0,
                   b2: float = 0.999):
    """``"sgd"``: SGD with (heavy-ball) momentum at learning rate ``lr * lr_scale``
    (``lr_scale`` = the model's muP factor, e.g. :func:`rhmdiff.models.unet.mup_lr_scale`);
    ``"adam"`` / ``"adamw"`` (decoupled ``weight_decay``): Adam at ``lr`` (not muP-scaled).
    The rate follows :func:`learning_rate`; ``grad_clip > 0`` clips the global gradient norm.
    Updates whose loss or gradients are not finite are skipped (``optax.apply_if_finite``,
    counted in the state); :func:`fit` stops the run after ``train.max_nonfinite`` in a row."""
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
    return optax.apply_if_finite(inner, max_nonfinite)


def optimizer_from_config(tc, lr_scale: float = 1.0, max_nonfinite: int = MAX_CONSECUTIVE_NONFINITE,
                          num_steps: int | None = None):
    """:func:`make_optimizer` from ``config.train`` (optional fields take their defaults).
    A decaying schedule reaches 0 at ``train.lr_decay_steps`` when set (MD4 decays over its
    own horizon, longer than the paper's one epoch), else at the run's ``num_steps``
    (default ``train.num_steps``)."""
    horizon = tc.get("lr_decay_steps", 0) or (tc.num_steps if num_steps is None else num_steps)
    return make_optimizer(tc.optimizer, tc.lr, tc.get("momentum", 0.9), lr_scale, max_nonfinite,
                          lr_schedule=tc.get("lr_schedule", "constant"), warmup_steps=tc.get("warmup_steps", 0),
                          num_steps=horizon, weight_decay=tc.get("weight_decay", 0.0),
                          grad_clip=tc.get("grad_clip", 0.0), b2=tc.get("b2", 0.999))


def skipped_updates(opt_state) -> int:
    """Number of updates skipped so far for non-finite loss or gradients."""
    return int(opt_state.total_notfinite)


def example_keys(key, step, first, num):
    """Keys of examples ``first .. first+num-1`` of the global batch at ``step``."""
    k = jax.random.fold_in(key, step)
    return jax.vmap(lambda i: jax.random.fold_in(k, i))(first + jnp.arange(num))


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


def device_pmap(fn, devices, **pmap_kwargs):
    """``jax.pmap(fn)`` over the trainer's axis ``AXIS``: over ``devices`` in one process, over
    every global device with several (each process feeds its local ones; a subset of devices
    only makes sense in a single process). States made by it are placed like the training
    chunk's outputs, so the chunk compiles once: a pmap with another axis name places them
    otherwise, and the chunk compiled again on its second call."""
    return jax.pmap(fn, axis_name=AXIS, devices=devices if jax.process_count() == 1 else None, **pmap_kwargs)


def _make_chunk_fn(loss_fn, tx, key, per_device: int, devices, ema_decay: float = 0.0):
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
        keys = example_keys(key, step, first, per_device)
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


def _distributed() -> bool:
    """Whether ``jax.distributed.initialize()`` ran in this process."""
    try:
        from jax._src import distributed
        return distributed.global_state.client is not None
    except (ImportError, AttributeError):  # another JAX layout: several processes imply it
        return jax.process_count() > 1


class _Preemption:
    """Context manager giving ``reached() -> bool``, called once per chunk on every process:
    the preemption decision that every process takes at the same chunk. With
    ``jax.distributed``: JAX's preemption sync point (its notifier catches SIGTERM; nothing
    here replaces it), whose ids must be consecutive: the chunk counter. Otherwise SIGTERM sets
    a flag (main thread only) and the previous handler is restored on exit."""

    def __enter__(self):
        self._event, self._previous, self._installed, self._calls = threading.Event(), None, False, 0
        self._jax = _distributed()
        if not self._jax and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, lambda *_: self._event.set())
            self._installed = True
        return self

    def reached(self) -> bool:
        self._calls += 1
        if self._jax:
            return bool(multihost_utils.reached_preemption_sync_point(self._calls))
        return self._event.is_set()

    def __exit__(self, *exc):
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
        return False


def _first_replica(tree):
    """Replica 0 of a pmapped tree as arrays on its device (no host copy)."""
    def first(x):
        if not isinstance(x, jax.Array):
            return x
        local = x.addressable_data(0)
        return local.reshape(local.shape[1:])
    return jax.tree_util.tree_map(first, tree)


def _importable(module: str) -> bool:
    import importlib.util
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _to_host(tree):
    return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


class Checkpoints:
    """orbax checkpoints in ``workdir``: ``checkpoints/`` (latest train states + JSON
    bookkeeping, 2 kept), ``best/`` (the parameters with the lowest validation loss; the
    previous best is kept too, so a run killed between the two saves of an evaluation still
    finds its recorded best) and ``stages/`` (the parameters at every step of
    ``train.keep_steps``, all kept)."""

    NAMES = ("checkpoints", "best", "stages")

    def __init__(self, workdir):
        self.workdir = as_path(workdir)
        options = lambda keep: ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        manager = lambda name, keep, items: ocp.CheckpointManager(
            self.workdir / name, options=options(keep), item_names=items)
        self.latest = manager("checkpoints", 2, ("state", "meta"))
        self.best = manager("best", 2, ("params",))
        self.stages = manager("stages", None, ("params",))
        self._managers = (self.latest, self.best, self.stages)

    def restore_latest(self, abstract_state):
        """``(state, meta)`` of the newest checkpoint that loads, or None when there is none.
        Unreadable steps are moved to ``unreadable_checkpoints/``; if steps exist and none
        loads, :class:`CheckpointError`."""
        steps = sorted(self.latest.all_steps(), reverse=True)
        for step in steps:
            try:
                out = self.latest.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
                return out.state, out.meta
            except Exception as e:  # noqa: BLE001 -- any unreadable checkpoint: move it aside, try an older one
                why = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                moved = self._move_aside(step)
                logging.warning("checkpoint at step %d of %s does not load (%s); moved to %s", step,
                                self.latest.directory, why, moved)
        if steps:
            raise CheckpointError(f"none of the checkpoints of {self.workdir} (steps {sorted(steps)}) loads; "
                                  f"they are in {self.workdir / 'unreadable_checkpoints'}; --config.restart=True "
                                  "starts training over")
        return None

    def _move_aside(self, step: int) -> str:
        target = self.workdir / "unreadable_checkpoints" / f"{step}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
        if jax.process_index() == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            (self.workdir / "checkpoints" / str(step)).rename(target)
        _barrier(f"rhmdiff moved checkpoint {step} aside")
        self.latest.reload()
        return str(target)

    @staticmethod
    def _check(saved: bool, what: str, step: int):
        if not saved:
            raise CheckpointError(f"the {what} checkpoint of step {step} was not written (orbax skipped it)")

    # Saves take host arrays: orbax writes host arrays from process 0, while the per-device
    # replicas of a pmapped state are not global arrays it could write on several hosts.
    def save_latest(self, step: int, state, meta: dict):
        self._check(self.latest.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_to_host(state)), meta=ocp.args.JsonSave(meta))), "latest", step)

    def save_best(self, step: int, params):
        self._check(self.best.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(_to_host(params)))),
                    "best", step)

    def restore_best(self, abstract_params, step: int | None = None):
        """The best parameters (at ``step``, the recorded best step, when given)."""
        steps = self.best.all_steps()
        if step is None:
            step = self.best.latest_step()
        if step not in steps:
            raise CheckpointError(f"{self.workdir / 'best'} holds steps {sorted(steps)}, not the recorded best step "
                                  f"{step}; --config.restart=True starts training over")
        return self._restore_params(self.best, step, abstract_params)

    def save_stage(self, step: int, params):
        if step not in self.stages.all_steps():  # a resumed run passes the same step again
            self._check(self.stages.save(step, args=ocp.args.Composite(
                params=ocp.args.StandardSave(_to_host(params)))), "stage", step)

    def stage_steps(self) -> list[int]:
        return sorted(self.stages.all_steps())

    def restore_stage(self, step: int, abstract_params):
        return self._restore_params(self.stages, step, abstract_params)

    def forget_after(self, step: int, best_step: int) -> None:
        """Delete the best and stage checkpoints a run saved after its last train state
        (``step``; a kill between the saves of one evaluation), except the recorded best
        ``best_step``: the resumed run writes them again, identically."""
        for manager, keep in ((self.best, {best_step}), (self.stages, set())):
            for s in manager.all_steps():
                if s > step and s not in keep:
                    manager.delete(s)

    @staticmethod
    def _restore_params(manager, step, abstract_params):
        return manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params))).params

    def wait(self):
        for manager in self._managers:
            manager.wait_until_finished()

    def close(self):
        self.wait()
        for manager in self._managers:
            manager.close()


def restore_best(run_dir, abstract_params):
    """The best parameters a finished run kept in ``run_dir/best`` (at the best step that
    ``train_state.json`` records; shapes from ``abstract_params``)."""
    state_file = as_path(run_dir) / "train_state.json"
    step = json.loads(state_file.read_text()).get("best_step") if state_file.exists() else None
    ckpt = Checkpoints(run_dir)
    try:
        return ckpt.restore_best(jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract_params), step)
    finally:
        ckpt.close()


def read_metrics(path) -> list[dict]:
    """The rows of a ``metrics.jsonl``; a torn last line (a kill during the write, a full
    disk) is dropped with a warning, a broken line elsewhere is an error naming the file."""
    path = as_path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if number == len(lines):
                logging.warning("%s: dropping a torn last line (%d characters)", path, len(line))
                break
            raise CheckpointError(f"{path}: line {number} is not JSON") from None
    return rows


class MetricWriter:
    """Scalars to ``metrics.jsonl`` (one JSON object per log or evaluation) and TensorBoard
    event files (tensorboardX, no TensorFlow). Only process 0 writes. On resume, lines after
    the restored step are dropped so the file matches an uninterrupted run."""

    def __init__(self, workdir, resume_step: int):
        self.enabled = jax.process_index() == 0
        self.path = as_path(workdir) / "metrics.jsonl"
        self.tb = None
        if not self.enabled:
            return
        self.rows = [row for row in read_metrics(self.path) if row["step"] <= resume_step]
        self._rewrite()
        events = as_path(workdir) / "tensorboard"
        if is_remote(events) and not _importable("google.cloud.storage"):
            logging.warning("no TensorBoard events in %s (tensorboardX writes to gs:// with google-cloud-storage, "
                            "which is not installed); metrics.jsonl has every value", events)
            return
        from tensorboardX import SummaryWriter
        self.tb = SummaryWriter(os.fspath(events), purge_step=resume_step + 1)

    def _rewrite(self):
        with atomic_write(self.path) as f:
            f.writelines(json.dumps(row) + "\n" for row in self.rows)

    def write(self, step: int, scalars: dict):
        if not self.enabled:
            return
        if self.tb is not None:
            for name, value in scalars.items():
                self.tb.add_scalar(name, value, step)
        self.rows.append({"step": step, **scalars})
        if is_remote(self.path):  # object stores cannot append: the whole (small) file again
            self._rewrite()
        else:
            with open(self.path, "a") as f:
                f.write(json.dumps(self.rows[-1]) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def close(self):
        if self.tb is not None:
            self.tb.close()


def fit_until_done(config, workdir, stop_at: int | None = None, **fit_kwargs) -> dict | None:
    """:func:`fit` for a task: raises :class:`Preempted` after a preemption, returns None when
    ``stop_at`` ended training early, else fit's output with ``"seconds"`` of training."""
    t0 = time.perf_counter()
    fitted = fit(config, workdir, stop_at=stop_at, **fit_kwargs)
    if fitted["preempted"]:
        raise Preempted(f"preempted at step {fitted['steps']}; checkpoint saved in {workdir}")
    if not fitted["done"]:
        return None
    return dict(fitted, seconds=time.perf_counter() - t0)


def _start_over(workdir, ckpt: Checkpoints) -> Checkpoints:
    """``config.restart``: clear the checkpoints, best and stage parameters and the metrics."""
    ckpt.close()
    if jax.process_index() == 0:
        for name in (*Checkpoints.NAMES, "metrics.jsonl", "train_state.json", "tensorboard"):
            path = workdir / name
            if path.exists():
                path.rmtree() if path.is_dir() else path.unlink()
    _barrier("rhmdiff restart cleared")
    logging.warning("restart: training %s from step 0", workdir)
    return Checkpoints(workdir)


def _schedule(tc, num_steps: int, keep_steps, stop_at):
    """``next_stop(step) -> end`` of the chunk that starts at ``step``: the next evaluation,
    kept stage, checkpoint, log, stop or chunk size, whichever comes first."""
    every = [tc.eval_every] + [tc.get(k, 0) for k in ("checkpoint_every", "log_every") if tc.get(k, 0)]

    def next_stop(step):
        ends = [(step // n + 1) * n for n in every]
        ends += [next((k for k in keep_steps if k > step), num_steps), num_steps, step + tc.steps_per_call]
        if stop_at is not None:
            ends.append(max(stop_at, step + 1))
        return min(ends)

    return next_stop


def fit(config, workdir, *, init_params: Callable, loss_fn: Callable, batches: Callable, validate: Callable,
        lr_scale: float = 1.0, num_steps: int | None = None, keep_steps=None, stop_at: int | None = None,
        devices=None) -> dict:
    """Train (or resume) with ``config.train`` = {optimizer, lr, momentum, batch_size,
    num_steps, eval_every, patience, steps_per_call, ...} and seed ``config.seed``.

    ``num_steps`` and ``keep_steps`` replace ``train.num_steps`` / ``train.keep_steps`` when
    the task derives them (e.g. one epoch of a corpus).
    ``stop_at``: stop after that step as a kill would (no checkpoint unless the step is an
    evaluation, which saves one; the run resumes from the last checkpoint on the next call).
    ``devices``: the local devices to use (default: all of ``jax.local_devices()``).
    Returns ``{"params": best parameters, "best_step", "best_val_loss", "steps",
    "stopped_early", "skipped_updates", "done", "preempted"}``."""
    tc = config.train
    num_steps = tc.num_steps if num_steps is None else num_steps
    workdir = as_path(workdir)
    devices = list(devices or jax.local_devices())
    if jax.process_count() > 1 and devices != jax.local_devices():
        raise ValueError("with several processes, training uses all local devices (devices=None)")
    n_dev, n_proc = len(devices), jax.process_count()
    if tc.batch_size % (n_dev * n_proc):
        raise ValueError(f"train.batch_size = {tc.batch_size} must be divisible by the number of "
                         f"devices ({n_proc} processes x {n_dev} local devices)")
    per_device = tc.batch_size // (n_dev * n_proc)
    max_nonfinite = tc.get("max_nonfinite", MAX_CONSECUTIVE_NONFINITE)
    tx = optimizer_from_config(tc, lr_scale, max_nonfinite + 1, num_steps)
    ema_decay = float(tc.get("ema_decay", 0.0))
    ema_debias = bool(tc.get("ema_debias", True))
    keep_steps = sorted(int(s) for s in (tc.get("keep_steps", ()) if keep_steps is None else keep_steps))
    current = lambda st: ema_params(st, ema_decay, ema_debias) if ema_decay else st.params  # the parameters to evaluate
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)  # diffusion noise of training
    initial_state = initial_state_fn(init_params, tx, ema_decay, ema_debias)
    abstract = jax.eval_shape(initial_state, 0)
    ckpt = Checkpoints(workdir)
    meta = {"best_val_loss": math.inf, "best_step": -1, "evals_without_improvement": 0,
            "stopped_early": False, "done": False, "train_sums": {}, "train_count": 0}
    try:
        restored = ckpt.restore_latest(abstract)
    except CheckpointError:
        if not config.get("restart", False):
            ckpt.close()
            raise
        ckpt, restored = _start_over(workdir, ckpt), None
    if restored is not None:
        meta = {**meta, **restored[1]}  # fields added since keep their defaults
        step = int(restored[0].step)
        rstate = device_pmap(lambda x: x, devices)(
            jax.tree_util.tree_map(lambda x: np.broadcast_to(x, (n_dev,) + np.shape(x)), restored[0]))
        del restored
        logging.info("resumed from step %d of %s", step, workdir)
    else:
        step = 0
        logging.info("initializing %d parameters on %d devices", num_params(abstract.params), n_dev)
        rstate = device_pmap(initial_state, devices)(np.zeros(n_dev))
    if jax.process_index() == 0:
        ckpt.forget_after(step, meta["best_step"])
    _barrier("rhmdiff resume cleaned")
    writer = MetricWriter(workdir, step)
    chunk_fn = _make_chunk_fn(loss_fn, tx, key, per_device, devices, ema_decay)
    first_local = jax.process_index() * n_dev * per_device
    rows = slice(first_local, first_local + n_dev * per_device)
    firsts = first_local + per_device * np.arange(n_dev, dtype=np.int32)
    next_stop = _schedule(tc, num_steps, keep_steps, stop_at)

    def host_batches(start, end):
        x = np.asarray(batches(start, end - start, rows))
        if x.shape[1] != n_dev * per_device:
            raise ValueError(f"batches returned {x.shape[1]} rows, expected {n_dev * per_device} ({rows})")
        x = x.reshape((end - start, n_dev, per_device) + x.shape[2:]).swapaxes(0, 1)
        steps = np.broadcast_to(np.arange(start, end, dtype=np.int32), (n_dev, end - start))
        return steps, x

    bar = progress(total=num_steps, initial=step, desc="training", unit="step", disable=meta["done"])
    sums = {k: jnp.asarray(v, jnp.float32) for k, v in meta["train_sums"].items()}
    count, t_last, logged = meta["train_count"], time.perf_counter(), False
    preempted = stopped = False
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rhmdiff-batches")
    pending = None if meta["done"] else pool.submit(host_batches, step, next_stop(step))

    def train_scalars(now):
        host = jax.device_get(sums)
        out = {f"train/{k}": float(v) / count for k, v in host.items()}
        out["train/steps_per_second"] = count / max(now - t_last, 1e-9)
        return out

    with _Preemption() as preemption:
        while not meta["done"]:
            end = next_stop(step)
            steps, x = pending.result()
            if end < num_steps and not (stop_at is not None and end >= stop_at):
                pending = pool.submit(host_batches, end, next_stop(end))  # built while this chunk runs
            if step == 0 and not logged:
                logging.info("compiling the training step (%d parameters) ...", num_params(abstract.params))
                t_compile = time.perf_counter()
            rstate, metrics = chunk_fn(rstate, firsts, steps, x)
            metrics = _first_replica(metrics)
            in_a_row = int(metrics.pop("notfinite_in_a_row")[-1])
            if not logged:
                if step == 0:
                    logging.info("first chunk of %d steps (compilation included) took %.1f s", end - step,
                                 time.perf_counter() - t_compile)
                logged = True
            for name, values in metrics.items():
                sums[name] = sums.get(name, 0.0) + jnp.sum(values)
            count += end - step
            bar.update(end - step)
            step = end
            if in_a_row >= max_nonfinite:
                raise FloatingPointError(
                    f"{in_a_row} training steps in a row had a non-finite loss or gradient (up to step {step}; "
                    f"train.max_nonfinite = {max_nonfinite}): lower train.lr; the last checkpoint is unchanged")
            if step in keep_steps:
                ckpt.save_stage(step, current(_first_replica(rstate)))
            preempted = preemption.reached()
            stopped = stop_at is not None and step >= stop_at
            is_eval = step % tc.eval_every == 0 or step == num_steps
            is_log = bool(tc.get("log_every", 0)) and step % tc.log_every == 0
            is_ckpt = bool(tc.get("checkpoint_every", 0)) and step % tc.checkpoint_every == 0
            if not is_eval:
                now = time.perf_counter()
                if is_log:
                    writer.write(step, train_scalars(now))
                    sums, count, t_last = {}, 0, now
                if (is_ckpt or preempted) and not stopped:
                    meta.update(train_sums={k: float(v) for k, v in jax.device_get(sums).items()}, train_count=count)
                    ckpt.save_latest(step, _first_replica(rstate), meta)
                if preempted or stopped:
                    break
                continue
            state = _first_replica(rstate)
            if tc.get("check_replicas", False):  # debug: every process holds the same parameters
                multihost_utils.assert_equal(_to_host(state.params), f"parameters differ across processes at step {step}")
            val = validate(current(state))
            now = time.perf_counter()
            scalars = train_scalars(now) if count else {}
            scalars.update({f"val/{k}": float(v) for k, v in val.items()})
            scalars["train/skipped_updates"] = skipped_updates(state.opt_state)
            sums, count, t_last = {}, 0, now
            if val["val_loss"] < meta["best_val_loss"]:
                meta.update(best_val_loss=float(val["val_loss"]), best_step=step, evals_without_improvement=0)
                ckpt.save_best(step, current(state))
            else:
                meta["evals_without_improvement"] += 1
            meta["stopped_early"] = meta["evals_without_improvement"] >= tc.patience
            meta["done"] = meta["stopped_early"] or step >= num_steps
            meta.update(train_sums={}, train_count=0)
            writer.write(step, scalars)
            bar.set_postfix(loss=f"{scalars.get('train/objective', math.nan):.4g}", best_val=f"{meta['best_val_loss']:.4g}")
            logging.info("step %d: %s", step, ", ".join(f"{k} {v:.5g}" for k, v in scalars.items()))
            ckpt.save_latest(step, state, meta)  # also when stopped: a kill after this evaluation
            del state
            if preempted or stopped:
                break
    pool.shutdown(wait=False, cancel_futures=True)
    bar.close()
    if preempted and not meta["done"]:
        logging.warning("preempted at step %d: checkpoint saved; rerun the same command to resume", step)
    if meta["done"] and meta["stopped_early"]:
        logging.info("early stopping at step %d, best validation loss %.5g at step %d",
                     step, meta["best_val_loss"], meta["best_step"])
    state = _first_replica(rstate)
    del rstate
    ckpt.wait()
    best = current(state)
    if meta["best_step"] >= 0:
        best = ckpt.restore_best(jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, _to_host(best)),
                                 meta["best_step"])
    ckpt.close()
    writer.close()
    if jax.process_index() == 0:
        write_json(workdir / "train_state.json", dict(meta, steps=step))
    return {"params": best, "best_step": meta["best_step"], "best_val_loss": meta["best_val_loss"],
            "steps": step, "stopped_early": meta["stopped_early"], "preempted": preempted and not meta["done"],
            "skipped_updates": skipped_updates(state.opt_state), "done": meta["done"]}
