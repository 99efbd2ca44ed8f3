"""The ``ddpm_mmd`` task (paper Sec. 5.2, Fig. 5): layer-wise MMD of a ``ddpm`` run per
training stage.

For every stage kept in ``<analysis.run_dir>/stages`` (the run's ``train.keep_steps``):
generate ``analysis.num_samples`` images with the stage's (EMA) parameters
(``stage_<step>/samples.npy`` and a PNG grid in this task's workdir; read back when present,
so an interrupted analysis resumes), embed them and as many real validation images with
ResNet-18 (:mod:`rhmdiff.models.resnet`; ImageNet weights from ``analysis.resnet_weights``
or, without them, a fixed random initialization, which still separates distributions but is
not the paper's measure), and compute the unbiased MMD^2 (RBF kernel) at every depth (stem,
stage1..4) and the KID of the last. The RBF bandwidth of each depth is the median pairwise
distance of the *real* images' features, fixed across stages, so the stages are compared
under one kernel. Writes ``mmd.json`` and ``mmd.png`` (MMD per depth vs training step, Fig. 5b).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from rhmdiff import config_check as check
from rhmdiff import evaluate, from_config, runs
from rhmdiff.analysis import figures, mmd
from rhmdiff.data import DataError, images
from rhmdiff.files import save_png, write_npy
from rhmdiff.models import image_unet, resnet
from rhmdiff.tasks import finish

MUTABLE = ()
OUTPUTS = ("mmd.json", "mmd.png", "stage_*")


def validate(config) -> None:
    check.seed(config)
    ac = config.analysis
    check.text(config, "analysis.run_dir", "must be the workdir of a ddpm run")
    for field in ("num_samples", "sample_steps", "batch_size"):
        check.integer(config, f"analysis.{field}", 2 if field == "num_samples" else 1)
    if not isinstance(check.get(config, "analysis.resnet_weights"), str):
        raise check.ConfigError("analysis.resnet_weights", "must be a path or ''")
    stored = runs.stored_config(ac.run_dir, "config.analysis.run_dir", "ddpm")
    if ac.sample_steps > stored.diffusion.T:
        raise check.ConfigError("analysis.sample_steps", f"must be <= the run's diffusion.T = {stored.diffusion.T}")
    if ac.resnet_weights and not __import__("os").path.isfile(ac.resnet_weights):
        raise DataError(f"analysis.resnet_weights: no file at {ac.resnet_weights!r}")


def resnet_features(variables, x_uint8, batch_size: int = 256) -> dict:
    """ResNet-18 features ``{depth: [N, C]}`` of uint8 images, spread over all devices."""
    fn = lambda var, x: resnet.ResNet18().apply(var, images.to_unit_range(x))
    return evaluate.map_examples(fn, np.asarray(x_uint8), shared=variables, batch_size=batch_size,
                                 desc="ResNet-18 features")


def run(config, workdir) -> dict:
    ac = config.analysis
    stored = runs.stored_config(ac.run_dir, "config.analysis.run_dir", "ddpm")
    model, schedule = from_config.image_model(stored), from_config.gaussian_schedule(stored)
    size = stored.data.image_size
    abstract = jax.eval_shape(lambda: image_unet.init_params(model, jax.random.PRNGKey(0), size))
    val = np.load(from_config.image_files(stored, ac.run_dir)["val"], mmap_mode="r")
    real = np.asarray(val[:ac.num_samples])
    if ac.resnet_weights:
        variables = resnet.load_torchvision_npz(ac.resnet_weights)
    else:
        logging.warning("no analysis.resnet_weights: ResNet-18 with random weights (not the paper's ImageNet features)")
        variables = jax.jit(resnet.ResNet18().init)(jax.random.PRNGKey(config.seed), jnp.zeros((1, size, size, 3)))
    real_features = resnet_features(variables, real)
    bandwidth = {k: mmd.median_bandwidth(real_features[k]) for k in resnet.FEATURES}
    generate = lambda step, params: evaluate.image_samples(
        jax.random.fold_in(jax.random.PRNGKey(config.seed), step), model, params, schedule, ac.num_samples, size,
        ac.batch_size, ac.sample_steps)

    def save(stage_dir, x):
        write_npy(stage_dir / "samples.npy", x)
        save_png(stage_dir / "samples.png", images.image_grid(x[:64]))

    rows = []
    for step, x in evaluate.stage_samples(ac.run_dir, workdir, abstract, generate, save,
                                          "config.analysis.run_dir").items():
        feats = resnet_features(variables, x)
        row = {"step": step, "mmd": {k: mmd.mmd2_unbiased(feats[k], real_features[k], bandwidth=bandwidth[k])
                                     for k in resnet.FEATURES},
               "kid_stage4": mmd.kid(feats["stage4"], real_features["stage4"])}
        logging.info("step %d: MMD^2 %s", step, {k: round(v, 5) for k, v in row["mmd"].items()})
        rows.append(row)
    results = {"task": "ddpm_mmd", "num_samples": ac.num_samples, "num_real": int(len(real)),
               "sample_steps": ac.sample_steps, "resnet_weights": ac.resnet_weights or None,
               "depths": list(resnet.FEATURES), "bandwidth": bandwidth, "stages": rows}
    lines = [f"step {row['step']}: " + ", ".join(f"{k} {v:.4g}" for k, v in row["mmd"].items()) for row in rows]
    return finish(config, workdir, results, "mmd.json", figures.plot_mmd, "\n".join(lines))
