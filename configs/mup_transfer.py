"""muP width transfer (task ``mup_transfer``): the ``paper`` preset's optimizer, learning rate
and objective (SGD + momentum 0.9, lr 1 in muP, batch 32, the ``vb`` objective) on the ``cpu``
preset's grammar (v=8, m=3, s=2, L=3, P = 4096), at widths 256 ... 4096, both U-Net variants.

    python -m rhmdiff.main --config=configs/mup_transfer.py --workdir=runs/mup_transfer

The training-loss curves collapse across widths when the learning rate transfers; a rate
that is too large for the wide networks shows as divergence (skipped non-finite updates) or
as curves that separate with width. ~1 hour on 2 CPU cores (most of it the width-4096
runs); add 8192 to ``transfer.widths`` on a machine with more memory and time.
"""
import ml_collections

from rhmdiff.config_base import sibling_config


def get_config():
    c = sibling_config(__file__, "rhm_L3").get_config("cpu")
    paper = sibling_config(__file__, "rhm_L3").get_config("paper")
    c.task = "mup_transfer"
    c.diffusion.objective = paper.diffusion.objective
    c.train.update(optimizer=paper.train.optimizer, lr=paper.train.lr, momentum=paper.train.momentum,
                   batch_size=paper.train.batch_size, num_steps=1000, eval_every=100, log_every=20,
                   steps_per_call=20, patience=10**6)
    c.eval.batch_size = 256
    c.transfer = ml_collections.ConfigDict(dict(widths=(256, 1024, 4096), variants=("reference", "rhmdiff")))
    return c
