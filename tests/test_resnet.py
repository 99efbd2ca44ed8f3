"""ResNet-18 features: shapes, torchvision weight conversion (layout checked against a direct
convolution in torch's convention), running batch-norm statistics."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from rhmdiff.models import resnet


def _torchvision_like_state_dict(variables):
    """A torchvision-named state dict holding the given flax variables (inverse mapping)."""
    sd = {}
    params, stats = variables["params"], variables["batch_stats"]

    def put(prefix, p_conv=None, p_bn=None, s_bn=None):
        if p_conv is not None:
            sd[f"{prefix}.weight"] = np.transpose(np.asarray(p_conv["kernel"]), (3, 2, 0, 1))
        if p_bn is not None:
            sd[f"{prefix}.weight"], sd[f"{prefix}.bias"] = np.asarray(p_bn["scale"]), np.asarray(p_bn["bias"])
            sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"] = np.asarray(s_bn["mean"]), np.asarray(s_bn["var"])

    put("conv1", p_conv=params["conv1"])
    put("bn1", p_bn=params["bn1"], s_bn=stats["bn1"])
    for i in range(1, 5):
        for j in range(2):
            p, s = params[f"layer{i}_{j}"], stats[f"layer{i}_{j}"]
            put(f"layer{i}.{j}.conv1", p_conv=p["conv1"])
            put(f"layer{i}.{j}.conv2", p_conv=p["conv2"])
            put(f"layer{i}.{j}.bn1", p_bn=p["bn1"], s_bn=s["bn1"])
            put(f"layer{i}.{j}.bn2", p_bn=p["bn2"], s_bn=s["bn2"])
            if "downsample_conv" in p:
                put(f"layer{i}.{j}.downsample.0", p_conv=p["downsample_conv"])
                put(f"layer{i}.{j}.downsample.1", p_bn=p["downsample_bn"], s_bn=s["downsample_bn"])
    sd["fc.weight"], sd["fc.bias"] = np.zeros((1000, 512)), np.zeros(1000)
    return sd


def test_features_shapes_and_weight_round_trip(tmp_path):
    model = resnet.ResNet18()
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32, 3), minval=-1, maxval=1)
    variables = jax.jit(model.init)(jax.random.PRNGKey(1), x)
    apply = jax.jit(model.apply)
    feats = apply(variables, x)
    assert {k: v.shape for k, v in feats.items()} == {
        "stem": (2, 64), "stage1": (2, 64), "stage2": (2, 128), "stage3": (2, 256), "stage4": (2, 512)}
    sd = _torchvision_like_state_dict(variables)
    assert len(sd) == 102  # torchvision's resnet18 state dict minus its 20 num_batches_tracked
    np.savez(tmp_path / "r18.npz", **sd)
    loaded = resnet.load_torchvision_npz(str(tmp_path / "r18.npz"))
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, jax.device_get(variables))
    # running statistics are used: shifting a running mean changes the features
    loaded["batch_stats"]["bn1"]["mean"] = loaded["batch_stats"]["bn1"]["mean"] + 1.0
    assert not np.allclose(apply(loaded, x)["stem"], feats["stem"])
    with pytest.raises(FileNotFoundError, match="ResNet-18"):
        resnet.load_torchvision_npz(str(tmp_path / "missing.npz"))


def test_conv_layout_matches_torch_cross_correlation():
    """conv1 with converted OIHW weights equals a direct stride-2, pad-3 cross-correlation."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 7, 7)).astype(np.float32)  # torch [out, in, kh, kw]
    img = rng.normal(size=(9, 9, 3)).astype(np.float32)
    conv = nn.Conv(4, (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False)
    out = np.asarray(conv.apply({"params": {"kernel": resnet._conv(w)}}, img[None]))[0]
    pad = np.pad(img, ((3, 3), (3, 3), (0, 0)))
    direct = np.zeros((5, 5, 4))
    for y in range(5):
        for x in range(5):
            patch = pad[2 * y:2 * y + 7, 2 * x:2 * x + 7, :]  # [kh, kw, in]
            direct[y, x] = np.einsum("oikl,kli->o", w, patch)
    np.testing.assert_allclose(out, direct, rtol=1e-4, atol=1e-4)
