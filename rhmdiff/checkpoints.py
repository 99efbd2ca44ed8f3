"""orbax checkpoints of a training run: the latest train states (with the trainer's JSON
record), the best parameters and the parameters kept at chosen steps, with integrity checks.

Every save is checked (orbax may skip one silently); checkpoints that do not load are moved
to ``unreadable_checkpoints/`` and the next older one is used; the best parameters are
restored at the recorded best step or not at all (:class:`CheckpointError`, one line).

Memory: in one process, orbax is given the arrays themselves (no host copy made here: orbax
copies device arrays to the host itself, and arrays on CPU devices -- the replicas that
:func:`rhmdiff.train.first_replica` gives without a copy -- it writes from their memory; such a
save is waited for, so that the next training step can update the state in place). Train
states are written uncompressed and at most ``IN_FLIGHT_GB`` of arrays at a time; they are
restored as host arrays, which :func:`rhmdiff.train.restore_latest` moves to the devices one
leaf at a time. :meth:`Checkpoints.wait` holds off a Ctrl-C until the saves in flight are
complete.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import signal
import threading

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from rhmdiff.files import as_path


class CheckpointError(RuntimeError):
    """The checkpoints of a run cannot be used as they are; the message is one line."""


def to_host(tree):
    return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))


def _savable(tree):
    """What orbax is given to save: the arrays themselves in one process; host copies with
    several (orbax writes host arrays from process 0, while the per-device replicas of a pmapped
    state are not global arrays that it could write on several hosts)."""
    return tree if jax.process_count() == 1 else to_host(tree)


def _on_cpu(tree) -> bool:
    """Whether ``tree`` holds arrays on CPU devices (which orbax writes from their memory)."""
    return any(isinstance(x, jax.Array) and next(iter(x.devices())).platform == "cpu"
               for x in jax.tree_util.tree_leaves(tree))


@contextlib.contextmanager
def _ctrl_c_deferred():
    """A Ctrl-C (SIGINT with Python's default handler, main thread) during the block is raised
    after it, as ``KeyboardInterrupt``."""
    if threading.current_thread() is not threading.main_thread() or (
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    caught = []
    signal.signal(signal.SIGINT, lambda *_: caught.append(1) or logging.warning(
        "Ctrl-C: stopping once the checkpoint being written is complete"))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt


def barrier(name: str) -> None:
    """Wait for every process (nothing to wait for with one)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


# The gigabytes of arrays that orbax writes or reads at a time (it reads or encodes each array
# whole, so this bounds the memory that a save or a restore adds); more than the largest array
# of the paper preset (1.07 GB).
IN_FLIGHT_GB = 2


class Checkpoints:
    """orbax checkpoints in ``workdir``: ``checkpoints/`` (latest train states + JSON
    bookkeeping, 2 kept), ``best/`` (the parameters with the lowest validation loss; the
    previous best is kept too, so a run killed between the two saves of an evaluation still
    finds its recorded best) and ``stages/`` (the parameters at every step of
    ``train.keep_steps``, all kept)."""

    NAMES = ("checkpoints", "best", "stages")

    def __init__(self, workdir):
        self.workdir = as_path(workdir)
        # Each manager names its barriers: orbax keys a save's cross-process barriers by the step
        # alone, so the latest and best saves of one evaluation, in flight together, would collide.
        options = lambda name, keep: ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=f"rhmdiff_{name}"))
        manager = lambda name, keep, handlers: ocp.CheckpointManager(
            self.workdir / name, options=options(name, keep), item_handlers=handlers)
        arrays = dict(save_concurrent_gb=IN_FLIGHT_GB, restore_concurrent_gb=IN_FLIGHT_GB)
        # train states uncompressed: written from the arrays' memory, without encoding buffers
        # (compressed, a save added about the state's size to the process until the next step)
        self.latest = manager("checkpoints", 2, {
            "state": ocp.PyTreeCheckpointHandler(**arrays, use_compression=False),
            "meta": ocp.JsonCheckpointHandler()})
        self.best = manager("best", 2, {"params": ocp.StandardCheckpointHandler(**arrays)})
        self.stages = manager("stages", None, {"params": ocp.StandardCheckpointHandler(**arrays)})
        self._managers = (self.latest, self.best, self.stages)

    def restore_latest(self, abstract_state):
        """``(state, meta)`` of the newest checkpoint that loads (the state as host arrays), or None
        when there is none. Unreadable steps are moved to ``unreadable_checkpoints/``; if steps exist and none
        loads, :class:`CheckpointError`."""
        steps = sorted(self.latest.all_steps(), reverse=True)
        for step in steps:
            try:
                as_host = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract_state)
                out = self.latest.restore(step, args=ocp.args.Composite(
                    state=ocp.args.PyTreeRestore(abstract_state, restore_args=as_host), meta=ocp.args.JsonRestore()))
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
        barrier(f"rhmdiff moved checkpoint {step} aside")
        self.latest.reload()
        return str(target)

    @staticmethod
    def _check(saved: bool, what: str, step: int):
        if not saved:
            raise CheckpointError(f"the {what} checkpoint of step {step} was not written (orbax skipped it)")

    def _save(self, manager, what: str, step: int, tree, **items):
        """Save ``tree`` (and the other ``items``' args) as ``manager``'s step ``step``; waited for
        when orbax writes it from the arrays' memory (CPU devices). A failed write (a full disk)
        is a :class:`CheckpointError`; orbax commits a step only once it is complete, so the
        previous checkpoints stay the ones that load."""
        try:
            saved = manager.save(step, args=ocp.args.Composite(**items))
        except Exception as e:  # noqa: BLE001 -- orbax raises what the filesystem raised
            raise self._not_written(e, f"the {what} checkpoint of step {step}") from None
        self._check(saved, what, step)
        if _on_cpu(tree):
            self.wait()

    def _not_written(self, error: Exception, what: str) -> CheckpointError:
        why = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
        return CheckpointError(f"{what} in {self.workdir} could not be written ({why}); the last complete "
                               "checkpoint is kept")

    def save_latest(self, step: int, state, meta: dict):
        state = _savable(state)
        self._save(self.latest, "latest", step, state, state=ocp.args.PyTreeSave(state), meta=ocp.args.JsonSave(meta))

    def save_best(self, step: int, params):
        params = _savable(params)
        self._save(self.best, "best", step, params, params=ocp.args.StandardSave(params))

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
            params = _savable(params)
            self._save(self.stages, "stage", step, params, params=ocp.args.StandardSave(params))

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
        """Wait for the saves in flight (a Ctrl-C meanwhile takes effect once they are complete); a
        failed one is a :class:`CheckpointError`."""
        with _ctrl_c_deferred():
            for manager in self._managers:
                try:
                    manager.wait_until_finished()
                except Exception as e:  # noqa: BLE001 -- orbax raises what the filesystem raised
                    raise self._not_written(e, "a checkpoint") from None

    def close(self):
        """Wait for the saves in flight, then release orbax's threads (also after a failed save)."""
        try:
            self.wait()
        finally:
            for manager in self._managers:
                with contextlib.suppress(Exception):  # a failed save is reported by wait
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
