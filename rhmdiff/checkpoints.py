"""orbax checkpoints of a training run: the latest train states (with the trainer's JSON
record), the best parameters and the parameters kept at chosen steps, with integrity checks.

Every save is checked (orbax may skip one silently); checkpoints that do not load are moved
to ``unreadable_checkpoints/`` and the next older one is used; the best parameters are
restored at the recorded best step or not at all (:class:`CheckpointError`, one line).
"""
from __future__ import annotations

import datetime
import json

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


def barrier(name: str) -> None:
    """Wait for every process (nothing to wait for with one)."""
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
        barrier(f"rhmdiff moved checkpoint {step} aside")
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
            state=ocp.args.StandardSave(to_host(state)), meta=ocp.args.JsonSave(meta))), "latest", step)

    def save_best(self, step: int, params):
        self._check(self.best.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(to_host(params)))),
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
                params=ocp.args.StandardSave(to_host(params)))), "stage", step)

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
