"""Data streams, and the input paths they read: local paths or object-store URLs (``gs://``),
through ``etils.epath``."""
from __future__ import annotations

import glob
import os

from etils import epath

from rhmdiff.files import as_path, filesystem_missing, is_remote


class DataError(ValueError):
    """The corpus, tokenizer, images or token files cannot give what the config asks for."""


def input_path(path: str, field: str, hint: str = "") -> epath.Path:
    """The input ``path`` (local, or an object store's URL) as an ``epath.Path``; DataError naming
    ``field`` when it does not exist (``hint`` added) or its filesystem library is not installed."""
    missing = filesystem_missing(path) if path else None
    if missing:
        raise DataError(f"{field}: {missing}")
    if not path or not as_path(path).exists():
        raise DataError(f"{field}: {path!r} does not exist{hint}")
    return as_path(path)


def files_under(root: epath.Path) -> list[epath.Path]:
    """Every file below the folder ``root``, in path order, hidden ones (a name starting with
    ``.`` on the way) left out, as ``glob.glob(root/**/*, recursive=True)`` finds them."""
    if not is_remote(root):
        return [epath.Path(f) for f in sorted(glob.glob(os.path.join(os.fspath(root), "**", "*"), recursive=True))
                if os.path.isfile(f)]
    out = [folder / name for folder, _, names in root.walk() for name in names]
    top = len(os.fspath(root).rstrip("/")) + 1
    return sorted((f for f in out if not any(part.startswith(".") for part in os.fspath(f)[top:].split("/"))),
                  key=os.fspath)
