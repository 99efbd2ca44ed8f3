"""The ``sweep`` task: train the D3PM U-Net over a grid of m, P and seeds, and measure the
staged learning of the levels (paper Fig. 1a and its inset) and the sample complexity P* vs m
(Fig. 2), with seeds, standard errors and confidence intervals.

Every grid point is one ordinary ``rhm`` run (:mod:`rhmdiff.tasks.rhm`) in its own workdir
``m{m}_P{P}_seed{seed}``: finished points are skipped on rerun, unfinished ones resume from
their checkpoints, and a point whose evaluation settings changed re-runs only its
evaluation. A seed is another grammar and another training seed (``rhm.seed`` and ``seed``
both set to it). The grid of P is ``sweep.train_sizes`` or, when ``sweep.relative_sizes`` is
set, those multiples of each m's P_L of Eq. 6 (so every m is sampled around its own
prediction); points with P < ``train.batch_size`` or whose P + val + test exceed the
grammar's number of sequences are skipped and listed.

``sweep.json`` holds every point, the seed mean and standard error of A_l per (m, P), P* at
each of ``sweep.thresholds`` per seed and with a t-interval over seeds
(:func:`rhmdiff.analysis.sample_complexity.p_star_statistics`, interpolated in log P), the
exponent of P* vs m with its interval (:func:`~rhmdiff.analysis.sample_complexity.p_star_exponents`,
every seed's P* pooled) next to L + 1, and the convergence check: at the two grid points
nearest each crossing at the thresholds ``sweep.check_thresholds``, for the seeds ``sweep.check_seeds``, the run with ``sweep.check_generated``
sequences, the same with twice the steps, the same with twice the width and the same with
another training seed (the same grammar), each difference of A_L with its standard error; the
retrained runs give the training noise that a doubling is compared with. Writes
``sweep.json`` and ``sweep.png``.

``sweep.workers`` > 1 trains that many points at a time, each in its own process pinned to
one CPU core with single-threaded XLA (on CPUs only; the numbers are those of one process:
XLA:CPU gives the same bits with one thread or two). A SIGTERM or a Ctrl-C of the sweep is
passed on to the workers as SIGTERM (each worker's trainer saves a checkpoint and stops, and
points not started are cancelled); the sweep then stops as a preempted run does (exit 143, or
130 after a Ctrl-C), and its rerun resumes the points.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import threading

import jax
import ml_collections
import numpy as np
from absl import logging

from rhmdiff import config_check as check
from rhmdiff import rhm, theory
from rhmdiff import workdir as workdir_lib
from rhmdiff.analysis import figures
from rhmdiff.analysis.sample_complexity import p_star_exponents, p_star_statistics
from rhmdiff.files import as_path, read_json
from rhmdiff.tasks import finish
from rhmdiff.tasks import rhm as rhm_task
from rhmdiff.train import Preempted

MUTABLE = ("sweep.train_sizes", "sweep.relative_sizes", "sweep.m_values", "sweep.seeds", "sweep.thresholds",
           "sweep.metric", "sweep.check_seeds", "sweep.check_thresholds", "sweep.check_generated", "sweep.workers",
           *rhm_task.MUTABLE)
OUTPUTS = ("sweep.json", "sweep.png")  # and one marked rhm sub-run per point
POINT_KEYS = ("accuracy", "tuple_accuracy", "novel_accuracy", "memorized_fraction", "copy_null", "valid_fraction",
              "novel_valid_fraction", "num_generated", "val_loss", "best_step", "steps", "stopped_early")


def validate(config) -> None:
    rhm_task.validate(config)
    v, s, L = (check.get(config, f"rhm.{k}") for k in ("v", "s", "L"))
    for m in check.int_list(config, "sweep.m_values", 1):
        check.grammar_sizes(config, "sweep.m_values", v, m, s, L)
    if check.get(config, "rhm.rules_file"):
        raise check.ConfigError("rhm.rules_file", "a sweep draws one grammar per m and seed: leave it ''")
    relative = check.get(config, "sweep.relative_sizes")
    if not isinstance(relative, (list, tuple)) or not all(isinstance(x, (int, float)) and x > 0 for x in relative):
        raise check.ConfigError("sweep.relative_sizes", f"must be a list of positive multiples of P_L, got {relative!r}")
    if not relative:
        check.int_list(config, "sweep.train_sizes", 1)
    check.int_list(config, "sweep.seeds", 0)
    thresholds = check.get(config, "sweep.thresholds")
    if not isinstance(thresholds, (list, tuple)) or not thresholds or not all(
            isinstance(x, (int, float)) and 0 < x <= 1 for x in thresholds):
        raise check.ConfigError("sweep.thresholds", f"must be a non-empty list of numbers in (0, 1], got {thresholds!r}")
    check.choice(config, "sweep.metric", ("accuracy", "novel_accuracy"))
    check.integer(config, "sweep.check_generated", 1)
    if not set(check.get(config, "sweep.check_thresholds")) <= set(thresholds):
        raise check.ConfigError("sweep.check_thresholds", f"must be some of sweep.thresholds = {list(thresholds)}, "
                                f"got {config.sweep.check_thresholds!r}")
    check.integer(config, "sweep.workers", 1, os.cpu_count() or 1)
    seeds = check.get(config, "sweep.check_seeds")
    if not isinstance(seeds, (list, tuple)) or not set(seeds) <= set(config.sweep.seeds):
        raise check.ConfigError("sweep.check_seeds", f"must be a list of seeds of sweep.seeds (or empty: no "
                                f"convergence check), got {seeds!r}")
    if not any(grid(config, m) for m in config.sweep.m_values):
        raise check.ConfigError("sweep.train_sizes", "no P of the grid is >= train.batch_size and fits in the "
                                f"language of any m in {list(config.sweep.m_values)} with val_size + test_size: "
                                "nothing to train")


def candidate_sizes(config, m: int) -> list[int]:
    """The P of the grid of ``m``: ``sweep.train_sizes``, or ``sweep.relative_sizes`` x P_L(m)."""
    c, sw = config.rhm, config.sweep
    if sw.relative_sizes:
        P_L = theory.sample_complexity(c.v, m, c.s, c.L)
        return sorted({int(round(x * P_L)) for x in sw.relative_sizes})
    return sorted(set(sw.train_sizes))


def grid(config, m: int) -> list[int]:
    """The P of the grid of ``m`` that can be trained (>= the batch, room for the held-out sets)."""
    c = config.rhm
    room = rhm.language_size(c.v, m, c.s, c.L) - config.data.val_size - config.data.test_size
    return [P for P in candidate_sizes(config, m) if config.train.batch_size <= P <= room]


RESEED = 1000  # the training seed of the ``reseed`` variant: seed + RESEED (the grammar stays)
DOUBLINGS = ("steps2x", "width2x")  # judged by the strict criterion of :func:`compare`
CHECK_VARIANTS = (*DOUBLINGS, "reseed")


def point_config(config, m: int, P: int, seed: int, variant: str = "") -> ml_collections.ConfigDict:
    """The ``rhm`` config of one grid point; for the convergence check (``variant``: ``"base"``,
    the point itself, or one of :data:`CHECK_VARIANTS`: twice the steps, twice the width, another
    training seed on the same grammar), with ``sweep.check_generated`` sequences."""
    c = ml_collections.ConfigDict(config.to_dict())
    del c.sweep
    c.task = "rhm"
    c.rhm.update(m=m, seed=seed)
    c.data.train_size = P
    c.seed = seed
    if variant:
        c.eval.num_generated = config.sweep.check_generated
    if variant == "steps2x":
        c.train.num_steps *= 2
    elif variant == "width2x":
        c.model.width *= 2
    elif variant == "reseed":
        c.seed = seed + RESEED
    return c


def point_name(m: int, P: int, seed: int, variant: str = "") -> str:
    return f"m{m}_P{P}_seed{seed}" + (f"_{variant}" if variant else "")


def _evaluated_as_asked(stored: dict, asked: dict) -> bool:
    """Whether results with the config ``stored`` answer for ``asked``: the same config, or one
    that generated more sequences (a point re-evaluated by the convergence check)."""
    more = lambda c: {**c, "eval": {k: v for k, v in c.get("eval", {}).items() if k != "num_generated"}}
    return stored == asked or (more(stored) == more(asked) and
                               stored["eval"]["num_generated"] >= asked["eval"]["num_generated"])


def run_point(config, subdir) -> dict:
    """The results of the ``rhm`` run ``config`` in ``subdir``: read back when it finished with
    this config (or with more generated sequences), else trained (or resumed) and evaluated."""
    path = subdir / "results.json"
    if path.exists():
        res = read_json(path)
        if isinstance(res.get("config"), dict) and _evaluated_as_asked(res["config"], workdir_lib.experiment(config)):
            logging.info("%s: done before, skipped", subdir.name)
            return res
    logging.info("%s: training", subdir.name)
    with workdir_lib.claim_all(config, subdir, rhm_task.MUTABLE):
        return rhm_task.run(config, subdir)


def summarize(config, points: list[dict]) -> tuple[list, list, list]:
    """Per m: the seed mean and standard error of A_l at every P (``curves``) and P* at every
    threshold (``p_star``); per threshold: the exponent of P* vs m (``exponents``)."""
    sw, L = config.sweep, config.rhm.L
    curves, stars = [], []
    for m in sw.m_values:
        Ps = sorted({p["P"] for p in points if p["m"] == m})
        if not Ps:
            continue
        by_seed = {seed: {p["P"]: p for p in points if (p["m"], p["seed"]) == (m, seed)} for seed in sw.seeds}
        complete = [seed for seed in sw.seeds if set(by_seed[seed]) == set(Ps)]
        if not complete:
            continue
        acc = np.array([[by_seed[seed][P]["accuracy"] for P in Ps] for seed in complete])  # [seed, P, level]
        n = len(complete)
        curves.append({"m": m, "train_sizes": Ps, "seeds": complete,
                       "P_l": theory.sample_complexities(config.rhm.v, m, config.rhm.s, L),
                       "accuracy_mean": acc.mean(0).tolist(),
                       "accuracy_se": (acc.std(0, ddof=1) / np.sqrt(n)).tolist() if n > 1 else None,
                       "copies_mean": np.mean([[by_seed[s][P]["memorized_fraction"] for P in Ps] for s in complete],
                                              0).tolist()})
        if len(Ps) >= 2:
            metric = np.array([[by_seed[seed][P][sw.metric][L - 1] for P in Ps] for seed in complete])
            chance = theory.top_rule_chance(config.rhm.v, m, config.rhm.s)
            above = np.array([[above_chance(by_seed[seed][P]["accuracy"], chance) for P in Ps] for seed in complete])
            stars.append({"m": m, "seeds": complete, "chance": chance,
                          "thresholds": [p_star_statistics(Ps, metric, t) for t in sw.thresholds],
                          "above_chance": [p_star_statistics(Ps, above, t) for t in sw.thresholds]})
    return curves, stars, p_star_exponents(stars, sw.thresholds, L)


def above_chance(accuracy, chance: float) -> float:
    """A_L above chance: the fraction of the sequences valid up to level L - 1 whose top rule
    holds, rescaled so that 0 is chance (a uniformly random top-level tuple is one of the
    productions with probability ``chance``, :func:`rhmdiff.theory.top_rule_chance`) and 1 is
    all of them: ``(A_L / A_{L-1} - chance) / (1 - chance)`` (NaN when no sequence is valid
    up to L - 1)."""
    below, top = accuracy[-2] if len(accuracy) > 1 else 1.0, accuracy[-1]
    return (top / below - chance) / (1 - chance) if below > 0 else float("nan")


def convergence_points(config, stars: list[dict]) -> list[tuple[int, int]]:
    """The two grid points of each m nearest (in log P) to each crossing of the seed-mean curve
    at the thresholds ``sweep.check_thresholds``."""
    out = []
    for row in stars:
        Ps = grid(config, row["m"])
        for threshold, st in zip(config.sweep.thresholds, row["thresholds"]):
            if threshold in config.sweep.check_thresholds and np.isfinite(st["mean_curve"]):
                nearest = sorted(Ps, key=lambda P: abs(np.log(P / st["mean_curve"])))[:2]
                out += [(row["m"], P) for P in nearest]
    return sorted(set(out))


def convergence_check(config, workdir, stars: list[dict]) -> list[dict]:
    """At each point of :func:`convergence_points`, for each of ``sweep.check_seeds``: A_L of the
    run and of its :data:`CHECK_VARIANTS`, with ``sweep.check_generated`` sequences each, compared
    by :func:`compare`."""
    sw, L = config.sweep, config.rhm.L
    keys = [(m, P, seed) for m, P in convergence_points(config, stars) for seed in sw.check_seeds]
    variants = ("base", *CHECK_VARIANTS)
    jobs = [(point_config(config, *k, variant), workdir / point_name(*k, "" if variant == "base" else variant))
            for k in keys for variant in variants]
    done = iter(run_points(config, jobs))
    rows = []
    for m, P, seed in keys:
        base, *others = (next(done) for _ in variants)
        row = {"m": m, "P": P, "seed": seed, "A_L": base[sw.metric][L - 1], "num_generated": base["num_generated"]}
        for variant, res in zip(CHECK_VARIANTS, others):
            row[variant] = {**compare(row["A_L"], row["num_generated"], res[sw.metric][L - 1], res["num_generated"]),
                            "best_step": res["best_step"]}
        rows.append(row)
    return rows


def compare(a: float, n_a: int, b: float, n_b: int) -> dict:
    """A_L = ``b`` of a rerun against ``a`` of the run, from ``n_b`` and ``n_a`` generated
    sequences: the difference, its binomial standard error, and ``passed`` when the difference
    is below 0.03 and below two standard errors."""
    se = float(np.sqrt(a * (1 - a) / n_a + b * (1 - b) / n_b))
    return {"A_L": b, "difference": b - a, "se": se, "passed": bool(abs(b - a) < 0.03 and abs(b - a) < 2 * max(se, 1e-12))}


def training_noise(checks: list[dict]) -> dict | None:
    """The change of A_L that retraining alone makes: the root mean square of the ``reseed``
    differences over the checked points, and how many width doublings move A_L by less than
    twice it (a wider network is another initialization, so a width doubling that changes
    nothing still moves A_L by about that much; a steps doubling is not compared with it: it
    repeats the run's trajectory up to the run's end, so any change is the budget's)."""
    if not checks:
        return None
    rms = float(np.sqrt(np.mean([row["reseed"]["difference"] ** 2 for row in checks])))
    width = [abs(row["width2x"]["difference"]) for row in checks]
    return {"rms": rms, "points": len(checks), "width_doublings_within_2rms": sum(d < 2 * rms for d in width)}


def _pin_worker(cores, verbosity: int) -> None:
    """A worker process: one CPU core, single-threaded XLA (before JAX starts its backend), the
    parent's log level; Ctrl-C and SIGTERM left to the parent (:class:`_PassStops`), except the
    SIGTERM that the trainer takes while it trains."""
    from rhmdiff._util import quiet_logs
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    core = cores.get()
    os.sched_setaffinity(0, {core})
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    logging.use_absl_handler()
    logging.set_verbosity(verbosity)
    quiet_logs()


def _run_point_in_worker(config_dict: dict, subdir: str) -> dict:
    return run_point(ml_collections.ConfigDict(config_dict), as_path(subdir))


def run_points(config, jobs: list[tuple]) -> list[dict]:
    """:func:`run_point` of every ``(point config, subdir)``, ``sweep.workers`` at a time."""
    workers = min(config.sweep.workers, len(jobs))
    if workers <= 1:
        return [run_point(c, d) for c, d in jobs]
    if jax.process_count() > 1 or jax.default_backend() != "cpu":
        raise check.ConfigError("sweep.workers", f"must be 1 outside a single CPU process (backend "
                                f"{jax.default_backend()}, {jax.process_count()} processes), got {workers}")
    return in_workers(_run_point_in_worker, [(c.to_dict(), os.fspath(d)) for c, d in jobs], workers)


def in_workers(fn, calls: list[tuple], workers: int) -> list:
    """``[fn(*args) for args in calls]`` in ``workers`` spawned processes, each pinned to a core
    (:func:`_pin_worker`). A SIGTERM or Ctrl-C of this process stops them (:class:`_PassStops`):
    the calls not started are cancelled, and :class:`Preempted` follows once the others ended."""
    context = multiprocessing.get_context("spawn")
    cores = context.Queue()
    for i in range(workers):
        cores.put(sorted(os.sched_getaffinity(0))[i % len(os.sched_getaffinity(0))])
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_pin_worker,
                                                initargs=(cores, logging.get_verbosity())) as pool, \
            _PassStops(pool) as stops:
        futures = [pool.submit(fn, *args) for args in calls]
        pending = set(futures)
        while pending:
            pending = concurrent.futures.wait(pending, timeout=1.0).not_done
            if stops.signum:  # again each second: a call the executor had already queued may have started
                for future in pending:
                    future.cancel()
                stops.pass_on()
        if stops.signum:
            unfinished = sum(1 for f in futures if f.cancelled() or f.exception() is not None)
            raise Preempted(f"stopped by {signal.Signals(stops.signum).name} with {unfinished} of {len(calls)} "
                            "calls unfinished (each stopped trainer saved a checkpoint)", stops.signum)
        return [f.result() for f in futures]


class _PassStops:
    """While the workers of ``pool`` run: a SIGTERM or a Ctrl-C (SIGINT) of this process is
    recorded in ``signum`` (0: none) and sent on to every worker as SIGTERM (:meth:`pass_on`),
    whose trainer then saves a checkpoint and stops (a worker ignores it outside training).
    Main thread only; the previous handlers are restored on exit."""

    def __init__(self, pool: concurrent.futures.ProcessPoolExecutor):
        self.pool, self.signum, self._previous = pool, 0, {}

    def _stop(self, signum, _frame):
        if not self.signum:
            logging.warning("%s: stopping the sweep's workers (each trainer saves a checkpoint)",
                            signal.Signals(signum).name)
        self.signum = self.signum or signum
        self.pass_on()

    def pass_on(self) -> None:
        for process in list(self.pool._processes.values()):  # noqa: SLF001 -- the executor's own worker processes
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._stop) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        return False


def grid_points(config, workdir) -> list[dict]:
    """Every point of the grid, trained (or read back)."""
    keys = [(m, P, seed) for m in config.sweep.m_values for P in grid(config, m) for seed in config.sweep.seeds]
    results = run_points(config, [(point_config(config, *k), workdir / point_name(*k)) for k in keys])
    return [{"m": m, "P": P, "seed": seed, **{k: res[k] for k in POINT_KEYS if k in res}}
            for (m, P, seed), res in zip(keys, results)]


def run(config, workdir) -> dict:
    sw = config.sweep
    workdir = as_path(workdir)
    points = grid_points(config, workdir)
    curves, stars, exponents = summarize(config, points)
    checks = convergence_check(config, workdir, stars) if sw.check_seeds else []
    if checks:  # some grid points were evaluated again with more sequences
        points = grid_points(config, workdir)
        curves, stars, exponents = summarize(config, points)
    skipped = {f"m{m}": sorted(set(candidate_sizes(config, m)) - set(grid(config, m))) for m in sw.m_values}
    results = {"task": "sweep", "L": config.rhm.L, "v": config.rhm.v, "s": config.rhm.s, "metric": sw.metric,
               "thresholds": list(sw.thresholds), "points": points, "skipped": skipped, "curves": curves,
               "p_star": stars, "exponents": exponents, "convergence": checks,
               "training_noise": training_noise(checks)}
    return finish(config, workdir, results, "sweep.json", figures.plot_sweep, summary(results))


def summary(results: dict) -> str:
    lines = []
    for row in results["p_star"]:
        for st in row["thresholds"]:
            lines.append(f"m={row['m']}: P* (A_L >= {st['threshold']}) = {st['p_star']:.4g} "
                         f"[{st['ci'][0]:.4g}, {st['ci'][1]:.4g}], {st['n_crossed']} of {st['n_seeds']} seeds cross"
                         + (f", {st['n_below']} above it from the grid's first P" if st.get("n_below") else ""))
    for e in results["exponents"]:
        of = "A_L above chance" if e["of"] == "above_chance" else "A_L"
        lines.append(f"P* vs m at {of} = {e['threshold']}: exponent {e['exponent']:.2f} [{e['ci'][0]:.2f}, {e['ci'][1]:.2f}] "
                     f"(theory L + 1 = {e['theory']})")
    passed = [c[v]["passed"] for c in results["convergence"] for v in DOUBLINGS]
    if passed:
        noise = results["training_noise"]
        lines.append(f"convergence check: {sum(passed)} of {len(passed)} doublings move A_L by < 0.03 and < 2 SE; "
                     f"another training seed moves it by {noise['rms']:.3f} rms ({noise['points']} points), and "
                     f"{noise['width_doublings_within_2rms']} of {noise['points']} width doublings by less than twice that")
    return "\n".join(lines)
