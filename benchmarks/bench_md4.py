"""Speed of one MD4 training step at the OpenWebText size, printed as JSON.

    python benchmarks/bench_md4.py [--layers 12] [--batch 1] [--seq_len 1024] [--repeats 3] [--steps_per_call 1]

The trainer's own pmapped step (forward, backward, pmean, AdamW with the cosine schedule,
EMA update) of ``configs/md4_owt.py``'s transformer (12 layers, D = 768, V = 50257) on one
device, median over ``--repeats`` after a warm-up: milliseconds per step, training tokens per
second and the parameter count. In the same run: one forward pass (the step's cost in
forward passes; ~3 is the theory), the step's FLOPs (6 x non-embedding parameters x tokens
+ attention + the read-out, from the shapes) and the GFLOP/s of a plain 2048^3 float32 matmul
(the machine's practical peak), in the same run.
``--dtype`` float32 (CPU default) or bfloat16 (accelerators). ``--steps_per_call`` > 1
times the steps inside the trainer's ``lax.scan`` chunk (reported per step).
"""
import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
from measure import TrainerStep, config, matmul_gflops, timed

from rhmdiff import from_config, train
from rhmdiff._util import num_params
from rhmdiff.models import transformer
from rhmdiff.tasks import md4 as md4_task


def step_flops(c, vocab: int, tokens: int, seq_len: int) -> float:
    """Training FLOPs of one step (x3 of the forward's multiply-adds x2)."""
    d = c.model.num_heads * c.model.head_dim
    per_layer = 4 * d * d + 3 * d * transformer.glu_hidden(d, c.model.mlp_multiple_of)  # qkv, out, GLU
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

    c = config("md4_owt")
    c.model.update(num_layers=args.layers, dtype=args.dtype)
    c.data.seq_len = args.seq_len
    c.train.update(batch_size=args.batch, num_steps=10**6)
    model, schedule = from_config.md4_model(c, args.vocab), from_config.masking_schedule(c)
    init = lambda: transformer.init_params(model, jax.random.PRNGKey(0), args.seq_len)
    step = TrainerStep(md4_task.md4_loss_fn(model, schedule, args.vocab), init, train.optimizer_from_config(c.train),
                       args.batch, c.train.ema_decay, c.train.ema_debias)
    k = args.steps_per_call
    x = np.random.default_rng(0).integers(0, args.vocab, (k, args.batch, args.seq_len)).astype(np.int32)
    step_s = timed(lambda: step.run(x), args.repeats).median_s / k
    params = jax.jit(init)()
    forward = jax.jit(model.apply)
    xt, t = jnp.asarray(x[0]), jnp.full((args.batch,), 0.5)
    forward_s = timed(lambda: forward(params, xt, t), args.repeats).median_s
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
