"""The ``mup_transfer`` task: does one learning rate train the U-Net at every width? (muP,
Yang & Hu 2021; the evidence that the ``paper`` preset's rate is stable at width 8192.)

For every variant in ``transfer.variants`` and width in ``transfer.widths``, one ``rhm``
training of ``train.num_steps`` steps with the same grammar, data, objective, optimizer and
learning rate (sub-run ``{variant}_w{width}``, resumable; its training metrics logged every
``train.log_every`` steps, its validation bound every ``train.eval_every``). Under muP the
loss curves of the widths collapse onto one another (and approach a limit as the width
grows) instead of diverging at large width. Writes ``mup_transfer.json`` (the curves, the
final validation bound of each width, non-finite steps) and ``mup_transfer.png`` (the
validation bound vs step, one panel per variant, one curve per width).
"""
from __future__ import annotations

import jax
import ml_collections
import numpy as np
from absl import logging

from rhmdiff import config_check as check
from rhmdiff import train
from rhmdiff import workdir as workdir_lib
from rhmdiff._util import num_params
from rhmdiff.analysis import figures
from rhmdiff.files import as_path
from rhmdiff.metrics import read_metrics
from rhmdiff.models import unet
from rhmdiff.tasks import finish
from rhmdiff.tasks import rhm as rhm_task

MUTABLE = ("transfer.widths", "transfer.variants")
OUTPUTS = ("mup_transfer.json", "mup_transfer.png")  # and one marked rhm sub-run per variant and width


def validate(config) -> None:
    rhm_task.validate(config)
    check.int_list(config, "transfer.widths", 1)
    variants = check.get(config, "transfer.variants")
    if not isinstance(variants, (list, tuple)) or not variants or any(v not in unet.VARIANTS for v in variants):
        raise check.ConfigError("transfer.variants", f"must be a non-empty list of {list(unet.VARIANTS)}, "
                                f"got {variants!r}")
    if check.integer(config, "train.log_every", 1) > config.train.num_steps:
        raise check.ConfigError("train.log_every", f"must be <= train.num_steps = {config.train.num_steps}")


def point_config(config, variant: str, width: int) -> ml_collections.ConfigDict:
    """The ``rhm`` config of one (variant, width)."""
    c = ml_collections.ConfigDict(config.to_dict())
    del c.transfer
    c.task = "rhm"
    c.model.variant = variant
    c.model.width = width
    return c


def train_point(config, subdir) -> dict:
    """Train one point (resumes; nothing is generated) and read its logged training loss."""
    with workdir_lib.claim_all(config, subdir, rhm_task.MUTABLE):
        fit_kwargs = rhm_task.setup(config).fit_kwargs
        n_params = num_params(jax.eval_shape(fit_kwargs["init_params"]))
        fitted = train.fit(config, subdir, **fit_kwargs)
    rows = read_metrics(subdir / "metrics.jsonl")
    logged, evaluated = [r for r in rows if "train/vb_bits" in r], [r for r in rows if "val/val_loss" in r]
    return {"num_params": n_params, "steps": [r["step"] for r in logged],
            "train_vb_bits": [r["train/vb_bits"] for r in logged],
            "val_steps": [r["step"] for r in evaluated], "val_loss": [r["val/val_loss"] for r in evaluated],
            "skipped_updates": fitted.skipped_updates, "seconds": fitted.seconds}


def run(config, workdir) -> dict:
    tc = config.transfer
    workdir = as_path(workdir)
    curves = []
    for variant in tc.variants:
        for width in sorted(tc.widths):
            name = f"{variant}_w{width}"
            logging.info("%s: training %d steps", name, config.train.num_steps)
            row = train_point(point_config(config, variant, width), workdir / name)
            curves.append({"variant": variant, "width": width, **row, "final_val_loss": row["val_loss"][-1]})
            logging.info("%s: %d parameters, final validation bound %.4f bits/token, %d skipped updates, %.0f s",
                         name, row["num_params"], row["val_loss"][-1], row["skipped_updates"], row["seconds"])
    results = {"task": "mup_transfer", "lr": config.train.lr, "optimizer": config.train.optimizer,
               "objective": config.diffusion.objective, "curves": curves}
    lines = [f"{c['variant']} width {c['width']}: {c['num_params']} parameters, validation bound "
             f"{np.round(c['val_loss'], 3).tolist()} bits/token at steps {c['val_steps']}, "
             f"skipped updates {c['skipped_updates']}" for c in curves]
    return finish(config, workdir, results, "mup_transfer.json", figures.plot_mup_transfer, "\n".join(lines))
