"""The headline RHM experiment (L = 3): train the paper's U-Net D3PM, generate, measure.

    python -m rhmdiff.main --config=configs/rhm_L3.py --workdir=runs/rhm_L3         # cpu preset
    python -m rhmdiff.main --config=configs/rhm_L3.py:paper --workdir=runs/rhm_L3_paper

Presets:

* ``cpu``: v=8, m=3, s=2, L=3 (d = 8 tokens), P = 4096 training points, width 256,
  T = 1000 linear; finishes in <= 15 minutes on 2 CPU cores (training + 1024 samples).
* ``paper``: the paper's settings (Appendix C): width 8192, T = 1000 linear, SGD with muP,
  lr 1, momentum 0.9, batch 32, early stopping on the validation loss; for a GPU/TPU.
"""
from rhmdiff.config_base import rhm_config


def get_config(preset: str = "cpu"):
    c = rhm_config()
    c.task = "rhm"
    if preset == "cpu":
        c.model.width = 256
        c.train.lr = 0.1
        c.train.num_steps = 60_000
        c.train.eval_every = 2000
        c.train.patience = 10
    elif preset == "paper":
        c.rhm.update(v=32, m=8, s=2, L=3)
        c.data.train_size = 2**18
        c.data.val_size = 2**14
        c.data.test_size = 2**14
        c.model.width = 8192
        c.train.num_steps = 10**7
        c.train.eval_every = 10_000
        c.train.patience = 10
    else:
        raise ValueError(f"preset must be 'cpu' or 'paper', got {preset!r}")
    return c
