"""ResNet-18 feature extractor (He et al. 2016; torchvision's layout) for the layer-wise MMD
of paper Sec. 5.2 / Fig. 5b.

``ResNet18()(images)`` takes images ``[B, H, W, 3]`` in [-1, 1] (the diffusion models'
range), normalizes them with the ImageNet mean and std, and returns a dict of features at
five depths: ``stem`` (after conv 7x7/2, batch norm, ReLU, max-pool 3x3/2) and ``stage1`` ..
``stage4`` (after each pair of basic blocks), each global-average-pooled over space to a
vector (64, 64, 128, 256, 512 dims). Batch norm uses its running statistics (inference).

Pretrained weights: convert torchvision's checkpoint once, on a machine with torch:

    python -c "import torch, torchvision, numpy as np; sd = torchvision.models.resnet18(
        weights='IMAGENET1K_V1').state_dict(); np.savez('resnet18.npz', **{k: v.numpy() for k, v in sd.items()})"

and load it with :func:`load_torchvision_npz` (no torch needed here). Tests use random weights.
"""
from __future__ import annotations

import os

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (channels, stride of the first block)
FEATURES = ("stem", "stage1", "stage2", "stage3", "stage4")


def _bn(name):
    return nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=1e-5, name=name)


class BasicBlock(nn.Module):
    channels: int
    stride: int

    @nn.compact
    def __call__(self, x):
        conv = lambda k, s, name: nn.Conv(self.channels, (k, k), (s, s), padding=((k // 2, k // 2),) * 2,
                                          use_bias=False, name=name)
        y = nn.relu(_bn("bn1")(conv(3, self.stride, "conv1")(x)))
        y = _bn("bn2")(conv(3, 1, "conv2")(y))
        if self.stride != 1 or x.shape[-1] != self.channels:
            x = _bn("downsample_bn")(conv(1, self.stride, "downsample_conv")(x))
        return nn.relu(x + y)


class ResNet18(nn.Module):
    """Features ``{name: [B, channels]}`` of images in [-1, 1] at the depths of ``FEATURES``."""

    @nn.compact
    def __call__(self, images):
        x = (images + 1.0) / 2.0
        x = (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
        x = nn.Conv(64, (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False, name="conv1")(x)
        x = nn.relu(_bn("bn1")(x))
        x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        features = {"stem": x.mean((1, 2))}
        for i, (channels, stride) in enumerate(STAGES, start=1):
            x = BasicBlock(channels, stride, name=f"layer{i}_0")(x)
            x = BasicBlock(channels, 1, name=f"layer{i}_1")(x)
            features[f"stage{i}"] = x.mean((1, 2))
        return features


def _conv(w):
    return np.transpose(np.asarray(w), (2, 3, 1, 0))  # torch OIHW -> flax HWIO


def convert_torchvision(state_dict) -> dict:
    """Flax variables ``{"params", "batch_stats"}`` from torchvision's ResNet-18 state dict
    (name -> numpy array); the classifier (``fc``) is dropped."""
    params, stats = {}, {}

    def bn(prefix, into_params, into_stats):
        into_params.update(scale=np.asarray(state_dict[f"{prefix}.weight"]),
                           bias=np.asarray(state_dict[f"{prefix}.bias"]))
        into_stats.update(mean=np.asarray(state_dict[f"{prefix}.running_mean"]),
                          var=np.asarray(state_dict[f"{prefix}.running_var"]))

    params["conv1"] = {"kernel": _conv(state_dict["conv1.weight"])}
    params["bn1"], stats["bn1"] = {}, {}
    bn("bn1", params["bn1"], stats["bn1"])
    for i in range(1, 5):
        for j in range(2):
            src, dst = f"layer{i}.{j}", f"layer{i}_{j}"
            p, s = {}, {}
            p["conv1"] = {"kernel": _conv(state_dict[f"{src}.conv1.weight"])}
            p["conv2"] = {"kernel": _conv(state_dict[f"{src}.conv2.weight"])}
            for k in ("bn1", "bn2"):
                p[k], s[k] = {}, {}
                bn(f"{src}.{k}", p[k], s[k])
            if f"{src}.downsample.0.weight" in state_dict:
                p["downsample_conv"] = {"kernel": _conv(state_dict[f"{src}.downsample.0.weight"])}
                p["downsample_bn"], s["downsample_bn"] = {}, {}
                bn(f"{src}.downsample.1", p["downsample_bn"], s["downsample_bn"])
            params[dst], stats[dst] = p, s
    return {"params": params, "batch_stats": stats}


def load_torchvision_npz(path: str) -> dict:
    """:func:`convert_torchvision` of a ``.npz`` saved from torchvision's state dict."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no ResNet-18 weights at {path!r} (see rhmdiff.models.resnet for the conversion)")
    with np.load(path) as f:
        return convert_torchvision({k: f[k] for k in f.files})
