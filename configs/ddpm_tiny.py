"""The Improved-DDPM pipeline of ``ddpm_imagenet64.py`` at CPU size (minutes on 2 cores).

    python -m rhmdiff.data.images --out=data/demo_images     # synthetic 16x16 images, once
    python -m rhmdiff.main --config=configs/ddpm_tiny.py --workdir=runs/ddpm_tiny
    python -m rhmdiff.main --config=configs/ddpm_mmd.py:tiny --workdir=runs/ddpm_tiny_mmd

16x16 synthetic images (:func:`rhmdiff.data.images.demo_images`), a 2-level U-Net with 32
base channels and attention at 8x8, T = 1000, Adam lr 2e-4, batch 32, EMA 0.99
(bias-corrected: a short run).
"""
from rhmdiff.config_base import sibling_config


def get_config():
    c = sibling_config(__file__, "ddpm_imagenet64").get_config()
    c.data.update(path="data/demo_images/train", val_path="data/demo_images/val", image_size=16)
    c.model.update(channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,), num_heads=2)
    c.diffusion.T = 1000
    c.train.update(lr=2e-4, ema_decay=0.99, ema_debias=True, batch_size=32, num_steps=1500, eval_every=250,
                   checkpoint_every=250, log_every=50, keep_steps=(30, 100, 300, 1000, 1500))
    c.eval.update(val_images=256, batch_size=64, num_samples=32, sample_steps=50)
    return c
