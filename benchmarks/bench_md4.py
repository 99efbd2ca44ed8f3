"""Speed of one MD4 training step at the OpenWebText size, printed as JSON.

    python benchmarks/bench_md4.py [--layers 12] [--batch 1] [--seq_len 1024] [--repeats 3] [--steps_per_call 1]

The trainer's own pmapped step (forward, backward, pmean, AdamW with the cosine schedule,
EMA update) of ``configs/md4_owt.py``'s transformer (12 layers, D = 768, V = 50257) on one
device, median over ``--repeats`` after a warm-up: milliseconds per step, training tokens per
second and the parameter count. In the same run: one forward pass (the step's cost in
forward passes; ~3 is the theory), the step's FLOPs (6 x non-embedding parameters x tokens
+ attention + the read-out, from the shapes) and the GFLOP/s of a plain 2048^3 float32 matmul
(the machine's practical peak). Raw times only: MD4's own train step cannot run in this
process (it needs TensorFlow/Orbax versions of its own), so a ratio against it would divide
by a number from another machine or day; time both side by side on one machine instead.
``--dtype`` float32 (CPU default) or bfloat16 (accelerators). ``--steps_per_call`` > 1
times the steps inside the trainer's ``lax.scan`` chunk (reported per step).
"""
import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from bench_unet import matmul_gflops, median_seconds  # noqa: E402 -- benchmarks/ is on the path when run as a script
from rhmdiff import train
from rhmdiff.config_base import sibling_config
from rhmdiff.tasks import md4 as md4_task
from rhmdiff.models.transformer import glu_hidden, num_params


def step_flops(c, vocab: int, tokens: int, seq_len: int) -> float:
    """Training FLOPs of one step (x3 of the forward's multiply-adds x2)."""
    d = c.model.num_heads * c.model.head_dim
    per_layer = 4 * d * d + 3 * d * glu_hidden(d, c.model.mlp_multiple_of)  # qkv, out, GLU
    attention = 2 * seq_len * d  # scores + weighted values, per token per layer
    forward = 2 * tokens * (c.model.num_layers * (per_layer + attention) + d * vocab)
    return 3.0 * forward


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq_len", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps_per_call", type=int, default=1)
    args = parser.parse_args()

    c = sibling_config(__file__.replace("benchmarks", "configs"), "md4_owt").get_config()
    c.model.update(num_layers=args.layers, dtype=args.dtype)
    c.data.seq_len = args.seq_len
    c.train.update(batch_size=args.batch, num_steps=10**6)
    model, schedule = md4_task.model_from_config(c, args.vocab), md4_task.schedule_from_config(c)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, args.seq_len), jnp.int32), jnp.zeros((1,)))
    tx = train.optimizer_from_config(c.train)
    devices = jax.local_devices()[:1]
    chunk = train._make_chunk_fn(md4_task.md4_loss_fn(model, schedule, args.vocab), tx, jax.random.PRNGKey(0),
                                 args.batch, devices, ema_decay=c.train.ema_decay)
    initial = lambda p: train.initial_state_fn(lambda: p, tx, c.train.ema_decay, c.train.ema_debias)(None)
    box = [train.device_pmap(initial, devices)(jax.tree_util.tree_map(lambda a: a[None], params))]
    k = args.steps_per_call
    x = np.random.default_rng(0).integers(0, args.vocab, (1, k, args.batch, args.seq_len)).astype(np.int32)
    firsts = np.zeros((1,), np.int32)
    step_ids = np.arange(k, dtype=np.int32)[None]

    def run():
        box[0], metrics = chunk(box[0], firsts, step_ids, x)
        return metrics

    step_s = median_seconds(run, args.repeats)[0] / k
    forward = jax.jit(model.apply)
    xt, t = jnp.asarray(x[0, 0]), jnp.full((args.batch,), 0.5)
    forward_s = median_seconds(lambda: forward(params, xt, t), args.repeats)[0]
    peak = matmul_gflops(2048, args.repeats)
    tokens = args.batch * args.seq_len
    flops = step_flops(c, args.vocab, tokens, args.seq_len)
    out = {
        "device": str(jax.devices()[0].device_kind), "layers": args.layers, "batch": args.batch,
        "seq_len": args.seq_len, "dtype": args.dtype, "steps_per_call": k, "num_params": num_params(params),
        "ms_per_step": 1e3 * step_s, "tokens_per_s": tokens / step_s, "forward_ms": 1e3 * forward_s,
        "step_in_forward_passes": step_s / forward_s, "gflop_per_step": flops / 1e9,
        "gflops_per_s": flops / step_s / 1e9,
        "matmul_peak_gflops_per_s": peak, "fraction_of_peak": flops / step_s / 1e9 / peak,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
