"""Sample complexity P* of the diffusion model vs m at L = 2, the depth of the paper's Fig. 2.

    python -m rhmdiff.main --config=configs/sweep_m.py --workdir=runs/sweep_m

At L = 2 the language holds v m^{s+1} sequences against P_2 = v m^3 / (1 - m/v^{s-1}) of Eq. 6:
with s = 2 the training set at the crossing would exceed the language (P_2 / v m^3 > 1), with
s = 3 it is ~1/m of it, so that a sampler of the exact distribution copies a training point
1/m of the time, and A_L there mostly measures memorization. With s = 5 the ratio is m^{-3}
(0.125, 0.037, 0.016 at m = 2, 3, 4 and v = 8: at least as favourable as L = 3, s = 2).
``cpu``: v = 8, s = 5, L = 2 (d = 25 tokens), m in {2, 3, 4}, 3 seeds, P at 8 log-spaced
multiples of each m's P_2 from 0.1 to 10, the training and evaluation of
``configs/sweep_P.py:cpu`` (width 128, EMA, 64 validation draws, at most 40,000 steps) with 128
validation sequences (the m = 2 language has 512), and the convergence check of the P sweep on
seed 2 (57 trainings, then 18 for the check). ``paper``: v = 32, s = 5, m up to 8, P from 2^6 to 2^17.
"""
from rhmdiff.config_base import sibling_config


def get_config(preset: str = "cpu"):
    c = sibling_config(__file__, "sweep_P").get_config(preset)
    c.rhm.update(v=8, m=2, s=5, L=2)
    c.data.update(train_size=64, val_size=128, test_size=0)
    c.sweep.m_values = (2, 3, 4)
    if preset == "cpu":
        c.sweep.update(check_seeds=(2,), relative_sizes=tuple(round(10 ** (-1 + 2 * k / 7), 3) for k in range(8)))
    if preset == "paper":
        c.rhm.update(v=32, s=5)
        c.data.val_size = 1024
        c.sweep.update(m_values=(2, 3, 4, 6, 8), train_sizes=tuple(2**k for k in range(6, 18)))
    return c
