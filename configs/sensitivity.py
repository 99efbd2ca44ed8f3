"""Relative sensitivity S_{k,l} of the U-Net blocks vs P (paper Fig. 6, Eq. 26): the best
parameters of every point of the P sweep (run ``configs/sweep_P.py`` first), at diffusion
time t = 1, on 1024 fresh sequences of the sweep's grammar; ~1 minute on 2 CPU cores.

    python -m rhmdiff.main --config=configs/sensitivity.py --workdir=runs/sensitivity
    python -m rhmdiff.main --config=configs/sensitivity.py --workdir=runs/sensitivity_paper \\
        --config.sensitivity.sources='("runs/sweep_P_paper/*",)'
"""
import ml_collections

from rhmdiff.config_base import base_config


def get_config():
    c = base_config("sensitivity", seed=0)
    # reset "other": the authors' R_l (another production at level l); "any": any of the m
    c.sensitivity = ml_collections.ConfigDict(dict(sources=("runs/sweep_P/*",), num_data=1024, t=1, reset="other"))
    return c
