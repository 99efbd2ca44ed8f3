"""Training metrics of a run: ``metrics.jsonl`` (one JSON object per log or evaluation) and
TensorBoard event files (tensorboardX, no TensorFlow); only process 0 writes."""
from __future__ import annotations

import importlib.util
import json
import os

import jax
from absl import logging

from rhmdiff.checkpoints import CheckpointError
from rhmdiff.files import as_path, atomic_write, is_remote


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def read_metrics(path) -> list[dict]:
    """The rows of a ``metrics.jsonl``; a torn last line (a kill during the write, a full
    disk) is dropped with a warning, a broken line elsewhere is an error naming the file."""
    path = as_path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if number == len(lines):
                logging.warning("%s: dropping a torn last line (%d characters)", path, len(line))
                break
            raise CheckpointError(f"{path}: line {number} is not JSON") from None
    return rows


class MetricWriter:
    """Scalars to ``metrics.jsonl`` (one JSON object per log or evaluation) and TensorBoard
    event files (tensorboardX, no TensorFlow). Only process 0 writes. On resume, lines after
    the restored step are dropped so the file matches an uninterrupted run."""

    def __init__(self, workdir, resume_step: int):
        self.enabled = jax.process_index() == 0
        self.path = as_path(workdir) / "metrics.jsonl"
        self.tb = None
        if not self.enabled:
            return
        self.rows = [row for row in read_metrics(self.path) if row["step"] <= resume_step]
        self._rewrite()
        events = as_path(workdir) / "tensorboard"
        if is_remote(events) and not _importable("google.cloud.storage"):
            logging.warning("no TensorBoard events in %s (tensorboardX writes to gs:// with google-cloud-storage, "
                            "which is not installed); metrics.jsonl has every value", events)
            return
        from tensorboardX import SummaryWriter
        self.tb = SummaryWriter(os.fspath(events), purge_step=resume_step + 1)

    def _rewrite(self):
        with atomic_write(self.path) as f:
            f.writelines(json.dumps(row) + "\n" for row in self.rows)

    def write(self, step: int, scalars: dict):
        if not self.enabled:
            return
        if self.tb is not None:
            for name, value in scalars.items():
                self.tb.add_scalar(name, value, step)
        self.rows.append({"step": step, **scalars})
        if is_remote(self.path):  # object stores cannot append: the whole (small) file again
            self._rewrite()
        else:
            with open(self.path, "a") as f:
                f.write(json.dumps(self.rows[-1]) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def close(self):
        if self.tb is not None:
            tb, self.tb = self.tb, None
            tb.close()
