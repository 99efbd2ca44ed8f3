"""The paper's U-Net: shapes, skip wiring, conv equivalence, muP coordinate check."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rhmdiff.models import unet


def test_shapes_and_preactivations():
    model = unet.UNet(v=8, s=2, L=3, width=16, T=100)
    x = jax.random.randint(jax.random.PRNGKey(0), (5, 8), 0, 8)
    t = jnp.arange(5)
    params = model.init(jax.random.PRNGKey(1), x, t)
    logits, pre = model.apply(params, x, t, return_preactivations=True)
    chex.assert_shape(logits, (5, 8, 8))
    chex.assert_shape([pre[f"encoder_{k}"] for k in (1, 2, 3)], [(5, 4, 16), (5, 2, 16), (5, 1, 16)])
    chex.assert_shape([pre[f"decoder_{k}"] for k in (3, 2, 1)], [(5, 2, 16), (5, 4, 16), (5, 8, 16)])
    # time conditioning changes the output; "none" ignores t
    assert not np.allclose(model.apply(params, x, t + 50), logits)
    plain = unet.UNet(v=8, s=2, L=3, width=16, time_conditioning="none")
    p2 = plain.init(jax.random.PRNGKey(1), x, t)
    np.testing.assert_allclose(plain.apply(p2, x, t), plain.apply(p2, x, t + 50))


def test_skip_wiring_by_sum():
    """Skips are summed: with no time conditioning and all decoder weights zero, every
    decoder block outputs gelu(0) = 0, so u_0 = e_0 and the logits are unembed(embed(x))."""
    model = unet.UNet(v=4, s=2, L=2, width=8, time_conditioning="none")
    x = jax.random.randint(jax.random.PRNGKey(0), (3, 4), 0, 4)
    params = model.init(jax.random.PRNGKey(1), x, jnp.zeros(3, jnp.int32))
    p = jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.zeros_like(a) if "decoder" in jax.tree_util.keystr(path) else a, params)
    e0 = jax.nn.one_hot(x, 4) @ p["params"]["embed"]["kernel"] / 2.0 + p["params"]["embed"]["bias"]
    expected = e0 @ p["params"]["unembed"]["kernel"] / 8
    np.testing.assert_allclose(model.apply(p, x, jnp.zeros(3, jnp.int32)), expected, rtol=1e-5, atol=1e-6)


def test_patch_conv_equals_nn_conv():
    s, c_in, c_out = 3, 5, 7
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, c_in))
    conv = nn.Conv(c_out, kernel_size=(s,), strides=(s,), padding="VALID")
    cp = conv.init(jax.random.PRNGKey(1), x)
    dense = nn.Dense(c_out)
    dp = {"params": {"kernel": cp["params"]["kernel"].reshape(s * c_in, c_out), "bias": cp["params"]["bias"]}}
    np.testing.assert_allclose(unet.patch_conv(lambda z: dense.apply(dp, z), x, s), conv.apply(cp, x), rtol=1e-5, atol=1e-5)
    convt = nn.ConvTranspose(c_out, kernel_size=(s,), strides=(s,), padding="VALID")
    tp = convt.init(jax.random.PRNGKey(2), x)
    k = tp["params"]["kernel"][::-1]  # [s, c_in, c_out]; flax ConvTranspose flips the kernel
    dense_t = nn.Dense(s * c_out)
    dtp = {"params": {"kernel": k.transpose(1, 0, 2).reshape(c_in, s * c_out), "bias": jnp.tile(tp["params"]["bias"], s)}}
    np.testing.assert_allclose(unet.patch_conv_transpose(lambda z: dense_t.apply(dtp, z), x, s), convt.apply(tp, x),
                               rtol=1e-5, atol=1e-5)


def _update_sizes(width):
    """RMS change of every block's pre-activation after one SGD step at lr = mup_lr_scale."""
    model = unet.UNet(v=8, s=2, L=2, width=width, T=100)
    x = jax.random.randint(jax.random.PRNGKey(0), (32, 4), 0, 8)
    t = jax.random.randint(jax.random.PRNGKey(1), (32,), 0, 100)
    params = jax.jit(model.init)(jax.random.PRNGKey(2), x, t)

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x, t), x).mean()

    grads = jax.jit(jax.grad(loss))(params)
    new = jax.tree.map(lambda p, g: p - 0.1 * unet.mup_lr_scale(width) * g, params, grads)
    apply = jax.jit(lambda p: model.apply(p, x, t, return_preactivations=True))
    (l0, a0), (l1, a1) = [apply(p) for p in (params, new)]
    sizes = {k: float(jnp.sqrt(jnp.mean((a1[k] - a0[k]) ** 2))) for k in a0}
    sizes["logits"] = float(jnp.sqrt(jnp.mean((l1 - l0) ** 2)))
    sizes["logits_init"] = float(jnp.sqrt(jnp.mean(l0**2)))
    return sizes


def test_mup_coordinate_check():
    """Under muP, the per-layer update of one SGD step does not grow or vanish with width."""
    sizes = [_update_sizes(w) for w in (256, 1024, 4096)]
    for key in sizes[0]:
        vals = np.array([s[key] for s in sizes])
        if key == "logits_init":  # output at init shrinks like 1/sqrt(width) under muP
            assert vals[2] < vals[0] / 2
            continue
        assert vals.max() / vals.min() < 2.0, (key, vals)
        assert vals.min() > 1e-3, (key, vals)


def _reference_param_count(v, s, L, C):
    """bpUNET's parameters (the authors' code, no biases): embedding v x C, L encoders
    C x C x s with LayerNorm(C), L decoders 2C x C x s with LayerNorm(C), read-out 2C x v."""
    return v * C + L * (s * C * C + 2 * C) + L * (2 * C * s * C + 2 * C) + 2 * C * v


def test_reference_unet_has_the_reference_parameter_count():
    from rhmdiff._util import num_params
    assert _reference_param_count(8, 2, 3, 256) == 1_188_864  # counted on the authors' PyTorch module
    for v, s, L, C in [(8, 2, 3, 256), (4, 3, 2, 16), (16, 2, 4, 64), (5, 2, 1, 8)]:
        model = unet.ReferenceUNet(v=v, s=s, L=L, width=C, alpha_bars=tuple(np.linspace(1, 0.01, 11)))
        shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, s**L), jnp.int32),
                                jnp.zeros((1,), jnp.int32))
        assert num_params(shapes) == _reference_param_count(v, s, L, C), (v, s, L, C)
        assert all("bias" not in jax.tree_util.keystr(path) or "norm" in jax.tree_util.keystr(path)
                   for path, _ in jax.tree_util.tree_leaves_with_path(shapes))


def _numpy_reference_forward(p, x, t, alpha_bars, v, s, L, C):
    """The authors' bpUNET forward pass written out in numpy with PyTorch's conventions
    (channels first, conv1d / conv_transpose1d as explicit sums over positions)."""
    from scipy.special import erf
    gelu = lambda z: 0.5 * z * (1 + erf(z / np.sqrt(2)))
    a = np.asarray(alpha_bars, np.float64)
    mean = np.mean(a + (1 - a) / v)
    std = np.sqrt(np.mean(a + (1 - a) / v**2) - mean**2)

    def conv(h, w, stride, divide):  # h [c_in, n], w [c_out, c_in, k]
        c_out, _, k = w.shape
        n_out = (h.shape[1] - k) // stride + 1
        out = np.zeros((c_out, n_out))
        for j in range(n_out):
            out[:, j] = np.einsum("oik,ik->o", w, h[:, j * stride:j * stride + k])
        return out / divide

    def conv_t(h, w, stride, divide):  # w [c_in, c_out, k]
        _, c_out, k = w.shape
        out = np.zeros((c_out, (h.shape[1] - 1) * stride + k))
        for j in range(h.shape[1]):
            out[:, j * stride:j * stride + k] += np.einsum("iok,i->ok", w, h[:, j])
        return out / divide

    def layer_norm(h, gain, bias):  # over channels, per position
        mu, var = h.mean(0), h.var(0)
        return (h - mu) / np.sqrt(var + 1e-5) * gain[:, None] + bias[:, None]

    q = lambda name: {k: np.asarray(val, np.float64) for k, val in p["params"][name].items()}
    outs = []
    for xi, ti in zip(np.asarray(x), np.asarray(t)):
        onehot = np.eye(v)[xi].T  # [v, d]
        prob = a[ti] * onehot + (1 - a[ti]) / v
        w = q("embed")["kernel"].T[:, :, None]  # [C, v, 1]
        h = gelu(conv((prob - mean) / std, w, 1, np.sqrt(v)))
        skips = [h]
        for k in range(1, L + 1):
            w = q(f"encoder_{k}")["kernel"].reshape(s, C, C).transpose(2, 1, 0)  # [out, in, s]
            norm = q(f"norm_encoder_{k}")
            h = gelu(layer_norm(conv(h, w, s, np.sqrt(s * C)), norm["scale"], norm["bias"]))
            skips.append(h)
        for k in range(L, 0, -1):
            w = q(f"decoder_{k}")["kernel"].reshape(2 * C, s, C).transpose(0, 2, 1)  # [in, out, s]
            norm = q(f"norm_decoder_{k}")
            h = gelu(layer_norm(conv_t(np.concatenate([h, skips[k]]), w, s, np.sqrt(s * 2 * C)),
                                norm["scale"], norm["bias"]))
        w = q("readout")["kernel"].T[:, :, None]
        outs.append(conv(np.concatenate([h, skips[0]]), w, 1, 2 * C).T)  # [d, v]
    return np.stack(outs)


def test_reference_unet_forward_equals_a_numpy_implementation():
    v, s, L, C = 3, 2, 2, 4
    alpha_bars = tuple(np.cumprod(1 - np.linspace(0.05, 0.4, 10)).tolist())
    alpha_bars = (1.0,) + alpha_bars
    model = unet.ReferenceUNet(v=v, s=s, L=L, width=C, alpha_bars=alpha_bars)
    x = jax.random.randint(jax.random.PRNGKey(0), (5, 4), 0, v)
    t = jnp.array([0, 3, 7, 10, 5])
    params = model.init(jax.random.PRNGKey(1), x, t)
    params = jax.tree_util.tree_map(  # non-trivial LayerNorm gains and biases too
        lambda a: a + 0.3 * jax.random.normal(jax.random.PRNGKey(a.size), a.shape), params)
    got = np.asarray(model.apply(params, x, t))
    want = _numpy_reference_forward(params, x, t, alpha_bars, v, s, L, C)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    logits, pre = model.apply(params, x, t, return_preactivations=True)
    chex.assert_shape([pre[f"encoder_{k}"] for k in (1, 2)] + [pre[f"decoder_{k}"] for k in (2, 1)],
                      [(5, 2, C), (5, 1, C), (5, 2, C), (5, 4, C)])
