"""The headline RHM experiment (L = 3): train the paper's U-Net D3PM, generate, measure.

    python -m rhmdiff.main --config=configs/rhm_L3.py --workdir=runs/rhm_L3         # cpu preset
    python -m rhmdiff.main --config=configs/rhm_L3.py:paper --workdir=runs/rhm_L3_paper

Presets:

* ``cpu``: v=8, m=3, s=2, L=3 (d = 8 tokens), P = 4096 training points, width 256,
  T = 1000 linear; minutes on 2 CPU cores (training + 1024 samples), see the README.
* ``paper``: the paper's settings (Appendix C): the authors' U-Net (``variant="reference"``)
  at width 8192 on v=32, m=8, P = 2^18, T = 1000 linear, the loss of the variational bound
  (``objective="vb"``: the KL of the posteriors at one t, per token), SGD with momentum 0.9
  in muP at lr 1, batch 32, early stopping on the validation loss; for a GPU/TPU.

Learning rate (both variants are in muP's multiplier form: N(0, 1) weights, each layer's
output divided by sqrt(fan_in), the read-out's by fan_in): SGD updates every weight w by
``-train.lr * width * dL/dw`` (``rhmdiff.models.unet.mup_lr_scale``), which moves every
layer's pre-activations by O(train.lr) per step at any width. ``train.lr = 1`` is the paper's
"lr 1"; in the authors' code (PyTorch SGD on the same weights and multipliers) it is
``lr = width`` (8192 at the paper's width). ``configs/mup_transfer.py`` trains this rate at
widths 256 ... 4096.
"""
import ml_collections

from rhmdiff.config_base import base_config, check_preset, grammar_config, train_config


def get_config(preset: str = "cpu"):
    check_preset(preset, ("cpu", "paper"))
    c = base_config("rhm", seed=0)  # seed: initialization, data order, diffusion noise, sampling
    c.rhm = grammar_config(v=8, m=3, s=2, L=3, seed=0, rules_file="")  # grammar seed, or a rules file
    c.data = ml_collections.ConfigDict(dict(train_size=4096, val_size=1024, test_size=1024, online=False))
    c.model = ml_collections.ConfigDict(dict(variant="rhmdiff", width=256, time_conditioning="embedding"))
    # Objective per token: L_t + hybrid_coeff * CE(x_0 | x_t) ("hybrid"; d3pm.loss_terms).
    c.diffusion = ml_collections.ConfigDict(dict(
        objective="hybrid", T=1000, schedule="linear", beta_min=1e-4, beta_max=0.02, hybrid_coeff=1.0))
    c.train = train_config(optimizer="sgd", lr=0.1, momentum=0.9, batch_size=32, num_steps=60_000, eval_every=2000,
                           patience=10, steps_per_call=100, max_nonfinite=100)
    # val_draws: noise draws (t and x_t) per validation sequence; stage_generated > 0: also A_l of
    # that many sequences at every step of train.keep_steps
    c.eval = ml_collections.ConfigDict(dict(num_generated=1024, batch_size=1024, val_draws=1, stage_generated=0))
    if preset == "paper":
        c.rhm.update(v=32, m=8, s=2, L=3)
        c.data.update(train_size=2**18, val_size=2**14, test_size=2**14)
        c.model.update(variant="reference", width=8192)
        c.diffusion.objective = "vb"
        c.train.update(lr=1.0, num_steps=10**7, eval_every=10_000, checkpoint_every=5000, log_every=1000,
                       patience=10)
        c.eval.batch_size = 256
    return c
