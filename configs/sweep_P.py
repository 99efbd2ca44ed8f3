"""The staged learning of the levels vs the number of training points P (paper Fig. 1a and
its inset) and the sample complexity P* vs m (Fig. 2, blue points), with seeds.

    python -m rhmdiff.main --config=configs/sweep_P.py --workdir=runs/sweep_P
    python -m rhmdiff.main --config=configs/sweep_P.py:paper --workdir=runs/sweep_P_paper

One ``rhm`` training per (m, P, seed) (resumable: finished points are skipped on rerun); a
seed is another grammar and another training seed.

``cpu`` (2 CPU cores): the grammar family of ``configs/rhm_L3.py:cpu`` (v=8, s=2, L=3) at
m = 2, 3, 4, 3 seeds, P at 9 log-spaced multiples of each m's P_3 of Eq. 6 from 0.1 to 4
(m = 3: P = 104 ... 4128, from below P_1 = 115 to 4 P_3; points that exceed the language or
the batch are skipped: m = 2 keeps 7). Above about 1.6 P_3 the 40,000 steps end the training
early: A_L is too low there (``--config.train.num_steps=80000`` raises it at m = 3, from 0.73 to
0.91 at 4 P_3; at m = 4 80,000 steps still stop near the cap; docs/analyses.md). The `rhmdiff` U-Net at width 128, SGD + momentum
in muP at lr 0.1, the `hybrid` objective, evaluated with an EMA of the parameters (decay
0.999); validation every 1000 steps on 256 sequences with 64 noise draws each (the bound's
noise ~0.03 bits per token instead of ~0.2 with one draw), the best of at most 40,000 steps,
stopping 10 validations after the best; 512 generated sequences per point. The convergence
check reruns the two points nearest each crossing of A_L = 0.5 and 0.7 (seed 0, 4096
sequences) with twice the steps, with twice the width and with another training seed. P* at A_L = 0.3, 0.5, 0.7 and 0.8,
and at the same values of A_L above chance (the top rule satisfied beyond the fraction m/v of
level-2 pairs that are productions by chance). Two points train at a time
(``sweep.workers``), one per core.
``cpu_paper_recipe``: the ``cpu`` sweep at m = 3, one seed, with the paper's own recipe: the
authors' U-Net (``model.variant = "reference"``), the loss of the variational bound alone
(``diffusion.objective = "vb"``) and SGD in muP at lr 1, the same budget.
``paper``: ``rhm_L3.py:paper`` (v=32, m=8), P from 2^10 to 2^20, 3 seeds.
"""
import ml_collections

from rhmdiff.config_base import sibling_config


def get_config(preset: str = "cpu"):
    if preset == "cpu_paper_recipe":
        c = get_config("cpu")
        c.sweep.update(m_values=(3,), seeds=(0,), check_seeds=())
        c.model.variant = "reference"
        c.diffusion.objective = "vb"
        c.train.lr = 1.0
        return c
    c = sibling_config(__file__, "rhm_L3").get_config(preset)
    c.task = "sweep"
    c.sweep = ml_collections.ConfigDict(dict(
        m_values=(c.rhm.m,), train_sizes=(), relative_sizes=(), seeds=(0, 1, 2),
        thresholds=(0.3, 0.5, 0.7, 0.8), metric="accuracy",
        check_seeds=(0,), check_thresholds=(0.5, 0.7), check_generated=4096,  # the convergence check (() : none)
        workers=1))  # points trained at a time, one CPU core each
    if preset == "cpu":
        c.sweep.update(m_values=(2, 3, 4), relative_sizes=tuple(round(10 ** (k / 5), 3) for k in range(-5, 4)),
                       workers=2)
        c.data.update(val_size=256, test_size=0)
        c.model.width = 128
        c.train.update(num_steps=40_000, eval_every=1000, patience=10, ema_decay=0.999)
        c.eval.update(num_generated=512, val_draws=64)
    else:
        c.sweep.update(train_sizes=tuple(2**k for k in range(10, 21, 2)), check_seeds=())
    return c
