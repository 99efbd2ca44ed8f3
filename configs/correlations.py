"""Token-token correlations vs distance (paper Fig. 1c): RHM data, BP-oracle samples and the
sequences generated at every point of the P sweep (run ``configs/sweep_P.py`` first).

    python -m rhmdiff.main --config=configs/correlations.py --workdir=runs/correlations
    python -m rhmdiff.main --config=configs/correlations.py --workdir=runs/correlations \\
        --config.correlations.sources='("runs/other_sweep/*",)'
"""
import ml_collections

from rhmdiff.config_base import rhm_config


def get_config():
    c = rhm_config()  # the grammar of configs/rhm_L3.py:cpu and configs/sweep_P.py:cpu
    c.task = "correlations"
    c.correlations = ml_collections.ConfigDict(dict(num_data=16384, oracle=True, sources=("runs/sweep_P/*",)))
    return c
