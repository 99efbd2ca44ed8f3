"""Online learning (paper Sec. 3.1): fresh RHM samples at every step, a step budget
instead of epochs; the validation set still picks the best parameters, and neither it nor
the test set ever enters the stream (a draw equal to one of them is replaced).

    python -m rhmdiff.main --config=configs/rhm_online.py --workdir=runs/rhm_online
    python -m rhmdiff.main --config=configs/rhm_online.py:paper --workdir=runs/rhm_online_paper

``cpu``: the model and training of ``configs/rhm_L3.py:cpu`` on a deeper grammar, L = 4
(v=8, m=3, s=2, d = 16 tokens: 8 * 3^15 = 1.1e8 sequences), for 60k steps of 32 fresh
samples: 1.9e6 draws, ~2% of the language, so the model sees (almost) every sequence once --
online learning in the paper's sense (on the L = 3 grammar the same budget would cycle ~100
times through its 17,496 sequences). ``paper``: ``rhm_L3.py:paper`` with online data
(v=32, m=8, L=3: 6.7e7 sequences).
"""
from rhmdiff.config_base import sibling_config


def get_config(preset: str = "cpu"):
    c = sibling_config(__file__, "rhm_L3").get_config(preset)
    c.data.online = True
    c.data.train_size = 0
    if preset == "cpu":
        c.rhm.L = 4
    return c
