"""Layer-wise MMD of a ``ddpm`` run per training stage (paper Fig. 5).

For every stage kept in ``workdir/stages`` (``train.keep_steps``): generate ``num_samples``
images with the stage's (EMA) parameters (``stage_<step>/samples.npy`` and a PNG grid;
skipped when present), embed them and as many real validation images with ResNet-18
(:mod:`rhmdiff.models.resnet`; ImageNet weights from ``resnet_weights`` or, without them, a
fixed random initialization, which still separates distributions but is not the paper's
measure), and compute the unbiased MMD^2 (RBF, median heuristic) at every depth (stem,
stage1..4) and the KID of the last. Writes ``mmd.json`` and ``mmd.png`` (MMD per depth vs
training step, Fig. 5b) into ``workdir/mmd``.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from rhmdiff import ddpm_task
from rhmdiff._util import write_json, write_npy
from rhmdiff.analysis import figures, mmd, stages
from rhmdiff.data import images
from rhmdiff.models import resnet


def resnet_features(variables, x_uint8, batch_size: int = 256) -> dict:
    """ResNet-18 features ``{depth: [N, C]}`` of uint8 images."""
    model = resnet.ResNet18()
    apply = jax.jit(model.apply)
    parts = [jax.device_get(apply(variables, jnp.asarray(images.to_unit_range(x_uint8[i:i + batch_size]))))
             for i in range(0, len(x_uint8), batch_size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in resnet.FEATURES}


def run(workdir: str, num_samples: int, sample_steps: int, batch_size: int, resnet_weights: str = "",
        seed: int = 0) -> dict:
    config = stages.run_config(workdir, "--workdir", "ddpm")
    out_dir = os.path.join(workdir, "mmd")
    os.makedirs(out_dir, exist_ok=True)
    model, schedule = ddpm_task.model_from_config(config), ddpm_task.schedule_from_config(config)
    size = config.data.image_size
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)),
                              jnp.zeros((1,), jnp.int32))
    val = np.load(ddpm_task.image_paths(config, workdir)["val"], mmap_mode="r")
    real = np.asarray(val[:num_samples])
    if resnet_weights:
        variables = resnet.load_torchvision_npz(resnet_weights)
    else:
        logging.warning("no --resnet_weights: ResNet-18 with random weights (not the paper's ImageNet features)")
        variables = jax.jit(resnet.ResNet18().init)(jax.random.PRNGKey(seed), jnp.zeros((1, size, size, 3)))
    real_features = resnet_features(variables, real)
    generate = lambda step, params: ddpm_task.generate(jax.random.fold_in(jax.random.PRNGKey(seed), step), model,
                                                       params, schedule, num_samples, size, batch_size, sample_steps)

    def save(stage_dir, x):
        write_npy(os.path.join(stage_dir, "samples.npy"), x)
        ddpm_task.save_grid(x[:64], os.path.join(stage_dir, "samples.png"))

    rows = []
    for step, x in stages.stage_samples(workdir, out_dir, abstract, generate, save, "--workdir").items():
        feats = resnet_features(variables, x)
        row = {"step": step, "mmd": {k: mmd.mmd2_unbiased(feats[k], real_features[k]) for k in resnet.FEATURES},
               "kid_stage4": mmd.kid(feats["stage4"], real_features["stage4"])}
        logging.info("step %d: MMD^2 %s", step, {k: round(v, 5) for k, v in row["mmd"].items()})
        rows.append(row)
    results = {"task": "mmd", "num_samples": num_samples, "num_real": int(len(real)), "sample_steps": sample_steps,
               "resnet_weights": resnet_weights or None, "depths": list(resnet.FEATURES), "stages": rows}
    write_json(os.path.join(out_dir, "mmd.json"), results)
    figures.plot_mmd(results, os.path.join(out_dir, "mmd.png"))
    return results
