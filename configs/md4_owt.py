"""MD4 masked diffusion on OpenWebText (paper Sec. 5.1, App. C; task ``md4``).

    python -m rhmdiff.main --config=configs/md4_owt.py --workdir=runs/md4_owt \\
        --config.data.path=/data/openwebtext --config.data.tokenizer_path=/data/gpt2.tiktoken

MD4's OpenWebText settings (its ``openwebtext.py`` config) with the paper's batch (64 x 1024
tokens, one epoch, 4 GPUs): a 12-layer transformer (12 heads x 64, GLU MLP, adaLN-zero,
RoPE; ~170M parameters), GPT-2 BPE, AdamW lr 3e-4 with 2000 warmup steps and a cosine decay
over MD4's horizon of 10^6 steps (one epoch is ~1.4e5 steps, so the rate is still ~95% of
its peak at the end), b2 0.999, no weight decay or clipping, EMA 0.9999 started at the
initial weights (MD4's, not bias-corrected), linear masking schedule, 1000 ancestral
sampling steps on MD4's cosine time grid. The EMA parameters are kept at 10^7, 10^7.5, ...,
10^10 training tokens for the analyses (``configs/text_analysis.py``). bfloat16 compute:
for GPUs/TPUs.
"""
import ml_collections

from rhmdiff.config_base import base_config, train_config


def get_config():
    c = base_config("md4", seed=42)  # initialization, data order, diffusion noise, samples
    # Corpus (datasets directory, parquet/arrow shards or .txt files) and a .tiktoken BPE file.
    # cache_dir "": workdir/cache (token files, keyed on the corpus and tokenizer contents).
    c.data = ml_collections.ConfigDict(dict(
        path="data/openwebtext", tokenizer_path="data/gpt2.tiktoken", cache_dir="", val_fraction=0.0005,
        seed=0, seq_len=1024))
    c.model = ml_collections.ConfigDict(dict(
        num_layers=12, num_heads=12, head_dim=64, cond_dim=128, mlp_multiple_of=256, positions="rope",
        dtype="bfloat16"))
    c.diffusion = ml_collections.ConfigDict(dict(schedule="linear", eps=1e-4, power=1.0))
    c.train = train_config(
        optimizer="adamw", lr=3e-4, lr_schedule="cosine", warmup_steps=2000, lr_decay_steps=1_000_000,
        weight_decay=0.0, grad_clip=0.0, b2=0.999, ema_decay=0.9999, ema_debias=False, momentum=0.0,
        batch_size=64, num_steps=-1,  # -1: one epoch
        eval_every=10_000, checkpoint_every=5000, log_every=500, patience=10**9, steps_per_call=100,
        max_nonfinite=100)
    # training tokens at which the (EMA) parameters are kept (the trainer's keep_steps, derived)
    c.train.keep_tokens = tuple(float(10**e) for e in (7, 7.5, 8, 8.5, 9, 9.5, 10))
    c.eval = ml_collections.ConfigDict(dict(
        val_sequences=1024, batch_size=64, num_samples=1024, sample_steps=1000, sampling_grid="cosine",
        top_p=0.0))  # top_p 0: off (MD4's ancestral sampler)
    return c
