"""Validation of experiment configs before any compute: one clear error naming the field."""
from __future__ import annotations

import numbers

from rhmdiff import rhm, train
from rhmdiff.diffusion import d3pm, md4
from rhmdiff.models import transformer


class ConfigError(ValueError):
    """A bad config value; ``str(err)`` starts with the field, e.g. ``config.rhm.m: ...``."""

    def __init__(self, field: str, message: str):
        super().__init__(f"config.{field}: {message}")


def _get(config, field):
    node = config
    for part in field.split("."):
        if part not in node:
            raise ConfigError(field, "missing")
        node = node[part]
    return node


def _int(config, field, low):
    val = _get(config, field)
    if not isinstance(val, numbers.Integral) or isinstance(val, bool) or val < low:
        raise ConfigError(field, f"must be an integer >= {low}, got {val!r}")
    return int(val)


def _real(config, field, low, high, low_open=True, high_open=True):
    val = _get(config, field)
    ok = isinstance(val, numbers.Real) and not isinstance(val, bool)
    ok = ok and (val > low if low_open else val >= low) and (val < high if high_open else val <= high)
    if not ok:
        bounds = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ConfigError(field, f"must be a number in {bounds}, got {val!r}")
    return float(val)


def validate(config, tasks) -> None:
    """Raise :class:`ConfigError` for the first bad field of a config of one of ``tasks``."""
    task = _get(config, "task")
    if task not in tasks:
        raise ConfigError("task", f"must be one of {sorted(tasks)}, got {task!r}")
    _int(config, "seed", 0)
    if task in ("md4", "ddpm"):
        _validate_optimizer(config)
        (_validate_md4 if task == "md4" else _validate_ddpm)(config)
        return
    if task == "text_analysis":
        _validate_text_analysis(config)
        return
    if task in ("clustering_sweep", "onestep"):
        _validate_grammar_sweep(config, task)
        return
    if task == "sensitivity":
        _int(config, "sensitivity.num_data", 2)
        _int(config, "sensitivity.t", 1)
        _patterns(config, "sensitivity.sources")
        return
    _validate_rhm(config)
    if task == "correlations":
        _int(config, "correlations.num_data", 2)
        _patterns(config, "correlations.sources")
    if task in ("rhm", "sweep"):
        _validate_training(config)
    if task == "sweep":
        _validate_sweep(config)


def _patterns(config, field) -> None:
    sources = _get(config, field)
    if not isinstance(sources, (list, tuple)) or not all(isinstance(x, str) for x in sources):
        raise ConfigError(field, f"must be a list of directory patterns, got {sources!r}")


def _validate_sweep(config) -> None:
    _check_m_values(config, *(_get(config, f"rhm.{k}") for k in ("v", "s", "L")))
    batch_size = _get(config, "train.batch_size")
    for P in _int_list(config, "sweep.train_sizes", 1):
        if P < batch_size:
            raise ConfigError("sweep.train_sizes", f"every P must be >= train.batch_size = {batch_size}, got {P}")
    _int_list(config, "sweep.seeds", 0)
    _real(config, "sweep.threshold", 0.0, 1.0, high_open=False)
    if _get(config, "sweep.metric") not in ("accuracy", "novel_accuracy"):
        raise ConfigError("sweep.metric", f"must be 'accuracy' or 'novel_accuracy', got {_get(config, 'sweep.metric')!r}")


def _int_list(config, field, low):
    values = _get(config, field)
    if not isinstance(values, (list, tuple)) or not values or not all(
            isinstance(x, numbers.Integral) and not isinstance(x, bool) and x >= low for x in values):
        raise ConfigError(field, f"must be a non-empty list of integers >= {low}, got {values!r}")
    return [int(x) for x in values]


def _check_m_values(config, v, s, L) -> None:
    """Every m of ``sweep.m_values`` makes a possible grammar with (v, s, L)."""
    for m in _int_list(config, "sweep.m_values", 1):
        try:
            rhm.check_sizes(v, m, s, L)
        except ValueError as e:
            raise ConfigError("sweep.m_values", str(e)) from None


def _validate_grammar_sweep(config, task) -> None:
    """The sweeps over grammars without training (``clustering_sweep``, ``onestep``)."""
    _check_m_values(config, _int(config, "sweep.v", 1), _int(config, "sweep.s", 2), 2)
    if task == "clustering_sweep":
        _int_list(config, "sweep.L_values", 2)
        if not isinstance(config.sweep.get("hierarchical", False), bool):
            raise ConfigError("sweep.hierarchical", f"must be True or False, got {config.sweep.hierarchical!r}")
        _real(config, "sweep.threshold", 0.0, 1.0, high_open=False)
    else:
        _int(config, "sweep.L", 2)
        _real(config, "sweep.eta", 0.0, float("inf"))
    _int(config, "sweep.num_seeds", 1)
    _int(config, "sweep.num_P", 2)
    p_min = _int(config, "sweep.P_min", 2)
    if _int(config, "sweep.P_max", 2) <= p_min:
        raise ConfigError("sweep.P_max", f"must be > P_min = {p_min}")


def _validate_rhm(config) -> None:
    """Fields of the RHM tasks (``oracle``, ``rhm``)."""
    _int(config, "rhm.seed", 0)
    sizes = {k: _get(config, f"rhm.{k}") for k in ("v", "m", "s", "L")}
    try:
        rhm.check_sizes(**sizes)
    except ValueError as e:  # rhm's messages start with the argument's name
        name, _, message = str(e).partition(" ")
        raise ConfigError(f"rhm.{name}", message) from None
    total = sum(_int(config, f"data.{k}", 0) for k in ("train_size", "val_size", "test_size"))
    if total > rhm.language_size(**sizes):
        raise ConfigError("data.train_size", f"train_size + val_size + test_size = {total} exceeds "
                          f"the {rhm.language_size(**sizes)} sequences of the grammar")
    _int(config, "diffusion.T", 1)
    schedule = _get(config, "diffusion.schedule")
    if schedule not in d3pm.SCHEDULES:
        raise ConfigError("diffusion.schedule", f"must be one of {list(d3pm.SCHEDULES)}, got {schedule!r}")
    beta_min = _real(config, "diffusion.beta_min", 0.0, 1.0)
    beta_max = _real(config, "diffusion.beta_max", 0.0, 1.0)
    if beta_max < beta_min:
        raise ConfigError("diffusion.beta_max", f"must be >= beta_min = {beta_min}, got {beta_max}")
    _real(config, "diffusion.hybrid_coeff", 0.0, float("inf"), low_open=False)
    _int(config, "eval.num_generated", 1)
    _int(config, "eval.batch_size", 1)


def _validate_optimizer(config) -> None:
    """``config.train`` fields of :func:`rhmdiff.train.fit` (optional ones only if present)."""
    optimizer = _get(config, "train.optimizer")
    if optimizer not in train.OPTIMIZERS:
        raise ConfigError("train.optimizer", f"must be one of {list(train.OPTIMIZERS)}, got {optimizer!r}")
    _int(config, "train.batch_size", 1)
    _real(config, "train.lr", 0.0, float("inf"))
    _real(config, "train.momentum", 0.0, 1.0, low_open=False, high_open=True)
    for field in ("eval_every", "patience", "steps_per_call"):
        _int(config, f"train.{field}", 1)
    tc = config.train
    if tc.get("lr_schedule", "constant") not in train.LR_SCHEDULES:
        raise ConfigError("train.lr_schedule", f"must be one of {list(train.LR_SCHEDULES)}, got {tc.lr_schedule!r}")
    if "warmup_steps" in tc:
        _int(config, "train.warmup_steps", 0)
    for field, high in (("weight_decay", float("inf")), ("grad_clip", float("inf")), ("ema_decay", 1.0)):
        if field in tc:
            _real(config, f"train.{field}", 0.0, high, low_open=False)
    if "b2" in tc:
        _real(config, "train.b2", 0.0, 1.0)


def _path(config, field, what: str = "must be a non-empty path") -> None:
    if not isinstance(_get(config, field), str) or not _get(config, field):
        raise ConfigError(field, what)


def _num_steps_or_epochs(config) -> None:
    """``train.num_steps``: >= 1, or -1 for a number of epochs of the data."""
    if _get(config, "train.num_steps") != -1:
        _int(config, "train.num_steps", 1)


def _validate_md4(config) -> None:
    """Fields of the ``md4`` task (the data files are checked when the run opens them)."""
    _num_steps_or_epochs(config)
    keep = _get(config, "train.keep_tokens")
    if not isinstance(keep, (list, tuple)) or not all(isinstance(x, numbers.Real) and x > 0 for x in keep):
        raise ConfigError("train.keep_tokens", f"must be a list of positive token counts, got {keep!r}")
    for field in ("path", "tokenizer_path"):
        _path(config, f"data.{field}")
    _real(config, "data.val_fraction", 0.0, 1.0)
    _int(config, "data.seed", 0)
    _int(config, "data.seq_len", 2)
    for field in ("num_layers", "num_heads", "head_dim", "cond_dim", "mlp_multiple_of"):
        _int(config, f"model.{field}", 1)
    if _get(config, "model.positions") not in transformer.POSITIONS:
        raise ConfigError("model.positions", f"must be one of {list(transformer.POSITIONS)}, "
                          f"got {config.model.positions!r}")
    if config.model.positions == "rope" and config.model.head_dim % 2:
        raise ConfigError("model.head_dim", f"must be even for rotary positions, got {config.model.head_dim}")
    if _get(config, "model.dtype") not in ("float32", "bfloat16", "float16"):
        raise ConfigError("model.dtype", f"must be float32, bfloat16 or float16, got {config.model.dtype!r}")
    schedule = _get(config, "diffusion.schedule")
    if schedule not in md4.SCHEDULES:
        raise ConfigError("diffusion.schedule", f"must be one of {list(md4.SCHEDULES)}, got {schedule!r}")
    _real(config, "diffusion.eps", 0.0, 0.5, low_open=False)
    _real(config, "diffusion.power", 0.0, float("inf"))
    for field in ("val_sequences", "batch_size", "num_samples", "sample_steps"):
        _int(config, f"eval.{field}", 1)
    _real(config, "eval.top_p", 0.0, 1.0, low_open=False, high_open=False)


def _validate_ddpm(config) -> None:
    """Fields of the ``ddpm`` task (the image files are checked when the run opens them)."""
    _num_steps_or_epochs(config)
    _int_list(config, "train.keep_steps", 1)
    for field in ("path", "val_path"):
        _path(config, f"data.{field}")
    _int(config, "data.epochs", 1)
    levels = len(_get(config, "model.channel_mult"))
    if _int(config, "data.image_size", 1) % 2 ** (levels - 1):
        raise ConfigError("data.image_size", f"must be divisible by 2^{levels - 1} (model.channel_mult has "
                          f"{levels} levels), got {config.data.image_size}")
    for field in ("channels", "num_res_blocks", "num_heads"):
        _int(config, f"model.{field}", 1)
    _int_list(config, "model.channel_mult", 1)
    _real(config, "model.dropout", 0.0, 1.0, low_open=False)
    _int(config, "diffusion.T", 1)
    _real(config, "diffusion.lam", 0.0, float("inf"), low_open=False)
    for field in ("val_images", "batch_size", "num_samples", "sample_steps"):
        _int(config, f"eval.{field}", 1)
    if config.eval.sample_steps > config.diffusion.T:
        raise ConfigError("eval.sample_steps", f"must be <= diffusion.T = {config.diffusion.T}")


def _validate_text_analysis(config) -> None:
    """Fields of the ``text_analysis`` task."""
    _path(config, "analysis.run_dir", "must be the workdir of an md4 run")
    for field in ("num_samples", "batch_size", "sample_steps", "lm_context"):
        _int(config, f"analysis.{field}", 1)
    _int_list(config, "analysis.distances", 1)
    _real(config, "analysis.top_p", 0.0, 1.0, low_open=False, high_open=False)
    if not isinstance(_get(config, "analysis.lm_path"), str):
        raise ConfigError("analysis.lm_path", "must be a path or ''")


def _validate_training(config) -> None:
    """Fields that only RHM training uses (``config.task`` in rhm, sweep)."""
    _validate_optimizer(config)
    batch_size = _get(config, "train.batch_size")
    _int(config, "train.num_steps", 1)
    _int(config, "model.width", 1)
    conditioning = _get(config, "model.time_conditioning")
    if conditioning not in ("embedding", "none"):
        raise ConfigError("model.time_conditioning", f"must be 'embedding' or 'none', got {conditioning!r}")
    if _int(config, "data.val_size", 0) < 1:
        raise ConfigError("data.val_size", "must be >= 1: early stopping needs a validation set")
    online = _get(config, "data.online")
    if not isinstance(online, bool):
        raise ConfigError("data.online", f"must be True or False, got {online!r}")
    if not online and batch_size > _get(config, "data.train_size"):
        raise ConfigError("train.batch_size", f"must be <= data.train_size = {_get(config, 'data.train_size')} "
                          f"(offline training), got {batch_size}")
