"""Entry point: ``python -m rhmdiff.main --config=configs/X.py --workdir=DIR [--config.key=value]``.

The config file's ``get_config()`` gives an ml_collections ConfigDict (locked: overriding
a key that does not exist is an error); ``config.task`` picks the job. Bad values end the
run before any compute with one line on stderr naming the field.
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from rhmdiff import evaluate
from rhmdiff.analysis import clustering_sweep, correlation_task, onestep, sweeps
from rhmdiff.config_check import ConfigError, validate

TASKS = {"oracle": evaluate.run_oracle, "rhm": evaluate.run_rhm, "clustering_sweep": clustering_sweep.run,
         "sweep": sweeps.run, "onestep": onestep.run, "correlations": correlation_task.run}

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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    try:
        validate(config, TASKS)
    except ConfigError as e:
        print(f"rhmdiff: error: {e}", file=sys.stderr)
        sys.exit(2)
    # orbax logs every checkpoint step at INFO; keep its warnings and errors only.
    logging.get_absl_handler().addFilter(
        lambda record: "orbax" not in record.pathname or record.levelno >= logging.WARNING)
    logging.info("task %s, workdir %s", config.task, _WORKDIR.value)
    TASKS[config.task](config, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
