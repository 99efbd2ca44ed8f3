"""One-step gradient descent (paper App. B): synonym separability vs P for several m.

    python -m rhmdiff.main --config=configs/onestep.py --workdir=runs/onestep
"""
import ml_collections

from rhmdiff.config_base import base_config, check_preset


def get_config(preset: str = "cpu"):
    check_preset(preset, ("cpu", "paper"))
    c = base_config("onestep", seed=0)
    c.sweep = ml_collections.ConfigDict(dict(
        v=16, s=2, L=2, m_values=(2, 4, 8), num_seeds=3, eta=1.0, P_min=10, P_max=300_000, num_P=22))
    if preset == "paper":
        c.sweep.update(v=32, m_values=(2, 4, 8, 16), num_seeds=10, P_max=3_000_000, num_P=28)
    return c
