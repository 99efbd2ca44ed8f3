"""Files of a run, on a local disk or an object store (``gs://``, ``s3://``), through
``etils.epath`` -- the path layer orbax uses for the checkpoints.

* :func:`atomic_write`: on a local disk the data go to a temporary file with a unique name
  next to the target, are flushed to disk (``fsync``) and renamed over the target, so a
  reader (or a run killed halfway) never sees a half-written file and two writers never share
  a temporary file; an object store makes an object visible only once it is complete.
* :func:`write_json`: strict JSON (``NaN`` and ``Infinity`` become ``null``), which every
  JSON reader accepts.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile

import numpy as np
from etils import epath

REMOTE_PREFIXES = ("gs://", "s3://", "az://", "hf://")
# The pip extra of rhmdiff that installs the filesystem of a URL scheme.
EXTRAS = {"gs": "gcs"}
_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: the process's umask, for files written through a temporary name


def as_path(path) -> epath.Path:
    """``path`` as an ``epath.Path`` (local paths made absolute)."""
    p = epath.Path(path)
    return p if is_remote(p) else epath.Path(os.path.abspath(os.fspath(p)))


def is_remote(path) -> bool:
    """True for an object-store URL (``gs://``, ``s3://``, ...)."""
    return os.fspath(path).startswith(REMOTE_PREFIXES)


def filesystem_missing(path) -> str | None:
    """Why the object store of ``path`` cannot be reached from here -- the library that epath's
    fsspec backend needs for it is not installed -- with the command that installs it; None for
    local paths and installed filesystems (or when TensorFlow's gfile serves them instead)."""
    if not is_remote(path):
        return None
    import importlib.util
    if importlib.util.find_spec("tensorflow") is not None:
        return None
    import fsspec
    from fsspec.registry import known_implementations
    scheme = os.fspath(path).split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError as e:
        library = known_implementations.get(scheme, {}).get("class", "a library").split(".")[0]
        how = f"the {EXTRAS[scheme]} extra: pip install -e '.[{EXTRAS[scheme]}]'" if scheme in EXTRAS else (
            str(e).splitlines()[0])
        return f"{scheme}:// paths need {library}, which is not installed ({how})"
    return None


@contextlib.contextmanager
def atomic_write(path, mode: str = "w"):
    """Open ``path`` for writing; the file appears complete or not at all (see module docstring)."""
    path = as_path(path)
    if is_remote(path):
        with path.open(mode) as f:
            yield f
        return
    fd, tmp = tempfile.mkstemp(dir=os.fspath(path.parent), prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's files are private (0600); results are not
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def strict(obj):
    """``obj`` with non-finite floats replaced by None and numpy scalars/arrays by Python values."""
    if isinstance(obj, dict):
        return {str(k): strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict(obj.tolist())
    if isinstance(obj, np.generic):
        return strict(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj) -> str:
    """Strict JSON of ``obj`` (see :func:`strict`), indented."""
    return json.dumps(strict(obj), indent=2, allow_nan=False)


def write_json(path, obj) -> None:
    """Write ``obj`` as strict JSON, atomically."""
    with atomic_write(path) as f:
        f.write(dumps(obj) + "\n")


def read_json(path):
    return json.loads(as_path(path).read_text())


def write_npy(path, array) -> None:
    """Write ``array`` as ``.npy``, atomically."""
    with atomic_write(path, "wb") as f:
        np.save(f, np.asarray(array))


def read_npy(path) -> np.ndarray:
    with as_path(path).open("rb") as f:
        return np.load(f)


def save_png(path, figure_or_image) -> None:
    """Save a matplotlib figure (or an ``[H, W, 3]`` uint8 image) as PNG, atomically."""
    import matplotlib.pyplot as plt
    with atomic_write(path, "wb") as f:
        if isinstance(figure_or_image, np.ndarray):
            plt.imsave(f, figure_or_image, format="png")
        else:
            figure_or_image.savefig(f, format="png", dpi=120)
