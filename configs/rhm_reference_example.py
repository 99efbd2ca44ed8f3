"""The authors' own example run (AntonioScl/minimal_diffusion_rhm, ``example_train.sh`` with its
``main.py`` defaults), reproduced with rhmdiff (task ``rhm``).

    python -m rhmdiff.main --config=configs/rhm_reference_example.py --workdir=runs/rhm_reference_example

Their settings: v=8, m=3, s=2, L=3, P = 1024 training points, 1024 test points, batch 64,
Adam lr 1e-4 (b1 = their momentum 0.9, b2 0.999, not scaled by the width), their U-Net
(``variant="reference"``) at width 1024, T = 200 with betas 0.001 -> 0.1, their loss
(``objective="vb"``). Differences: their grammar comes from Python's ``random`` with
``seed_rules=42`` (rhmdiff draws its own with ``rhm.seed``), they train 10,000 epochs
(160,000 steps) without a validation set -- here 6,000 steps (49 minutes on 2 CPU cores
shared with other work; too few to learn the grammar, see README), with 1024 validation
sequences to pick the best parameters (patience off).
"""
from rhmdiff.config_base import sibling_config


def get_config():
    c = sibling_config(__file__, "rhm_L3").get_config("cpu")
    c.data.update(train_size=1024, val_size=1024, test_size=1024)
    c.model.update(variant="reference", width=1024)
    c.diffusion.update(objective="vb", T=200, beta_min=0.001, beta_max=0.1)
    c.train.update(optimizer="adam", lr=1e-4, momentum=0.9, batch_size=64, num_steps=6_000, eval_every=1000,
                   patience=10**6)
    c.eval.batch_size = 256
    return c
