"""Sample complexity of the clustering algorithm vs m (paper Fig. 2 for L = 2, Fig. 7 for L = 3).

    python -m rhmdiff.main --config=configs/clustering_sweep.py --workdir=runs/clustering_sweep
    python -m rhmdiff.main --config=configs/clustering_sweep.py:paper --workdir=runs/clustering_sweep_paper

No training: the algorithm (mean-context vectors + k-means) runs on i.i.d. RHM samples for a
log grid of P; P* is where the score (averaged over grammar seeds) crosses ``threshold``.
``cpu``: v = 16, m in {2, 3, 4, 6, 8}, L in {2, 3}, 3 grammars, P from 10 to 10^6 (a few minutes);
at L = 3 also the deep version (``hierarchical``: every latent below the target estimated
from visible data by clustering, level by level; Fig. 7).
``paper``: v = 32, m up to 16, 10 grammars, P up to 10^7.
"""
import ml_collections

from rhmdiff.config_base import base_config, check_preset


def get_config(preset: str = "cpu"):
    check_preset(preset, ("cpu", "paper"))
    c = base_config("clustering_sweep", seed=0)
    c.sweep = ml_collections.ConfigDict(dict(
        v=16, s=2, m_values=(2, 3, 4, 6, 8), L_values=(2, 3), num_seeds=3,
        P_min=10, P_max=1_000_000, num_P=25, threshold=0.8,
        hierarchical=True))  # L >= 3: also the deep version (latents estimated level by level)
    if preset == "paper":
        c.sweep.update(v=32, m_values=(2, 4, 6, 8, 12, 16), num_seeds=10, P_max=10_000_000, num_P=31)
    return c
