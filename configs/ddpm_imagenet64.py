"""Improved DDPM on ImageNet 64x64 (paper Sec. 5.2, App. C; Nichol & Dhariwal 2021).

    python -m rhmdiff.main --config=configs/ddpm_imagenet64.py --workdir=runs/ddpm_in64 \
        --config.data.path=/data/imagenet64/train --config.data.val_path=/data/imagenet64/val
    python -m rhmdiff.analysis.mmd --workdir=runs/ddpm_in64 --resnet_weights=/data/resnet18.npz

U-Net with 128 channels, multipliers (1, 2, 3, 4), 3 residual blocks per resolution,
attention at 16x16 and 8x8 (4 heads): ~121M parameters. Cosine schedule, T = 4000, learned
variance, hybrid loss (lambda = 0.001), Adam lr 1e-4, batch 128, 10 epochs, EMA 0.9999;
the parameters are kept at log-spaced steps 10^2 ... 10^5 for the layer-wise MMD.
"""
from rhmdiff.config_base import ddpm_config


def get_config():
    return ddpm_config()
