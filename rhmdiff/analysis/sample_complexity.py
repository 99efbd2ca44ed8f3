"""Sample complexity P* from accuracy-vs-P curves, and power-law fits (paper Fig. 2, Fig. 7)."""
from __future__ import annotations

import numpy as np


def log_grid(P_min: int, P_max: int, num: int) -> np.ndarray:
    """``num`` log-spaced integer training-set sizes from ``P_min`` to ``P_max`` (duplicates
    after rounding removed)."""
    return np.unique(np.round(np.logspace(np.log10(P_min), np.log10(P_max), num)).astype(int))


def p_star(train_sizes, accuracy, threshold: float = 0.5) -> float:
    """The smallest P at which ``accuracy`` reaches ``threshold``, interpolated linearly
    in log P between the last grid point below it and the first one at or above it.
    ``inf`` if never reached; NaN if reached at the first P already (the crossing lies below
    the grid: not measured)."""
    P = np.asarray(train_sizes, float)
    a = np.asarray(accuracy, float)
    if P.ndim != 1 or P.shape != a.shape or len(P) == 0:
        raise ValueError(f"train_sizes and accuracy must be 1-D of equal length, got {P.shape} and {a.shape}")
    if np.any(P <= 0) or np.any(np.diff(P) <= 0):
        raise ValueError("train_sizes must be positive and increasing")
    above = np.nonzero(a >= threshold)[0]
    if len(above) == 0:
        return float("inf")
    i = above[0]
    if i == 0:
        return float("nan")
    frac = (threshold - a[i - 1]) / (a[i] - a[i - 1])
    return float(np.exp(np.log(P[i - 1]) + frac * (np.log(P[i]) - np.log(P[i - 1]))))


def fit_power_law(x, y) -> tuple[float, float]:
    """``(exponent, prefactor)`` of ``y = prefactor * x**exponent``, least squares in log-log
    over the finite positive points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        raise ValueError("need at least two finite positive points to fit a power law")
    slope, intercept = np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)
    return float(slope), float(np.exp(intercept))


def t_interval(values, level: float = 0.95) -> dict:
    """Mean of ``values`` (independent replicates, e.g. one per seed) with its standard error
    and the Student-t interval at ``level`` (n - 1 degrees of freedom: honest at 3 seeds,
    where it is ~4.3 standard errors wide on each side). NaN bounds below 2 values."""
    from scipy import stats
    x = np.asarray(values, float)
    n = len(x)
    mean = float(np.mean(x)) if n else float("nan")
    if n < 2:
        return {"mean": mean, "se": float("nan"), "ci": [float("nan"), float("nan")], "n": n}
    se = float(np.std(x, ddof=1) / np.sqrt(n))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
    return {"mean": mean, "se": se, "ci": [mean - half, mean + half], "n": n}


def p_star_statistics(train_sizes, curves, threshold: float, level: float = 0.95) -> dict:
    """P* at ``threshold`` from one accuracy curve per seed (``curves[seed][i]`` at
    ``train_sizes[i]``): ``per_seed`` (:func:`p_star` of each curve; inf where a seed never
    reaches the threshold, NaN where it is above it from the grid's first point), ``mean_curve``
    (P* of the seed-averaged curve), ``n_crossed`` (the seeds that cross inside the grid),
    ``n_below`` (those above the threshold from the first point), and ``p_star`` with ``ci``:
    the geometric mean of the per-seed P* and its t-interval (:func:`t_interval` on log P*),
    when every seed crosses inside the grid. Otherwise a bound: where some seed never crosses,
    ``p_star`` is inf and the interval ``[lower, inf]`` with the smallest finite per-seed P*
    (or the grid's end) as its bound; where some seed is above the threshold from the first
    point, ``p_star`` is NaN and the interval ``[0, upper]``, with the geometric mean of the
    per-seed P* counting those seeds at the first P as its bound (``[0, inf]`` when both)."""
    P0 = float(np.min(train_sizes))
    per_seed = [p_star(train_sizes, c, threshold) for c in curves]
    finite = [p for p in per_seed if np.isfinite(p)]
    below = sum(np.isnan(p) for p in per_seed)
    out = {"threshold": threshold, "per_seed": per_seed, "n_crossed": len(finite), "n_below": int(below),
           "n_seeds": len(per_seed), "mean_curve": p_star(train_sizes, np.mean(curves, axis=0), threshold)}
    if len(finite) == len(per_seed):
        stats = t_interval(np.log(per_seed), level)
        out.update(p_star=float(np.exp(stats["mean"])), ci=[float(np.exp(b)) for b in stats["ci"]],
                   log_se=stats["se"])
    elif below and len(finite) + below < len(per_seed):
        out.update(p_star=float("nan"), ci=[0.0, float("inf")], log_se=float("nan"))
    elif below:
        upper = float(np.exp(np.mean(np.log([P0 if np.isnan(p) else p for p in per_seed]))))
        out.update(p_star=float("nan"), ci=[0.0, upper], log_se=float("nan"))
    else:
        out.update(p_star=float("inf"), ci=[min(finite, default=float(np.max(train_sizes))), float("inf")],
                   log_se=float("nan"))
    return out


def power_law_fit(x, y, level: float = 0.95) -> dict:
    """``y = prefactor * x**exponent`` by least squares in log-log over the finite positive
    points (e.g. every seed's P* at every m, pooled): ``exponent`` with its standard error and
    t-interval at ``level`` (n - 2 degrees of freedom), ``prefactor``, ``n``."""
    from scipy import stats
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2 or len(np.unique(x[ok])) < 2:
        raise ValueError("need finite positive points at two or more x to fit a power law")
    fit = stats.linregress(np.log(x[ok]), np.log(y[ok]))
    n = int(ok.sum())
    half = float(stats.t.ppf(0.5 + level / 2, n - 2)) * fit.stderr if n > 2 else float("nan")
    return {"exponent": float(fit.slope), "se": float(fit.stderr) if n > 2 else float("nan"),
            "ci": [float(fit.slope - half), float(fit.slope + half)], "prefactor": float(np.exp(fit.intercept)),
            "n": n}


def p_star_exponents(stars: list[dict], thresholds, L: int) -> list[dict]:
    """Fig. 2's exponent of P* vs m at every threshold, for each criterion of ``stars`` (the
    sweep's ``p_star`` rows: ``thresholds``, the metric; ``above_chance``, where present): one
    :func:`power_law_fit` over every seed's finite P* at every m, pooled, next to Eq. 6's L + 1.
    A criterion and threshold with finite P* at fewer than two m has no row."""
    rows = []
    for key in ("thresholds", "above_chance"):
        for i, threshold in enumerate(thresholds):
            pairs = [(row["m"], np.nan if p is None else float(p))
                     for row in stars if key in row for p in row[key][i]["per_seed"]]
            if len({m for m, p in pairs if np.isfinite(p)}) >= 2:
                rows.append({"threshold": threshold, "of": "metric" if key == "thresholds" else key,
                             **power_law_fit(*zip(*pairs)), "theory": L + 1})
    return rows


def pool_sweeps(sweeps: list[dict]) -> dict:
    """Several ``sweep.json`` results of the same kind of grammar (v, s, L and thresholds
    equal), each over its own values of m (e.g. with another step budget), as one: their
    ``p_star`` rows in order of m and the exponents of :func:`p_star_exponents` refitted over
    all of them. Raises ``ValueError`` naming the field where they differ or the m they share."""
    first = sweeps[0]
    for other in sweeps[1:]:
        for key in ("v", "s", "L", "thresholds"):
            if other[key] != first[key]:
                raise ValueError(f"the sweeps differ in {key} ({first[key]} and {other[key]}): they cannot be pooled")
    ms = [row["m"] for sweep in sweeps for row in sweep["p_star"]]
    if len(set(ms)) < len(ms):
        shared = sorted({m for m in ms if ms.count(m) > 1})
        raise ValueError(f"the sweeps both measured m = {', '.join(map(str, shared))}: pool sweeps over distinct m")
    stars = sorted((row for sweep in sweeps for row in sweep["p_star"]), key=lambda row: row["m"])
    return {**first, "p_star": stars, "exponents": p_star_exponents(stars, first["thresholds"], first["L"])}


def paired_ratios(numerator: dict, denominator: dict, level: float = 0.95) -> dict:
    """The ratio of two sample complexities measured on the same grammars: ``{seed: P*}`` of
    each (e.g. the diffusion model's and a clustering algorithm's, both on the grammar of that
    seed), over the seeds both have with finite P*: the per-seed ratios, their geometric mean
    and its t-interval (:func:`t_interval` on the log ratios, paired by grammar)."""
    finite = lambda x: x is not None and np.isfinite(x)  # a results file stores an infinite P* as null
    seeds = sorted(s for s in set(numerator) & set(denominator) if finite(numerator[s]) and finite(denominator[s]))
    ratios = [numerator[s] / denominator[s] for s in seeds]
    stats = t_interval(np.log(ratios), level)
    return {"seeds": seeds, "per_seed": ratios, "ratio": float(np.exp(stats["mean"])) if seeds else float("nan"),
            "ci": [float(np.exp(b)) for b in stats["ci"]]}


def compare_sweeps(diffusion: dict, clustering: dict, thresholds=(0.5, 0.8)) -> list[dict]:
    """For every m of both, every clustering variant and every threshold of ``thresholds``
    that both measured: the diffusion model's P* (``sweep.json``) over the clustering
    algorithm's (``clustering_sweep.json``) on the same grammars (:func:`paired_ratios`; a
    diffusion seed is the clustering seed of the same number when v, s and L agree)."""
    same = all(diffusion[k] == clustering[k] for k in ("v", "s")) and diffusion["L"] in {
        row["L"] for row in clustering["summary"]}
    if not same:
        raise ValueError("the sweeps are not on the same grammars (v, s or L differ)")
    rows = []
    for threshold in thresholds:
        if threshold not in diffusion["thresholds"] or threshold not in clustering["thresholds"]:
            continue
        i, j = diffusion["thresholds"].index(threshold), clustering["thresholds"].index(threshold)
        for d_row in diffusion["p_star"]:
            m = d_row["m"]
            d_stat = d_row["thresholds"][i]
            num = dict(zip(d_row["seeds"], d_stat["per_seed"]))
            for c_row in clustering["summary"]:
                if c_row["L"] != diffusion["L"] or m not in c_row["m"]:
                    continue
                c_stat = c_row["p_star"][j][c_row["m"].index(m)]
                den = dict(enumerate(c_stat["per_seed"]))
                rows.append({"threshold": threshold, "m": m, "variant": c_row["context"],
                             "diffusion_p_star": d_stat["p_star"], "clustering_p_star": c_stat["p_star"],
                             **paired_ratios(num, den)})
    return rows
