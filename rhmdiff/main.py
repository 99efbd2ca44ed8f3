"""The command line: ``rhmdiff --config=configs/X.py[:preset] --workdir=DIR [--config.key=value ...]
[--check]`` (the console script; ``python -m rhmdiff.main`` is the same).

Parse the config file (``get_config()`` gives a locked ml_collections ConfigDict: a key
that does not exist, or a value of another type, is an error), look the task module up by
``config.task`` (:mod:`rhmdiff.tasks`), validate the config and the inputs it names, then
(multi-process runs) join the other processes and check that they run the same config, claim
the workdir (:mod:`rhmdiff.workdir`) and run the task. ``--check`` stops after the
validation and the workdir's read-only checks (:func:`rhmdiff.workdir.preview`), prints the
resolved config and what the run would do, and writes nothing.

Every refusal is one line on stderr without a traceback: exit 2 for a bad config value, flag
or workdir, 1 for unusable data and failed runs, 143 after a preemption and 130 after Ctrl-C
(rerun to resume).
"""
import hashlib
import json
import os
import re
import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/X.py[:preset]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory (local path or gs:// URL) for checkpoints, metrics "
                               "and results.")
_CHECK = flags.DEFINE_bool("check", False, "Validate the config, its inputs and the workdir, print the resolved "
                           "config and what the run would do, and exit without writing anything.")
USAGE = "--config=configs/FILE.py[:preset] --workdir=DIR [--config.key=value ...] [--check]"


def _fail(code: int, message: str):
    print(f"rhmdiff: error: {message}".splitlines()[0], file=sys.stderr)
    sys.exit(code)


def _program() -> str:
    """How this command was started: the console script or ``python -m rhmdiff.main``."""
    return "rhmdiff" if os.path.basename(sys.argv[0]) == "rhmdiff" else "python -m rhmdiff.main"


def _parse_flags(argv):
    """absl flag parsing, with any error (missing flag or config file, unknown key, wrong type) as
    one line."""
    try:
        argv = flags.FLAGS(argv)
    except Exception as e:  # noqa: BLE001 -- every parse error becomes a one-line message
        if isinstance(e, (AttributeError, KeyError)):
            _fail(2, _unknown_key(e, argv))
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        _fail(2, " ".join(lines[:1] + lines[-1:]) if len(lines) > 1 else (lines[0] if lines else type(e).__name__))
    missing = [f"--{name}" for name in ("config", "workdir") if flags.FLAGS[name].value is None]
    if missing:
        _fail(2, f"{' and '.join(missing)} missing: usage: {_program()} {USAGE}")
    return argv


def _unknown_key(error, argv) -> str:
    """The one line for an override of a key that the config does not have: the override's dotted
    path and ml_collections' suggestion (it raises ``KeyError("'lrr'\\nDid you mean \\"lr\\"
    instead of \\"lrr\\"?")``, for a nested key wrapped in an AttributeError)."""
    cause = error.args[0] if error.args and isinstance(error.args[0], BaseException) else error
    text = cause.args[0] if cause.args and isinstance(cause.args[0], str) else str(cause)
    key = text.split("\n")[0].strip("'\"")
    suggestion = re.search(r'Did you mean "([^"]+)"', text)
    looked_up = re.search(r"Attempting to lookup: (\S+)", text)
    overrides = [a[len("--config."):].split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
    path = looked_up.group(1) if looked_up else next((o for o in overrides if key in o.split(".")), key)
    hint = ""
    if suggestion:
        parts = path.split(".")
        parts[parts.index(key) if key in parts else -1] = suggestion.group(1)
        hint = f"; did you mean config.{'.'.join(parts)}?"
    return f"config.{path}: the config has no such key{hint}"


def _validate_run_control(config) -> None:
    from rhmdiff import config_check as check
    for field in ("overwrite", "distributed", "restart"):
        check.flag(config, field)
    check.integer(config, "coordinator_timeout", 1)


def initialize_distributed(config) -> None:
    """``jax.distributed.initialize()`` for multi-process runs: explicitly from
    ``JAX_COORDINATOR_ADDRESS`` + ``RHMDIFF_NUM_PROCESSES`` + ``RHMDIFF_PROCESS_ID`` (as
    ``launch/local_multiprocess.sh`` sets them), or by JAX's cluster auto-detection (Cloud TPU
    pods, SLURM, ...) when ``config.distributed`` is set or SLURM runs several tasks. Waits at
    most ``config.coordinator_timeout`` seconds for the coordinator."""
    import jax
    env = os.environ
    timeout = config.coordinator_timeout
    explicit = ("RHMDIFF_NUM_PROCESSES", "RHMDIFF_PROCESS_ID", "JAX_COORDINATOR_ADDRESS")
    if "RHMDIFF_NUM_PROCESSES" in env:
        missing = [k for k in explicit if not env.get(k)]
        if missing:
            raise RuntimeError(f"multi-process environment incomplete: {', '.join(missing)} not set")
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # cross-process CPU collectives
        jax.distributed.initialize(env["JAX_COORDINATOR_ADDRESS"], int(env["RHMDIFF_NUM_PROCESSES"]),
                                   int(env["RHMDIFF_PROCESS_ID"]), initialization_timeout=timeout)
    elif config.distributed or int(env.get("SLURM_NTASKS", "1")) > 1:
        jax.distributed.initialize(initialization_timeout=timeout)


def agree_on_config(config) -> None:
    """Every process must run the same experiment: compare a hash of the config across them."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    from rhmdiff.workdir import experiment
    if jax.process_count() == 1:
        return
    digest = hashlib.sha256(json.dumps(experiment(config), sort_keys=True).encode()).digest()[:8]
    hashes = np.asarray(multihost_utils.process_allgather(np.frombuffer(digest, np.uint8)))
    differ = [i for i in range(len(hashes)) if not np.array_equal(hashes[i], hashes[0])]
    if differ:
        from rhmdiff.config_check import ConfigError
        raise ConfigError("task", f"the processes were started with different configs (process {differ[0]} "
                          "differs from process 0): give every process the same --config and overrides")


def main(argv):
    if len(argv) > 1:
        _fail(2, f"unexpected arguments {argv[1:]}: usage: {_program()} {USAGE}")
    try:
        config = _CONFIG.value
        config.get("task")
    except Exception as e:  # noqa: BLE001 -- a config file that does not load: one line
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        _fail(2, f"--config: {lines[-1] if lines else type(e).__name__}")
    try:
        execute(config, _WORKDIR.value, check=_CHECK.value)
    except KeyboardInterrupt:  # a second Ctrl-C in training, or one outside it (the first one stops training)
        print("rhmdiff: interrupted (Ctrl-C); rerun the same command to resume", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)


def execute(config, workdir: str, check: bool = False) -> None:
    """Everything after the parsing (module docstring), for a config and a workdir; every
    refusal and failure exits (``SystemExit``) with one line on stderr."""
    from rhmdiff import tasks
    from rhmdiff.config_check import ConfigError
    from rhmdiff.data import DataError
    from rhmdiff._util import quiet_logs
    from rhmdiff.files import dumps
    from rhmdiff.workdir import WorkdirError, claim_all, experiment, preview

    quiet_logs()
    try:
        task = tasks.load(config.get("task"))
        _validate_run_control(config)
        task.validate(config)
        plan = preview(config, workdir, task.MUTABLE) if check else ""
    except (ConfigError, WorkdirError) as e:
        _fail(2, str(e))
    except (DataError, FileNotFoundError) as e:
        _fail(1, str(e))
    if check:
        print(dumps(experiment(config)))
        print(f"rhmdiff: config OK (task {config.task}); the run would {plan}; nothing written", file=sys.stderr)
        return
    import jax
    try:
        initialize_distributed(config)
    except Exception as e:  # noqa: BLE001 -- coordinator unreachable, bad environment: one line
        _fail(2, f"multi-process set-up failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    from rhmdiff.checkpoints import CheckpointError
    from rhmdiff.train import Preempted
    try:
        agree_on_config(config)
        if "train" in config and "batch_size" in config.train and config.train.batch_size % jax.device_count():
            raise ConfigError("train.batch_size", f"must be divisible by the {jax.device_count()} devices "
                              f"({jax.process_count()} processes), got {config.train.batch_size}")
        claim = claim_all(config, workdir, task.MUTABLE)
    except (ConfigError, WorkdirError) as e:
        _fail(2, str(e))
    logging.info("task %s, workdir %s; process %d of %d, %d local / %d global devices: %s", config.task, workdir,
                 jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(), jax.devices())
    with claim:
        try:
            task.run(config, claim.path)
        except Preempted as e:
            print(f"rhmdiff: {e}; rerun the same command to resume", file=sys.stderr)
            sys.exit(128 + e.signum)
        except (ConfigError, WorkdirError) as e:
            _fail(2, str(e))
        except (FloatingPointError, OSError, DataError, CheckpointError) as e:  # OSError: e.g. a full disk
            _fail(1, str(e))


def run():
    """The ``rhmdiff`` console script: what ``python -m rhmdiff.main`` runs."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
