"""What every experiment config shares; the experiments themselves are the files in ``configs/``.

A config file defines ``get_config(preset)`` returning an ``ml_collections.ConfigDict`` that
starts from :func:`base_config` and sets every hyperparameter of its experiment in the file
itself (files of the same experiment family start from a sibling file, loaded with
:func:`sibling_config`). The sections that several tasks read have their whole schema here,
each field with its default: ``config.train`` (:func:`train_config`, everything
:func:`rhmdiff.train.fit` reads) and ``config.rhm`` (:func:`grammar_config`). The checks of
their values are in :mod:`rhmdiff.config_check`.
"""
import importlib.util
import os

import ml_collections

# config.train: every field rhmdiff.train.fit reads, with its default.
TRAIN_DEFAULTS = dict(
    optimizer="sgd",        # "sgd" (SGD + momentum at lr x the model's muP factor), "adam", "adamw"
    lr=0.1,                 # learning rate (sgd: in muP units, lr 1 = the paper's "lr 1")
    momentum=0.9,           # sgd's heavy-ball momentum (0: none)
    b2=0.999,               # adam / adamw second-moment decay
    weight_decay=0.0,       # adamw's decoupled weight decay
    grad_clip=0.0,          # clip the global gradient norm to this (0: off)
    lr_schedule="constant",  # "constant" or "cosine" (decay to 0 at lr_decay_steps)
    warmup_steps=0,         # linear warmup from 0
    lr_decay_steps=0,       # horizon of the cosine decay (0: num_steps)
    batch_size=32,          # global batch, split over every device of every process
    num_steps=10_000,       # training steps (tasks with data epochs: -1 = derived from the data)
    steps_per_call=100,     # steps per compiled call (one lax.scan); 1: no loop
    eval_every=1000,        # validation (early stopping, best parameters, a checkpoint) every this many steps
    patience=10,            # stop after this many validations without improvement
    checkpoint_every=0,     # also a checkpoint every this many steps (0: at validations only)
    log_every=0,            # also log the training metrics every this many steps (0: at validations only)
    max_nonfinite=100,      # stop after this many steps in a row with a non-finite loss or gradient
    keep_steps=(),          # steps whose (EMA) parameters are kept for good in workdir/stages
    ema_decay=0.0,          # exponential moving average of the parameters (0: off); evaluated instead
    ema_debias=True,        # EMA from zero, bias-corrected (False: from the initial weights, as MD4)
    check_replicas=False,   # debug: assert identical parameters on every process at each validation
)

# config.rhm: the grammar (paper Sec. 2.2).
GRAMMAR_DEFAULTS = dict(
    v=8, m=3, s=2, L=3,  # vocabulary per level, productions per symbol, branching, depth
    seed=0,              # the grammar's draw (rhmdiff.rhm.make_grammar)
    rules_file="",       # or a .npy of rules int[L, v, m, s] (rhmdiff.rhm.load_rules); v, m, s, L must match
)


def _section(defaults: dict, name: str, fields: dict) -> ml_collections.ConfigDict:
    unknown = sorted(set(fields) - set(defaults))
    if unknown:
        raise ValueError(f"config.{name} has no field {unknown[0]!r} (fields: {', '.join(defaults)})")
    return ml_collections.ConfigDict({**defaults, **fields})


def train_config(**fields) -> ml_collections.ConfigDict:
    """``config.train``: :data:`TRAIN_DEFAULTS` with ``fields`` set (a task may add its own
    fields afterwards, e.g. MD4's ``keep_tokens``)."""
    return _section(TRAIN_DEFAULTS, "train", fields)


def grammar_config(**fields) -> ml_collections.ConfigDict:
    """``config.rhm``: :data:`GRAMMAR_DEFAULTS` with ``fields`` set."""
    return _section(GRAMMAR_DEFAULTS, "rhm", fields)


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
