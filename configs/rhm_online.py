"""Online learning (paper Sec. 3.1): fresh RHM samples at every step, a step budget
instead of epochs; the validation set still picks the best parameters.

    python -m rhmdiff.main --config=configs/rhm_online.py --workdir=runs/rhm_online
    python -m rhmdiff.main --config=configs/rhm_online.py:paper --workdir=runs/rhm_online_paper

``cpu``: the model and training of ``configs/rhm_L3.py:cpu``, 60k steps of 32 fresh samples.
``paper``: that file's paper preset with online data.
"""
from rhmdiff.config_base import sibling_config


def get_config(preset: str = "cpu"):
    c = sibling_config(__file__, "rhm_L3").get_config(preset)
    c.data.online = True
    c.data.train_size = 0
    return c
