"""Text analyses of MD4 per training stage (paper Fig. 4 and Fig. 8, App. D.3).

The ``text_analysis`` task reads a finished (or running) ``md4`` workdir
(``analysis.run_dir``: its ``config.json``, token files and the parameters kept at
``train.keep_tokens`` in ``stages/``) and, for every stage:

1. generates ``analysis.num_samples`` sequences (``stage_<step>/samples.npy`` and decoded
   ``samples.txt``; a stage whose samples exist is not generated again);
2. measures the token-token correlation vs distance (``analysis.distances``), pooled over
   positions (:func:`rhmdiff.analysis.correlations.token_correlation`, sparse in the
   vocabulary), for the samples and for as many validation sequences, with the noise floor
   of independent tokens with the same unigram frequencies;
3. if ``analysis.lm_path`` names a local Hugging Face causal LM (Flax weights; the paper
   used LLaMA-2-7B), the perplexity of token ``x_T`` given the context ``x_{0:T-1}`` vs T
   (Eq. 27) of the decoded samples and of validation text.

Writes ``text_correlations.json`` / ``.png`` and ``perplexity.json`` / ``.png``.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from rhmdiff import md4_task
from rhmdiff._util import write_json
from rhmdiff.analysis import correlations, figures, stages
from rhmdiff.data import text


def unigram_noise_floor(tokens, num_pairs: int) -> float:
    """Expected Frobenius norm of the covariance of two independent tokens with the unigram
    frequencies p of ``tokens``, estimated from ``num_pairs`` pairs:
    ``(1 - sum p^2) / sqrt(num_pairs)`` (``(1 - 1/v)/sqrt(N)`` for uniform tokens)."""
    _, counts = np.unique(np.asarray(tokens), return_counts=True)
    p = counts / counts.sum()
    return float((1.0 - np.sum(p**2)) / np.sqrt(num_pairs))


def correlation_curve(name: str, tokens, vocab_size: int, distances) -> dict:
    """Pooled correlation at ``distances`` and its per-distance noise floor."""
    tokens = np.asarray(tokens)
    n, d = tokens.shape
    corr = correlations.token_correlation(tokens, vocab_size, distances, pool_positions=True)
    floor = np.full(d, np.nan)
    for t in distances:
        floor[t] = unigram_noise_floor(tokens, n * (d - t))
    nan_to_none = lambda a: [None if np.isnan(x) else float(x) for x in a]
    return {"name": name, "num": int(n), "correlation": nan_to_none(corr), "noise_floor": nan_to_none(floor)}


class CausalLM:
    """A local Hugging Face causal LM (``FlaxAutoModelForCausalLM``; for PyTorch-only
    weights convert once with ``from_pt=True``). Its tokenizer is used when the directory
    has one; otherwise token ids are taken to be the same as the generator's."""

    def __init__(self, path: str):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"analysis.lm_path: no model directory at {path!r}")
        transformers = text.text_extra("transformers")
        AutoTokenizer, FlaxAutoModelForCausalLM = transformers.AutoTokenizer, transformers.FlaxAutoModelForCausalLM
        self.model = FlaxAutoModelForCausalLM.from_pretrained(path)
        has_tokenizer = any(os.path.exists(os.path.join(path, f))
                            for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model"))
        self.tokenizer = AutoTokenizer.from_pretrained(path) if has_tokenizer else None
        self._log_probs = jax.jit(self._next_token_log_probs)

    def _next_token_log_probs(self, params, ids):
        logits = self.model(ids, params=params).logits[:, :-1].astype(jnp.float32)
        return jnp.take_along_axis(jax.nn.log_softmax(logits, -1), ids[:, 1:, None], -1)[..., 0]

    def next_token_log_probs(self, ids, batch_size: int = 8) -> np.ndarray:
        """``[N, n-1]``: entry ``[i, T-1]`` is ``log p(x_T | x_{0:T-1})`` of sequence i."""
        ids = np.asarray(ids, np.int32)
        return np.concatenate([np.asarray(self._log_probs(self.model.params, ids[i:i + batch_size]))
                               for i in range(0, len(ids), batch_size)])

    def encode(self, texts, ids, length: int) -> np.ndarray:
        """LM token ids ``[N', length]`` of the texts (those shorter than ``length`` LM
        tokens are dropped); without an LM tokenizer, the generator's ``ids`` cut to ``length``."""
        if self.tokenizer is None:
            return np.asarray(ids)[:, :length]
        encoded = [self.tokenizer(t)["input_ids"] for t in texts]
        return np.asarray([e[:length] for e in encoded if len(e) >= length], np.int32).reshape(-1, length)


def perplexity_vs_context(lm: CausalLM, ids, batch_size: int = 8) -> np.ndarray:
    """Eq. 27: ``float[n-1]``, entry ``T-1`` = exp(-mean_i log p(x_T | x_{0:T-1})) over the
    sequences ``ids [N, n]`` (one causal forward pass gives every context length T)."""
    return np.exp(-lm.next_token_log_probs(ids, batch_size).mean(0))


def stage_samples(config, stored, workdir: str, data: text.TokenData, tokenizer) -> dict:
    """``{step: int32[num_samples, seq_len]}`` for every kept stage of the run (generated
    once, then read back)."""
    ac = config.analysis
    model, schedule = md4_task.model_from_config(stored, data.vocab_size), md4_task.schedule_from_config(stored)
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, stored.data.seq_len), jnp.int32),
                              jnp.zeros((1,)))
    generate = lambda step, params: md4_task.generate(
        jax.random.fold_in(jax.random.PRNGKey(config.seed), step), model, params, schedule, ac.num_samples,
        stored.data.seq_len, data.vocab_size, ac.batch_size, ac.sample_steps, ac.top_p or None)
    return stages.stage_samples(ac.run_dir, workdir, abstract, generate,
                                lambda stage_dir, x: md4_task.write_samples(stage_dir, x, tokenizer), "analysis.run_dir")


def run(config, workdir: str) -> dict:
    os.makedirs(workdir, exist_ok=True)
    ac = config.analysis
    stored = stages.run_config(ac.run_dir, "analysis.run_dir", "md4")
    token_dir = stored.data.token_dir or os.path.join(ac.run_dir, "tokens")
    data = text.TokenData(token_dir, stored.data.seq_len)
    tokenizer = text.load_tokenizer(stored.data.tokenizer_path)
    samples = stage_samples(config, stored, workdir, data, tokenizer)
    tokens_per_step = stored.train.batch_size * stored.data.seq_len
    label = lambda step: f"{step * tokens_per_step:.2g} tokens"
    num_val = min(ac.num_samples, data.num_sequences["val"])
    val_x = data.sequences("val", np.arange(num_val))
    d = stored.data.seq_len
    distances = sorted({t for t in ac.distances if 1 <= t < d})
    curves = [correlation_curve(label(step), x, data.vocab_size, distances) for step, x in samples.items()]
    curves.append(correlation_curve("validation data", val_x, data.vocab_size, distances))
    results = {"task": "text_correlations", "v": data.vocab_size, "d": d, "curves": curves,
               "stages": sorted(samples), "tokens_per_step": tokens_per_step}
    write_json(os.path.join(workdir, "text_correlations.json"), results)
    figures.plot_correlations(results, os.path.join(workdir, "text_correlations.png"))
    for row in curves:
        shown = {t: round(row["correlation"][t], 5) for t in distances}
        logging.info("%s: C(t) = %s", row["name"], shown)
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
        write_json(os.path.join(workdir, "perplexity.json"), ppl)
        figures.plot_perplexity(ppl, os.path.join(workdir, "perplexity.png"))
        results["perplexity"] = rows
    return results
