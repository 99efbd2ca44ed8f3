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

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.tree_util import Partial

from rhmdiff import config_check as check
from rhmdiff import evaluate, train
from rhmdiff import workdir as workdir_lib
from rhmdiff._util import num_params
from rhmdiff.data import DataError, cache, images
from rhmdiff.diffusion import gaussian
from rhmdiff.files import save_png, write_json, write_npy
from rhmdiff.models.image_unet import ImageUNet

MUTABLE = ("eval.num_samples", "eval.sample_steps", "eval.batch_size")


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


def model_from_config(config) -> ImageUNet:
    c = config.model
    return ImageUNet(channels=c.channels, channel_mult=tuple(c.channel_mult), num_res_blocks=c.num_res_blocks,
                     attention_resolutions=tuple(c.attention_resolutions), num_heads=c.num_heads, dropout=c.dropout,
                     time_scale=1000.0 / config.diffusion.T if c.rescale_timesteps else 1.0)


def schedule_from_config(config) -> gaussian.GaussianSchedule:
    return gaussian.cosine_schedule(config.diffusion.T)


def image_files(config, workdir) -> dict:
    """The content-keyed converted-images files of the training and validation sources."""
    root = cache.cache_root(config, workdir)
    return {"train": images.image_cache(root, config.data.path, config.data.image_size),
            "val": images.image_cache(root, config.data.val_path, config.data.image_size, "data.val_path")}


def load_data(config, workdir) -> tuple[images.ImageData, np.ndarray]:
    """Convert the images (once, process 0 first) and open them: (training data, validation images)."""
    files = image_files(config, workdir)

    def prepare():
        images.prepare_images(config.data.path, files["train"], config.data.image_size)
        images.prepare_images(config.data.val_path, files["val"], config.data.image_size, field="data.val_path")

    cache.prepare_once(prepare, files["val"])
    return images.ImageData(files["train"], config.seed), np.load(files["val"], mmap_mode="r")


def apply_fn(model: ImageUNet):
    """``(params, x_t, t) -> (eps, v)`` at inference (no dropout)."""
    return lambda params, x_t, t: model.apply(params, x_t, t)


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
    keys = np.asarray(jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n)))

    def per_image(params, x0, kk):
        x0 = images.to_unit_range(x0)
        t, eps = jax.vmap(lambda k: gaussian.noise(k, schedule, x0.shape[1:]))(kk)
        return gaussian.hybrid_each(Partial(apply_fn(model), params), schedule, x0, t, eps, lam)

    def val_loss(params):
        out = evaluate.map_examples(per_image, np.asarray(val_x), keys, shared=params, batch_size=batch_size)
        mean = {k: float(np.mean(v, dtype=np.float64)) for k, v in out.items()}
        return {"val_loss": mean["loss"], "val_mse": mean["mse"], "val_vb": mean["vb"]}

    return val_loss


def generate(key, model: ImageUNet, params, schedule: gaussian.GaussianSchedule, num: int, size: int,
             batch_size: int, steps: int) -> np.ndarray:
    """``uint8[num, size, size, 3]`` images from the ancestral sampler over ``steps`` respaced
    steps (image i from ``fold_in(key, i)``), spread over all devices."""
    respaced = gaussian.respace(schedule, steps)
    fn = lambda p, keys: images.to_uint8(gaussian.sample_each(keys, Partial(apply_fn(model), p), respaced,
                                                              (size, size, 3), step_map=jax.pmap))
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num))
    return evaluate.map_examples(fn, keys, shared=params, batch_size=batch_size, desc="DDPM samples", pmapped=True)


def image_grid(x: np.ndarray, columns: int = 8) -> np.ndarray:
    """uint8 images ``[N, H, W, 3]`` laid out in a grid (white where the last row is short)."""
    n, h, w, _ = x.shape
    rows = -(-n // columns)
    grid = np.full((rows * h, columns * w, 3), 255, np.uint8)
    for i, img in enumerate(x):
        r, c = divmod(i, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    return grid


def setup(config, workdir) -> dict:
    data, val = load_data(config, workdir)
    num_steps = config.train.num_steps
    if num_steps == -1:
        per_epoch = data.order.steps_per_epoch(config.train.batch_size)
        if per_epoch == 0:
            raise DataError(f"train.batch_size = {config.train.batch_size} exceeds the {data.order.n} training "
                            "images: no full batch in an epoch")
        num_steps = config.data.epochs * per_epoch
    model, schedule = model_from_config(config), schedule_from_config(config)
    k_init, k_val, k_gen = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    size = config.data.image_size
    init_params = lambda: model.init(k_init, jnp.zeros((1, size, size, 3)), jnp.zeros((1,), jnp.int32))
    num_val = min(config.eval.val_images, len(val))
    fit_kwargs = dict(
        init_params=init_params, loss_fn=ddpm_loss_fn(model, schedule, config.diffusion.lam),
        batches=lambda start, num, rows: data.batches(config.train.batch_size, start, num, rows),
        validate=make_val_loss(k_val, model, schedule, np.asarray(val[:num_val]), config.diffusion.lam,
                               config.eval.batch_size),
        num_steps=num_steps, keep_steps=tuple(k for k in config.train.keep_steps if k <= num_steps))
    return dict(data=data, model=model, schedule=schedule, fit_kwargs=fit_kwargs, keys=dict(generate=k_gen))


def run(config, workdir, stop_at: int | None = None) -> dict | None:
    """Train Improved DDPM, then generate a grid of samples; writes results.json."""
    s = setup(config, workdir)
    fk = s["fit_kwargs"]
    n_params = num_params(jax.eval_shape(fk["init_params"]))
    logging.info("Improved-DDPM U-Net: %d parameters (%.1fM), %d training images, %d steps", n_params, n_params / 1e6,
                 len(s["data"].images), fk["num_steps"])
    fitted = train.fit_until_done(config, workdir, stop_at, **fk)
    if fitted is None:
        return None
    x = generate(s["keys"]["generate"], s["model"], fitted["params"], s["schedule"], config.eval.num_samples,
                 config.data.image_size, config.eval.batch_size, config.eval.sample_steps)
    results = {"task": "ddpm", "num_params": n_params, "steps": fitted["steps"], "val_loss": fitted["best_val_loss"],
               "best_step": fitted["best_step"], "stages": list(fk["keep_steps"]), "num_samples": int(len(x)),
               "seconds": {"training": fitted["seconds"]}, **workdir_lib.provenance(config)}
    if jax.process_index() == 0:
        write_npy(workdir / "samples.npy", x)
        save_png(workdir / "samples.png", image_grid(x))
        write_json(workdir / "results.json", results)
        print(f"Improved DDPM: {n_params / 1e6:.2f}M parameters, {fitted['steps']} steps, validation loss "
              f"{fitted['best_val_loss']:.4f}; {len(x)} samples in {workdir}/samples.png")
    return results
