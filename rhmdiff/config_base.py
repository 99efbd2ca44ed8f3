"""What every experiment config shares; the experiments themselves are the files in ``configs/``.

A config file defines ``get_config(preset)`` returning an ``ml_collections.ConfigDict`` that
starts from :func:`base_config` and sets every hyperparameter of its experiment in the file
itself (files of the same experiment family start from a sibling file, loaded with
:func:`sibling_config`).
"""
import importlib.util
import os

import ml_collections


def sibling_config(this_file: str, name: str):
    """The config module ``name`` (e.g. ``"rhm_L3"``) next to ``this_file`` (config files are
    loaded by path, not imported, so one that builds on another loads it with this)."""
    path = os.path.join(os.path.dirname(os.path.abspath(this_file)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def base_config(task: str, seed: int = 0) -> ml_collections.ConfigDict:
    """``task`` and ``seed``, and the run-control fields, which steer one invocation and are
    not part of the experiment (not compared on resume):

    * ``overwrite``: clear a workdir that holds a run with another config (only what rhmdiff
      wrote there; see :mod:`rhmdiff.workdir`);
    * ``restart``: when checkpoints exist but none of them loads, start training over (clearing
      ``checkpoints/``, ``best/`` and ``stages/``) instead of stopping;
    * ``distributed``: call ``jax.distributed.initialize()`` (TPU pods and SLURM are detected);
    * ``coordinator_timeout``: seconds to wait for the other processes to join.
    """
    c = ml_collections.ConfigDict()
    c.task = task
    c.seed = seed
    c.overwrite = False
    c.restart = False
    c.distributed = False
    c.coordinator_timeout = 300
    return c


def check_preset(preset: str, presets) -> None:
    if preset not in presets:
        raise ValueError(f"preset must be one of {list(presets)}, got {preset!r}")
