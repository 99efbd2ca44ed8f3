"""The run directory: claimed by one run at a time, recognised as rhmdiff's, cleared safely.

A run *claims* its workdir (:func:`claim`) only after every input has been checked:

* the directory must be new, empty, or carry the marker file ``.rhmdiff`` that rhmdiff writes
  when it claims a directory (a directory made by an earlier version of rhmdiff -- a
  ``config.json`` and only files rhmdiff writes -- is adopted and marked);
* ``config.json`` records the experiment's config (under ``"inputs"``, the content hashes of
  the input files it names, :func:`input_hashes`; under ``"versions"``,
  the code and library versions); a rerun with the same config resumes, one whose fields differ only in
  the task's evaluation settings (``MUTABLE`` of the task module) re-runs the evaluation on
  the trained model, and any other difference is refused unless ``config.overwrite`` -- or
  unless the earlier attempt stopped before writing anything but its config (a data error
  found after the claim, say), whose config is then simply replaced;
* overwrite deletes only what rhmdiff creates: ``config.json``, the marker and the
  ``OUTPUTS`` that the stored run's task declares (:mod:`rhmdiff.tasks`; sub-runs such as a
  sweep's points recursively, each by its own task's), never caches (``cache/``) or files it
  does not know, and never the current directory, one of its ancestors or the home directory;
* a lock (``.rhmdiff.lock``, ``flock`` on a local disk) refuses a second run in the same
  directory while the first is alive; the lock dies with its process.

:func:`preview` (what ``--check`` runs) makes the same checks without writing a file or taking
the lock, and says what the run would do: start, resume, evaluate again, start over, or refuse
with the line the run would give.

Every refusal is a :class:`WorkdirError` whose message is one line naming the path or field.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import sys

from absl import logging
from etils import epath

from rhmdiff import __version__
from rhmdiff.files import as_path, filesystem_missing, is_remote, read_json, write_json

MARKER = ".rhmdiff"
LOCK = ".rhmdiff.lock"
CONFIG = "config.json"
CACHE = "cache"
# Top-level fields that steer one invocation, not the experiment: not compared on resume.
RUN_CONTROL = ("overwrite", "distributed", "restart", "coordinator_timeout")
LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "ml-collections")


class WorkdirError(Exception):
    """The workdir cannot be used as asked; the message is one line naming the path or field."""


def _stored_task(path: epath.Path) -> str | None:
    """The task of the run stored in ``path`` (None when its config is missing or unreadable)."""
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return read_json(path / CONFIG).get("task")
    return None


def _written_by_rhmdiff(name: str, task: str | None) -> bool:
    """Whether ``name`` in a workdir of ``task`` is rhmdiff's (its config, marker or a declared output)."""
    from rhmdiff import tasks
    return name in (CONFIG, MARKER) or (task is not None and tasks.declares(task, name))


def versions() -> dict:
    """rhmdiff's version (and git commit when run from a checkout), Python's and the libraries'."""
    out = {"rhmdiff": __version__, "python": platform.python_version()}
    head = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".git", "HEAD")
    with contextlib.suppress(OSError):
        ref = open(head).read().strip()
        if ref.startswith("ref: "):
            ref = open(os.path.join(os.path.dirname(head), ref[5:])).read().strip()
        out["git"] = ref
    for lib in LIBRARIES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[lib] = importlib.metadata.version(lib)
    return out


# Config fields that name an input file whose contents define the experiment (not a cache).
INPUT_FILES = ("rhm.rules_file",)


def input_hashes(config) -> dict:
    """``{section: {name: sha256 of the file}}`` for the :data:`INPUT_FILES` that ``config`` sets."""
    out = {}
    for field in INPUT_FILES:
        section, name = field.split(".")
        path = config[section][name] if section in config and name in config[section] else ""
        if path:
            out.setdefault(section, {})[name] = hashlib.sha256(as_path(path).read_bytes()).hexdigest()
    return out


def experiment(config) -> dict:
    """The config as stored in ``config.json`` (JSON types, run-control fields left out), with
    the content hashes of the input files it names under ``"inputs"`` (:func:`input_hashes`),
    so that a rerun with an edited file is a different experiment."""
    out = json.loads(json.dumps(config.to_dict()))
    for key in RUN_CONTROL:
        out.pop(key, None)
    inputs = input_hashes(config)
    return {**out, "inputs": inputs} if inputs else out


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted names (without ``config.``) of the fields that differ, depth first."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<missing>"), new.get(k, "<missing>")
        name = f"{prefix}{k}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, name + ".")
        elif a != b:
            out.append(name)
    return out


def _lookup(tree: dict, name: str):
    for part in name.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return "<missing>"
        tree = tree[part]
    return tree


def _is_mutable(name: str, mutable) -> bool:
    return any(name == m or name.startswith(m + ".") for m in mutable)


def _protected(path: epath.Path) -> str | None:
    """Why overwrite must never clear ``path`` (None if it may)."""
    if is_remote(path):
        return None
    real = os.path.realpath(os.fspath(path))
    cwd, home = os.path.realpath(os.getcwd()), os.path.realpath(os.path.expanduser("~"))
    if real == os.path.dirname(real):
        return "it is the filesystem root"
    if real == home:
        return "it is the home directory"
    if cwd == real or cwd.startswith(real.rstrip(os.sep) + os.sep):
        return "it is the current directory or one of its ancestors"
    return None


def clear_outputs(path: epath.Path, tasks=()) -> list[str]:
    """Delete what rhmdiff wrote in ``path``: its config, marker and the outputs declared by the
    stored run's task and by ``tasks`` (recursing into marked sub-runs); returns the names of the
    entries it left (caches and files it does not know)."""
    kept, owners = [], {_stored_task(path), *tasks}
    for child in sorted(path.iterdir(), key=lambda p: p.name):
        if child.name == LOCK:
            continue
        if any(_written_by_rhmdiff(child.name, task) for task in owners) and child.name != MARKER:
            child.rmtree() if child.is_dir() else child.unlink()
        elif child.is_dir() and (child / MARKER).exists():
            if clear_outputs(child):
                kept.append(child.name)
            else:
                (child / MARKER).unlink()
                with contextlib.suppress(OSError):
                    child.rmdir()
        else:
            kept.append(child.name)
    return kept


def _held(path: epath.Path, holder: str) -> WorkdirError:
    return WorkdirError(f"--workdir {path}: another rhmdiff run is using it ({holder}); wait for it to finish "
                        "or use another --workdir")


class _Lock:
    """``flock`` on ``workdir/.rhmdiff.lock`` (local disks; object stores have no locks)."""

    def __init__(self, path: epath.Path):
        self.path, self.fd = path / LOCK, None

    def acquire(self):
        if is_remote(self.path):
            logging.warning("%s is on an object store: no lock against a second run in the same workdir",
                            self.path.parent)
            return
        import fcntl
        fd = os.open(os.fspath(self.path), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise _held(self.path.parent, holder) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        self.fd = fd

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def refuse_if_held(self) -> None:
        """The WorkdirError of :meth:`acquire` when another process holds the lock, checked
        without taking it: Linux lists the held locks in ``/proc/locks``; elsewhere a shared
        lock is tried and released at once."""
        if is_remote(self.path) or not self.path.exists():
            return
        path = os.fspath(self.path)
        st = os.stat(path)
        try:
            with open("/proc/locks") as f:
                held = f" {os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino} " in f.read()
        except OSError:
            import fcntl
            fd = os.open(path, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                held = False
            except OSError:
                held = True
            finally:
                os.close(fd)
        if held:
            with open(path, errors="replace") as f:
                raise _held(self.path.parent, f.read(200).strip() or "another process")


def _check_directory(path: epath.Path, create: bool = True) -> None:
    """Create ``path`` if needed (``create=False``: only check that it could be created); one-line
    errors for a filesystem that is not installed, a file, or a directory we cannot write."""
    missing = filesystem_missing(path)
    if missing:
        raise WorkdirError(f"--workdir {path}: {missing}")
    try:
        if path.exists() and not path.is_dir():
            raise WorkdirError(f"--workdir {path}: is a file, not a directory")
        if create:
            path.mkdir(parents=True, exist_ok=True)
        elif not is_remote(path) and not path.exists():
            _check_creatable(path)
            return
        if not is_remote(path) and not os.access(os.fspath(path), os.W_OK | os.X_OK):
            raise WorkdirError(f"--workdir {path}: not writable")
    except OSError as e:
        raise WorkdirError(f"--workdir {path}: cannot be created ({e.strerror or e})") from None


def _check_creatable(path: epath.Path) -> None:
    """The OSError that creating the missing local directory ``path`` would raise, found without
    creating it: its nearest existing ancestor must be a directory we can write."""
    ancestor = os.fspath(path)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))


def _stored_config(path: epath.Path) -> dict | None:
    """The stored experiment config, None if there is none; WorkdirError if it is unreadable."""
    cfg = path / CONFIG
    if not cfg.exists():
        return None
    try:
        stored = read_json(cfg)
        if not isinstance(stored, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        raise WorkdirError(f"--workdir {path}: {CONFIG} is unreadable ({str(e).splitlines()[0][:80]}); "
                           "--config.overwrite=True starts the run over") from None
    stored.pop("versions", None)
    return stored


class Claim:
    """A claimed workdir: the lock is held until :meth:`release` (or the end of a ``with``)."""

    def __init__(self, path: epath.Path, lock: _Lock | None, changed: list[str]):
        self.path, self._lock, self.changed = path, lock, changed

    def release(self):
        if self._lock is not None:
            self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def claim(config, workdir, mutable=(), lock: bool = True) -> Claim:
    """Claim ``workdir`` for a run of ``config`` (see the module docstring); returns a
    :class:`Claim` whose ``changed`` lists the evaluation fields that differ from the stored
    run. Call it on one process only."""
    path = as_path(workdir)
    _check_directory(path)
    holder = _Lock(path)
    if lock:  # first: the files of a run that holds the lock and is writing them are not foreign
        holder.refuse_if_held()
    _check_ours(path)
    if lock:
        holder.acquire()
    try:
        changed = _apply(_plan(config, path, mutable), config, path)
    except BaseException:
        holder.release()
        raise
    return Claim(path, holder, changed)


def preview(config, workdir, mutable=()) -> str:
    """What :func:`claim` and the run would do with ``workdir``, found without writing anything or
    taking the lock (``--check``): e.g. ``"start a new run in DIR"``, ``"resume the run in DIR from
    its checkpoint of step 100"``. Raises the :class:`WorkdirError` that :func:`claim` would raise;
    an object store whose filesystem library is not installed here is named, not checked."""
    path = as_path(workdir)
    missing = filesystem_missing(path)
    if missing:  # e.g. a launcher checking on a laptop a bucket that the job's machines write
        return f"use {path}, which is not checked here: {missing}"
    _check_directory(path, create=False)
    if not path.exists():
        return f"start a new run in {path}"
    _check_ours(path)
    _Lock(path).refuse_if_held()
    return _plan(config, path, mutable).describe(path)


def _check_ours(path: epath.Path) -> None:
    """WorkdirError unless ``path`` is empty, marked as rhmdiff's, or an unmarked run of an
    earlier rhmdiff (its ``config.json`` and only files rhmdiff writes)."""
    names = {p.name for p in path.iterdir()} - {LOCK}
    if names and MARKER not in names:
        task = _stored_task(path)
        if CONFIG not in names or not all(_written_by_rhmdiff(n, task) or n == CACHE for n in names):
            raise WorkdirError(f"--workdir {path}: holds files that rhmdiff did not create (no {MARKER} marker); "
                               "use a new or empty directory")
        logging.info("%s: a run made before the workdir marker; adopting it", path)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What claiming a workdir does with the run stored there: nothing stored (``fresh``), its
    outputs deleted because ``config.<cleared>`` changed and ``config.overwrite`` is set, or
    continued with the evaluation fields ``changed``."""
    fresh: bool
    cleared: str | None = None
    changed: tuple[str, ...] = ()

    def describe(self, path: epath.Path) -> str:
        if self.fresh:
            return f"start a new run in {path}"
        if self.cleared:
            return f"delete the outputs of the run in {path} (config.{self.cleared} changed) and start over"
        changed = f" with the changed evaluation settings {', '.join(f'config.{c}' for c in self.changed)}" if (
            self.changed) else ""
        state = path / "train_state.json"
        with contextlib.suppress(ValueError, OSError, AttributeError):
            record = read_json(state) if state.exists() else {}
            if record.get("done"):
                return f"evaluate the run in {path} again{changed} (its training finished at step {record['steps']})"
        steps = [int(p.name) for p in (path / "checkpoints").iterdir() if p.name.isdigit()] if (
            path / "checkpoints").is_dir() else []
        if steps:
            return f"resume the run in {path} from its checkpoint of step {max(steps)}{changed}"
        return f"continue the run in {path}{changed} (it has no training checkpoint)"


def _plan(config, path: epath.Path, mutable) -> _Plan:
    """The :class:`_Plan` of a run of ``config`` in ``path``, read-only; the WorkdirError of a
    stored run with another config (unless ``config.overwrite``), an unreadable ``config.json``
    or a protected directory."""
    names = {p.name for p in path.iterdir()} - {LOCK}
    current = experiment(config)
    overwrite = config.overwrite
    try:
        stored = _stored_config(path)
    except WorkdirError:
        if not overwrite:
            raise
        stored = {"<unreadable>": True}
    if stored is None or not (names - {CONFIG, MARKER, CACHE}):
        return _Plan(fresh=True)  # (or an earlier attempt that stopped before producing anything, e.g. a bad input)
    diff = differences(stored, current)
    fixed = [d for d in diff if not _is_mutable(d, mutable)]
    if fixed and not overwrite:
        first = fixed[0]
        what = f"config.{first}"
        if first.startswith("inputs."):  # an input file's content hash
            what = f"the contents of config.{first[len('inputs.'):]}"
        raise WorkdirError(
            f"--workdir {path}: holds a run with a different config ({what}: "
            f"{_lookup(stored, first)!r} -> {_lookup(current, first)!r}); use another --workdir or "
            "--config.overwrite=True")
    if fixed:
        why = _protected(path)
        if why:
            raise WorkdirError(f"config.overwrite: refusing to clear {path}: {why}")
        return _Plan(fresh=False, cleared=fixed[0])
    return _Plan(fresh=False, changed=tuple(diff))


def _apply(plan: _Plan, config, path: epath.Path) -> list[str]:
    """Carry out ``plan`` (clear the previous run, if so) and record the run of ``config``; the
    evaluation fields that changed."""
    current = experiment(config)
    if plan.cleared:
        kept = clear_outputs(path, (config.task,))
        logging.warning("overwrite: deleted the previous run in %s (config.%s changed)%s", path, plan.cleared,
                        f"; kept {kept}" if kept else "")
    elif plan.changed:
        logging.info("evaluation settings changed (%s): the trained model is kept, its evaluation re-run",
                     ", ".join(f"config.{d}" for d in plan.changed))
    _check_versions(path)
    write_json(path / CONFIG, dict(current, versions=versions()))
    if not (path / MARKER).exists():
        write_json(path / MARKER, {"created": datetime.datetime.now().isoformat(timespec="seconds"),
                                   "task": current.get("task"), "argv": sys.argv})
    return list(plan.changed)


def claim_all(config, workdir, mutable=(), lock: bool = True) -> Claim:
    """:func:`claim` on process 0, agreed by every process: all raise :class:`WorkdirError`
    when process 0 refused (process 0 with the reason). Returns the claim on process 0."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    held, error = None, None
    if jax.process_index() == 0:
        try:
            held = claim(config, workdir, mutable, lock)
        except WorkdirError as e:
            error = e
    if jax.process_count() > 1:
        refused = int(multihost_utils.broadcast_one_to_all(np.int32(error is not None)))
        if refused and error is None:
            raise WorkdirError(f"--workdir {workdir}: refused by process 0 (its log says why)")
    if error is not None:
        raise error
    return held or Claim(as_path(workdir), None, [])


def provenance(config) -> dict:
    """The ``config`` (as stored in ``config.json``) and ``versions`` entries of a results file."""
    return {"config": experiment(config), "versions": versions()}


def _check_versions(path: epath.Path) -> None:
    """Warn when the run in ``path`` was made with other code or libraries."""
    cfg = path / CONFIG
    if not cfg.exists():
        return
    with contextlib.suppress(ValueError, OSError):
        old = read_json(cfg).get("versions") or {}
        new = versions()
        diff = [f"{k} {old[k]} -> {new.get(k)}" for k in sorted(old) if old[k] != new.get(k)]
        if diff:
            logging.warning("%s was made with other code or libraries (%s): a resume continues with this code",
                            path, "; ".join(diff))
