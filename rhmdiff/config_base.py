"""Default RHM experiment config (the binding schema of ARCHITECTURE.md); files under
``configs/`` start from :func:`rhm_config` and change what their experiment needs."""
import importlib.util
import os

import ml_collections


def sibling_config(this_file: str, name: str):
    """The config module ``name`` (e.g. ``"rhm_L3"``) next to ``this_file`` (config files are
    loaded by path, not imported, so one that builds on another loads it with this)."""
    path = os.path.join(os.path.dirname(os.path.abspath(this_file)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def base_config() -> ml_collections.ConfigDict:
    """Fields every config has: ``task``, ``seed``, ``overwrite`` (allow reusing a workdir
    that holds a run with another config: its old files are deleted) and ``distributed``
    (call ``jax.distributed.initialize()``; TPU pods and SLURM are also detected)."""
    c = ml_collections.ConfigDict()
    c.task = ""
    c.seed = 0
    c.overwrite = False
    c.distributed = False
    return c


def rhm_config() -> ml_collections.ConfigDict:
    c = base_config()
    c.task = "rhm"
    c.seed = 0  # diffusion noise, sampling, data order
    c.rhm = ml_collections.ConfigDict(dict(v=8, m=3, s=2, L=3, seed=0))  # grammar seed
    c.data = ml_collections.ConfigDict(dict(train_size=4096, val_size=1024, test_size=1024, online=False))
    c.model = ml_collections.ConfigDict(dict(width=256, time_conditioning="embedding"))
    # Training objective per token: L_t + hybrid_coeff * CE(x_0 | x_t) (d3pm.loss_terms); with
    # hybrid_coeff = 1 the cross-entropy sets the gradient scale (L_t is ~VB/T).
    c.diffusion = ml_collections.ConfigDict(
        dict(T=1000, schedule="linear", beta_min=1e-4, beta_max=0.02, hybrid_coeff=1.0))
    c.train = ml_collections.ConfigDict(
        dict(optimizer="sgd", lr=1.0, momentum=0.9, batch_size=32, num_steps=100_000,
             eval_every=1000, patience=10, steps_per_call=100, max_nonfinite=100,
             check_replicas=False))  # debug: assert identical parameters on every process at each evaluation
    c.eval = ml_collections.ConfigDict(dict(num_generated=1024, batch_size=1024))
    return c
