"""MD4 on text: transformer, tokenizer and corpus pipeline, the md4 task, text analyses."""
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config, run_task
from rhmdiff._util import num_params
from rhmdiff.analysis import correlations, perplexity
from rhmdiff.data import DataError, demo_text, text
from rhmdiff.tasks import md4 as md4_task
from rhmdiff.models import transformer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """60 synthetic documents and a BPE rank file built from them."""
    root = tmp_path_factory.mktemp("corpus")
    paths = demo_text.write_corpus(str(root / "docs"), 60, seed=1)
    docs = [open(p).read() for p in paths]
    demo_text.write_tokenizer(docs, str(root / "bpe.tiktoken"), num_words=120)
    return {"dir": str(root / "docs"), "tokenizer": str(root / "bpe.tiktoken"), "docs": docs, "root": root}


# ----------------------------------------------------------------------------- transformer

def _tiny_model(**kw):
    args = dict(vocab_size=50, num_layers=2, num_heads=2, head_dim=8, cond_dim=16, mlp_multiple_of=8)
    return transformer.Transformer(**{**args, **kw})


def test_transformer_owt_size_and_param_count_formula():
    """The OWT model has the analytic parameter count (~170M; the paper says ~165M)."""
    m = transformer.Transformer(vocab_size=50257)
    params = jax.eval_shape(m.init, jax.random.PRNGKey(0), jnp.zeros((1, 1024), jnp.int32), jnp.zeros((1,)))
    D, V, c, L = 768, 50257, 128, 12
    H = transformer.glu_hidden(D, 256)
    assert H == 2048
    per_block = 3 * D * D + D * D + 3 * D * H + (c + 1) * 6 * D + 2 * D
    expected = (V + 1) * D + (c * c + c) * 2 + L * per_block + (c + 1) * 2 * D + D + D * V + V
    assert num_params(params) == expected
    assert 160e6 < expected < 175e6


def test_transformer_starts_uniform_is_bidirectional_and_conditions_on_time():
    m = _tiny_model()
    x = jax.random.randint(jax.random.PRNGKey(1), (2, 12), 0, 51)
    params = jax.jit(m.init)(jax.random.PRNGKey(0), x, jnp.zeros((2,)))
    apply = jax.jit(m.apply)
    out = apply(params, x, jnp.array([0.3, 0.7]))
    assert out.shape == (2, 12, 50)
    np.testing.assert_array_equal(out, 0.0)  # adaLN-zero + zero read-out: uniform predictions at init
    # perturb all parameters: then a later token changes earlier logits (no causal mask) and t matters
    params = jax.tree_util.tree_map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
    base = apply(params, x, jnp.array([0.3, 0.7]))
    changed = apply(params, x.at[:, -1].set((x[:, -1] + 1) % 50), jnp.array([0.3, 0.7]))
    assert np.abs(np.asarray(changed - base)[:, 0]).max() > 1e-4
    other_t = apply(params, x, jnp.array([0.9, 0.1]))
    assert np.abs(np.asarray(other_t - base)).max() > 1e-4
    learned = _tiny_model(positions="learned", max_len=12)
    assert learned.apply(learned.init(jax.random.PRNGKey(0), x, jnp.zeros((2,))), x, jnp.zeros((2,))).shape == out.shape
    with pytest.raises(ValueError, match="max_len"):
        _tiny_model(positions="learned", max_len=8).init(jax.random.PRNGKey(0), x, jnp.zeros((2,)))


def test_rotary_scores_depend_only_on_relative_position():
    q = jax.random.normal(jax.random.PRNGKey(0), (1, 1, 1, 16))
    k = jax.random.normal(jax.random.PRNGKey(1), (1, 1, 1, 16))
    n = 10
    rq = transformer.rotary(jnp.broadcast_to(q, (1, n, 1, 16)))[0, :, 0]
    rk = transformer.rotary(jnp.broadcast_to(k, (1, n, 1, 16)))[0, :, 0]
    scores = np.asarray(rq @ rk.T)
    for shift in range(-3, 4):
        diag = np.diagonal(scores, shift)
        np.testing.assert_allclose(diag, diag[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rq[0], q[0, 0, 0], rtol=1e-6)  # position 0 is not rotated


# ----------------------------------------------------------------------------- data

def test_tokenizer_round_trip_and_end_of_text(corpus):
    enc = text.load_tokenizer(corpus["tokenizer"])
    doc = corpus["docs"][0]
    ids = enc.encode_ordinary(doc)
    assert enc.decode(ids) == doc and len(ids) < len(doc) / 2  # words merge into single tokens
    ranks = sum(1 for _ in open(corpus["tokenizer"]))
    assert enc.eot_token == ranks and enc.n_vocab == ranks + 1
    with pytest.raises(DataError, match="data.tokenizer_path"):
        text.load_tokenizer(str(corpus["root"] / "missing.tiktoken"))
    (corpus["root"] / "not_bpe.tiktoken").write_text("hello world\n")
    with pytest.raises(DataError, match="not a .tiktoken rank file"):
        text.load_tokenizer(str(corpus["root"] / "not_bpe.tiktoken"))


def test_prepare_tokens_splits_documents_by_seed_and_is_atomic(corpus, tmp_path):
    enc = text.load_tokenizer(corpus["tokenizer"])
    meta = text.prepare_tokens(corpus["dir"], corpus["tokenizer"], str(tmp_path / "a"), 0.25, seed=3, progress=False)
    assert sorted(os.listdir(tmp_path / "a")) == ["meta.json", "train.bin", "val.bin"]  # no temporary files left
    train_ids = np.fromfile(tmp_path / "a" / "train.bin", np.uint16)
    val_ids = np.fromfile(tmp_path / "a" / "val.bin", np.uint16)
    # documents in file order, each followed by end-of-text, each whole in one split (numpy reference split)
    to_val = np.random.default_rng([3, 0]).random(len(corpus["docs"])) < 0.25
    expect = {s: [i for d, v in zip(corpus["docs"], to_val) if v == (s == "val")
                  for i in enc.encode_ordinary(d) + [enc.eot_token]] for s in ("train", "val")}
    assert train_ids.tolist() == expect["train"] and val_ids.tolist() == expect["val"]
    assert meta["num_documents"] == {"train": int((~to_val).sum()), "val": int(to_val.sum())}
    assert meta["vocab_size"] == enc.n_vocab and meta["eot"] == enc.eot_token
    again = text.prepare_tokens(corpus["dir"], corpus["tokenizer"], str(tmp_path / "b"), 0.25, seed=3, progress=False)
    assert again["num_tokens"] == meta["num_tokens"]
    other = text.prepare_tokens(corpus["dir"], corpus["tokenizer"], str(tmp_path / "c"), 0.25, seed=4, progress=False)
    assert other["num_documents"] != meta["num_documents"] or other["num_tokens"] != meta["num_tokens"]


def test_parquet_and_datasets_directory_give_the_same_tokens(corpus, tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": corpus["docs"]})
    ds.to_parquet(str(tmp_path / "shards" / "part-0.parquet"))
    ds.save_to_disk(str(tmp_path / "hf"))
    outs = {}
    for name, path in (("txt", corpus["dir"]), ("parquet", str(tmp_path / "shards")), ("hf", str(tmp_path / "hf"))):
        text.prepare_tokens(path, corpus["tokenizer"], str(tmp_path / f"tok_{name}"), 0.25, seed=0, progress=False)
        outs[name] = np.fromfile(tmp_path / f"tok_{name}" / "train.bin", np.uint16)
    np.testing.assert_array_equal(outs["parquet"], outs["txt"])
    np.testing.assert_array_equal(outs["hf"], outs["txt"])


def test_missing_or_empty_corpus_is_a_clear_error(corpus, tmp_path):
    with pytest.raises(DataError, match="data.path.*does not exist"):
        text.read_documents(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="data.path.*no datasets directory"):
        text.prepare_tokens(str(tmp_path / "empty"), corpus["tokenizer"], str(tmp_path / "t"), 0.1, 0, progress=False)
    assert not (tmp_path / "t" / "meta.json").exists()


def test_a_corpus_and_tokenizer_in_a_bucket_give_the_tokens_of_the_local_ones(corpus, fake_gcs, tmp_path):
    """``data.path`` and ``data.tokenizer_path`` as ``gs://`` URLs (the bucket stand-in): read
    through epath into a local cache, the same token files and the same cache key each time;
    a missing object is a DataError naming the field."""
    import shutil
    shutil.copytree(corpus["dir"], os.path.join(fake_gcs, "bucket", "docs"))
    shutil.copy(corpus["tokenizer"], os.path.join(fake_gcs, "bucket", "bpe.tiktoken"))
    url, bpe = "gs://bucket/docs", "gs://bucket/bpe.tiktoken"
    assert len(text.corpus_files(url)) == len(corpus["docs"]) and text.read_ranks(bpe) == text.read_ranks(
        corpus["tokenizer"])
    assert text.token_key(url, bpe, 0.25, 0) == text.token_key(url, bpe, 0.25, 0)
    for name, (docs, tok) in {"gs": (url, bpe), "local": (corpus["dir"], corpus["tokenizer"])}.items():
        text.prepare_tokens(docs, tok, str(tmp_path / name), 0.25, seed=0, progress=False)
    for split in ("train.bin", "val.bin"):
        assert (tmp_path / "gs" / split).read_bytes() == (tmp_path / "local" / split).read_bytes()
    with pytest.raises(DataError, match="^data.path: 'gs://bucket/nowhere' does not exist"):
        text.corpus_files("gs://bucket/nowhere")


def test_a_bucket_without_its_filesystem_library_names_the_extra(no_gcsfs):
    """gs:// inputs without gcsfs (the ``gcs`` extra): one DataError line naming the field and
    the install command."""
    with pytest.raises(DataError, match=r"^data.tokenizer_path: gs:// paths need gcsfs.*pip install -e '\.\[gcs\]'"):
        text.read_ranks("gs://bucket/bpe.tiktoken")


def test_batches_are_per_host_rows_of_a_resumable_epoch_loop(corpus, tmp_path):
    text.prepare_tokens(corpus["dir"], corpus["tokenizer"], str(tmp_path), 0.1, seed=0, progress=False)
    data = text.TokenData(str(tmp_path), 32, seed=7)
    n = data.num_sequences["train"]
    full = data.batches(8, 0, 2 * (n // 8))  # two epochs
    assert full.shape == (2 * (n // 8), 8, 32)
    hosts = [data.batches(8, 0, 2 * (n // 8), rows=slice(4 * p, 4 * p + 4)) for p in range(2)]
    np.testing.assert_array_equal(np.concatenate(hosts, 1), full)  # hosts read disjoint rows
    np.testing.assert_array_equal(data.batches(8, 5, 3), full[5:8])  # a pure function of the step
    stream = np.fromfile(tmp_path / "train.bin", np.uint16)
    seqs = stream[:n * 32].reshape(n, 32)
    epoch0 = full[: n // 8].reshape(-1, 32)
    assert len({s.tobytes() for s in epoch0}) == len(epoch0)  # no sequence twice in an epoch
    assert all((seqs == s).all(1).any() for s in epoch0)  # packed contiguous sequences of the stream
    assert not np.array_equal(full[: n // 8], full[n // 8: 2 * (n // 8)])  # each epoch reshuffles


# ----------------------------------------------------------------------------- correlations, perplexity

def test_pooled_sparse_correlation_matches_dense_numpy_and_ignores_labels():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, (300, 9))
    x[:, 1] = (x[:, 0] + (rng.random(300) < 0.2)) % 4  # some dependence
    got = correlations.token_correlation(x, 4, distances=[1, 3], pool_positions=True)
    for t in (1, 3):
        a, b = x[:, :-t].ravel(), x[:, t:].ravel()
        joint = np.zeros((4, 4))
        np.add.at(joint, (a, b), 1.0 / len(a))
        cov = joint - np.bincount(a, minlength=4)[:, None] / len(a) * np.bincount(b, minlength=4)[None] / len(b)
        assert got[t] == pytest.approx(np.linalg.norm(cov), rel=1e-10)
    assert np.isnan(got[2]) and np.isnan(got[0])
    # the same data relabeled into a GPT-2-sized vocabulary: identical values (no v x v arrays)
    labels = np.array([3, 50000, 17, 50256])
    big = correlations.token_correlation(labels[x], 50257, distances=[1, 3], pool_positions=True)
    np.testing.assert_allclose(big[[1, 3]], got[[1, 3]], rtol=1e-12)
    per_position = correlations.token_correlation(labels[x], 50257)
    np.testing.assert_allclose(per_position[1:], correlations.token_correlation(x, 4)[1:], rtol=1e-12)


def test_unigram_noise_floor_matches_independent_tokens():
    rng = np.random.default_rng(1)
    p = np.array([0.5, 0.2, 0.2, 0.1])
    x = rng.choice(4, size=(2000, 6), p=p)
    corr = correlations.token_correlation(x, 4, pool_positions=True)[1:]
    floors = [correlations.unigram_noise_floor(x, 2000 * (6 - t)) for t in range(1, 6)]
    assert np.mean(corr / floors) == pytest.approx(1.0, abs=0.2)


def test_perplexity_vs_context_equals_prefix_by_prefix_loop(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=2, n_head=2)
    transformers.FlaxGPT2LMHeadModel(cfg, seed=0).save_pretrained(str(tmp_path / "lm"))
    lm = perplexity.CausalLM(str(tmp_path / "lm"))
    ids = np.random.default_rng(0).integers(0, 40, (3, 10)).astype(np.int32)
    ppl = perplexity.perplexity_vs_context(lm, ids, batch_size=2)
    assert ppl.shape == (9,)
    for T in (1, 4, 9):  # log p(x_T | x_{0:T-1}) from a separate forward pass on the prefix alone
        logits = lm.model(ids[:, :T]).logits[:, -1]
        logp = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits, -1)), ids[:, T:T + 1], 1)[:, 0]
        assert ppl[T - 1] == pytest.approx(math.exp(-logp.mean()), rel=1e-4)
    assert lm.encode(["a", "b", "c"], ids, 5).shape == (3, 5)  # no tokenizer: the generator's ids


# ----------------------------------------------------------------------------- the md4 task

def _tiny_config(corpus, **train):
    c = load_config("md4_owt_tiny")
    c.data.update(path=corpus["dir"], tokenizer_path=corpus["tokenizer"], seq_len=32, val_fraction=0.2)
    c.model.update(num_layers=1, num_heads=2, head_dim=8, cond_dim=16, mlp_multiple_of=8)
    c.train.update(dict(dict(num_steps=30, eval_every=10, steps_per_call=10, batch_size=8, warmup_steps=5, lr=5e-3,
                             ema_decay=0.5, keep_tokens=(256.0, 640.0)), **train))
    c.eval.update(val_sequences=8, batch_size=8, num_samples=4, sample_steps=8)
    return c


def test_md4_task_trains_keeps_stages_resumes_exactly_and_samples(corpus, tmp_path):
    vocab = text.load_tokenizer(corpus["tokenizer"]).n_vocab
    full = run_task(_tiny_config(corpus), tmp_path / "full")
    assert full["steps"] == 30 and full["stages"] == [1, 2]  # 256 and 640 tokens at 256 tokens per step
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30]
    # uniform predictions give log2(V) bits per token: training goes below
    assert rows[-1]["val/val_loss"] < min(rows[0]["val/val_loss"], math.log2(vocab))
    assert sorted(os.listdir(tmp_path / "full" / "stages")) == ["1", "2"]
    samples = np.load(tmp_path / "full" / "samples.npy")
    assert samples.shape == (4, 32) and 0 <= samples.min() and samples.max() < vocab
    assert (tmp_path / "full" / "samples.txt").read_text().count("===== sample") == 4
    assert run_task(_tiny_config(corpus), tmp_path / "cut", stop_at=20) is None
    resumed = run_task(_tiny_config(corpus), tmp_path / "cut")
    metrics = lambda run: [{k: v for k, v in json.loads(line).items() if k != "train/steps_per_second"}
                           for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    assert metrics("cut") == metrics("full")
    np.testing.assert_array_equal(np.load(tmp_path / "cut" / "samples.npy"), samples)
    assert resumed["val_loss"] == full["val_loss"]

    config = load_config("text_analysis", "tiny")
    config.analysis.update(run_dir=str(tmp_path / "full"), num_samples=6, batch_size=6, sample_steps=4,
                           distances=(1, 2, 5), lm_context=32)
    out = run_task(config, tmp_path / "analysis")
    assert out["stages"] == sorted(full["stages"])
    assert [c["name"] for c in out["curves"]][-1] == "validation data"
    assert all(np.isfinite(c["correlation"][1]) and np.isnan(c["correlation"][3]) for c in out["curves"])
    assert (tmp_path / "analysis" / "text_correlations.png").exists()


def test_md4_stage_steps_are_the_steps_nearest_to_the_token_counts():
    assert md4_task.stage_steps((1e7, 1e8, 1e10), 65536, 10**6) == (153, 1526, 152588)
    assert md4_task.stage_steps((1e3, 1e10), 65536, 1000) == (1,)


def test_md4_command_line_errors_on_missing_corpus(tmp_path):
    cmd = [sys.executable, "-m", "rhmdiff.main", "--config=configs/md4_owt_tiny.py", f"--workdir={tmp_path / 'w'}",
           f"--config.data.path={tmp_path / 'nowhere'}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("rhmdiff: error: data.path:") and not (tmp_path / "w").exists()
