"""Runs on disk, for the tasks that analyse other runs: find them, read their stored config,
restore their best parameters."""
from __future__ import annotations

import jax
import ml_collections
from absl import logging

from rhmdiff import checkpoints, from_config
from rhmdiff._util import natural_order
from rhmdiff.files import as_path, read_json
from rhmdiff.models import unet
from rhmdiff.workdir import CONFIG, WorkdirError


def matching(patterns, filename: str) -> list:
    """The directories matched by the glob ``patterns`` (local or ``gs://``) that hold
    ``filename``, in natural order (P128 before P1024)."""
    found = set()
    for pattern in patterns:
        parts = pattern.rstrip("/").split("/")
        first = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts))
        root = as_path("/".join(parts[:first]) or ".")
        rest = "/".join(parts[first:] + [filename])
        found.update(p.parent for p in root.glob(rest))
    return sorted(found, key=lambda p: natural_order(str(p)))


def stored_config(run_dir, field: str, task: str | tuple[str, ...]) -> ml_collections.ConfigDict:
    """The config that a run of ``task`` stored in ``run_dir/config.json``; ``WorkdirError``
    naming ``field`` if ``run_dir`` holds no such run."""
    tasks = (task,) if isinstance(task, str) else task
    path = as_path(run_dir) / CONFIG
    if not path.exists():
        raise WorkdirError(f"{field}: {run_dir} holds no {CONFIG} of a {' or '.join(tasks)} run")
    stored = read_json(path)
    stored.pop("versions", None)
    stored.pop("inputs", None)
    if stored.get("task") not in tasks:
        raise WorkdirError(f"{field}: {run_dir} is a run of task {stored.get('task')!r}, "
                           f"not {' or '.join(repr(t) for t in tasks)}")
    return ml_collections.ConfigDict(stored)


def trained_rhm_runs(patterns, field: str) -> list:
    """``[(run_dir, results)]`` of the finished offline ``rhm`` runs matched by ``patterns``
    (online runs, which have no P, are skipped with a warning); ``FileNotFoundError`` naming
    ``field`` if there is none."""
    runs = []
    for run_dir in matching(patterns, "results.json"):
        if not (run_dir / "best").is_dir():
            continue
        results = read_json(run_dir / "results.json")
        if results.get("task") != "rhm":
            continue
        if results.get("train_size") is None:
            logging.warning("%s: an online run has no training-set size P; skipped", run_dir)
            continue
        runs.append((run_dir, results))
    if not runs:
        raise FileNotFoundError(f"{field}: no finished offline rhm run (results.json and best/) in {list(patterns)}")
    return runs


def rhm_config(results: dict) -> ml_collections.ConfigDict:
    """The config of an ``rhm`` run from its ``results.json`` (without the input hashes)."""
    return ml_collections.ConfigDict({k: v for k, v in results["config"].items() if k != "inputs"})


def restore_rhm(run_dir, results: dict):
    """``(config, g, model, params)`` of the ``rhm`` run in ``run_dir``: its best parameters."""
    stored = rhm_config(results)
    try:
        g = from_config.grammar(stored)
    except ValueError as e:  # a rules file that is gone or changed since
        raise FileNotFoundError(f"{run_dir}: {e}") from None
    model = from_config.unet_model(stored, g)
    abstract = jax.eval_shape(lambda: unet.init_params(model, jax.random.PRNGKey(0), g.d))
    return stored, g, model, checkpoints.restore_best(run_dir, abstract)
