"""Online learning (paper Sec. 3.1, Fig. 1b): fresh RHM samples at every step, a step budget
instead of epochs; the validation set still picks the best parameters, and neither it nor
the test set ever enters the stream (a draw equal to one of them is replaced).

    python -m rhmdiff.main --config=configs/rhm_online.py --workdir=runs/rhm_online
    python -m rhmdiff.main --config=configs/rhm_online.py:paper --workdir=runs/rhm_online_paper

``cpu``: the training of ``configs/sweep_P.py:cpu`` (the `rhmdiff` U-Net at width 128, SGD +
momentum in muP at lr 0.1, the `hybrid` objective, an EMA of the parameters, a validation of
256 sequences with 64 noise draws each) on a deeper grammar, L = 4 (v=8, m=3, s=2, d = 16
tokens: 8 * 3^15 = 1.1e8 sequences), for 60k steps of 32 fresh samples: 1.9e6 draws, ~2% of
the language, so the model sees (almost) every sequence once -- online learning in the
paper's sense (on the L = 3 grammar the same budget would cycle ~100 times through its 17,496
sequences). At 10 steps from 100 to 60,000 (1-2-5 steps per decade) the parameters are kept and 1024
sequences generated from them: A_l against the number of fresh sequences seen (Fig. 1b).
``paper``: ``rhm_L3.py:paper`` with online data (v=32, m=8, L=3: 6.7e7 sequences).
"""
from rhmdiff.config_base import sibling_config


def get_config(preset: str = "cpu"):
    c = sibling_config(__file__, "rhm_L3").get_config(preset)
    c.data.online = True
    c.data.train_size = 0
    if preset == "cpu":
        c.rhm.L = 4
        c.data.update(val_size=256, test_size=1024)
        c.model.width = 128
        c.train.update(num_steps=60_000, eval_every=2000, patience=10, ema_decay=0.999,
                       keep_steps=(100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 40_000, 60_000))
        c.eval.update(val_draws=64, stage_generated=1024)
    return c
