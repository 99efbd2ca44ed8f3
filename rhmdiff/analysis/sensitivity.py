"""Sensitivity of hidden representations to synonym resets (paper App. D.1, Eq. 26, Fig. 6).

    S_{k,l} = E_x ||a_k(x) - a_k(R_l x)||^2 / E_{x,y} ||a_k(x) - a_k(y)||^2

with ``a_k`` the pre-activations of block k (``UNet(..., return_preactivations=True)``),
``R_l`` = :func:`rhmdiff.rhm.reset_synonyms` (every choice of production rule below the
level-l latents redrawn) and ``y`` an independent data point (the same data in another
order). S ~ 0: block k is invariant to level-l synonyms; S ~ 1: as sensitive as to
changing the whole input.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rhmdiff import rhm


def relative_sensitivity(key, features_fn, g: rhm.Grammar, tokens, same_allowed: bool = False) -> dict:
    """``{name: float[L]}``: entry ``l-1`` is S_{k,l} (Eq. 26) of every feature map ``name``
    returned by ``features_fn(tokens) -> {name: array[N, ...]}``, on ``tokens int[N, d]``.
    ``same_allowed``: the reset may redraw the current production at level l
    (:func:`rhmdiff.rhm.reset_synonyms`; default False, the authors' reset)."""
    x = jnp.asarray(tokens)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"tokens must be [N, d] with N >= 2, got shape {x.shape}")
    k_perm, k_reset = jax.random.split(key)
    y = x[jax.random.permutation(k_perm, x.shape[0])]

    def sq_dist(a, b):
        return float(jnp.mean(jnp.sum((a - b).reshape(a.shape[0], -1) ** 2, -1)))

    base, other = features_fn(x), features_fn(y)
    reset = [features_fn(rhm.reset_synonyms(jax.random.fold_in(k_reset, l), g, x, l, same_allowed))
             for l in range(1, g.L + 1)]
    return {name: np.array([sq_dist(a, r[name]) for r in reset]) / sq_dist(a, other[name])
            for name, a in base.items()}


def unet_features(model, params, t: int):
    """``features_fn`` of the U-Net's block pre-activations at diffusion time ``t`` (the
    clean input is fed with the time embedding of step t)."""

    @jax.jit
    def features(x):
        return model.apply(params, x, jnp.full((x.shape[0],), t), return_preactivations=True)[1]

    return features
