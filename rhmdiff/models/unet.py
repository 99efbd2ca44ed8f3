"""The paper's convolutional U-Net for RHM denoising (Appendix C), in muP, in two variants.

``variant="reference"`` (:class:`ReferenceUNet`): the authors' public network (``bpUNET`` of
AntonioScl/minimal_diffusion_rhm), layer for layer, for one-hot ``x_t`` ``[B, d, v]``:

* input: the prior probabilities ``alpha_bar_t x + (1 - alpha_bar_t)/v``, standardized with a
  mean and standard deviation computed once from the schedule (its only time conditioning);
* embedding: filter-1 convolution v -> C, GeLU (exact, erf): ``e_0``;
* encoder block k = 1..L: convolution with filter = stride = s, LayerNorm over the channels
  (with gain and bias), GeLU: ``e_k``;
* decoder block k = L..1: the skip is **concatenated** -- ``[u_k, e_k]`` with ``u_L = e_L`` --,
  transposed convolution 2C -> C with filter = stride = s, LayerNorm, GeLU: ``u_{k-1}``;
* read-out: filter-1 convolution of ``[u_0, e_0]`` (2C) -> v.

Every weight is N(0, 1), no biases, and each convolution's output is divided by the square
root of its ``filter_size * in_channels`` (the transposed ones too, as the reference code
does, although each of their outputs sums over ``in_channels`` terms only), the read-out's
by ``2C``. Its parameter count is the reference's for any (v, s, L, width) (tested).

``variant="rhmdiff"`` (:class:`UNet`), for one-hot ``x_t`` of shape ``[B, d, v]``:

* embedding: filter-size-1 convolution v -> C: ``e_0``;
* encoder block k = 1..L: convolution with filter = stride = s (resolution d/s^(k-1) ->
  d/s^k), plus the time embedding, then GeLU: ``a_k`` (pre-activation), ``e_k = gelu(a_k)``;
* decoder block k = L..1: transposed convolution with filter = stride = s (resolution
  d/s^k -> d/s^(k-1)) of ``u_k`` (``u_L = e_L``), plus the time embedding, then GeLU; the skip
  connection **adds** the encoder output of the same resolution: ``u_{k-1} = gelu(a'_k) + e_{k-1}``;
* unembedding: filter-size-1 convolution C -> v, the logits of the x_0 prediction.

A filter = stride convolution is a reshape + matmul (``[B, n, C] -> [B, n/s, s*C] @ W``),
identical to ``nn.Conv(kernel_size=s, strides=s)`` and much faster on CPU.

Time conditioning (``time_conditioning``): ``"embedding"`` adds, in every block, a learned
projection of sinusoidal features of t/T to the pre-activation; ``"none"`` ignores t.

muP (Yang & Hu 2021, Tensor Programs IV, Table 3, SGD column), in the equivalent multiplier
form used by the authors' code: every weight is initialized N(0, 1) and each layer's
output is multiplied by ``1/sqrt(fan_in)`` (embedding, time projections, hidden
convolutions) or ``1/fan_in`` (unembedding). With SGD on these parameters at learning rate
``eta * C`` (:func:`mup_lr_scale` gives the factor C), the effective per-layer learning rates
are ``eta*C/v`` (input, ~C), ``eta/s`` (hidden, O(1)) and ``eta/C`` (output, ~1/C): the muP
table. Biases are zero-initialized, multiplier 1 (input-like).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


VARIANTS = ("rhmdiff", "reference")


class MuDense(nn.Module):
    """``x @ W * multiplier + b`` with ``W ~ N(0, 1)`` (muP multiplier form)."""

    features: int
    multiplier: float
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        w = self.param("kernel", nn.initializers.normal(1.0), (x.shape[-1], self.features))
        y = jnp.dot(x, w, precision=jax.lax.Precision.DEFAULT) * self.multiplier
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y


def patch_conv(dense: nn.Module, x, s: int):
    """Convolution with filter = stride = s as reshape + dense: ``[B, n, C] -> [B, n/s, C']``."""
    b, n, c = x.shape
    return dense(x.reshape(b, n // s, s * c))


def patch_conv_transpose(dense: nn.Module, x, s: int):
    """Transposed convolution with filter = stride = s: ``[B, n, C] -> [B, n*s, C'']``
    (``dense`` maps C to s*C'')."""
    b, n, _ = x.shape
    y = dense(x)
    return y.reshape(b, n * s, y.shape[-1] // s)


def time_features(t, T: int, dim: int = 32):
    """Sinusoidal features of t/T (Vaswani et al. 2017), ``[B, dim]``."""
    freqs = np.exp(-np.log(1000.0) * np.arange(dim // 2) / (dim // 2))
    angle = (jnp.asarray(t, jnp.float32) / T * 1000.0)[:, None] * freqs
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], -1)


class UNet(nn.Module):
    """Paper's U-Net. ``__call__(x_t int[B, d], t int[B])`` -> logits ``[B, d, v]``;
    with ``return_preactivations=True`` also the pre-activations of every block:
    ``{"encoder_1".."encoder_L", "decoder_L".."decoder_1"}`` (for Eq. 26)."""

    v: int
    s: int
    L: int
    width: int
    T: int = 1000
    time_conditioning: str = "embedding"
    time_dim: int = 32

    @nn.compact
    def __call__(self, x_t, t, return_preactivations: bool = False):
        if self.time_conditioning not in ("embedding", "none"):
            raise ValueError(f"time_conditioning must be 'embedding' or 'none', got {self.time_conditioning!r}")
        if x_t.shape[-1] != self.s**self.L:
            raise ValueError(f"x_t must have shape [B, s**L] = [B, {self.s ** self.L}], got {x_t.shape}")
        C, s = self.width, self.s
        temb = time_features(t, self.T, self.time_dim)

        def add_time(a, name):
            if self.time_conditioning == "none":
                return a
            return a + MuDense(a.shape[-1], 1 / np.sqrt(self.time_dim), name=name)(temb)[:, None, :]

        h = MuDense(C, 1 / np.sqrt(self.v), name="embed")(jax.nn.one_hot(x_t, self.v))
        skips, pre = [h], {}
        for k in range(1, self.L + 1):
            a = patch_conv(MuDense(C, 1 / np.sqrt(s * C), name=f"encoder_{k}"), h, s)
            a = add_time(a, f"time_encoder_{k}")
            pre[f"encoder_{k}"] = a
            h = nn.gelu(a)
            skips.append(h)
        for k in range(self.L, 0, -1):
            a = patch_conv_transpose(MuDense(s * C, 1 / np.sqrt(C), name=f"decoder_{k}"), h, s)
            a = add_time(a, f"time_decoder_{k}")
            pre[f"decoder_{k}"] = a
            h = nn.gelu(a) + skips[k - 1]
        logits = MuDense(self.v, 1 / C, use_bias=False, name="unembed")(h)
        return (logits, pre) if return_preactivations else logits


def _gelu(x):
    return nn.gelu(x, approximate=False)  # torch.nn.GELU's default, as the reference code


def standardized_prior(x_t, alpha_bar_t, alpha_bars, v: int):
    """The reference network's input: ``(p - mean) / std`` with ``p = alpha_bar_t onehot(x_t)
    + (1 - alpha_bar_t)/v`` (the prior probability of each symbol given x_t alone), and mean
    and std the reference's constants over the schedule's ``alpha_bars`` (t = 0..T):
    ``mean = <a + (1-a)/v>``, ``std = sqrt(<a + (1-a)/v^2> - mean^2)``."""
    a = np.asarray(alpha_bars, np.float64)
    mean = float(np.mean(a + (1 - a) / v))
    std = float(np.sqrt(np.mean(a + (1 - a) / v**2) - mean**2))
    ab = jnp.asarray(alpha_bar_t, jnp.float32)[:, None, None]
    p = ab * jax.nn.one_hot(x_t, v, dtype=jnp.float32) + (1.0 - ab) / v
    return (p - mean) / std


class ReferenceUNet(nn.Module):
    """The authors' U-Net (module docstring). ``__call__(x_t int[B, d], t int[B])`` -> logits
    ``[B, d, v]``; ``alpha_bars`` are the schedule's alpha_bar_t for t = 0..T (static). With
    ``return_preactivations=True`` also the inputs of every block's GeLU (after LayerNorm):
    ``{"encoder_1".."encoder_L", "decoder_L".."decoder_1"}`` (for Eq. 26)."""

    v: int
    s: int
    L: int
    width: int
    alpha_bars: tuple
    use_bias: bool = False

    @nn.compact
    def __call__(self, x_t, t, return_preactivations: bool = False):
        if x_t.shape[-1] != self.s**self.L:
            raise ValueError(f"x_t must have shape [B, s**L] = [B, {self.s ** self.L}], got {x_t.shape}")
        C, s = self.width, self.s
        dense = lambda features, fan_in, name: MuDense(features, 1 / np.sqrt(fan_in), self.use_bias, name=name)
        norm = lambda name: nn.LayerNorm(epsilon=1e-5, name=name)
        alpha_bar_t = jnp.asarray(self.alpha_bars, jnp.float32)[t]
        h = _gelu(dense(C, self.v, "embed")(standardized_prior(x_t, alpha_bar_t, self.alpha_bars, self.v)))
        skips, pre = [h], {}
        for k in range(1, self.L + 1):
            a = norm(f"norm_encoder_{k}")(patch_conv(dense(C, s * C, f"encoder_{k}"), h, s))
            pre[f"encoder_{k}"] = a
            h = _gelu(a)
            skips.append(h)
        for k in range(self.L, 0, -1):
            joined = jnp.concatenate([h, skips[k]], -1)
            a = norm(f"norm_decoder_{k}")(patch_conv_transpose(dense(s * C, s * 2 * C, f"decoder_{k}"), joined, s))
            pre[f"decoder_{k}"] = a
            h = _gelu(a)
        logits = MuDense(self.v, 1 / (2 * C), self.use_bias, name="readout")(jnp.concatenate([h, skips[0]], -1))
        return (logits, pre) if return_preactivations else logits


def init_params(model, key, d: int):
    """The parameters of either U-Net, initialized on a dummy batch of one sequence of ``d`` tokens."""
    return model.init(key, jnp.zeros((1, d), jnp.int32), jnp.ones((1,), jnp.int32))


def mup_lr_scale(width: int) -> float:
    """Factor multiplying the base SGD learning rate in the multiplier form of muP (see
    module docstring): the trainer uses ``lr * width``."""
    return float(width)
