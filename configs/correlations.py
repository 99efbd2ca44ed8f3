"""Token-token correlations vs distance (paper Fig. 1c): RHM data, BP-oracle samples and the
sequences generated at every point of the P sweep (run ``configs/sweep_P.py`` first).

    python -m rhmdiff.main --config=configs/correlations.py --workdir=runs/correlations
    python -m rhmdiff.main --config=configs/correlations.py --workdir=runs/correlations_other \\
        --config.correlations.sources='("runs/other_sweep/*",)'
"""
import ml_collections

from rhmdiff.config_base import base_config, grammar_config


def get_config():
    c = base_config("correlations", seed=0)
    # the grammar of configs/rhm_L3.py:cpu and configs/sweep_P.py:cpu, and its diffusion (oracle samples)
    c.rhm = grammar_config(v=8, m=3, s=2, L=3, seed=0, rules_file="")
    c.data = ml_collections.ConfigDict(dict(train_size=0, val_size=0, test_size=0))
    c.diffusion = ml_collections.ConfigDict(dict(T=1000, schedule="linear", beta_min=1e-4, beta_max=0.02))
    c.correlations = ml_collections.ConfigDict(dict(
        num_data=16384, oracle=True, batch_size=4096,  # batch_size: oracle samples per device and call
        sources=("runs/sweep_P/*",)))
    return c
