"""One module per ``config.task``, loaded lazily by name (as big_vision picks its modules).

Every task module defines

* ``validate(config)``: raise ``ConfigError`` (exit 2) or ``DataError`` (exit 1) with a
  one-line message for the first bad field or input, before anything is written;
* ``MUTABLE``: the config fields (dotted, without ``config.``) that only change the
  evaluation: they may differ when a finished run is resumed (its evaluation is re-run);
* ``OUTPUTS``: the names (``fnmatch`` patterns) of everything the task writes into its
  workdir; ``config.overwrite`` deletes exactly these (and the sub-runs it started, which
  declare their own), nothing else;
* ``run(config, workdir)``: the experiment, writing into the claimed ``workdir`` (an
  ``epath.Path``); it ends with :func:`finish` and returns its results dict.

Adding an experiment = one config file in ``configs/`` + one module here whose name is the
config's ``task``.
"""
from __future__ import annotations

import fnmatch
import importlib
import pkgutil
from typing import Callable

from rhmdiff.config_check import ConfigError


def names() -> list[str]:
    """The tasks there are: the modules of this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load(name):
    """The module of task ``name`` (``ConfigError`` naming ``config.task`` if there is none)."""
    if not isinstance(name, str) or name not in names():
        raise ConfigError("task", f"must be one of {names()}, got {name!r}")
    return importlib.import_module(f"{__name__}.{name}")


def outputs(name) -> tuple[str, ...]:
    """The ``OUTPUTS`` of task ``name``; none for a name that is not a task (any more)."""
    return tuple(load(name).OUTPUTS) if name in names() else ()


def declares(task: str, filename: str) -> bool:
    return any(fnmatch.fnmatchcase(filename, pattern) for pattern in outputs(task))


def finish(config, workdir, results: dict, filename: str = "results.json", plot: Callable | None = None,
           summary: str = "") -> dict:
    """End a task: ``results`` with their provenance (config and versions) written to
    ``workdir/filename`` by process 0, the figure ``plot(results, png)`` next to it (its name
    recorded as ``results["figure"]``, so ``python -m rhmdiff.analysis.figures`` can re-plot
    it), and ``summary`` printed with the path of the results. Returns the results as written."""
    import jax

    from rhmdiff.files import write_json
    from rhmdiff.workdir import provenance
    png = filename.rsplit(".", 1)[0] + ".png"
    for name in (filename, png) if plot else (filename,):
        if not declares(config.task, name):
            raise RuntimeError(f"task {config.task!r} writes {name} without declaring it in its OUTPUTS")
    results = {**results, **({"figure": plot.__name__} if plot else {}), **provenance(config)}
    if jax.process_index() == 0:
        write_json(workdir / filename, results)
        if plot:
            plot(results, workdir / png)
        print("\n".join(line for line in (summary, f"results: {workdir / filename}"
                                           + (f" (figure {png})" if plot else "")) if line))
    return results
