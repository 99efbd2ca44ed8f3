"""Improved DDPM on ImageNet 64x64 (paper Sec. 5.2, App. C; Nichol & Dhariwal 2021; task ``ddpm``).

    python -m rhmdiff.main --config=configs/ddpm_imagenet64.py --workdir=runs/ddpm_in64 \\
        --config.data.path=/data/imagenet64/train --config.data.val_path=/data/imagenet64/val
    python -m rhmdiff.main --config=configs/ddpm_mmd.py --workdir=runs/ddpm_in64_mmd \\
        --config.analysis.run_dir=runs/ddpm_in64 --config.analysis.resnet_weights=/data/resnet18.npz

U-Net with 128 channels, multipliers (1, 2, 3, 4), 3 residual blocks per resolution,
attention at 16x16 and 8x8 (4 heads): ~121M parameters; timesteps fed to the model rescaled
to [0, 1000) (improved-diffusion's rescale_timesteps). Cosine schedule, T = 4000, learned
variance, hybrid loss (lambda = 0.001), Adam lr 1e-4, batch 128, 10 epochs, EMA 0.9999
started at the initial weights (improved-diffusion's, not bias-corrected); the parameters
are kept at log-spaced steps 10^2 ... 10^5 for the layer-wise MMD.
"""
import ml_collections

from rhmdiff.config_base import base_config, train_config


def get_config():
    c = base_config("ddpm", seed=0)
    # .npz batches of downsampled ImageNet (or image folders); cache_dir "": workdir/cache
    c.data = ml_collections.ConfigDict(dict(
        path="data/imagenet64/train", val_path="data/imagenet64/val", cache_dir="", image_size=64, epochs=10))
    c.model = ml_collections.ConfigDict(dict(
        channels=128, channel_mult=(1, 2, 3, 4), num_res_blocks=3, attention_resolutions=(16, 8), num_heads=4,
        dropout=0.0, rescale_timesteps=True))
    c.diffusion = ml_collections.ConfigDict(dict(T=4000, lam=0.001))
    c.train = train_config(
        optimizer="adam", lr=1e-4, lr_schedule="constant", warmup_steps=0, grad_clip=0.0, ema_decay=0.9999,
        ema_debias=False, momentum=0.0, batch_size=128, num_steps=-1,  # -1: data.epochs epochs
        eval_every=10_000, checkpoint_every=2000, log_every=100, patience=10**9,
        steps_per_call=1,  # one call per step: XLA:CPU runs conv steps ~20x slower inside lax.scan
        max_nonfinite=100,
        keep_steps=tuple(sorted({round(10 ** (k / 4)) for k in range(8, 21)})))  # 10^2 .. 10^5, log-spaced
    c.eval = ml_collections.ConfigDict(dict(val_images=1024, batch_size=128, num_samples=64, sample_steps=250))
    return c
