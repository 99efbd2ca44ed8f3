"""Text analyses of an ``md4`` run per training stage (paper Fig. 4, Fig. 8; task ``text_analysis``).

    python -m rhmdiff.main --config=configs/text_analysis.py --workdir=runs/md4_owt_analysis \\
        --config.analysis.run_dir=runs/md4_owt [--config.analysis.lm_path=/models/llama-2-7b-flax]
    python -m rhmdiff.main --config=configs/text_analysis.py:tiny --workdir=runs/md4_tiny_analysis

Samples per kept stage, token correlations vs distance (pooled over positions) with the noise
floor, and, with a local causal LM, perplexity vs context length (Eq. 27).
"""
import ml_collections

from rhmdiff.config_base import base_config, check_preset


def get_config(preset: str = "owt"):
    check_preset(preset, ("owt", "tiny"))
    c = base_config("text_analysis", seed=0)
    c.analysis = ml_collections.ConfigDict(dict(
        run_dir="runs/md4_owt", num_samples=1024, batch_size=16, sample_steps=1000, top_p=0.0,
        distances=tuple(sorted({round(2 ** (k / 2)) for k in range(20)})),  # 1 .. 724, log-spaced
        lm_path="", lm_context=1024))
    if preset == "tiny":
        c.analysis.update(run_dir="runs/md4_tiny", num_samples=128, batch_size=64, sample_steps=128,
                          distances=tuple(sorted({round(2 ** (k / 2)) for k in range(14)})))  # 1 .. 91
    return c
