"""Layer-wise MMD of a ``ddpm`` run per training stage (paper Fig. 5; task ``ddpm_mmd``).

    python -m rhmdiff.main --config=configs/ddpm_mmd.py --workdir=runs/ddpm_in64_mmd \\
        --config.analysis.run_dir=runs/ddpm_in64 --config.analysis.resnet_weights=/data/resnet18.npz
    python -m rhmdiff.main --config=configs/ddpm_mmd.py:tiny --workdir=runs/ddpm_tiny_mmd

``imagenet64``: 10^4 generated (and real) images per kept stage with 250 respaced steps, as
in the paper. ``tiny``: 256 images, 50 steps, for ``configs/ddpm_tiny.py``. Without
``resnet_weights`` the features come from a fixed random ResNet-18 (not the paper's measure).
"""
import ml_collections

from rhmdiff.config_base import base_config, check_preset


def get_config(preset: str = "imagenet64"):
    check_preset(preset, ("imagenet64", "tiny"))
    c = base_config("ddpm_mmd", seed=0)
    c.analysis = ml_collections.ConfigDict(dict(
        run_dir="runs/ddpm_in64", num_samples=10_000, sample_steps=250, batch_size=128, resnet_weights=""))
    if preset == "tiny":
        c.analysis.update(run_dir="runs/ddpm_tiny", num_samples=256, sample_steps=50, batch_size=64)
    return c
