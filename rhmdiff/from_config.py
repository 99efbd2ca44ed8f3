"""The objects a config describes: grammar, diffusion schedules, networks, data splits.

Every task builds what it needs here from its own config (or from the stored config of a
run it analyses), so that one config always gives the same objects.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from rhmdiff import rhm
from rhmdiff.data import cache, images, rhm_data, text
from rhmdiff.diffusion import d3pm, gaussian, md4
from rhmdiff.models import image_unet, transformer, unet


def grammar(config) -> rhm.Grammar:
    """The RHM of ``config.rhm``: drawn with ``rhm.seed`` (:func:`rhmdiff.rhm.make_grammar`), or
    read from ``rhm.rules_file`` when it names one (:func:`rhmdiff.rhm.load_rules`)."""
    c = config.rhm
    if c.rules_file:
        return rhm.load_rules(c.rules_file, "config.rhm.rules_file")
    return rhm.make_grammar(jax.random.PRNGKey(c.seed), c.v, c.m, c.s, c.L)


def d3pm_schedule(config) -> d3pm.Schedule:
    c = config.diffusion
    return d3pm.make_schedule(c.schedule, c.T, c.beta_min, c.beta_max)


def unet_model(config, g: rhm.Grammar):
    """``config.model.variant``: ``"rhmdiff"`` (:class:`rhmdiff.models.unet.UNet`, sum skips,
    time embedding; ``model.time_conditioning``) or ``"reference"`` (the authors' network,
    :class:`rhmdiff.models.unet.ReferenceUNet`: concatenated skips, LayerNorm, the
    standardized prior probabilities as its time conditioning)."""
    if config.model.variant == "reference":
        alpha_bars = (1.0,) + tuple(float(a) for a in np.asarray(d3pm_schedule(config).alpha_bars))
        return unet.ReferenceUNet(v=g.v, s=g.s, L=g.L, width=config.model.width, alpha_bars=alpha_bars)
    return unet.UNet(v=g.v, s=g.s, L=g.L, width=config.model.width, T=config.diffusion.T,
                     time_conditioning=config.model.time_conditioning)


class RhmKeys(NamedTuple):
    """The PRNG keys of an ``rhm`` run, all from ``config.seed``."""
    data: jax.Array  # the train / validation / test splits
    init: jax.Array  # the network's initial parameters
    batches: jax.Array  # the order of the training batches (offline) or the online draws
    validation: jax.Array  # the validation bound's fixed noise
    generate: jax.Array  # the generated sequences
    bounds: jax.Array  # the test bounds' noise
    random: jax.Array  # the uniformly random baseline sequences


def rhm_keys(config) -> RhmKeys:
    return RhmKeys(*jax.random.split(jax.random.PRNGKey(config.seed), 7))


def splits(config, g: rhm.Grammar) -> dict:
    """The run's disjoint train / validation / test splits (:func:`rhmdiff.data.rhm_data.make_splits`;
    no training split when ``data.online``)."""
    return rhm_data.make_splits(rhm_keys(config).data, g, 0 if config.data.online else config.data.train_size,
                                config.data.val_size, config.data.test_size)


def md4_model(config, vocab_size: int) -> transformer.Transformer:
    c = config.model
    return transformer.Transformer(vocab_size=vocab_size, num_layers=c.num_layers, num_heads=c.num_heads,
                                   head_dim=c.head_dim, cond_dim=c.cond_dim, mlp_multiple_of=c.mlp_multiple_of,
                                   positions=c.positions, max_len=config.data.seq_len, dtype=c.dtype)


def masking_schedule(config) -> md4.MaskingSchedule:
    c = config.diffusion
    return md4.MaskingSchedule(c.schedule, c.eps, c.power)


def token_dir(config, workdir) -> str:
    """The content-keyed directory of an ``md4`` run's token files (:func:`rhmdiff.data.text.token_dir`)."""
    return text.token_dir(cache.cache_root(config, workdir), config.data.path, config.data.tokenizer_path,
                          config.data.val_fraction, config.data.seed)


def image_files(config, workdir) -> dict:
    """The content-keyed converted-image files of a ``ddpm`` run's training and validation sources."""
    root = cache.cache_root(config, workdir)
    return {"train": images.image_cache(root, config.data.path, config.data.image_size),
            "val": images.image_cache(root, config.data.val_path, config.data.image_size, "data.val_path")}


def image_model(config) -> image_unet.ImageUNet:
    c = config.model
    return image_unet.ImageUNet(channels=c.channels, channel_mult=tuple(c.channel_mult),
                                num_res_blocks=c.num_res_blocks, attention_resolutions=tuple(c.attention_resolutions),
                                num_heads=c.num_heads, dropout=c.dropout,
                                time_scale=1000.0 / config.diffusion.T if c.rescale_timesteps else 1.0)


def gaussian_schedule(config) -> gaussian.GaussianSchedule:
    return gaussian.cosine_schedule(config.diffusion.T)
