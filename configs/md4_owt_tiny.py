"""The MD4 pipeline of ``md4_owt.py`` at CPU size, on a small local corpus (minutes on 2 cores).

    python -m rhmdiff.data.demo_text --out=data/demo    # synthetic corpus + its BPE file, once
    python -m rhmdiff.main --config=configs/md4_owt_tiny.py --workdir=runs/md4_tiny

The default corpus is the synthetic text of :mod:`rhmdiff.data.demo_text` (~500 KB, a
~900-token BPE); point ``data.path`` / ``data.tokenizer_path`` at any ``.txt`` files and
``.tiktoken`` file instead. 2-layer transformer (4 heads x 32), 128-token sequences,
AdamW with warmup and a cosine decay over the run, EMA 0.99 (bias-corrected: with a run this
short, MD4's uncorrected EMA would keep the first stages close to the initialization), float32.
"""
from rhmdiff.config_base import sibling_config


def get_config():
    c = sibling_config(__file__, "md4_owt").get_config()
    c.seed = 0
    c.data.update(path="data/demo/corpus", tokenizer_path="data/demo/demo.tiktoken", val_fraction=0.15, seq_len=128)
    c.model.update(num_layers=2, num_heads=4, head_dim=32, cond_dim=64, mlp_multiple_of=32, dtype="float32")
    c.train.update(lr=2e-3, warmup_steps=100, lr_decay_steps=1500, ema_decay=0.99, ema_debias=True, batch_size=16,
                   num_steps=1500, eval_every=250, checkpoint_every=250, log_every=50, steps_per_call=50,
                   keep_tokens=(1e5, 3e5, 1e6, 3e6))  # steps 49, 146, 488, 1465
    c.eval.update(val_sequences=64, batch_size=32, num_samples=32, sample_steps=128)
    return c
