"""Relative sensitivity of the U-Net's blocks to synonym resets (paper App. D.1, Fig. 6) at the
models of the P sweep (run ``configs/sweep_P.py`` first): the m = 3 points, every P and seed
(the convergence-check variants left out), at diffusion time t = 1, on 1024 fresh sequences of
each seed's grammar.

    python -m rhmdiff.main --config=configs/sensitivity.py --workdir=runs/sensitivity
    python -m rhmdiff.main --config=configs/sensitivity.py --workdir=runs/sensitivity_paper \\
        --config.sensitivity.sources='("runs/sweep_P_paper/*",)'
"""
import ml_collections

from rhmdiff.config_base import base_config


def get_config():
    c = base_config("sensitivity", seed=0)
    # reset "other": R_l redraws the production at level l among the other m - 1; "any": among all m
    c.sensitivity = ml_collections.ConfigDict(dict(sources=("runs/sweep_P/m3_P*_seed?",), num_data=1024, t=1,
                                                   reset="other"))
    return c
