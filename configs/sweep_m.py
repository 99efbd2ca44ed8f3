"""Sample complexity P* of the diffusion model vs m at L = 2 (paper Fig. 2, blue points).

    python -m rhmdiff.main --config=configs/sweep_m.py --workdir=runs/sweep_m

For each m, one ``rhm`` training per P (resumable); P* is the P where A_L of the generated
sequences that are *not copies* of training points crosses 1/2 (``sweep.metric =
"novel_accuracy"``, interpolated in log P), and the fitted exponent of P* vs m is compared
with L + 1 = 3. At L = 2 the language holds only v m^{s+1} sequences, comparable to
P_2 = v m^3 / (1 - m/v^{s-1}): with s = 2 a model that copies its training set scores
A_L ~ 1 at every P, hence s = 3 (v m^4 sequences) and the copy-free metric.
``cpu``: v = 32, s = 3, m in {2, 3, 4}, width 256, P from 32 to 4096 (points beyond the
grammar's size are skipped), 20k steps at most, 256 generated sequences (~20 minutes on
2 CPU cores). ``paper``: m up to 8, 3 seeds, larger P.
``cpu_L3``: the L = 3 grammar of ``rhm_L3.py:cpu`` (v = 8, s = 2), m in {2, 3, 4}, P from 64
to 8192, metric A_L of all generated sequences; there v m^7 sequences >> P_3 = v m^4 / (1 - m/v)
(except at m = 2), so a P* exists at CPU scale (~1 hour on 2 CPU cores).
"""
from rhmdiff.config_base import sibling_config


def get_config(preset: str = "cpu"):
    if preset == "cpu_L3":
        c = sibling_config(__file__, "sweep_P").get_config("cpu")
        c.sweep.update(m_values=(2, 3, 4), metric="accuracy")
        c.sweep.train_sizes = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
        c.data.update(val_size=128, test_size=0)
        c.train.update(num_steps=20_000, eval_every=1000, patience=5)
        c.eval.num_generated = 256
        return c
    c = sibling_config(__file__, "sweep_P").get_config(preset)
    c.rhm.update(v=32, m=2, s=3, L=2)
    c.data.update(train_size=64, val_size=64, test_size=64)
    c.sweep.update(m_values=(2, 3, 4), metric="novel_accuracy")
    c.sweep.train_sizes = (32, 64, 128, 256, 512, 1024, 2048, 4096)
    c.train.update(num_steps=20_000, eval_every=500, patience=5)
    c.eval.num_generated = 256
    if preset == "paper":
        c.sweep.m_values = (2, 3, 4, 6, 8)
        c.sweep.train_sizes = tuple(2**k for k in range(5, 17))
        c.sweep.seeds = (0, 1, 2)
    return c
