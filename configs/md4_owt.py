"""MD4 masked diffusion on OpenWebText (paper Sec. 5.1, App. C; MD4's OWT hyperparameters).

    python -m rhmdiff.main --config=configs/md4_owt.py --workdir=runs/md4_owt \
        --config.data.path=/data/openwebtext --config.data.tokenizer_path=/data/gpt2.tiktoken

12-layer transformer (12 heads x 64, GLU, adaLN-zero, RoPE; ~170M parameters), GPT-2 BPE,
context 1024, global batch 64, AdamW lr 3e-4 (cosine, 2000 warmup steps, b2 0.999, no weight
decay or clipping, as MD4), EMA 0.9999, one epoch (~9e9 tokens, ~1.4e5 steps); the EMA
parameters are kept at 10^7, 10^7.5, ..., 10^10 training tokens for the analyses
(``python -m rhmdiff.main --config=configs/text_analysis.py``). bfloat16 compute: for GPUs/TPUs.
"""
from rhmdiff.config_base import md4_config


def get_config():
    return md4_config()
