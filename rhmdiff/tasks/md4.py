"""The ``md4`` task (paper Sec. 5.1, App. C): MD4 masked diffusion on text, with the same
trainer, checkpoints and config system as the RHM tasks.

``python -m rhmdiff.main --config=configs/md4_owt.py --workdir=runs/md4_owt``:

1. the corpus (``data.path``) is tokenized once into a content-keyed cache
   (:mod:`rhmdiff.data.text`) and packed into ``data.seq_len`` sequences;
2. MD4's transformer (:mod:`rhmdiff.models.transformer`; its parameter count is logged) is
   trained with :func:`rhmdiff.train.fit` on the diffusion part of MD4's ELBO, one t per
   sequence; ``train.num_steps = -1`` means one epoch; the parameters (EMA) are kept at the
   steps nearest to ``train.keep_tokens`` training tokens (``workdir/stages``) for the
   analyses per training stage (:mod:`rhmdiff.tasks.text_analysis`);
3. the validation loss is the full ELBO (bits per token, fixed noise) on
   ``eval.val_sequences`` validation sequences;
4. at the end, ``eval.num_samples`` sequences are generated (``eval.sample_steps``
   ancestral steps, top-p if ``eval.top_p`` > 0) and written as tokens (``samples.npy``) and
   text (``samples.txt``), with ``results.json``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.tree_util import Partial

from rhmdiff import config_check as check
from rhmdiff import evaluate, from_config, train
from rhmdiff._util import example_keys, num_params
from rhmdiff.data import DataError, cache, text
from rhmdiff.diffusion import md4
from rhmdiff.models import transformer
from rhmdiff.tasks import finish

MUTABLE = ("eval.num_samples", "eval.sample_steps", "eval.top_p", "eval.batch_size", "eval.sampling_grid")
OUTPUTS = (*train.OUTPUTS, "results.json", "samples.npy", "samples.txt")


def validate(config) -> None:
    check.seed(config)
    check.optimizer(config)
    check.num_steps_or_epochs(config)
    keep = check.get(config, "train.keep_tokens")
    if not isinstance(keep, (list, tuple)) or not all(isinstance(x, (int, float)) and x > 0 for x in keep):
        raise check.ConfigError("train.keep_tokens", f"must be a list of positive token counts, got {keep!r}")
    check.real(config, "data.val_fraction", 0.0, 1.0)
    check.seed(config, "data.seed")
    check.integer(config, "data.seq_len", 2, 2**20)
    for field in ("num_layers", "num_heads", "head_dim", "cond_dim", "mlp_multiple_of"):
        check.integer(config, f"model.{field}", 1)
    check.choice(config, "model.positions", transformer.POSITIONS)
    if config.model.positions == "rope" and config.model.head_dim % 2:
        raise check.ConfigError("model.head_dim", f"must be even for rotary positions, got {config.model.head_dim}")
    check.choice(config, "model.dtype", ("float32", "bfloat16", "float16"))
    check.choice(config, "diffusion.schedule", md4.SCHEDULES)
    check.real(config, "diffusion.eps", 0.0, 0.5, low_open=False)
    check.real(config, "diffusion.power", 0.0, float("inf"))
    for field in ("val_sequences", "batch_size", "num_samples", "sample_steps"):
        check.integer(config, f"eval.{field}", 1)
    check.real(config, "eval.top_p", 0.0, 1.0, low_open=False, high_open=False)
    check.choice(config, "eval.sampling_grid", md4.GRIDS)
    if not isinstance(check.get(config, "data.cache_dir"), str):
        raise check.ConfigError("data.cache_dir", "must be a path or ''")
    # the inputs, before anything is written
    text.corpus_files(check.text(config, "data.path", "must be a corpus path"))
    text.read_ranks(check.text(config, "data.tokenizer_path", "must be a .tiktoken file"))


def load_data(config, workdir) -> text.TokenData:
    """Tokenize (once, process 0 first) and open the packed token files on every process."""
    out = from_config.token_dir(config, workdir)
    cache.prepare_once(lambda: text.prepare_tokens(config.data.path, config.data.tokenizer_path, out,
                                                   config.data.val_fraction, config.data.seed),
                       os.path.join(out, "meta.json"))
    return text.TokenData(out, config.data.seq_len, config.seed)


def md4_loss_fn(model: transformer.Transformer, schedule: md4.MaskingSchedule, vocab_size: int):
    """``loss_fn(params, x0, keys)`` for :func:`rhmdiff.train.fit`: the diffusion part of the
    ELBO (nats per token), t ~ U(0, 1) and the masks drawn from each sequence's key."""

    def noise(key, x0):
        k_t, k_mask = jax.random.split(key)
        t = jax.random.uniform(k_t)
        return t, md4.q_sample(k_mask, schedule, x0, t, vocab_size)

    def loss_fn(params, x0, keys):
        t, x_t = jax.vmap(noise)(keys, x0)
        per_sequence = md4.diffusion_term(schedule, x0, x_t, t, model.apply(params, x_t, t), vocab_size)
        nats = per_sequence.mean() / x0.shape[1]
        return nats, {"nats_per_token": nats, "bits_per_token": nats / math.log(2)}

    return loss_fn


def make_val_loss(key, model: transformer.Transformer, schedule: md4.MaskingSchedule, val_x, vocab_size: int,
                  batch_size: int):
    """``params -> {"val_loss"}``: MD4's full negative ELBO (:func:`md4.elbo_each`), bits per
    token, on ``val_x`` with the same noise at every evaluation: sequence i at the stratified
    time ``t_i = (u + i/N) mod 1`` (MD4's antithetic times, over the whole set) with its own
    key; spread over all devices (:func:`rhmdiff.evaluate.map_examples`)."""
    n = len(val_x)
    k_t, k_seq = jax.random.split(key)
    t = np.asarray(jnp.mod(jax.random.uniform(k_t) + jnp.arange(n) / n, 1.0), np.float32)
    keys = np.asarray(example_keys(k_seq, n))

    def per_sequence(params, x0, tt, kk):
        parts = md4.elbo_each(kk, tt, Partial(model.apply, params), schedule, x0, vocab_size)
        return parts["diffusion"] + parts["reconstruction"] + parts["prior"]

    def val_loss(params):
        nats = evaluate.map_examples(per_sequence, np.asarray(val_x), t, keys, shared=params, batch_size=batch_size)
        return {"val_loss": float(np.mean(nats, dtype=np.float64)) / math.log(2)}

    return val_loss


def stage_steps(keep_tokens, tokens_per_step: int, num_steps: int) -> tuple[int, ...]:
    """The training steps nearest to ``keep_tokens`` tokens (those within the run)."""
    steps = {max(1, round(float(n) / tokens_per_step)) for n in keep_tokens}
    return tuple(sorted(s for s in steps if s <= num_steps))


@dataclasses.dataclass
class Setup:
    """What the task derives from its config and data: the token ``data``, the ``model`` and
    ``schedule``, the ``tokenizer``, the generation key, the keyword arguments of
    :func:`rhmdiff.train.fit` (with the derived ``num_steps``, one epoch when
    ``train.num_steps`` is -1, and ``keep_steps``, from ``train.keep_tokens``)."""
    data: text.TokenData
    model: transformer.Transformer
    schedule: md4.MaskingSchedule
    tokenizer: Any
    generate_key: jax.Array
    fit_kwargs: dict
    tokens_per_step: int


def setup(config, workdir) -> Setup:
    data = load_data(config, workdir)
    vocab_size = data.vocab_size
    tokens_per_step = config.train.batch_size * config.data.seq_len
    num_steps = config.train.num_steps
    if num_steps == -1:
        num_steps = data.order.steps_per_epoch(config.train.batch_size)
        if num_steps == 0:
            raise DataError(f"train.batch_size = {config.train.batch_size} exceeds the {data.order.n} training "
                            f"sequences of {config.data.seq_len} tokens: no full batch in an epoch")
    num_val = min(config.eval.val_sequences, data.num_sequences["val"])
    if num_val == 0:
        raise DataError(f"data.val_fraction = {config.data.val_fraction} left no validation sequence of "
                        f"{config.data.seq_len} tokens")
    model, schedule = from_config.md4_model(config, vocab_size), from_config.masking_schedule(config)
    k_init, k_val, k_gen = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    val_x = data.sequences("val", np.arange(num_val))
    fit_kwargs = dict(
        init_params=lambda: transformer.init_params(model, k_init, config.data.seq_len),
        loss_fn=md4_loss_fn(model, schedule, vocab_size),
        batches=lambda start, num, rows: data.batches(config.train.batch_size, start, num, rows),
        validate=make_val_loss(k_val, model, schedule, val_x, vocab_size, config.eval.batch_size),
        num_steps=num_steps, keep_steps=stage_steps(config.train.keep_tokens, tokens_per_step, num_steps))
    return Setup(data, model, schedule, text.load_tokenizer(config.data.tokenizer_path), k_gen, fit_kwargs,
                 tokens_per_step)


def run(config, workdir, stop_at: int | None = None) -> dict | None:
    """Train MD4 on the corpus, then generate and decode samples; writes results.json.
    ``stop_at`` interrupts training after that step (as a preemption would): returns None."""
    prep = setup(config, workdir)
    fk = prep.fit_kwargs
    n_params = num_params(jax.eval_shape(fk["init_params"]))
    logging.info("MD4 transformer: %d parameters (%.1fM), vocabulary %d + mask, %d training sequences of %d tokens, "
                 "%d steps of %d tokens", n_params, n_params / 1e6, prep.data.vocab_size,
                 prep.data.num_sequences["train"], config.data.seq_len, fk["num_steps"], prep.tokens_per_step)
    fitted = train.fit(config, workdir, stop_at=stop_at, **fk)
    if not fitted.done:
        return None
    seconds = {"training": fitted.seconds}
    t0 = time.perf_counter()
    x = evaluate.md4_samples(prep.generate_key, prep.model, fitted.params, prep.schedule,
                             config.eval.num_samples, config.data.seq_len, prep.data.vocab_size,
                             config.eval.batch_size, config.eval.sample_steps, config.eval.top_p or None,
                             config.eval.sampling_grid)
    seconds["generation"] = time.perf_counter() - t0
    results = {
        "task": "md4",
        "num_params": n_params,
        "steps": fitted.steps,
        "tokens_seen": fitted.steps * prep.tokens_per_step,
        "best_step": fitted.best_step,
        "val_loss": fitted.best_val_loss,
        "val_loss_units": "negative ELBO, bits per token",
        "stages": list(fk["keep_steps"]),
        "num_samples": int(len(x)),
        "seconds": seconds,
    }
    if jax.process_index() == 0:
        text.write_samples(workdir, x, prep.tokenizer)
    return finish(config, workdir, results, summary=(
        f"MD4: {n_params / 1e6:.2f}M parameters, {results['tokens_seen']} training tokens, validation "
        f"{results['val_loss']:.4f} bits/token; {len(x)} samples in {workdir / 'samples.txt'}"))
