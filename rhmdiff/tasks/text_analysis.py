"""The ``text_analysis`` task (paper Fig. 4 and Fig. 8, App. D.3): text analyses of an
``md4`` run per training stage.

Reads a finished (or running) ``md4`` workdir (``analysis.run_dir``: its ``config.json``,
token files and the parameters kept at ``train.keep_tokens`` in ``stages/``) and, for every
stage:

1. generates ``analysis.num_samples`` sequences (``stage_<step>/samples.npy`` and decoded
   ``samples.txt``; a stage whose samples exist is not generated again);
2. measures the token-token correlation vs distance (``analysis.distances``), pooled over
   positions (:func:`rhmdiff.analysis.correlations.token_correlation`, sparse in the
   vocabulary), for the samples and for as many validation sequences, with the noise floor
   of independent tokens with the same unigram frequencies;
3. if ``analysis.lm_path`` names a local Hugging Face causal LM (Flax weights; the paper
   used LLaMA-2-7B), the perplexity of token ``x_T`` given the context ``x_{0:T-1}`` vs T
   (Eq. 27) of the decoded samples and of validation text
   (:mod:`rhmdiff.analysis.perplexity`).

Writes ``text_correlations.json`` / ``.png`` and ``perplexity.json`` / ``.png``.
"""
from __future__ import annotations

import os

import jax
import numpy as np

from rhmdiff import config_check as check
from rhmdiff import evaluate, from_config, runs
from rhmdiff.analysis import correlations, figures
from rhmdiff.analysis.perplexity import CausalLM, perplexity_vs_context
from rhmdiff.data import DataError, text
from rhmdiff.models import transformer
from rhmdiff.tasks import finish

MUTABLE = ("analysis.distances", "analysis.lm_path", "analysis.lm_context")
OUTPUTS = ("text_correlations.json", "text_correlations.png", "perplexity.json", "perplexity.png", "stage_*")


def validate(config) -> None:
    check.seed(config)
    check.text(config, "analysis.run_dir", "must be the workdir of an md4 run")
    for field in ("num_samples", "batch_size", "sample_steps", "lm_context"):
        check.integer(config, f"analysis.{field}", 1)
    check.int_list(config, "analysis.distances", 1)
    check.real(config, "analysis.top_p", 0.0, 1.0, low_open=False, high_open=False)
    lm_path = check.get(config, "analysis.lm_path")
    if not isinstance(lm_path, str):
        raise check.ConfigError("analysis.lm_path", "must be a path or ''")
    if lm_path and not os.path.isdir(lm_path):
        raise DataError(f"analysis.lm_path: no model directory at {lm_path!r}")
    runs.stored_config(config.analysis.run_dir, "config.analysis.run_dir", "md4")


def stage_samples(config, stored, workdir, data: text.TokenData, tokenizer) -> dict:
    """``{step: int32[num_samples, seq_len]}`` for every kept stage of the run (generated
    once, then read back)."""
    ac = config.analysis
    model, schedule = from_config.md4_model(stored, data.vocab_size), from_config.masking_schedule(stored)
    abstract = jax.eval_shape(lambda: transformer.init_params(model, jax.random.PRNGKey(0), stored.data.seq_len))
    generate = lambda step, params: evaluate.md4_samples(
        jax.random.fold_in(jax.random.PRNGKey(config.seed), step), model, params, schedule, ac.num_samples,
        stored.data.seq_len, data.vocab_size, ac.batch_size, ac.sample_steps, ac.top_p or None,
        stored.eval.sampling_grid)
    return evaluate.stage_samples(ac.run_dir, workdir, abstract, generate,
                                  lambda stage_dir, x: text.write_samples(stage_dir, x, tokenizer),
                                  "config.analysis.run_dir")


def run(config, workdir) -> dict:
    ac = config.analysis
    stored = runs.stored_config(ac.run_dir, "config.analysis.run_dir", "md4")
    tokens = from_config.token_dir(stored, ac.run_dir)
    if not os.path.exists(os.path.join(tokens, "meta.json")):
        raise DataError(f"analysis.run_dir: the token files of {ac.run_dir} ({tokens}) are missing, or its corpus "
                        "or tokenizer changed since it was trained")
    data = text.TokenData(tokens, stored.data.seq_len)
    tokenizer = text.load_tokenizer(stored.data.tokenizer_path)
    samples = stage_samples(config, stored, workdir, data, tokenizer)
    tokens_per_step = stored.train.batch_size * stored.data.seq_len
    label = lambda step: f"{step * tokens_per_step:.2g} tokens"
    num_val = min(ac.num_samples, data.num_sequences["val"])
    val_x = data.sequences("val", np.arange(num_val))
    d = stored.data.seq_len
    distances = sorted({t for t in ac.distances if 1 <= t < d})
    curves = [correlations.correlation_curve(label(step), x, data.vocab_size, distances) for step, x in samples.items()]
    curves.append(correlations.correlation_curve("validation data", val_x, data.vocab_size, distances))
    results = {"task": "text_correlations", "v": data.vocab_size, "d": d, "curves": curves,
               "stages": sorted(samples), "tokens_per_step": tokens_per_step}
    summary = "\n".join(f"{row['name']}: C(t) = {({t: round(row['correlation'][t], 5) for t in distances})}"
                        for row in curves)
    results = finish(config, workdir, results, "text_correlations.json", figures.plot_correlations, summary)
    if ac.lm_path:
        lm = CausalLM(ac.lm_path)
        length = min(ac.lm_context, d)
        rows = []
        for name, x in [(label(s), x) for s, x in samples.items()] + [("validation data", val_x)]:
            texts = [tokenizer.decode(seq.tolist()) for seq in x]
            ids = lm.encode(texts, x, length)
            if len(ids) == 0:
                continue
            rows.append({"name": name, "num": int(len(ids)),
                         "perplexity": perplexity_vs_context(lm, ids, ac.batch_size).tolist()})
        ppl = {"task": "perplexity", "lm_path": ac.lm_path, "curves": rows}
        summary = "\n".join(f"{row['name']}: perplexity {row['perplexity'][0]:.4g} (context 1) -> "
                            f"{row['perplexity'][-1]:.4g} (context {len(row['perplexity'])})" for row in rows)
        finish(config, workdir, ppl, "perplexity.json", figures.plot_perplexity, summary)
        results["perplexity"] = rows
    return results
