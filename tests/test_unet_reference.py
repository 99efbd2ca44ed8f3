"""The rhmdiff U-Net (variant "rhmdiff") written out in numpy: sinusoidal time features, every
muP multiplier (embedding 1/sqrt(v), filter-s convolutions 1/sqrt(s C), transposed ones
1/sqrt(C), time projections 1/sqrt(time_dim), read-out 1/C), the time embedding in every block
and the skips added after the decoder's GeLU -- at s = 3, C != v, with non-zero biases."""
import jax
import jax.numpy as jnp
import numpy as np

from rhmdiff.models import unet


def numpy_time_features(t, T, dim):
    k = np.arange(dim // 2)
    angle = np.asarray(t, np.float64)[:, None] / T * 1000.0 * np.exp(-np.log(1000.0) * k / (dim // 2))
    return np.concatenate([np.sin(angle), np.cos(angle)], -1)


def numpy_unet(p, x, t, v, s, L, C, T, time_dim):
    """Channels last, per example: patches of s positions flattened position-major."""
    gelu = lambda z: 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))  # flax's default
    q = {name: {k: np.asarray(a, np.float64) for k, a in layer.items()} for name, layer in p["params"].items()}
    dense = lambda h, name, fan_in: h @ q[name]["kernel"] / np.sqrt(fan_in) + q[name]["bias"]
    temb = numpy_time_features(t, T, time_dim)
    out, pre = [], {}
    for b in range(len(x)):
        time = lambda name, b=b: dense(temb[b], name, time_dim)
        h = dense(np.eye(v)[x[b]], "embed", v)  # [d, C]
        skips = [h]
        for k in range(1, L + 1):
            a = dense(h.reshape(-1, s * C), f"encoder_{k}", s * C) + time(f"time_encoder_{k}")
            pre.setdefault(f"encoder_{k}", []).append(a)
            h = gelu(a)
            skips.append(h)
        for k in range(L, 0, -1):
            a = dense(h, f"decoder_{k}", C).reshape(-1, C) + time(f"time_decoder_{k}")
            pre.setdefault(f"decoder_{k}", []).append(a)
            h = gelu(a) + skips[k - 1]
        out.append(h @ q["unembed"]["kernel"] / C)
    return np.stack(out), {k: np.stack(a) for k, a in pre.items()}


def test_unet_forward_and_preactivations_equal_a_numpy_implementation():
    v, s, L, C, T, time_dim = 4, 3, 2, 5, 50, 6
    model = unet.UNet(v=v, s=s, L=L, width=C, T=T, time_dim=time_dim)
    x = np.array(jax.random.randint(jax.random.PRNGKey(0), (3, s**L), 0, v))
    t = np.array([0, 17, 49])
    shapes = jax.eval_shape(lambda k: unet.init_params(model, k, s**L), jax.random.PRNGKey(1))
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(  # N(0, 1) weights as at initialization, and non-zero biases
        lambda a: rng.normal(size=a.shape).astype(np.float32), shapes)
    logits, pre = jax.jit(lambda p: model.apply(p, x, t, return_preactivations=True))(params)
    want, want_pre = numpy_unet(params, x, t, v, s, L, C, T, time_dim)
    np.testing.assert_allclose(np.asarray(logits), want, rtol=2e-4, atol=2e-5)
    assert set(pre) == set(want_pre)
    for k in pre:
        np.testing.assert_allclose(np.asarray(pre[k]), want_pre[k], rtol=2e-4, atol=2e-5, err_msg=k)
    np.testing.assert_allclose(np.asarray(unet.time_features(jnp.asarray(t), T, time_dim)),
                               numpy_time_features(t, T, time_dim), atol=2e-4)  # float32 angles up to 980 rad
    assert unet.mup_lr_scale(384) == 384.0
