"""Sample complexity of the clustering algorithm vs m (paper Fig. 2 for L = 2, Fig. 7 for L = 3).

    python -m rhmdiff.main --config=configs/clustering_sweep.py --workdir=runs/clustering_sweep
    python -m rhmdiff.main --config=configs/clustering_sweep.py:paper --workdir=runs/clustering_sweep_paper

No training: the algorithm (mean-context vectors + k-means) runs on i.i.d. RHM samples for a
log grid of P; P* is where each grammar's score crosses each of ``thresholds`` (with a
t-interval over the grammars).
``cpu``: v = 16, m in {2, 3, 4, 6}, L in {2, 3}, 10 grammars, P from 10 to 10^6, every variant
(the true latents below the target, the paper's hierarchical mechanism, the distant-context
one). ``cpu_v8``: v = 8, L = 3, m in {2, 3, 4, 6}: the grammars of the diffusion sweep, for the
comparison of Fig. 2 at L = 3. ``cpu_L2``: v = 8, s = 5, L = 2, m in {2, 3, 4, 5, 6, 8}, the
true-tuple variants: the grammars of ``configs/sweep_m.py``, for the comparison at L = 2 (their
seeds 0, 1, 2 among the 10), on a grid of P twice as fine (49 points). ``cpu_v16``: v = 16, L = 3, the true-latent and hierarchical variants
(the paper's Fig. 7 at its vocabulary). ``paper``: v = 32, m up to 16, P up to 10^7.
"""
import ml_collections

from rhmdiff.config_base import base_config, check_preset


def get_config(preset: str = "cpu"):
    check_preset(preset, ("cpu", "cpu_v8", "cpu_L2", "cpu_v16", "paper"))
    c = base_config("clustering_sweep", seed=0)
    c.sweep = ml_collections.ConfigDict(dict(
        v=16, s=2, m_values=(2, 3, 4, 6), L_values=(2, 3), num_seeds=10,
        P_min=10, P_max=1_000_000, num_P=25, thresholds=(0.5, 0.8),
        variants=("token", "tuple", "token-hierarchical", "tuple-hierarchical", "token-distant", "tuple-distant")))
    if preset == "cpu_v8":  # the grammars of the diffusion sweep (configs/sweep_P.py): v = 8, L = 3, seeds 0, 1, 2 ...
        c.sweep.update(v=8, m_values=(2, 3, 4, 6), L_values=(3,), variants=("token", "tuple", "token-hierarchical",
                                                                         "tuple-hierarchical"))
    if preset == "cpu_L2":  # the grammars of configs/sweep_m.py: v = 8, s = 5, L = 2
        c.sweep.update(v=8, s=5, m_values=(2, 3, 4, 5, 6, 8), L_values=(2,), num_P=49, variants=("token", "tuple"))
    if preset == "cpu_v16":
        c.sweep.update(L_values=(3,), variants=("token", "tuple", "token-hierarchical", "tuple-hierarchical"))
    if preset == "paper":
        c.sweep.update(v=32, m_values=(2, 4, 6, 8, 12, 16), P_max=10_000_000, num_P=31)
    return c
