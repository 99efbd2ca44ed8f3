"""Checks of config values before any compute: one error that names the field.

Each task module's ``validate(config)`` combines the field checks below (:func:`integer`,
:func:`real`, :func:`choice`, ...) and the checks of the sections several tasks share
(:func:`grammar`, :func:`d3pm_diffusion`, :func:`optimizer`, :func:`generation`,
:func:`rhm_training`, :func:`grammar_grid`).
"""
from __future__ import annotations

import numbers

from rhmdiff import rhm

MAX_SEED = 2**63 - 1  # jax.random.PRNGKey takes seeds up to 64 bits


class ConfigError(ValueError):
    """A bad config value; ``str(err)`` starts with the field, e.g. ``config.rhm.m: ...``."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"config.{field}: {message}")


def get(config, field: str):
    node = config
    for part in field.split("."):
        if not hasattr(node, "keys") or part not in node:
            raise ConfigError(field, "missing")
        node = node[part]
    return node


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def integer(config, field: str, low: int, high: int | None = None) -> int:
    val = get(config, field)
    if not _is_int(val) or val < low or (high is not None and val > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(field, f"must be an integer {bounds}, got {val!r}")
    return int(val)


def real(config, field: str, low: float, high: float, low_open: bool = True, high_open: bool = True) -> float:
    val = get(config, field)
    ok = isinstance(val, numbers.Real) and not isinstance(val, bool)
    ok = ok and (val > low if low_open else val >= low) and (val < high if high_open else val <= high)
    if not ok:
        bounds = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ConfigError(field, f"must be a number in {bounds}, got {val!r}")
    return float(val)


def choice(config, field: str, allowed) -> str:
    val = get(config, field)
    if val not in allowed:
        raise ConfigError(field, f"must be one of {list(allowed)}, got {val!r}")
    return val


def flag(config, field: str) -> bool:
    val = get(config, field)
    if not isinstance(val, bool):
        raise ConfigError(field, f"must be True or False, got {val!r}")
    return val


def int_list(config, field: str, low: int) -> list[int]:
    values = get(config, field)
    if not isinstance(values, (list, tuple)) or not values or not all(_is_int(x) and x >= low for x in values):
        raise ConfigError(field, f"must be a non-empty list of integers >= {low}, got {values!r}")
    return [int(x) for x in values]


def text(config, field: str, what: str = "must be a non-empty string") -> str:
    val = get(config, field)
    if not isinstance(val, str) or not val:
        raise ConfigError(field, what)
    return val


def patterns(config, field: str) -> list[str]:
    sources = get(config, field)
    if not isinstance(sources, (list, tuple)) or not sources or not all(isinstance(x, str) and x for x in sources):
        raise ConfigError(field, f"must be a non-empty list of directory patterns, got {sources!r}")
    return list(sources)


def seed(config, field: str = "seed") -> int:
    return integer(config, field, 0, MAX_SEED)


def grammar_sizes(config, field: str, v, m, s, L) -> None:
    """(v, m, s, L) make a possible RHM; the error names ``field`` (``rhm`` or ``sweep``)."""
    try:
        rhm.check_sizes(v, m, s, L)
    except ValueError as e:  # rhm's messages start with the argument's name
        name, _, message = str(e).partition(" ")
        raise ConfigError(f"{field}.{name}" if name in ("v", "m", "s", "L") else field, message) from None


def grammar(config) -> dict:
    """``config.rhm`` (:data:`rhmdiff.config_base.GRAMMAR_DEFAULTS`) and the data sizes;
    returns ``{v, m, s, L}``. A ``rules_file`` must hold an unambiguous grammar of those sizes
    (``DataError`` when it cannot be read as one)."""
    seed(config, "rhm.seed")
    sizes = {k: get(config, f"rhm.{k}") for k in ("v", "m", "s", "L")}
    grammar_sizes(config, "rhm", **sizes)
    rules_file = get(config, "rhm.rules_file")
    if not isinstance(rules_file, str):
        raise ConfigError("rhm.rules_file", f"must be a path or '', got {rules_file!r}")
    if rules_file:
        from rhmdiff.data import DataError
        try:
            g = rhm.load_rules(rules_file, "config.rhm.rules_file")
        except ValueError as e:
            raise DataError(str(e)) from None
        for name, value in sizes.items():
            if getattr(g, name) != value:
                raise ConfigError(f"rhm.{name}", f"is {value} but rhm.rules_file {rules_file} has {name} = "
                                  f"{getattr(g, name)}")
    total = sum(integer(config, f"data.{k}", 0) for k in ("train_size", "val_size", "test_size"))
    if total > rhm.language_size(**sizes):
        raise ConfigError("data.train_size", f"train_size + val_size + test_size = {total} exceeds "
                          f"the {rhm.language_size(**sizes)} sequences of the grammar")
    return sizes


def d3pm_diffusion(config) -> None:
    from rhmdiff.diffusion import d3pm
    integer(config, "diffusion.T", 1, 10**6)
    choice(config, "diffusion.schedule", d3pm.SCHEDULES)
    beta_min = real(config, "diffusion.beta_min", 0.0, 1.0)
    beta_max = real(config, "diffusion.beta_max", 0.0, 1.0)
    if beta_max < beta_min:
        raise ConfigError("diffusion.beta_max", f"must be >= beta_min = {beta_min}, got {beta_max}")


def optimizer(config) -> None:
    """``config.train``: every field of :data:`rhmdiff.config_base.TRAIN_DEFAULTS`."""
    from rhmdiff import train
    choice(config, "train.optimizer", train.OPTIMIZERS)
    integer(config, "train.batch_size", 1)
    real(config, "train.lr", 0.0, float("inf"))
    real(config, "train.momentum", 0.0, 1.0, low_open=False, high_open=True)
    real(config, "train.b2", 0.0, 1.0)
    for field in ("weight_decay", "grad_clip"):
        real(config, f"train.{field}", 0.0, float("inf"), low_open=False)
    choice(config, "train.lr_schedule", train.LR_SCHEDULES)
    for field in ("eval_every", "patience", "steps_per_call", "max_nonfinite"):
        integer(config, f"train.{field}", 1)
    for field in ("checkpoint_every", "log_every", "lr_decay_steps", "warmup_steps"):
        integer(config, f"train.{field}", 0)
    keep = get(config, "train.keep_steps")
    if not isinstance(keep, (list, tuple)) or not all(_is_int(x) and x >= 1 for x in keep):
        raise ConfigError("train.keep_steps", f"must be a list of integers >= 1, got {keep!r}")
    real(config, "train.ema_decay", 0.0, 1.0, low_open=False)
    flag(config, "train.ema_debias")
    flag(config, "train.check_replicas")


def grammar_grid(config) -> None:
    """The grammar grid and the P grid of the sweeps that need no training (``clustering_sweep``,
    ``onestep``): ``sweep.{v, s, m_values, num_seeds, num_P, P_min, P_max}``."""
    seed(config)
    v, s = integer(config, "sweep.v", 1), integer(config, "sweep.s", 2)
    for m in int_list(config, "sweep.m_values", 1):
        grammar_sizes(config, "sweep.m_values", v, m, s, 2)
    integer(config, "sweep.num_seeds", 1)
    integer(config, "sweep.num_P", 2)
    p_min = integer(config, "sweep.P_min", 2)
    if integer(config, "sweep.P_max", 2, 10**9) <= p_min:
        raise ConfigError("sweep.P_max", f"must be > P_min = {p_min}")


def generation(config) -> None:
    """The fields that the ``rhm`` and ``oracle`` tasks share: grammar, diffusion, generation."""
    seed(config)
    grammar(config)
    d3pm_diffusion(config)
    integer(config, "eval.num_generated", 1)
    integer(config, "eval.batch_size", 1)


def rhm_training(config) -> None:
    """The fields of RHM training (the ``rhm`` task and the tasks that train ``rhm`` runs)."""
    from rhmdiff.diffusion import d3pm
    from rhmdiff.models import unet
    optimizer(config)
    integer(config, "train.num_steps", 1)
    integer(config, "model.width", 1)
    choice(config, "model.variant", unet.VARIANTS)
    choice(config, "model.time_conditioning", ("embedding", "none"))
    choice(config, "diffusion.objective", d3pm.OBJECTIVES)
    real(config, "diffusion.hybrid_coeff", 0.0, float("inf"), low_open=False)
    if integer(config, "data.val_size", 0) < 1:
        raise ConfigError("data.val_size", "must be >= 1: early stopping needs a validation set")
    online = flag(config, "data.online")
    batch_size, train_size = config.train.batch_size, get(config, "data.train_size")
    if not online and batch_size > train_size:
        raise ConfigError("train.batch_size", f"must be <= data.train_size = {train_size} "
                          f"(offline training), got {batch_size}")


def num_steps_or_epochs(config) -> None:
    """``train.num_steps``: >= 1, or -1 for a number of epochs of the data."""
    if get(config, "train.num_steps") != -1:
        integer(config, "train.num_steps", 1)
