"""A synthetic corpus and a small BPE for the tiny MD4 config (``configs/md4_owt_tiny.py``)
and the tests: the whole text pipeline runs without downloading anything.

The corpus is English-like text from a small probabilistic grammar (sentence -> noun phrase
+ verb phrase, optional adjectives and prepositional phrases). Each document draws one topic
that fixes its nouns, so tokens are correlated across the whole document (long-range
structure, as in real text), while words and phrases give local structure. It is not real
language: for real experiments point ``data.path`` at OpenWebText or any ``.txt`` files.

:func:`write_tokenizer` builds a ``.tiktoken`` rank file from a corpus: the 256 bytes, then
every prefix of the most frequent words (so BPE merges can reach each whole word).
"""
from __future__ import annotations

import base64
import collections
import os
import re

import numpy as np

from rhmdiff.files import atomic_write

TOPICS = {
    "sea": "ship sailor wave harbor island storm captain anchor whale lighthouse".split(),
    "farm": "farmer field horse barn wheat orchard cow harvest fence tractor".split(),
    "city": "street tower market train bridge mayor crowd office station lantern".split(),
    "forest": "tree wolf river path hunter owl cabin moss fox mountain".split(),
}
ADJECTIVES = "old quiet bright small heavy golden distant cold green tired".split()
VERBS = "saw found followed carried remembered painted watched crossed built lost".split()
INTRANSITIVE = "slept waited laughed vanished returned rested".split()
PREPOSITIONS = "near under beyond behind across".split()
NAMES = "Anna Tom Clara Peter Maya Jonas".split()


def _noun_phrase(rng, nouns) -> str:
    if rng.random() < 0.15:
        return str(rng.choice(NAMES))
    adjectives = " ".join(rng.choice(ADJECTIVES, size=rng.integers(0, 3), replace=False))
    return " ".join(w for w in ("the", adjectives, str(rng.choice(nouns))) if w)


def _sentence(rng, nouns) -> str:
    if rng.random() < 0.2:
        words = f"{_noun_phrase(rng, nouns)} {rng.choice(INTRANSITIVE)}"
    else:
        words = f"{_noun_phrase(rng, nouns)} {rng.choice(VERBS)} {_noun_phrase(rng, nouns)}"
    if rng.random() < 0.4:
        words += f" {rng.choice(PREPOSITIONS)} {_noun_phrase(rng, nouns)}"
    return words[0].upper() + words[1:] + "."


def document(rng) -> str:
    """One document: a topic, then 2-5 paragraphs of 3-8 sentences."""
    nouns = TOPICS[str(rng.choice(sorted(TOPICS)))]
    paragraphs = [" ".join(_sentence(rng, nouns) for _ in range(rng.integers(3, 9)))
                  for _ in range(rng.integers(2, 6))]
    return "\n\n".join(paragraphs) + "\n"


def write_corpus(out_dir: str, num_documents: int, seed: int = 0) -> list[str]:
    """``num_documents`` documents as ``out_dir/doc_#####.txt``; returns their paths."""
    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i in range(num_documents):
        paths.append(os.path.join(out_dir, f"doc_{i:05d}.txt"))
        with open(paths[-1], "w") as f:
            f.write(document(rng))
    return paths


def write_tokenizer(texts, path: str, num_words: int = 200) -> int:
    """A ``.tiktoken`` rank file at ``path`` for ``texts``: the 256 bytes, then the prefixes
    (2+ bytes) of the ``num_words`` most frequent words (with and without their leading
    space), shorter first. Returns the number of ranks."""
    counts = collections.Counter(w for t in texts for w in re.findall(r" ?[A-Za-z]+|[.,]", t))
    pieces = {}
    for word, n in counts.most_common(num_words):
        for variant in {word, word.lstrip()}:
            raw = variant.encode()
            for end in range(2, len(raw) + 1):
                pieces[raw[:end]] = pieces.get(raw[:end], 0) + n
    ranks = [bytes([b]) for b in range(256)]
    ranks += sorted(pieces, key=lambda p: (len(p), -pieces[p], p))
    with atomic_write(path) as f:
        for rank, token in enumerate(ranks):
            f.write(f"{base64.b64encode(token).decode()} {rank}\n")
    return len(ranks)


def main(argv):
    del argv
    from absl import flags
    out, num = flags.FLAGS.out, flags.FLAGS.num_documents
    paths = write_corpus(os.path.join(out, "corpus"), num, flags.FLAGS.seed)
    texts = []
    for p in paths:
        with open(p) as f:
            texts.append(f.read())
    n = write_tokenizer(texts, os.path.join(out, "demo.tiktoken"))
    size = sum(len(t) for t in texts)
    print(f"{num} documents ({size / 1e3:.0f} KB) in {out}/corpus, BPE with {n} ranks in {out}/demo.tiktoken")


if __name__ == "__main__":
    from absl import app, flags
    flags.DEFINE_string("out", "data/demo", "Output directory (corpus/ and demo.tiktoken).")
    flags.DEFINE_integer("num_documents", 600, "Number of documents.")
    flags.DEFINE_integer("seed", 0, "Random seed.")
    app.run(main)
