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


def md4_config() -> ml_collections.ConfigDict:
    """MD4 on OpenWebText with MD4's OWT hyperparameters and the paper's batch (App. C)."""
    c = base_config()
    c.task = "md4"
    c.seed = 42  # initialization, data order, diffusion noise, samples
    # Corpus (datasets directory, parquet/arrow shards or .txt files) and a .tiktoken BPE file;
    # token_dir "" = workdir/tokens. The train/validation split is by document, seeded.
    c.data = ml_collections.ConfigDict(dict(
        path="data/openwebtext", tokenizer_path="data/gpt2.tiktoken", token_dir="", val_fraction=0.0005,
        seed=0, seq_len=1024))
    c.model = ml_collections.ConfigDict(dict(
        num_layers=12, num_heads=12, head_dim=64, cond_dim=128, mlp_multiple_of=256, positions="rope",
        dtype="bfloat16"))
    c.diffusion = ml_collections.ConfigDict(dict(schedule="linear", eps=1e-4, power=1.0))
    c.train = ml_collections.ConfigDict(dict(
        optimizer="adamw", lr=3e-4, lr_schedule="cosine", warmup_steps=2000, weight_decay=0.0, grad_clip=0.0,
        b2=0.999, ema_decay=0.9999, momentum=0.0, batch_size=64, num_steps=-1,  # -1: one epoch
        eval_every=10_000, patience=10**9, steps_per_call=100, max_nonfinite=100, check_replicas=False,
        keep_tokens=tuple(float(10**e) for e in (7, 7.5, 8, 8.5, 9, 9.5, 10)),
        keep_steps=()))  # set from keep_tokens at the start of the run
    c.eval = ml_collections.ConfigDict(dict(
        val_sequences=1024, batch_size=64, num_samples=1024, sample_steps=1000, top_p=0.0))  # top_p 0: off
    return c


def ddpm_config() -> ml_collections.ConfigDict:
    """Improved DDPM on ImageNet 64x64 with the paper's settings (App. C)."""
    c = base_config()
    c.task = "ddpm"
    c.seed = 0
    # .npz batches of downsampled ImageNet (or image folders); cache_dir "" = workdir/images
    c.data = ml_collections.ConfigDict(dict(
        path="data/imagenet64/train", val_path="data/imagenet64/val", cache_dir="", image_size=64, epochs=10))
    c.model = ml_collections.ConfigDict(dict(
        channels=128, channel_mult=(1, 2, 3, 4), num_res_blocks=3, attention_resolutions=(16, 8), num_heads=4,
        dropout=0.0))
    c.diffusion = ml_collections.ConfigDict(dict(T=4000, lam=0.001))
    c.train = ml_collections.ConfigDict(dict(
        optimizer="adam", lr=1e-4, lr_schedule="constant", warmup_steps=0, grad_clip=0.0, ema_decay=0.9999,
        momentum=0.0, batch_size=128, num_steps=-1,  # -1: data.epochs epochs
        eval_every=10_000, patience=10**9, steps_per_call=1,  # no lax.scan: see train
        max_nonfinite=100, check_replicas=False,
        keep_steps=tuple(sorted({round(10 ** (k / 4)) for k in range(8, 21)}))))  # 10^2 .. 10^5, log-spaced
    c.eval = ml_collections.ConfigDict(dict(val_images=1024, batch_size=128, num_samples=64, sample_steps=250))
    return c
