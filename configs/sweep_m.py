"""Sample complexity P* of the diffusion model vs m at L = 2, the depth of the paper's Fig. 2.

    python -m rhmdiff.main --config=configs/sweep_m.py --workdir=runs/sweep_m

At L = 2 the language holds v m^{s+1} sequences against P_2 = v m^3 / (1 - m/v^{s-1}) of Eq. 6:
with s = 2 the training set at the crossing would exceed the language, and with s = 3 it is
~1/m of it (a sampler of the exact distribution then copies a training point 1/m of the time,
and copies count as valid), so A_L at the crossing mostly measures memorization. ``cpu``:
v = 32, s = 3, m in {2, 3, 4}, width 128, P from 32 to 4096 (points beyond the language are
skipped), metric A_L of the generated sequences that are not copies (``novel_accuracy``),
3 seeds. ``paper``: m up to 8, larger P. The L = 3 sweep of ``configs/sweep_P.py`` is where a
P* exists at CPU scale.
"""
from rhmdiff.config_base import sibling_config


def get_config(preset: str = "cpu"):
    c = sibling_config(__file__, "sweep_P").get_config(preset)
    c.rhm.update(v=32, m=2, s=3, L=2)
    c.data.update(train_size=64, val_size=64, test_size=0)
    c.sweep.update(m_values=(2, 3, 4), metric="novel_accuracy", relative_sizes=(),
                   train_sizes=(32, 64, 128, 256, 512, 1024, 2048, 4096), check_seeds=())
    if preset == "paper":
        c.sweep.update(m_values=(2, 3, 4, 6, 8), train_sizes=tuple(2**k for k in range(5, 17)))
    return c
