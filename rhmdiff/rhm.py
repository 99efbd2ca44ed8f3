"""The Random Hierarchy Model (paper Section 2.2, assumptions i-iv).

An RHM of depth ``L`` and branching ``s`` is a regular tree: the root (level ``L``) is a
class in ``[0, v)``, every level-``l`` symbol is rewritten into ``s`` level-``(l-1)``
symbols by one of its ``m`` production rules (chosen uniformly), and the ``d = s**L``
leaves (level 0) are the visible tokens. Rules are drawn at random and frozen: at every
level the ``v*m`` right-hand sides are distinct s-tuples drawn uniformly from the
``v**s`` possible ones (unambiguous grammar, assumption iii).

Layout: ``rules[l-1, a, j]`` is the j-th production (``s`` symbols of level ``l-1``) of
the level-``l`` symbol ``a``. A sequence is determined by its root and by the
production choice ``j`` of each of its ``(s**L - 1)/(s - 1)`` internal nodes, which gives
the index <-> sequence bijection used by :func:`sample_distinct`.

All functions are pure; those on arrays are jit/vmap-able except :func:`make_grammar`
and :func:`sample_distinct`, which draw distinct integers on the host (deterministically
from the key).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rhmdiff._util import is_concrete, numpy_rng

# Tuple codes (base-v integers of an s-tuple) are int32: v**s must stay below this.
MAX_TUPLE_CODES = 2**31 - 1
# Up to this many possible tuples, decode looks parents up in a dense table.
DENSE_TABLE_MAX = 2**22
# Above this number of sequences the index draw falls back to i.i.d. draws + dedup.
MAX_EXACT_INDEX = 2**62
# Sequences longer than this (d = s**L visible tokens) are refused: nothing downstream scales there.
MAX_TOKENS = 2**16


@struct.dataclass
class Grammar:
    """An RHM instance: ``rules`` int32[L, v, m, s] plus its static sizes."""

    rules: jax.Array
    v: int = struct.field(pytree_node=False)
    m: int = struct.field(pytree_node=False)
    s: int = struct.field(pytree_node=False)
    L: int = struct.field(pytree_node=False)

    @property
    def d(self) -> int:
        """Number of visible tokens, s**L."""
        return self.s**self.L

    @property
    def num_nodes(self) -> int:
        """Number of internal (latent) nodes, each with one production choice."""
        return (self.s**self.L - 1) // (self.s - 1)


def check_sizes(v: int, m: int, s: int, L: int) -> None:
    """Raise ValueError unless (v, m, s, L) describe a possible RHM."""
    for name, val, low in (("v", v, 1), ("m", m, 1), ("s", s, 2), ("L", L, 1)):
        if not isinstance(val, (int, np.integer)) or isinstance(val, bool) or val < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {val!r}")
    if v * m > v**s:
        raise ValueError(
            f"m must be <= v**(s-1) = {v ** (s - 1)} (v*m = {v * m} distinct productions "
            f"among v**s = {v ** s} tuples), got m={m}")
    if v**s > MAX_TUPLE_CODES:
        raise ValueError(f"s too large: v**s = {v ** s}, tuple codes are int32 so v**s must be < 2**31")
    if L * np.log2(s) > np.log2(MAX_TOKENS):
        raise ValueError(f"L must keep d = s**L <= {MAX_TOKENS} visible tokens, got s={s}, L={L}")


def _check_grammar(g: Grammar) -> None:
    check_sizes(g.v, g.m, g.s, g.L)
    if tuple(g.rules.shape) != (g.L, g.v, g.m, g.s):
        raise ValueError(f"Grammar.rules must have shape (L, v, m, s) = {(g.L, g.v, g.m, g.s)}, "
                         f"got {tuple(g.rules.shape)}")


def from_rules(rules) -> Grammar:
    """The grammar of given ``rules`` (``int[L, v, m, s]`` in the layout of :class:`Grammar`, e.g.
    another code's), checked: integers in ``[0, v)`` and, at every level, the ``v*m``
    productions distinct (an unambiguous grammar, assumption iii). ``ValueError`` otherwise."""
    rules = np.asarray(rules)
    if rules.ndim != 4 or not np.issubdtype(rules.dtype, np.integer):
        raise ValueError(f"rules must be an integer array of shape (L, v, m, s), got {rules.dtype} {rules.shape}")
    L, v, m, s = (int(n) for n in rules.shape)
    check_sizes(v, m, s, L)
    if rules.min() < 0 or rules.max() >= v:
        raise ValueError(f"rules must hold symbols in [0, v) = [0, {v}), got values in [{rules.min()}, {rules.max()}]")
    for level in range(L):
        productions = rules[level].reshape(v * m, s)
        if len(np.unique(productions, axis=0)) < v * m:
            raise ValueError(f"rules of level {level + 1} repeat a production: the grammar is ambiguous "
                             f"(its v*m = {v * m} productions must be distinct)")
    return Grammar(rules=jnp.asarray(rules, jnp.int32), v=v, m=m, s=s, L=L)


def save_rules(path, g: Grammar) -> None:
    """Write ``g.rules`` as a ``.npy`` file that :func:`load_rules` reads back (folders created)."""
    from rhmdiff.files import as_path, write_npy
    as_path(path).parent.mkdir(parents=True, exist_ok=True)
    write_npy(path, np.asarray(g.rules, np.int32))


def load_rules(path, field: str = "path") -> Grammar:
    """The grammar stored in the ``.npy`` file ``path`` (:func:`from_rules`); ``ValueError``
    naming ``field`` when the file is missing, not an array, or not an unambiguous grammar."""
    from rhmdiff.files import as_path, read_npy
    if not as_path(path).exists():
        raise ValueError(f"{field}: no file at {path!r}")
    try:
        rules = read_npy(path)
    except (ValueError, OSError) as e:
        raise ValueError(f"{field}: {path} is not a .npy array ({str(e).splitlines()[0][:80]})") from None
    try:
        return from_rules(rules)
    except ValueError as e:
        raise ValueError(f"{field}: {path}: {e}") from None


def _check_tokens(g: Grammar, tokens) -> jax.Array:
    _check_grammar(g)
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] != g.d:
        raise ValueError(f"tokens must have shape [num, s**L] = [num, {g.d}], got {tokens.shape}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must be integers, got dtype {tokens.dtype}")
    if is_concrete(tokens) and tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= g.v):
        raise ValueError(f"tokens must lie in [0, v) = [0, {g.v}), "
                         f"got values in [{int(tokens.min())}, {int(tokens.max())}]")
    return tokens.astype(jnp.int32)


def _check_num(num, name="num") -> int:
    if not isinstance(num, (int, np.integer)) or isinstance(num, bool) or num < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {num!r}")
    return int(num)


def _digits(codes: np.ndarray, base: int, n: int) -> np.ndarray:
    """Base-``base`` digits of ``codes``, most significant first: [..., n]."""
    powers = base ** np.arange(n - 1, -1, -1, dtype=np.int64)
    return (codes[..., None] // powers) % base


def make_grammar(key, v: int, m: int, s: int, L: int) -> Grammar:
    """Draw an RHM (assumptions i-iv): per level, ``v*m`` distinct s-tuples uniformly
    from the ``v**s`` possible ones, m of them per symbol.

    The distinct draw (numpy's Floyd-style sampling without replacement, seeded from
    ``key``) never materializes all ``v**s`` tuples, so e.g. v=64, s=4 is cheap.
    """
    check_sizes(v, m, s, L)
    rng = numpy_rng(key)
    levels = [rng.choice(v**s, size=v * m, replace=False, shuffle=True) for _ in range(L)]
    rules = _digits(np.stack(levels).astype(np.int64), v, s).reshape(L, v, m, s)
    return Grammar(rules=jnp.asarray(rules, jnp.int32), v=v, m=m, s=s, L=L)


def language_size(v: int, m: int, s: int, L: int) -> int:
    """v * m**((s**L - 1)/(s - 1)): one root and one production choice per internal node."""
    return v * m ** ((s**L - 1) // (s - 1))


def num_sequences(g: Grammar) -> int:
    """Size of the language of ``g`` (:func:`language_size`), an exact Python int."""
    return language_size(g.v, g.m, g.s, g.L)


def _expand(g: Grammar, top, choices, level: int):
    """Generate tokens from the level-``level`` symbols ``top`` [num, s**(L-level)] and the
    production choices ``choices[l-1]`` [num, s**(L-l)] of levels l = level..1.

    One vectorized gather per level."""
    h = top
    for l in range(level, 0, -1):
        h = production(g, l, h, choices[l - 1]).reshape(h.shape[0], -1)
    return h


def production(g: Grammar, level: int, symbols, choice):
    """``rules[level-1, symbols, choice]`` ([..., s]) as one flat ``take``: a two-array
    advanced index compiles super-linearly slowly in depth on XLA:CPU."""
    flat = g.rules[level - 1].reshape(g.v * g.m, g.s)
    return jnp.take(flat, symbols * g.m + choice, axis=0)


def _split_choices(g: Grammar, flat, level: int):
    """Cut a [num, sum_l s**(L-l)] array of choices (top level first) into per-level arrays."""
    out, start = [None] * level, 0
    for l in range(level, 0, -1):
        n = g.s ** (g.L - l)
        out[l - 1] = flat[:, start:start + n]
        start += n
    return out


@functools.partial(jax.jit, static_argnames="num")
def _sample(key, g: Grammar, num: int):
    k_root, k_choice = jax.random.split(key)
    labels = jax.random.randint(k_root, (num,), 0, g.v, dtype=jnp.int32)
    choices = jax.random.randint(k_choice, (num, g.num_nodes), 0, g.m, dtype=jnp.int32)
    return _expand(g, labels[:, None], _split_choices(g, choices, g.L), g.L), labels


def sample(key, g: Grammar, num: int):
    """``num`` i.i.d. RHM sequences: uniform root, uniform production choices.

    Returns ``(tokens int32[num, s**L], labels int32[num])``; jit-able (``num`` static).
    For very large ``num`` use :func:`sample_chunks`.
    """
    _check_grammar(g)
    return _sample(key, g, _check_num(num))


def sample_chunks(key, g: Grammar, num: int, chunk_size: int = 2**20):
    """Yield ``num`` i.i.d. sequences as numpy ``(tokens, labels)`` chunks of at most
    ``chunk_size`` (chunk i uses ``fold_in(key, i)``), so 10**7+ samples fit in memory."""
    num, chunk_size = _check_num(num), _check_num(chunk_size, "chunk_size")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    for i, start in enumerate(range(0, num, chunk_size)):
        x, y = sample(jax.random.fold_in(key, i), g, min(chunk_size, num - start))
        yield np.asarray(x), np.asarray(y)


@jax.jit
def _from_choices(g: Grammar, labels, choices):
    return _expand(g, labels[:, None], _split_choices(g, choices, g.L), g.L)


def _distinct_digits(rng: np.random.Generator, g: Grammar, num: int) -> np.ndarray:
    """``num`` distinct rows (root, choice_1, ..., choice_n) drawn uniformly."""
    n_seq = num_sequences(g)
    if n_seq <= MAX_EXACT_INDEX:
        # Uniform draw of distinct integers, mapped through the mixed-radix bijection.
        idx = rng.choice(n_seq, size=num, replace=False, shuffle=True).astype(np.int64)
        m_pow = g.m**g.num_nodes
        return np.concatenate([(idx // m_pow)[:, None], _digits(idx % m_pow, g.m, g.num_nodes)], 1)
    # Astronomically many sequences: i.i.d. draws, drop duplicates (keeping the order of
    # first appearance, which keeps the draw uniform), top up until num are distinct.
    rows = np.empty((0, 1 + g.num_nodes), np.int64)
    while True:
        need = num - len(rows)
        fresh = np.concatenate([rng.integers(0, g.v, (need, 1)),
                                rng.integers(0, g.m, (need, g.num_nodes))], 1)
        rows = np.concatenate([rows, fresh])
        _, first = np.unique(rows, axis=0, return_index=True)
        rows = rows[np.sort(first)]
        if len(rows) == num:
            return rows


def sample_distinct(key, g: Grammar, num: int):
    """``num`` distinct sequences drawn uniformly without replacement from the language.

    Integers in ``[0, num_sequences(g))`` are drawn without replacement and decoded by the
    mixed-radix bijection index -> (root, production choices) -> tokens. Above 2**62
    sequences, i.i.d. draws are deduplicated and topped up. Host-side (not jit-able);
    deterministic given ``key``. Returns ``(tokens int32[num, s**L], labels int32[num])``.
    """
    _check_grammar(g)
    num = _check_num(num)
    if num > num_sequences(g):
        raise ValueError(f"num must be <= num_sequences(g) = {num_sequences(g)}, got {num}")
    rows = _distinct_digits(numpy_rng(key), g, num)
    labels = jnp.asarray(rows[:, 0], jnp.int32)
    return _from_choices(g, labels, jnp.asarray(rows[:, 1:], jnp.int32)), labels


def _production_lookup(g: Grammar, level: int):
    """Function mapping tuple codes of level ``level-1`` to the production that makes them,
    ``a * m + j`` for production j of the level-``level`` symbol a (or -1 if the tuple is not
    a production): dense table when v**s is small, sorted codes + searchsorted otherwise."""
    powers = jnp.asarray(g.v ** np.arange(g.s - 1, -1, -1), jnp.int32)
    codes = (g.rules[level - 1] * powers).sum(-1).ravel()  # [v*m], entry a*m + j
    ids = jnp.arange(g.v * g.m, dtype=jnp.int32)
    if g.v**g.s <= DENSE_TABLE_MAX:
        table = jnp.full((g.v**g.s,), -1, jnp.int32).at[codes].set(ids)
        return lambda c: table[c]
    order = jnp.argsort(codes)
    sorted_codes, sorted_ids = codes[order], ids[order]

    def lookup(c):
        pos = jnp.clip(jnp.searchsorted(sorted_codes, c), 0, codes.size - 1)
        return jnp.where(sorted_codes[pos] == c, sorted_ids[pos], -1)
    return lookup


@jax.jit
def _productions(g: Grammar, tokens):
    """Per level l = 1..L, the production id (``a * m + j``) of every level-l node, int32
    ``[num, s**(L-l)]``; -1 where the tuple below is not a production or holds a -1."""
    powers = jnp.asarray(g.v ** np.arange(g.s - 1, -1, -1), jnp.int32)
    h, out = tokens, []
    for level in range(1, g.L + 1):
        t = h.reshape(h.shape[0], -1, g.s)
        ok = jnp.all((t >= 0) & (t < g.v), axis=-1)
        code = (jnp.clip(t, 0, g.v - 1) * powers).sum(-1)
        prod = jnp.where(ok, _production_lookup(g, level)(code), -1)
        h = jnp.where(prod >= 0, prod // g.m, -1)
        out.append(prod)
    return out


@jax.jit
def _decode(g: Grammar, tokens):
    return [jnp.where(p >= 0, p // g.m, -1) for p in _productions(g, tokens)]


def decode(g: Grammar, tokens):
    """Latents of levels 1..L: a list of L int32 arrays ``[num, s**(L-l)]``.

    A level-l symbol is -1 when its s-tuple of level-(l-1) symbols is not a production
    or contains a -1 (invalidity propagates upwards)."""
    return _decode(g, _check_tokens(g, tokens))


@jax.jit
def _level_accuracy(g: Grammar, tokens):
    return jnp.stack([jnp.mean(jnp.all(h >= 0, axis=1)) for h in _decode(g, tokens)]).astype(jnp.float32)


def level_accuracy(g: Grammar, tokens):
    """float32[L]: entry l-1 is A_l, the fraction of sequences whose level-l symbols are
    all valid (paper Section 3.2); A_1 >= A_2 >= ... >= A_L."""
    return _level_accuracy(g, _check_tokens(g, tokens))


@jax.jit
def _tuple_accuracy(g: Grammar, tokens):
    return jnp.stack([jnp.mean(h >= 0) for h in _decode(g, tokens)]).astype(jnp.float32)


def tuple_accuracy(g: Grammar, tokens):
    """float32[L]: entry l-1 is the fraction of level-l positions whose symbol is valid in
    :func:`decode`, averaged over positions and sequences -- the A_l of the authors' code (its
    per-position fraction of valid level-l tuples, averaged over positions). Equal to
    :func:`level_accuracy` at l = L (one position); above it elsewhere."""
    return _tuple_accuracy(g, _check_tokens(g, tokens))


def is_valid(g: Grammar, tokens):
    """bool[num]: the sequence satisfies the rules at every level."""
    return decode(g, tokens)[-1][:, 0] >= 0


@functools.partial(jax.jit, static_argnames=("level", "same_allowed"))
def _reset_synonyms(key, g: Grammar, tokens, level: int, same_allowed: bool):
    prod = _productions(g, tokens)[level - 1]  # [num, s**(L-level)]: the productions at the reset level
    latents = jnp.where(prod >= 0, prod // g.m, -1)
    k_top, k_below = jax.random.split(key)
    if same_allowed or g.m == 1:
        top = jax.random.randint(k_top, prod.shape, 0, g.m, dtype=jnp.int32)
    else:  # uniform among the m - 1 other productions
        top = (prod % g.m + jax.random.randint(k_top, prod.shape, 1, g.m, dtype=jnp.int32)) % g.m
    n_below = sum(g.s ** (g.L - l) for l in range(1, level))
    below = jax.random.randint(k_below, (tokens.shape[0], n_below), 0, g.m, dtype=jnp.int32)
    choices = _split_choices(g, jnp.concatenate([top, below], 1), level)
    fresh = _expand(g, jnp.maximum(latents, 0), choices, level)
    keep = jnp.repeat(latents < 0, g.s**level, axis=1)
    return jnp.where(keep, tokens, fresh)


def reset_synonyms(key, g: Grammar, tokens, level: int, same_allowed: bool = False):
    """The paper's R_l (Appendix D.1): keep every level-``level`` latent of each sequence
    and redraw all production choices below it (levels ``level`` .. 1), i.e. replace each
    level-(level-1) tuple and everything under it by a synonym derivation.

    The production of each level-``level`` latent is redrawn uniformly among its *other* m - 1
    productions, so the level-(level-1) tuple is always replaced by a synonym when m > 1 (the
    paper's "substituting all tuples at depth level - 1 with a synonym"; the authors' code
    draws among all m and moves a repeat to the next production, so the next one comes with
    probability 2/m); the choices below are redrawn freely. ``same_allowed=True``: all m
    productions, so the tuple stays the same with probability 1/m. Subtrees whose
    level-``level`` latent is invalid (-1 in :func:`decode`) are kept as they are.
    """
    tokens = _check_tokens(g, tokens)
    if not isinstance(level, (int, np.integer)) or not 1 <= level <= g.L:
        raise ValueError(f"level must be an integer in [1, L] = [1, {g.L}], got {level!r}")
    return _reset_synonyms(key, g, tokens, int(level), bool(same_allowed))
