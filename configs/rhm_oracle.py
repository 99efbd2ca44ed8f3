"""The Bayes-optimal (BP) denoiser as a D3PM sampler on an RHM.

    python -m rhmdiff.main --config=configs/rhm_oracle.py --workdir=runs/oracle

Generates ``eval.num_generated`` sequences with the exact oracle sampler and with the
factorized (per-token marginal) sampler, and measures the oracle's variational bound on
``data.test_size`` held-out sequences. Finishes in about a minute on 2 CPU cores.
"""
from rhmdiff.config_base import rhm_config


def get_config():
    c = rhm_config()
    c.task = "oracle"
    c.data.train_size = 0
    c.data.val_size = 0
    c.data.test_size = 1024
    return c
