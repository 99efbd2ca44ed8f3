"""The Bayes-optimal (BP) denoiser as a D3PM sampler on an RHM (task ``oracle``).

    python -m rhmdiff.main --config=configs/rhm_oracle.py --workdir=runs/oracle

Generates ``eval.num_generated`` sequences with the exact oracle sampler and with the
factorized (per-token marginal) sampler, and measures the oracle's variational bound on
``data.test_size`` held-out sequences. About a minute on 2 CPU cores.
"""
import ml_collections

from rhmdiff.config_base import base_config, grammar_config


def get_config():
    c = base_config("oracle", seed=0)
    c.rhm = grammar_config(v=8, m=3, s=2, L=3, seed=0, rules_file="")
    c.data = ml_collections.ConfigDict(dict(train_size=0, val_size=0, test_size=1024))
    c.diffusion = ml_collections.ConfigDict(dict(T=1000, schedule="linear", beta_min=1e-4, beta_max=0.02))
    c.eval = ml_collections.ConfigDict(dict(num_generated=1024, batch_size=1024))  # batch: per device
    return c
