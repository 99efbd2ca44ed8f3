"""The ``ddpm`` task (paper Sec. 5.2, App. C): Improved DDPM on ImageNet 64x64 with the shared
trainer, checkpoints and config system.

``python -m rhmdiff.main --config=configs/ddpm_imagenet64.py --workdir=runs/ddpm_in64``:

1. the training and validation images (``data.path``, ``data.val_path``) are converted once
   into ``data.cache_dir`` (default ``workdir/images``; :mod:`rhmdiff.data.images`);
2. the U-Net (:mod:`rhmdiff.models.image_unet`; parameter count logged) is trained with
   :func:`rhmdiff.train.fit` on the hybrid objective (:mod:`rhmdiff.diffusion.gaussian`),
   one t and noise per image from its key; ``train.num_steps = -1`` means ``data.epochs``
   epochs; the (EMA) parameters are kept at ``train.keep_steps`` (``workdir/stages``);
3. validation: the hybrid objective on ``eval.val_images`` validation images, fixed noise;
4. at the end ``eval.num_samples`` images are generated (``eval.sample_steps`` respaced
   steps): ``samples.npy`` (uint8) and ``samples.png`` (a grid), with ``results.json``.

The layer-wise MMD per stage: ``python -m rhmdiff.analysis.mmd --workdir=runs/ddpm_in64``.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.tree_util import Partial

from rhmdiff import train
from rhmdiff._util import num_params, prepare_once, write_json, write_npy
from rhmdiff.data import images
from rhmdiff.diffusion import gaussian
from rhmdiff.models.image_unet import ImageUNet


def model_from_config(config) -> ImageUNet:
    c = config.model
    return ImageUNet(channels=c.channels, channel_mult=tuple(c.channel_mult), num_res_blocks=c.num_res_blocks,
                     attention_resolutions=tuple(c.attention_resolutions), num_heads=c.num_heads, dropout=c.dropout)


def schedule_from_config(config) -> gaussian.GaussianSchedule:
    return gaussian.cosine_schedule(config.diffusion.T)


def image_paths(config, workdir: str) -> dict:
    cache = config.data.cache_dir or os.path.join(workdir, "images")
    return {"train": os.path.join(cache, "train.npy"), "val": os.path.join(cache, "val.npy")}


def load_data(config, workdir: str) -> tuple[images.ImageData, np.ndarray]:
    """Convert the images (process 0, once) and open them: (training data, validation images)."""
    paths = image_paths(config, workdir)

    def prepare():
        images.prepare_images(config.data.path, paths["train"], config.data.image_size)
        images.prepare_images(config.data.val_path, paths["val"], config.data.image_size, field="data.val_path")

    prepare_once(prepare, "data.cache_dir", paths["val"])
    return images.ImageData(paths["train"], config.seed), np.load(paths["val"], mmap_mode="r")


def apply_fn(model: ImageUNet):
    """``(params, x_t, t) -> (eps, v)`` at inference (no dropout)."""
    return lambda params, x_t, t: model.apply(params, x_t, t)


def ddpm_loss_fn(model: ImageUNet, schedule: gaussian.GaussianSchedule, lam: float):
    """``loss_fn(params, x0, keys)`` for :func:`rhmdiff.train.fit`: the hybrid objective with
    each image's t and noise from its key (dropout masks from the first key)."""

    def loss_fn(params, x0, keys):
        t, eps = jax.vmap(lambda k: gaussian.noise(k, schedule, x0.shape[1:]))(keys)
        drop = jax.random.fold_in(keys[0], 1)
        model_fn = lambda x_t, tt: model.apply(params, x_t, tt, train=True, rngs={"dropout": drop})
        return gaussian.hybrid_terms(model_fn, schedule, x0, t, eps, lam)

    return loss_fn


def make_val_loss(key, model: ImageUNet, schedule: gaussian.GaussianSchedule, val_x, lam: float, batch_size: int):
    """``params -> {"val_loss", "val_mse", "val_vb"}`` on ``val_x`` with the same noise every time."""

    @jax.jit
    def batch_metrics(params, k, x0):
        return gaussian.hybrid_loss(k, Partial(apply_fn(model), params), schedule, x0, lam)[1]

    def val_loss(params):
        sums = {"loss": 0.0, "mse": 0.0, "vb": 0.0}
        for i in range(0, len(val_x), batch_size):
            x0 = images.to_unit_range(val_x[i:i + batch_size])
            for name, value in batch_metrics(params, jax.random.fold_in(key, i), x0).items():
                sums[name] += float(value) * len(x0)
        return {"val_loss": sums["loss"] / len(val_x), "val_mse": sums["mse"] / len(val_x),
                "val_vb": sums["vb"] / len(val_x)}

    return val_loss


def generate(key, model: ImageUNet, params, schedule: gaussian.GaussianSchedule, num: int, size: int,
             batch_size: int, steps: int) -> np.ndarray:
    """``uint8[num, size, size, 3]`` images from the ancestral sampler over ``steps`` respaced steps."""
    respaced = gaussian.respace(schedule, steps)
    fn = Partial(apply_fn(model), params)
    return np.concatenate([
        images.to_uint8(gaussian.sample(jax.random.fold_in(key, i), fn, respaced, (min(batch_size, num - i), size, size, 3),
                                        progress=True))
        for i in range(0, num, batch_size)])


def save_grid(x: np.ndarray, path: str, columns: int = 8) -> None:
    """A PNG grid of uint8 images ``[N, H, W, 3]``."""
    import matplotlib.pyplot as plt
    n, h, w, _ = x.shape
    rows = -(-n // columns)
    grid = np.full((rows * h, columns * w, 3), 255, np.uint8)
    for i, img in enumerate(x):
        r, c = divmod(i, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    plt.imsave(path, grid)


def ddpm_setup(config, workdir: str) -> dict:
    data, val = load_data(config, workdir)
    if config.train.num_steps == -1:
        config.train.num_steps = config.data.epochs * data.order.steps_per_epoch(config.train.batch_size)
    model, schedule = model_from_config(config), schedule_from_config(config)
    k_init, k_val, k_gen = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    size = config.data.image_size
    params = model.init(k_init, jnp.zeros((1, size, size, 3)), jnp.zeros((1,), jnp.int32))
    num_val = min(config.eval.val_images, len(val))
    fit_kwargs = dict(
        params=params, loss_fn=ddpm_loss_fn(model, schedule, config.diffusion.lam),
        batches=lambda start, num, rows: data.batches(config.train.batch_size, start, num, rows),
        validate=make_val_loss(k_val, model, schedule, np.asarray(val[:num_val]), config.diffusion.lam,
                               config.eval.batch_size))
    return dict(data=data, model=model, schedule=schedule, fit_kwargs=fit_kwargs, keys=dict(generate=k_gen))


def run(config, workdir: str, stop_at: int | None = None) -> dict | None:
    """Train Improved DDPM, then generate a grid of samples; writes results.json."""
    os.makedirs(workdir, exist_ok=True)
    setup = ddpm_setup(config, workdir)
    n_params = num_params(setup["fit_kwargs"]["params"])
    logging.info("Improved-DDPM U-Net: %d parameters (%.1fM), %d training images, %d steps", n_params, n_params / 1e6,
                 len(setup["data"].images), config.train.num_steps)
    fitted = train.fit_until_done(config, workdir, stop_at, **setup["fit_kwargs"])
    if fitted is None:
        return None
    x = generate(setup["keys"]["generate"], setup["model"], fitted["params"], setup["schedule"], config.eval.num_samples,
                 config.data.image_size, config.eval.batch_size, config.eval.sample_steps)
    results = {"task": "ddpm", "num_params": n_params, "steps": fitted["steps"], "val_loss": fitted["best_val_loss"],
               "best_step": fitted["best_step"], "stages": list(config.train.keep_steps), "num_samples": int(len(x)),
               "seconds": {"training": fitted["seconds"]}, "config": config.to_dict()}
    if jax.process_index() == 0:
        write_npy(os.path.join(workdir, "samples.npy"), x)
        save_grid(x, os.path.join(workdir, "samples.png"))
        write_json(os.path.join(workdir, "results.json"), results)
        print(f"Improved DDPM: {n_params / 1e6:.2f}M parameters, {fitted['steps']} steps, validation loss "
              f"{fitted['best_val_loss']:.4f}; {len(x)} samples in {workdir}/samples.png")
    return results
