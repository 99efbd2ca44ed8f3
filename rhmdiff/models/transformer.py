"""MD4's diffusion transformer (Shi et al. 2024; paper Sec. 5.1, App. C).

A bidirectional (non-causal) pre-norm transformer that maps a partly masked sequence
``x_t int[B, n]`` (ids ``0..V-1`` and the mask id ``V``) and the diffusion time ``t [B]`` in
[0, 1] to the logits ``[B, n, V]`` of ``p(x_0^i | x_t)`` over the V real symbols:

* token embedding of the V + 1 ids (width ``D = num_heads * head_dim``);
* positions: rotary embeddings on queries and keys (``positions="rope"``, MD4's choice and
  the default: no length-specific parameters) or a learned table added to the embedding
  (``"learned"``, up to ``max_len`` positions);
* time conditioning: sinusoidal features of ``1000 t`` -> MLP -> ``c`` (``cond_dim``);
* ``num_layers`` blocks, each with RMSNorm, multi-head attention and a GLU (SwiGLU) MLP of
  hidden size ``2/3 * 4D`` rounded up to a multiple of ``mlp_multiple_of`` (LLaMA's rule),
  modulated by adaLN-zero (DiT; Peebles & Xie 2023): ``c`` gives a shift, a scale and a
  gate for each of the two sub-layers, all zero at initialization so every block starts
  as the identity;
* a final adaLN RMSNorm and a zero-initialized linear read-out to V logits.

At the OpenWebText size (12 layers, 12 heads x 64, D = 768, V = 50257, cond_dim 128) this is
about 165M parameters (:func:`num_params`). ``dtype`` sets the compute precision
(``bfloat16`` on accelerators); parameters stay float32.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

POSITIONS = ("rope", "learned")


def glu_hidden(d_model: int, multiple_of: int) -> int:
    """LLaMA's SwiGLU width: 2/3 of 4 D, rounded up to a multiple of ``multiple_of``."""
    return multiple_of * math.ceil(int(8 * d_model / 3) / multiple_of)


def time_features(t, dim: int, scale: float = 1000.0):
    """Sinusoidal features ``[..., dim]`` of ``scale * t`` (frequencies 1 .. 1/10^4)."""
    half = dim // 2
    freqs = jnp.exp(-np.log(10_000.0) * jnp.arange(half) / half)
    angles = scale * jnp.asarray(t, jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], -1)


def rotary(x, base: float = 10_000.0):
    """Rotary position embedding of ``x [B, n, heads, head_dim]`` (pairs of the two halves
    of the head dimension rotated by the angle ``position * base^(-2k/head_dim)``)."""
    n, hd = x.shape[1], x.shape[-1]
    freqs = base ** (-jnp.arange(0, hd // 2) * 2.0 / hd)
    angles = jnp.arange(n)[:, None] * freqs  # [n, hd/2]
    cos, sin = jnp.cos(angles)[None, :, None], jnp.sin(angles)[None, :, None]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).astype(x.dtype)


def _modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
    """One adaLN-zero transformer block (attention + GLU MLP)."""

    num_heads: int
    head_dim: int
    mlp_multiple_of: int
    rope: bool
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, c):
        d = self.num_heads * self.head_dim
        dense = lambda f, name: nn.Dense(f, use_bias=False, dtype=self.dtype, name=name)
        mod = nn.Dense(6 * d, kernel_init=nn.initializers.zeros, dtype=self.dtype, name="adaln")(nn.silu(c))
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod, 6, -1)

        h = _modulate(nn.RMSNorm(dtype=self.dtype, name="norm_attn")(x), shift1, scale1)
        qkv = dense(3 * d, "qkv")(h).reshape(h.shape[:2] + (3, self.num_heads, self.head_dim))
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.rope:
            q, k = rotary(q), rotary(k)
        attn = jax.nn.dot_product_attention(q, k, v).reshape(h.shape[:2] + (d,))
        x = x + gate1[:, None] * dense(d, "attn_out")(attn)

        h = _modulate(nn.RMSNorm(dtype=self.dtype, name="norm_mlp")(x), shift2, scale2)
        hidden = glu_hidden(d, self.mlp_multiple_of)
        h = nn.silu(dense(hidden, "mlp_gate")(h)) * dense(hidden, "mlp_up")(h)
        return x + gate2[:, None] * dense(d, "mlp_down")(h)


class Transformer(nn.Module):
    """MD4's diffusion transformer: ``(x_t int[B, n], t [B]) -> logits [B, n, vocab_size]``."""

    vocab_size: int
    num_layers: int = 12
    num_heads: int = 12
    head_dim: int = 64
    cond_dim: int = 128
    mlp_multiple_of: int = 256
    positions: str = "rope"
    max_len: int = 1024
    dtype: str = "float32"

    def _check(self, n: int):
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")
        if self.positions == "learned" and n > self.max_len:
            raise ValueError(f"sequence length {n} exceeds max_len = {self.max_len}")
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(f"rotary positions need an even head_dim, got {self.head_dim}")

    @nn.compact
    def __call__(self, x_t, t):
        self._check(x_t.shape[1])
        dtype = jnp.dtype(self.dtype)
        d = self.num_heads * self.head_dim
        x = nn.Embed(self.vocab_size + 1, d, embedding_init=nn.initializers.normal(0.02), name="embed")(x_t)
        if self.positions == "learned":
            table = self.param("pos_embed", nn.initializers.normal(0.02), (self.max_len, d))
            x = x + table[: x_t.shape[1]]
        x = x.astype(dtype)
        c = nn.Dense(self.cond_dim, name="time_in")(time_features(t, self.cond_dim))
        c = nn.Dense(self.cond_dim, name="time_out")(nn.silu(c)).astype(dtype)
        for i in range(self.num_layers):
            x = Block(self.num_heads, self.head_dim, self.mlp_multiple_of, self.positions == "rope", dtype,
                      name=f"block_{i}")(x, c)
        shift, scale = jnp.split(nn.Dense(2 * d, kernel_init=nn.initializers.zeros, dtype=dtype,
                                          name="final_adaln")(nn.silu(c)), 2, -1)
        x = _modulate(nn.RMSNorm(dtype=dtype, name="final_norm")(x), shift, scale)
        logits = nn.Dense(self.vocab_size, kernel_init=nn.initializers.zeros, dtype=dtype, name="readout")(x)
        return logits.astype(jnp.float32)


def init_params(model: Transformer, key, seq_len: int):
    """The transformer's parameters, initialized on a dummy batch of one sequence of ``seq_len`` tokens."""
    return model.init(key, jnp.zeros((1, seq_len), jnp.int32), jnp.zeros((1,)))
