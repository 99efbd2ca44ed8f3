"""One training step of each of the paper's three models on whatever accelerator JAX finds,
printed as JSON: milliseconds per step, achieved TFLOP/s (FLOPs from XLA's cost analysis of
the compiled step), the fraction of the device's peak (MFU) and the memory used.

    python benchmarks/gpu_check.py              # full sizes on a GPU/TPU, tiny sizes on a CPU
    python benchmarks/gpu_check.py --size tiny  # the tiny sizes anywhere (what the test runs)

Full sizes: (a) the ``rhm_L3.py:paper`` U-Net (authors' variant, width 8192, v=32, L=3) at
batch 32, SGD + momentum, float32; (b) the ``md4_owt.py`` transformer (12 layers, D = 768,
vocabulary 50257, bfloat16 compute) at batch 64 x 1024 tokens, or half of it until it fits,
AdamW + EMA; (c) the ``ddpm_imagenet64.py`` U-Net at batch 128 on 64x64 images, Adam + EMA.
Each is the trainer's own pmapped step on one device (``rhmdiff.train.make_chunk_fn``),
timed over ``--steps`` steps after a compile; the whole check is meant to finish in ~8
minutes on one H100/H200. Peaks (dense, per chip; ``--peak_tflops`` overrides): H100/H200
989 TFLOP/s bf16 and 67 float32 (495 TF32), A100 312 / 19.5 (156 TF32), TPU v4 275, v5e 197,
v5p 459, v6e 918 (bf16); on a CPU, the float32 GFLOP/s of a 2048^3 matmul measured in the run.
"""
import argparse
import json
import time

import jax
import numpy as np
from measure import TrainerStep, config, matmul_gflops, peak_rss_gb

from rhmdiff import from_config, train
from rhmdiff.models import image_unet, transformer, unet
from rhmdiff.tasks import ddpm as ddpm_task
from rhmdiff.tasks import md4 as md4_task
from rhmdiff.tasks import rhm as rhm_task

PEAKS = {  # dense TFLOP/s per chip: (bfloat16, float32)
    "H100": (989.0, 67.0), "H200": (989.0, 67.0), "A100": (312.0, 19.5), "L4": (121.0, 30.0),
    "TPU v4": (275.0, 275.0), "TPU v5 lite": (197.0, 197.0), "TPU v5e": (197.0, 197.0), "TPU v5p": (459.0, 459.0),
    "TPU v6": (918.0, 918.0),
}


def device_peak(dtype: str, override: float | None) -> float | None:
    if override:
        return override
    kind = jax.devices()[0].device_kind
    for name, (bf16, f32) in PEAKS.items():
        if name in kind:
            return bf16 if dtype == "bfloat16" else f32
    if jax.default_backend() == "cpu":
        return matmul_gflops(2048, 5) / 1e3
    return None


def memory_used() -> dict:
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return {"device_peak_gb": round(stats["peak_bytes_in_use"] / 1e9, 3)}
    return {"host_peak_rss_gb": round(peak_rss_gb(), 3)}


def time_step(name, loss_fn, init_params, tx, batch, steps: int, dtype: str, peak_override, ema_decay=0.0):
    """The trainer's step (one device) on ``batch``: compile, then ``steps`` timed steps."""
    trainer = TrainerStep(loss_fn, init_params, tx, len(batch), ema_decay, ema_debias=False)  # EMA from the weights
    state, n_params = trainer.state, trainer.num_params
    x = np.asarray(batch)[None, None]
    first, step_ids = np.zeros((1,), np.int32), np.zeros((1, 1), np.int32)
    t0 = time.perf_counter()
    compiled = trainer.chunk.lower(state, first, step_ids, x).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float((cost or {}).get("flops", 0.0))
    compile_s = time.perf_counter() - t0
    state, metrics = compiled(state, first, step_ids, x)
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for i in range(steps):
        state, metrics = compiled(state, first, np.full((1, 1), i + 1, np.int32), x)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - t0) / steps
    peak = device_peak(dtype, peak_override)
    row = {"model": name, "parameters": n_params, "batch": list(np.shape(batch)), "dtype": dtype,
           "ms_per_step": round(1e3 * seconds, 2), "compile_s": round(compile_s, 1),
           "gflop_per_step": round(flops / 1e9, 3), "tflops": round(flops / seconds / 1e12, 3),
           "peak_tflops": peak and round(peak, 2), "mfu": peak and round(flops / seconds / 1e12 / peak, 4),
           "loss": float(np.asarray(metrics["objective"]).ravel()[-1]), **memory_used()}
    print(json.dumps(row), flush=True)
    return row


def rhm_unet(size: str, steps: int, peak):
    c = config("rhm_L3", "paper")
    if size == "tiny":
        c.model.width, c.train.batch_size = 64, 8
    g = from_config.grammar(c)
    schedule = from_config.d3pm_schedule(c)
    model = from_config.unet_model(c, g)
    loss = rhm_task.rhm_loss_fn(model, schedule, g.v, c.diffusion.hybrid_coeff, c.diffusion.objective)
    tx = train.optimizer_from_config(c.train, unet.mup_lr_scale(c.model.width))
    init = lambda: unet.init_params(model, jax.random.PRNGKey(1), g.d)
    batch = np.asarray(jax.random.randint(jax.random.PRNGKey(2), (c.train.batch_size, g.d), 0, g.v), np.int32)
    return time_step(f"rhm_L3:paper U-Net ({c.model.variant}, width {c.model.width})", loss, init, tx, batch, steps,
                     "float32", peak)


def md4_transformer(size: str, steps: int, peak):
    c = config("md4_owt")
    vocab, batch, seq = 50257, c.train.batch_size, c.data.seq_len
    if size == "tiny":
        c.model.update(num_layers=2, num_heads=2, head_dim=32, dtype="float32")
        vocab, batch, seq = 512, 2, 128
    c.data.seq_len = seq
    model, schedule = from_config.md4_model(c, vocab), from_config.masking_schedule(c)
    tx = train.optimizer_from_config(c.train, num_steps=10**6)
    init = lambda: transformer.init_params(model, jax.random.PRNGKey(1), seq)
    while True:
        x = np.random.default_rng(0).integers(0, vocab, (batch, seq)).astype(np.int32)
        try:
            return time_step(f"md4_owt transformer ({c.model.num_layers} layers)", md4_task.md4_loss_fn(
                model, schedule, vocab), init, tx, x, steps, c.model.dtype, peak, ema_decay=c.train.ema_decay)
        except Exception as e:  # noqa: BLE001 -- out of memory: halve the batch
            if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower() or batch == 1:
                raise
            batch //= 2
            print(json.dumps({"model": "md4_owt transformer", "note": f"out of memory, trying batch {batch}"}))


def imagenet_unet(size: str, steps: int, peak):
    c = config("ddpm_imagenet64")
    batch, px = c.train.batch_size, c.data.image_size
    if size == "tiny":
        c.model.update(channels=8, channel_mult=(1,), num_res_blocks=1, attention_resolutions=(8,), num_heads=2)
        batch, px = 2, 8
    model, schedule = from_config.image_model(c), from_config.gaussian_schedule(c)
    tx = train.optimizer_from_config(c.train, num_steps=10**6)
    init = lambda: image_unet.init_params(model, jax.random.PRNGKey(1), px)
    x = np.random.default_rng(0).integers(0, 256, (batch, px, px, 3)).astype(np.uint8)
    return time_step(f"ddpm_imagenet64 U-Net ({c.model.channels} channels)", ddpm_task.ddpm_loss_fn(
        model, schedule, c.diffusion.lam), init, tx, x, steps, "float32", peak, ema_decay=c.train.ema_decay)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("auto", "tiny", "full"), default="auto")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--peak_tflops", type=float, default=None, help="the device's peak, if not in the table")
    parser.add_argument("--only", choices=("rhm", "md4", "ddpm"), default=None)
    args = parser.parse_args()
    size = args.size if args.size != "auto" else ("tiny" if jax.default_backend() == "cpu" else "full")
    print(json.dumps({"backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
                      "devices": jax.device_count(), "size": size, "jax": jax.__version__}), flush=True)
    rows = []
    for name, fn in (("rhm", rhm_unet), ("md4", md4_transformer), ("ddpm", imagenet_unet)):
        if args.only in (None, name):
            rows.append(fn(size, args.steps, args.peak_tflops))
    print(json.dumps({"results": rows}))


if __name__ == "__main__":
    main()
