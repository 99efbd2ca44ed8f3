"""Text data for MD4 (paper Sec. 5.1): local corpus -> BPE tokens -> packed, per-host batches.

Pipeline, from local files or an object store (``gs://``, through ``etils.epath``; the token
files are a local cache):

1. :func:`load_tokenizer`: a ``tiktoken`` BPE from a local ``.tiktoken`` rank file. For
   GPT-2 (50257 ids with ``<|endoftext|>`` = 50256, as in the paper) use ``gpt2.tiktoken``,
   which the ``openai-whisper`` package ships (``whisper/assets/gpt2.tiktoken``; e.g.
   ``pip download openai-whisper --no-deps`` and unpack it). The end-of-text id is the
   number of ranks.
2. :func:`read_documents`: the corpus, a Hugging Face ``datasets`` directory
   (``save_to_disk``), ``.parquet`` / ``.arrow`` shards (column ``text``), or ``.txt`` files
   (one document per file), searched recursively under ``data.path``.
3. :func:`prepare_tokens`: every document tokenized once (``encode_ordinary_batch``,
   threaded) and followed by the end-of-text id, into ``train.bin`` / ``val.bin`` (uint16,
   memory-mapped later) and ``meta.json``, in a cache directory named after a hash of the
   tokenizer file's bytes, the corpus files' names, sizes and modification times, and the
   split settings (:mod:`rhmdiff.data.cache`): a grown corpus or a regenerated tokenizer gets
   new token files. The train/validation split is by document and seeded (``data.seed``;
   MD4's own split is unseeded). Files are written under temporary names and renamed at the
   end, so an interrupted run leaves nothing half-done.
4. :class:`TokenData`: the token stream packed into sequences of ``seq_len`` tokens
   (documents concatenated, as in MD4 / GPT-2). ``batches(start, num, rows)`` gives rows
   ``rows`` of the global batches of steps ``start..start+num-1``: epoch ``e`` visits the
   sequences in the order of a permutation drawn from ``(seed, e)``, so the data position
   is a pure function of the step stored in the checkpoint (exact resume), and each host
   reads only its own rows (``jax.process_index()`` share, cut by the trainer).
"""
from __future__ import annotations

import base64
import binascii
import importlib
import io
import json
import os

import numpy as np

from rhmdiff._util import progress as progress_bar
from rhmdiff.data import DataError, files_under, input_path
from rhmdiff.data.cache import content_key, file_signature
from rhmdiff.data.epochs import EpochOrder
from rhmdiff.files import as_path, atomic_write, write_json, write_npy

EOT = "<|endoftext|>"
# GPT-2's pre-tokenization regex (tiktoken's "gpt2" encoding).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SPLIT_BLOCK = 1024  # documents per tokenization batch and per block of the seeded split
FORMAT_VERSION = 2


def text_extra(name: str):
    """Import a module of the ``text`` extra, or fail with the install command."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise DataError(f"the text pipeline needs {name}: pip install -e '.[text]'") from None


def read_ranks(path: str, field: str = "data.tokenizer_path") -> dict[bytes, int]:
    """The BPE ranks of a ``.tiktoken`` file (lines ``<base64 token> <rank>``), read directly
    (tiktoken's own loader keeps a path-keyed copy in a shared temporary directory, which a
    file regenerated at the same path would not update). DataError naming ``field`` if the
    file is missing or not a rank file."""
    hint = ("build the demo one with: python -m rhmdiff.data.demo_text --out=data/demo" if "demo" in path else
            "a .tiktoken rank file, e.g. gpt2.tiktoken from the openai-whisper package")
    file = input_path(path, field, f" ({hint})")
    if not file.is_file():
        raise DataError(f"{field}: no tokenizer file at {path!r} ({hint})")
    ranks = {}
    with file.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except (ValueError, binascii.Error):
                raise DataError(f"{field}: {path} is not a .tiktoken rank file (line {number} is not "
                                "'<base64 token> <rank>')") from None
    if not ranks or sorted(ranks.values()) != list(range(len(ranks))):
        raise DataError(f"{field}: {path} is not a .tiktoken rank file (its ranks are not 0 .. n-1)")
    return ranks


def load_tokenizer(path: str):
    """A ``tiktoken.Encoding`` from the local rank file ``path`` (GPT-2's regex; the
    end-of-text token gets the id after the last rank)."""
    tiktoken = text_extra("tiktoken")
    ranks = read_ranks(path)
    return tiktoken.Encoding(name=os.path.basename(path), pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={EOT: len(ranks)})


def _is_datasets_dir(path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json"))


def _corpus(path: str) -> tuple[str, list]:
    """``(kind, files)`` of the corpus at ``path``: ``"datasets"`` (every file of the directory)
    or the extension of its shards, files as ``epath.Path`` (DataError naming ``data.path`` if none)."""
    hint = " (build the demo corpus with: python -m rhmdiff.data.demo_text --out=data/demo)" if "demo" in path else ""
    root = input_path(path, "data.path", hint)
    if _is_datasets_dir(root):
        return "datasets", files_under(root)
    below = files_under(root) if root.is_dir() else []
    for ext in (".parquet", ".arrow", ".txt"):
        found = ([root] if root.name.endswith(ext) else []) if not root.is_dir() else [
            f for f in below if f.name.endswith(ext)]
        if found:
            return ext, found
    raise DataError(f"data.path: {path} holds no datasets directory and no .parquet, .arrow or .txt files")


def corpus_files(path: str) -> list:
    """The files that make up the corpus at ``path`` (DataError naming ``data.path`` if none)."""
    return _corpus(path)[1]


def token_key(data_path: str, tokenizer_path: str, val_fraction: float, seed: int) -> str:
    """The content key of the token files of a corpus (see module docstring)."""
    root = as_path(data_path)
    root = root if root.is_dir() else root.parent
    return content_key(FORMAT_VERSION, file_signature([tokenizer_path]), file_signature(corpus_files(data_path), root),
                       val_fraction, seed)


def read_documents(path: str):
    """``(num_documents or None, iterator of str)`` over the corpus at ``path`` (see module
    docstring). Raises DataError, naming ``data.path``, if nothing is found."""
    kind, found = _corpus(path)
    if kind == "datasets":
        datasets = text_extra("datasets")
        ds = datasets.load_from_disk(os.fspath(as_path(path)))
        parts = [ds[k] for k in sorted(ds)] if isinstance(ds, datasets.DatasetDict) else [ds]
        return sum(len(p) for p in parts), (row["text"] for p in parts for row in p)
    if kind == ".txt":
        def texts():
            for f in found:
                with f.open("rb") as raw:  # as open(f, encoding="utf-8", errors="replace") reads it
                    yield io.TextIOWrapper(raw, encoding="utf-8", errors="replace").read()
        return len(found), texts()
    datasets = text_extra("datasets")
    names = [os.fspath(f) for f in found]
    ds = (datasets.Dataset.from_parquet(names) if kind == ".parquet"
          else datasets.concatenate_datasets([datasets.Dataset.from_file(f) for f in names]))
    if "text" not in ds.column_names:
        raise DataError(f"data.path: {path} has no 'text' column (columns: {ds.column_names})")
    return len(ds), (row["text"] for row in ds)


def _split_blocks(seed: int, block: int, n: int, val_fraction: float) -> np.ndarray:
    """Which of the ``n`` documents of block ``block`` go to validation (seeded)."""
    return np.random.default_rng([seed, block]).random(n) < val_fraction


def token_dir(cache_root: str, data_path: str, tokenizer_path: str, val_fraction: float, seed: int) -> str:
    """Where the token files of this corpus, tokenizer and split live under ``cache_root``."""
    return os.path.join(cache_root, f"tokens-{token_key(data_path, tokenizer_path, val_fraction, seed)}")


def prepare_tokens(data_path: str, tokenizer_path: str, out_dir: str, val_fraction: float, seed: int,
                   progress: bool = True) -> dict:
    """Tokenize the corpus into ``out_dir/{train,val}.bin`` + ``meta.json`` (see module
    docstring; ``out_dir`` from :func:`token_dir`) unless they exist; returns the meta."""
    meta_path = os.path.join(out_dir, "meta.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            return json.load(f)
    settings = {"format": FORMAT_VERSION, "data_path": os.fspath(as_path(data_path)),
                "tokenizer_path": os.fspath(as_path(tokenizer_path)), "val_fraction": val_fraction, "seed": seed}
    num_docs, docs = read_documents(data_path)
    enc = load_tokenizer(tokenizer_path)
    if enc.n_vocab > 2**16:
        raise DataError(f"data.tokenizer_path: {enc.n_vocab} ids do not fit the uint16 token files")
    os.makedirs(out_dir, exist_ok=True)
    tmp = {s: os.path.join(out_dir, f".{s}.bin.{os.getpid()}.tmp") for s in ("train", "val")}
    counts = {"train": 0, "val": 0}
    num_documents = {"train": 0, "val": 0}
    bar = progress_bar(total=num_docs, desc="tokenizing", unit="doc", disable=not progress)
    with open(tmp["train"], "wb") as f_train, open(tmp["val"], "wb") as f_val:
        block, batch = 0, []
        for doc in docs:
            batch.append(doc)
            if len(batch) == SPLIT_BLOCK:
                _write_block(enc, batch, _split_blocks(seed, block, len(batch), val_fraction),
                             (f_train, f_val), counts, num_documents)
                block, batch = block + 1, []
                bar.update(SPLIT_BLOCK)
        if batch:
            _write_block(enc, batch, _split_blocks(seed, block, len(batch), val_fraction),
                         (f_train, f_val), counts, num_documents)
            bar.update(len(batch))
    bar.close()
    if counts["train"] == 0:
        raise DataError(f"data.path: {data_path} gave no training tokens")
    for s in ("train", "val"):
        os.replace(tmp[s], os.path.join(out_dir, f"{s}.bin"))
    meta = dict(settings, vocab_size=enc.n_vocab, eot=enc.eot_token, num_tokens=counts,
                num_documents=num_documents)
    write_json(meta_path, meta)
    return meta


def _write_block(enc, batch, to_val, files, counts, num_documents):
    for text, val, ids in zip(batch, to_val, enc.encode_ordinary_batch(batch)):
        split = "val" if val else "train"
        arr = np.asarray(ids + [enc.eot_token], np.uint16)
        arr.tofile(files[int(val)])
        counts[split] += len(arr)
        num_documents[split] += 1


class TokenData:
    """Packed sequences of ``seq_len`` tokens from a :func:`prepare_tokens` directory; training
    batches in the seeded epoch order ``order`` (:class:`rhmdiff.data.epochs.EpochOrder`)."""

    def __init__(self, token_dir: str, seq_len: int, seed: int = 0):
        with open(os.path.join(token_dir, "meta.json")) as f:
            self.meta = json.load(f)
        self.seq_len = seq_len
        self.tokens = {s: np.memmap(os.path.join(token_dir, f"{s}.bin"), np.uint16, "r")
                       if self.meta["num_tokens"][s] else np.zeros((0,), np.uint16) for s in ("train", "val")}
        self.num_sequences = {s: len(t) // seq_len for s, t in self.tokens.items()}
        if self.num_sequences["train"] == 0:
            raise DataError(f"data.seq_len = {seq_len} exceeds the {len(self.tokens['train'])} training tokens")
        self.order = EpochOrder(self.num_sequences["train"], seed)

    @property
    def vocab_size(self) -> int:
        """Number of real symbols (the BPE ids and end-of-text); the mask id is this number."""
        return self.meta["vocab_size"]

    def sequences(self, split: str, index) -> np.ndarray:
        """``int32[len(index), seq_len]``: the packed sequences ``index`` of ``split``."""
        index = np.asarray(index)
        offsets = index[:, None] * self.seq_len + np.arange(self.seq_len)
        return np.asarray(self.tokens[split][offsets.ravel()], np.int32).reshape(offsets.shape)

    def batches(self, batch_size: int, start: int, num: int, rows=slice(None)) -> np.ndarray:
        """Rows ``rows`` of the training batches of steps ``start..start+num-1``:
        ``int32[num, rows, seq_len]``."""
        return np.stack([self.sequences("train", self.order.indices(batch_size, step, rows))
                         for step in range(start, start + num)])


def write_samples(directory, x: np.ndarray, tokenizer) -> None:
    """``samples.npy`` (tokens) and ``samples.txt`` (decoded, one sample per block) in ``directory``."""
    write_npy(directory / "samples.npy", x)
    with atomic_write(directory / "samples.txt") as f:
        for i, seq in enumerate(x):
            f.write(f"===== sample {i} =====\n{tokenizer.decode(seq.tolist())}\n")
