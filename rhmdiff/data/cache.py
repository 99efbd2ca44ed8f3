"""Caches of prepared data (token files, converted images), keyed on their inputs' contents.

A cache directory is named after a hash of everything that determines its contents: the
format version, the settings, and a *signature* of every input file (its relative path, size
and modification time -- or, for small files such as a tokenizer, its bytes). Input files may
be local or on an object store (``gs://``, read through ``etils.epath``); caches are local. A corpus that
grows in place, a tokenizer regenerated at the same path or another image size therefore
gets a new cache instead of a stale one. Caches live in ``data.cache_dir`` (default: the
run's ``workdir/cache`` on a local disk, ``~/.cache/rhmdiff`` on each host when the workdir
is an object store, since token files are memory-mapped); ``--config.overwrite`` never
deletes them.
"""
from __future__ import annotations

import hashlib
import json
import os

import jax
from jax.experimental import multihost_utils

from rhmdiff.files import as_path, is_remote
from rhmdiff.workdir import CACHE

SMALL_FILE = 1 << 20  # files up to this size are hashed by content


def file_signature(paths, root="") -> list:
    """``[relative path, size, mtime_ns (or sha256 for small files)]`` of every file (local or
    ``gs://``: paths as strings or ``epath.Path``; an object store gives modification times in
    whole seconds)."""
    out = []
    for p in sorted(os.fspath(p) for p in paths):
        rel = _relative(p, os.fspath(root)) if root else os.path.basename(p)
        if is_remote(p):
            st = as_path(p).stat()
            size, mtime = st.length, st.mtime * 10**9
        else:
            st = os.stat(p)
            size, mtime = st.st_size, st.st_mtime_ns
        if size <= SMALL_FILE:
            out.append([rel, size, hashlib.sha256(as_path(p).read_bytes()).hexdigest()])
        else:
            out.append([rel, size, mtime])
    return out


def _relative(path: str, root: str) -> str:
    """``path`` relative to the folder ``root`` (local paths or URLs)."""
    if is_remote(path):
        return path[len(root.rstrip("/")) + 1:] if path.startswith(root.rstrip("/") + "/") else os.path.basename(path)
    return os.path.relpath(path, root)


def content_key(*parts) -> str:
    """A 16-hex-digit hash of JSON-able ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def cache_root(config, workdir) -> str:
    """The directory that holds the prepared-data caches of a run (see module docstring)."""
    if config.data.cache_dir:
        return os.path.abspath(os.path.expanduser(config.data.cache_dir))
    if is_remote(workdir):
        return os.path.join(os.path.expanduser("~"), ".cache", "rhmdiff")
    return os.fspath(as_path(workdir) / CACHE)


def prepare_once(prepare, ready: str) -> None:
    """Run ``prepare()`` (which must create the file ``ready`` atomically, and do nothing if it
    exists) on process 0; after a barrier, every process that does not see ``ready`` -- a
    cache on a host's own disk -- prepares its own copy, then all meet again."""
    if jax.process_index() == 0:
        prepare()
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("rhmdiff data prepared on process 0")
        if not os.path.exists(ready):
            prepare()
        multihost_utils.sync_global_devices("rhmdiff data prepared everywhere")
