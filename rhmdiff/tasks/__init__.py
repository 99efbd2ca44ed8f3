"""One module per ``config.task``, loaded lazily by name (as big_vision picks its modules).

Every task module defines

* ``validate(config)``: raise ``ConfigError`` (exit 2) or ``DataError`` (exit 1) with a
  one-line message for the first bad field or input, before anything is written;
* ``MUTABLE``: the config fields (dotted, without ``config.``) that only change the
  evaluation: they may differ when a finished run is resumed (its evaluation is re-run);
* ``run(config, workdir)``: the experiment, writing into the claimed ``workdir`` (an
  ``epath.Path``); returns its results dict.

Adding an experiment = one config file in ``configs/`` + one module here whose name is the
config's ``task``.
"""
from __future__ import annotations

import importlib
import pkgutil

from rhmdiff.config_check import ConfigError


def names() -> list[str]:
    """The tasks there are: the modules of this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load(name):
    """The module of task ``name`` (``ConfigError`` naming ``config.task`` if there is none)."""
    if not isinstance(name, str) or name not in names():
        raise ConfigError("task", f"must be one of {names()}, got {name!r}")
    return importlib.import_module(f"{__name__}.{name}")
