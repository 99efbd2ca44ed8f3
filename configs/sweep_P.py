"""Accuracy per level vs the number of training points P (paper Fig. 1a and its inset).

    python -m rhmdiff.main --config=configs/sweep_P.py --workdir=runs/sweep_P
    python -m rhmdiff.main --config=configs/sweep_P.py:paper --workdir=runs/sweep_P_paper

One ``rhm`` training per P (resumable: finished points are skipped on rerun), then A_1..A_L
vs P and vs P / m^{l+1}. ``cpu``: the grammar and model of ``configs/rhm_L3.py:cpu``,
P from 128 to 4096, 30k steps at most, 512 generated sequences per point. ``paper``:
rhm_L3's paper preset, P from 2^10 to 2^20, 3 seeds.
"""
import ml_collections

from rhmdiff.config_base import sibling_config


def get_config(preset: str = "cpu"):
    c = sibling_config(__file__, "rhm_L3").get_config(preset)
    c.task = "sweep"
    c.sweep = ml_collections.ConfigDict(dict(m_values=(c.rhm.m,), seeds=(0,), threshold=0.5, metric="accuracy"))
    if preset == "cpu":
        c.sweep.train_sizes = (128, 256, 512, 1024, 2048, 4096)
        c.data.update(val_size=512, test_size=256)
        c.train.update(num_steps=30_000, eval_every=1000, patience=5)
        c.eval.num_generated = 512
    else:
        c.sweep.train_sizes = tuple(2**k for k in range(10, 21, 2))
        c.sweep.seeds = (0, 1, 2)
    return c
