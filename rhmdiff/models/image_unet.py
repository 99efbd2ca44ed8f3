"""Improved-DDPM image U-Net (Nichol & Dhariwal 2021; paper Sec. 5.2, App. C), NHWC.

``ImageUNet()(x_t [B, H, W, 3], t [B]) -> (eps, v)``, both ``[B, H, W, 3]``: the predicted
noise and the learned-variance interpolation value (:mod:`rhmdiff.diffusion.gaussian`).

* time embedding: sinusoidal features of t (``channels`` dims) -> Dense(4C) -> SiLU -> Dense(4C);
* encoder: a 3x3 convolution, then per resolution level ``num_res_blocks`` residual blocks
  (``channels * channel_mult[level]`` channels) and a stride-2 3x3 convolution (except at
  the last level); self-attention after every block at the ``attention_resolutions``;
* middle: residual block, attention, residual block;
* decoder: per level (reversed) ``num_res_blocks + 1`` residual blocks on the concatenation
  with the matching encoder activation, attention as above, nearest-neighbour 2x upsampling
  + 3x3 convolution (except at the top);
* output: GroupNorm, SiLU, a zero-initialized 3x3 convolution to 6 channels (eps, v).

Residual blocks use scale-shift norm: ``GroupNorm(h) * (1 + scale) + shift`` with (scale,
shift) from the time embedding, dropout before the second (zero-initialized) convolution.
Attention: ``num_heads`` heads, GroupNorm, zero-initialized output projection. GroupNorm
has 32 groups (gcd(32, channels) for narrow test models). At the paper's size (C = 128, multipliers
(1, 2, 3, 4), 3 blocks, attention at 16x16 and 8x8, 4 heads) on 64x64 images this is ~120M
parameters (:func:`rhmdiff._util.num_params`).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from rhmdiff.models.transformer import time_features

zeros = nn.initializers.zeros


def _norm(channels: int, name: str | None = None):
    return nn.GroupNorm(num_groups=math.gcd(32, channels), name=name)


def _conv(channels: int, name: str | None = None, zero: bool = False, stride: int = 1):
    return nn.Conv(channels, (3, 3), (stride, stride), padding=((1, 1), (1, 1)), name=name,
                   kernel_init=zeros if zero else nn.initializers.lecun_normal())


class ResBlock(nn.Module):
    channels: int
    dropout: float

    @nn.compact
    def __call__(self, x, emb, train: bool):
        h = _conv(self.channels)(nn.silu(_norm(x.shape[-1])(x)))
        scale, shift = jnp.split(nn.Dense(2 * self.channels)(nn.silu(emb)), 2, -1)
        h = _norm(self.channels)(h) * (1 + scale[:, None, None]) + shift[:, None, None]
        h = nn.Dropout(self.dropout, deterministic=not train)(nn.silu(h))
        h = _conv(self.channels, zero=True)(h)
        if x.shape[-1] != self.channels:
            x = nn.Conv(self.channels, (1, 1))(x)
        return x + h


class Attention(nn.Module):
    num_heads: int

    @nn.compact
    def __call__(self, x):
        b, hgt, wid, c = x.shape
        qkv = nn.Dense(3 * c)(_norm(c)(x)).reshape(b, hgt * wid, 3, self.num_heads, c // self.num_heads)
        out = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
        return x + nn.Dense(c, kernel_init=zeros)(out.reshape(b, hgt, wid, c))


class ImageUNet(nn.Module):
    channels: int = 128
    channel_mult: tuple = (1, 2, 3, 4)
    num_res_blocks: int = 3
    attention_resolutions: tuple = (16, 8)
    num_heads: int = 4
    dropout: float = 0.0
    time_scale: float = 1.0  # improved-diffusion's rescale_timesteps: 1000 / T, so t/T in [0, 1) enters as [0, 1000)

    @nn.compact
    def __call__(self, x, t, train: bool = False):
        if x.shape[1] % 2 ** (len(self.channel_mult) - 1):
            raise ValueError(f"image size {x.shape[1]} must be divisible by 2^{len(self.channel_mult) - 1}")
        emb = nn.Dense(4 * self.channels)(time_features(t, self.channels, scale=self.time_scale))
        emb = nn.Dense(4 * self.channels)(nn.silu(emb))
        h = _conv(self.channels)(x)
        skips = [h]
        for level, mult in enumerate(self.channel_mult):
            for _ in range(self.num_res_blocks):
                h = ResBlock(self.channels * mult, self.dropout)(h, emb, train)
                if h.shape[1] in self.attention_resolutions:
                    h = Attention(self.num_heads)(h)
                skips.append(h)
            if level < len(self.channel_mult) - 1:
                h = _conv(h.shape[-1], stride=2)(h)
                skips.append(h)
        h = ResBlock(h.shape[-1], self.dropout)(h, emb, train)
        h = Attention(self.num_heads)(h)
        h = ResBlock(h.shape[-1], self.dropout)(h, emb, train)
        for level, mult in reversed(list(enumerate(self.channel_mult))):
            for i in range(self.num_res_blocks + 1):
                h = ResBlock(self.channels * mult, self.dropout)(jnp.concatenate([h, skips.pop()], -1), emb, train)
                if h.shape[1] in self.attention_resolutions:
                    h = Attention(self.num_heads)(h)
                if level and i == self.num_res_blocks:
                    b, hgt, wid, c = h.shape
                    h = _conv(c)(jax.image.resize(h, (b, 2 * hgt, 2 * wid, c), "nearest"))
        out = _conv(2 * x.shape[-1], zero=True)(nn.silu(_norm(h.shape[-1])(h)))
        return jnp.split(out, 2, -1)


def init_params(model: ImageUNet, key, size: int):
    """The U-Net's parameters, initialized on a dummy batch of one ``size`` x ``size`` RGB image."""
    return model.init(key, jnp.zeros((1, size, size, 3)), jnp.zeros((1,), jnp.int32))
