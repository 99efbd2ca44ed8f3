"""Perplexity of a text vs its context length under a local causal language model
(paper Eq. 27, Fig. 8): how far the dependencies of generated text reach.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from rhmdiff.data import DataError, text


class CausalLM:
    """A local Hugging Face causal LM (``FlaxAutoModelForCausalLM``; for PyTorch-only
    weights convert once with ``from_pt=True``). Its tokenizer is used when the directory
    has one; otherwise token ids are taken to be the same as the generator's."""

    def __init__(self, path: str):
        if not os.path.isdir(path):
            raise DataError(f"analysis.lm_path: no model directory at {path!r}")
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
