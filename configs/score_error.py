"""How far the trained denoisers of the P sweep are from the Bayes-optimal one, per diffusion
time and per level of the tree (task ``score_error``; run ``configs/sweep_P.py`` first).

    python -m rhmdiff.main --config=configs/score_error.py --workdir=runs/score_error

The m = 3 models of seed 0 of ``configs/sweep_P.py:cpu`` (the convergence-check variants
left out); 1024 fresh sequences (not training points) per model, 12 log-spaced steps t in
[1, 1000].
"""
import ml_collections

from rhmdiff.config_base import base_config


def get_config():
    c = base_config("score_error", seed=0)
    c.score_error = ml_collections.ConfigDict(dict(sources=("runs/sweep_P/m3_P*_seed0",), num_data=1024, num_t=12,
                                                   batch_size=1024))
    return c
