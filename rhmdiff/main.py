"""Entry point: ``python -m rhmdiff.main --config=configs/X.py --workdir=DIR [--config.key=value]``.

The config file's ``get_config()`` gives an ml_collections ConfigDict (locked: overriding
a key that does not exist is an error); ``config.task`` picks the job. Bad values end the
run before any compute with one line on stderr naming the field.
"""
import json
import logging as std_logging
import os
import shutil
import signal
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from rhmdiff import ddpm_task, evaluate, md4_task
from rhmdiff._util import write_json
from rhmdiff.train import Preempted
from rhmdiff.analysis import clustering_sweep, correlation_task, onestep, sensitivity_task, sweeps
from rhmdiff.analysis import text as text_analysis
from rhmdiff.config_check import ConfigError, validate
from rhmdiff.data import DataError

TASKS = {"oracle": evaluate.run_oracle, "rhm": evaluate.run_rhm, "clustering_sweep": clustering_sweep.run,
         "sweep": sweeps.run, "onestep": onestep.run, "correlations": correlation_task.run, "md4": md4_task.run,
         "text_analysis": text_analysis.run, "ddpm": ddpm_task.run, "sensitivity": sensitivity_task.run}

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.mark_flags_as_required(["config", "workdir"])


def _parse_flags(argv):
    """absl flag parsing, with any error (unknown config key, wrong type) as one line."""
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # noqa: BLE001 -- every parse error becomes a one-line message
        what = f"unknown config key {e}" if isinstance(e, (AttributeError, KeyError)) else str(e)
        print(f"rhmdiff: error: {what}".splitlines()[0], file=sys.stderr)
        sys.exit(2)


def initialize_distributed(config) -> None:
    """``jax.distributed.initialize()`` for multi-process runs: explicitly from
    ``JAX_COORDINATOR_ADDRESS`` + ``RHMDIFF_NUM_PROCESSES`` + ``RHMDIFF_PROCESS_ID`` (as
    ``launch/local_multiprocess.sh`` sets them), or by JAX's cluster auto-detection (Cloud TPU
    pods, SLURM, ...) when ``config.distributed`` is set or SLURM runs several tasks."""
    env = os.environ
    if "RHMDIFF_NUM_PROCESSES" in env:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # cross-process CPU collectives
        jax.distributed.initialize(env["JAX_COORDINATOR_ADDRESS"], int(env["RHMDIFF_NUM_PROCESSES"]),
                                   int(env["RHMDIFF_PROCESS_ID"]))
    elif config.get("distributed", False) or int(env.get("SLURM_NTASKS", "1")) > 1:
        jax.distributed.initialize()


def _first_difference(old, new, prefix="config"):
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<missing>"), new.get(k, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_difference(a, b, f"{prefix}.{k}")
            if found:
                return found
        elif a != b:
            return f"{prefix}.{k}: {a!r} -> {b!r}"
    return None


def claim_workdir(config, workdir: str) -> None:
    """Refuse (ConfigError) a workdir that holds a run with a different config, unless
    ``config.overwrite``; then its old files are deleted. Records ``workdir/config.json``."""
    current = json.loads(json.dumps(config.to_dict()))  # tuples -> lists, as stored
    for k in ("overwrite", "distributed"):
        current.pop(k, None)
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        difference = _first_difference(stored, current)
        if difference and not config.get("overwrite", False):
            raise ConfigError("overwrite", f"workdir {workdir} holds a run with a different config "
                              f"({difference}); use another --workdir or --config.overwrite=True")
        if difference and jax.process_index() == 0:
            logging.warning("overwrite: deleting the previous run in %s (%s)", workdir, difference)
            shutil.rmtree(workdir)
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        write_json(path, current)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config, workdir = _CONFIG.value, _WORKDIR.value
    try:
        validate(config, TASKS)
        initialize_distributed(config)
        if "train" in config and config.train.batch_size % jax.device_count():
            raise ConfigError("train.batch_size", f"must be divisible by the {jax.device_count()} devices "
                              f"({jax.process_count()} processes), got {config.train.batch_size}")
        claim_workdir(config, workdir)
    except ConfigError as e:
        print(f"rhmdiff: error: {e}", file=sys.stderr)
        sys.exit(2)
    # orbax logs every checkpoint step at INFO; keep its warnings and errors only.
    logging.get_absl_handler().addFilter(
        lambda record: "orbax" not in record.pathname or record.levelno >= std_logging.WARNING)
    logging.info("task %s, workdir %s; process %d of %d, %d local / %d global devices: %s", config.task, workdir,
                 jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(), jax.devices())
    try:
        TASKS[config.task](config, workdir)
    except Preempted as e:
        print(f"rhmdiff: {e}; rerun the same command to resume", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    except (FloatingPointError, FileNotFoundError, DataError) as e:
        print(f"rhmdiff: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
