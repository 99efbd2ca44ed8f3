"""The ``ddpm`` task (paper Sec. 5.2, App. C): Improved DDPM on ImageNet 64x64 with the shared
trainer, checkpoints and config system.

``python -m rhmdiff.main --config=configs/ddpm_imagenet64.py --workdir=runs/ddpm_in64``:

1. the training and validation images (``data.path``, ``data.val_path``) are converted once
   into content-keyed caches (:mod:`rhmdiff.data.images`);
2. the U-Net (:mod:`rhmdiff.models.image_unet`; parameter count logged) is trained with
   :func:`rhmdiff.train.fit` on the hybrid objective (:mod:`rhmdiff.diffusion.gaussian`),
   one t and noise per image from its key; ``train.num_steps = -1`` means ``data.epochs``
   epochs; the (EMA) parameters are kept at ``train.keep_steps`` (``workdir/stages``);
3. validation: the hybrid objective on ``eval.val_images`` validation images, fixed noise;
4. at the end ``eval.num_samples`` images are generated (``eval.sample_steps`` respaced
   steps): ``samples.npy`` (uint8) and ``samples.png`` (a grid), with ``results.json``.

The layer-wise MMD per stage is the ``ddpm_mmd`` task (``configs/ddpm_mmd.py``).
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
from absl import logging
from jax.tree_util import Partial

from rhmdiff import config_check as check
from rhmdiff import evaluate, from_config, train
from rhmdiff._util import example_keys, num_params
from rhmdiff.data import DataError, cache, images
from rhmdiff.diffusion import gaussian
from rhmdiff.files import save_png, write_npy
from rhmdiff.models import image_unet
from rhmdiff.models.image_unet import ImageUNet
from rhmdiff.tasks import finish

MUTABLE = ("eval.num_samples", "eval.sample_steps", "eval.batch_size")
OUTPUTS = (*train.OUTPUTS, "results.json", "samples.npy", "samples.png")


def validate(config) -> None:
    check.seed(config)
    check.optimizer(config)
    check.num_steps_or_epochs(config)
    check.int_list(config, "train.keep_steps", 1)
    check.integer(config, "data.epochs", 1)
    levels = len(check.int_list(config, "model.channel_mult", 1))
    if check.integer(config, "data.image_size", 1, 4096) % 2 ** (levels - 1):
        raise check.ConfigError("data.image_size", f"must be divisible by 2^{levels - 1} (model.channel_mult has "
                                f"{levels} levels), got {config.data.image_size}")
    for field in ("channels", "num_res_blocks", "num_heads"):
        check.integer(config, f"model.{field}", 1)
    check.real(config, "model.dropout", 0.0, 1.0, low_open=False)
    check.flag(config, "model.rescale_timesteps")
    check.integer(config, "diffusion.T", 1, 10**6)
    check.real(config, "diffusion.lam", 0.0, float("inf"), low_open=False)
    for field in ("val_images", "batch_size", "num_samples", "sample_steps"):
        check.integer(config, f"eval.{field}", 1)
    if config.eval.sample_steps > config.diffusion.T:
        raise check.ConfigError("eval.sample_steps", f"must be <= diffusion.T = {config.diffusion.T}")
    if not isinstance(check.get(config, "data.cache_dir"), str):
        raise check.ConfigError("data.cache_dir", "must be a path or ''")
    images.source_files(check.text(config, "data.path", "must be an image source"))
    images.source_files(check.text(config, "data.val_path", "must be an image source"), "data.val_path")


def load_data(config, workdir) -> tuple[images.ImageData, np.ndarray]:
    """Convert the images (once, process 0 first) and open them: (training data, validation images)."""
    files = from_config.image_files(config, workdir)

    def prepare():
        images.prepare_images(config.data.path, files["train"], config.data.image_size)
        images.prepare_images(config.data.val_path, files["val"], config.data.image_size, field="data.val_path")

    cache.prepare_once(prepare, files["val"])
    return images.ImageData(files["train"], config.seed), np.load(files["val"], mmap_mode="r")


def ddpm_loss_fn(model: ImageUNet, schedule: gaussian.GaussianSchedule, lam: float):
    """``loss_fn(params, x0_uint8, keys)`` for :func:`rhmdiff.train.fit`: the hybrid objective
    with each image's t and noise from its key (dropout masks from the first key); the uint8
    batch is scaled to [-1, 1] on the device."""

    def loss_fn(params, x0, keys):
        x0 = images.to_unit_range(x0)
        t, eps = jax.vmap(lambda k: gaussian.noise(k, schedule, x0.shape[1:]))(keys)
        drop = jax.random.fold_in(keys[0], 1)
        model_fn = lambda x_t, tt: model.apply(params, x_t, tt, train=True, rngs={"dropout": drop})
        return gaussian.hybrid_terms(model_fn, schedule, x0, t, eps, lam)

    return loss_fn


def make_val_loss(key, model: ImageUNet, schedule: gaussian.GaussianSchedule, val_x, lam: float, batch_size: int):
    """``params -> {"val_loss", "val_mse", "val_vb"}`` on ``val_x`` with the same noise every
    time (image i's step and noise from ``fold_in(key, i)``), spread over all devices."""
    n = len(val_x)
    keys = np.asarray(example_keys(key, n))

    def per_image(params, x0, kk):
        x0 = images.to_unit_range(x0)
        t, eps = jax.vmap(lambda k: gaussian.noise(k, schedule, x0.shape[1:]))(kk)
        return gaussian.hybrid_each(Partial(model.apply, params), schedule, x0, t, eps, lam)

    def val_loss(params):
        out = evaluate.map_examples(per_image, np.asarray(val_x), keys, shared=params, batch_size=batch_size)
        mean = {k: float(np.mean(v, dtype=np.float64)) for k, v in out.items()}
        return {"val_loss": mean["loss"], "val_mse": mean["mse"], "val_vb": mean["vb"]}

    return val_loss


@dataclasses.dataclass
class Setup:
    """What the task derives from its config and data: the training ``data``, the ``model``
    and ``schedule``, the generation key and the keyword arguments of :func:`rhmdiff.train.fit`
    (with the derived ``num_steps``: ``data.epochs`` epochs when ``train.num_steps`` is -1)."""
    data: images.ImageData
    model: ImageUNet
    schedule: gaussian.GaussianSchedule
    generate_key: jax.Array
    fit_kwargs: dict


def setup(config, workdir) -> Setup:
    data, val = load_data(config, workdir)
    num_steps = config.train.num_steps
    if num_steps == -1:
        per_epoch = data.order.steps_per_epoch(config.train.batch_size)
        if per_epoch == 0:
            raise DataError(f"train.batch_size = {config.train.batch_size} exceeds the {data.order.n} training "
                            "images: no full batch in an epoch")
        num_steps = config.data.epochs * per_epoch
    model, schedule = from_config.image_model(config), from_config.gaussian_schedule(config)
    k_init, k_val, k_gen = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    num_val = min(config.eval.val_images, len(val))
    fit_kwargs = dict(
        init_params=lambda: image_unet.init_params(model, k_init, config.data.image_size),
        loss_fn=ddpm_loss_fn(model, schedule, config.diffusion.lam),
        batches=lambda start, num, rows: data.batches(config.train.batch_size, start, num, rows),
        validate=make_val_loss(k_val, model, schedule, np.asarray(val[:num_val]), config.diffusion.lam,
                               config.eval.batch_size),
        num_steps=num_steps, keep_steps=tuple(k for k in config.train.keep_steps if k <= num_steps))
    return Setup(data, model, schedule, k_gen, fit_kwargs)


def run(config, workdir, stop_at: int | None = None) -> dict | None:
    """Train Improved DDPM, then generate a grid of samples; writes results.json."""
    prep = setup(config, workdir)
    fk = prep.fit_kwargs
    n_params = num_params(jax.eval_shape(fk["init_params"]))
    logging.info("Improved-DDPM U-Net: %d parameters (%.1fM), %d training images, %d steps", n_params, n_params / 1e6,
                 len(prep.data.images), fk["num_steps"])
    fitted = train.fit(config, workdir, stop_at=stop_at, **fk)
    if not fitted.done:
        return None
    x = evaluate.image_samples(prep.generate_key, prep.model, fitted.params, prep.schedule, config.eval.num_samples,
                               config.data.image_size, config.eval.batch_size, config.eval.sample_steps)
    results = {"task": "ddpm", "num_params": n_params, "steps": fitted.steps, "val_loss": fitted.best_val_loss,
               "best_step": fitted.best_step, "stages": list(fk["keep_steps"]), "num_samples": int(len(x)),
               "seconds": {"training": fitted.seconds}}
    if jax.process_index() == 0:
        write_npy(workdir / "samples.npy", x)
        save_png(workdir / "samples.png", images.image_grid(x))
    return finish(config, workdir, results, summary=(
        f"Improved DDPM: {n_params / 1e6:.2f}M parameters, {fitted.steps} steps, validation loss "
        f"{fitted.best_val_loss:.4f}; {len(x)} samples in {workdir / 'samples.png'}"))
