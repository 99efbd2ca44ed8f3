"""Figures from stored results (JSON written by the analysis tasks).

    python -m rhmdiff.analysis.figures runs/DIR [runs/DIR2 ...]

re-plots every results file in the given workdirs that names its figure (PNG next to the JSON);

    python -m rhmdiff.analysis.figures p_star OUT.png runs/clustering_sweep runs/sweep_P ...

draws Fig. 2: P* vs m of the clustering algorithm and of the diffusion model side by side, and
writes OUT.json: the diffusion model's P* over each clustering variant's on the same grammars,
and the exponent of the diffusion model's P* vs m; diffusion sweeps of the same v, s and L over
different m (e.g. with different step budgets) are pooled into one curve and one fit;

    python -m rhmdiff.analysis.figures stages OUT.png runs/rhm_online_seed0 runs/rhm_online_seed1 ...

draws Fig. 1b: A_l at the kept steps of several runs (mean and standard error over them).
"""
from __future__ import annotations

import contextlib
import os
import sys

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rhmdiff.analysis.sample_complexity import compare_sweeps, pool_sweeps  # noqa: E402
from rhmdiff.files import as_path, read_json, save_png, write_json  # noqa: E402

CONTEXT_COLORS = {"token": "black", "tuple": "red", "token-hierarchical": "tab:green", "tuple-hierarchical": "olive",
                  "token-distant": "gray", "tuple-distant": "orange"}
CONTEXT_STYLES = {"token": "-", "tuple": "--", "token-hierarchical": "-.", "tuple-hierarchical": (0, (5, 1)),
                  "token-distant": ":", "tuple-distant": (0, (1, 3))}


def _number(x) -> float:
    """A number of a results file (strict JSON stores NaN and inf as null)."""
    return float("nan") if x is None else float(x)


def _interval(ci) -> str:
    """`` [lo, hi]`` of a 95% interval, or nothing when it is not finite (too few seeds)."""
    lo, hi = (_number(b) for b in ci) if ci else (float("nan"), float("nan"))
    return f" [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) and np.isfinite(hi) else ""


def _count(n: int, noun: str) -> str:
    """``"1 seed"``, ``"3 seeds"``."""
    return f"{n} {noun}{'s' * (n != 1)}"


def _save(fig, path) -> None:
    """Tidy log axes (no minor-tick labels; ticks at 1, 2, 5 times the powers of ten, labelled
    plainly, where fewer than two powers of ten lie inside the axis), save as PNG (atomically,
    local or gs://), close."""
    for ax in [a for parent in fig.axes for a in (parent, *parent.child_axes)]:  # insets too
        for axis, scale, (lo, hi) in ((ax.xaxis, ax.get_xscale(), ax.get_xlim()),
                                      (ax.yaxis, ax.get_yscale(), ax.get_ylim())):
            if scale != "log":
                continue
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            fixed = isinstance(axis.get_major_locator(), matplotlib.ticker.FixedLocator)  # set_xticks
            if not fixed and np.floor(np.log10(max(lo, hi))) - np.ceil(np.log10(min(lo, hi))) < 1:
                axis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
                axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    fig.tight_layout()
    save_png(path, fig)
    plt.close(fig)


def plot_clustering_sweep(results: dict, path: str) -> None:
    """Left: the clustering score vs P per m (mean over grammars), one row per L, one line
    style per variant. Right: P* vs m at the last (highest) threshold, where the score has left
    its small-P floor, 95% intervals over grammars, the
    fitted power law of each variant and the theory's P_L ~ m^{L+1} (Fig. 2 / Fig. 7)."""
    Ls = sorted({row["L"] for row in results["summary"]})
    fig, axes = plt.subplots(len(Ls), 2, figsize=(11, 4.2 * len(Ls)), squeeze=False)
    P = np.asarray(results["train_sizes"])
    threshold = results["thresholds"][-1]
    for (ax_curve, ax_star), L in zip(axes, Ls):
        ms = sorted({c["m"] for c in results["curves"] if c["L"] == L})
        cmap = plt.get_cmap("viridis", len(ms))
        for i, m in enumerate(ms):
            for context, style in CONTEXT_STYLES.items():
                rows = [c["accuracy"] for c in results["curves"] if (c["L"], c["m"], c["context"]) == (L, m, context)]
                if rows:
                    ax_curve.plot(P, np.mean(rows, axis=0), ls=style, color=cmap(i),
                                  label=f"m={m}" if context == "token" else None)
        for t in results["thresholds"]:
            ax_curve.axhline(t, color="gray", lw=0.6)
        ax_curve.set(xscale="log", xlabel="P", ylabel="clustering score",
                     title=f"L={L}, v={results['v']}, {_count(results['num_seeds'], 'grammar')} (line style: variant)")
        ax_curve.legend(fontsize=8)
        for row in results["summary"]:
            if row["L"] != L:
                continue
            m = np.asarray(row["m"], float)
            stars = row["p_star"][-1]
            star = np.array([_number(st["p_star"]) for st in stars])
            ci = np.array([[_number(b) for b in st["ci"]] for st in stars])
            ok = np.isfinite(star)
            color = CONTEXT_COLORS[row["context"]]
            fit = next((f for f in row["exponents"] if f["threshold"] == threshold), {})
            label = row["context"] + (f": {_number(fit['exponent']):.2f}{_interval(fit.get('ci'))}"
                                      if "ci" in fit else "")
            ax_star.errorbar(m[ok], star[ok], yerr=[star[ok] - ci[ok, 0], ci[ok, 1] - star[ok]], fmt="o", ms=4,
                             capsize=2, color=color, label=label)
            if "prefactor" in fit:
                ax_star.plot(m, fit["prefactor"] * m ** fit["exponent"], "-", color=color, lw=0.8)
            ref = np.asarray(row["theory_P"])
        ax_star.plot(m, ref, "k:", label=f"P_{L} of Eq. 6 (slope {L + 1})")
        ax_star.set(xscale="log", yscale="log", xlabel="m", ylabel=f"P* (score >= {threshold}), 95% interval",
                    title=f"sample complexity, L={L}")
        ax_star.set_xticks(ms, [str(x) for x in ms])
        ax_star.legend(fontsize=7)
    _save(fig, path)


def plot_sweep(results: dict, path: str) -> None:
    """Fig. 1a: A_l of generated data vs P, one panel per m (seed mean, error bars: one
    standard error over seeds), with the inset A_l vs P / P_l of Eq. 6 for every m (the curves
    of the m collapse if P_l sets the scale); and, with several m, P* vs m at every threshold
    with its interval, the fitted power law and the slope L + 1 (Fig. 2)."""
    curves, L = results["curves"], results["L"]
    has_stars = sum(1 for row in results["p_star"] for _ in row["thresholds"][:1]) >= 2
    ncols = len(curves) + has_stars
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 4.2), squeeze=False)
    colors = plt.get_cmap("plasma", L + 1)
    markers = "osD^v"
    for ax, row in zip(axes[0], curves):
        P, mean = np.asarray(row["train_sizes"]), np.asarray(row["accuracy_mean"])
        se = np.asarray(row["accuracy_se"], float) if row["accuracy_se"] is not None else np.zeros_like(mean)
        inset = ax.inset_axes([0.62, 0.1, 0.36, 0.36])
        for level in range(1, L + 1):
            ax.errorbar(P, mean[:, level - 1], yerr=se[:, level - 1], fmt="o-", ms=3, capsize=2,
                        color=colors(level - 1), label=f"A_{level}")
            ax.axvline(row["P_l"][level - 1], color=colors(level - 1), ls=":", lw=0.8)
        for k, other in enumerate(curves):
            om = np.asarray(other["accuracy_mean"])
            for level in range(1, L + 1):
                inset.plot(np.asarray(other["train_sizes"]) / other["P_l"][level - 1], om[:, level - 1],
                           markers[k % len(markers)] + "-", ms=2, lw=0.6, color=colors(level - 1))
        inset.set(xscale="log", title="all m: vs P / P_l", ylim=(0, 1.02))
        inset.tick_params(labelsize=6)
        inset.title.set_fontsize(7)
        ax.set(xscale="log", ylim=(0, 1.02), xlabel="P (training points)", ylabel="accuracy A_l",
               title=f"v={results['v']}, m={row['m']}, L={L}, {_count(len(row['seeds']), 'seed')} (dotted: P_l of Eq. 6)")
        ax.legend(loc="upper left", fontsize=8)
    if has_stars:
        ax = axes[0][-1]
        for key, fill in (("thresholds", "full"), ("above_chance", "none")):
            for i, threshold in enumerate(results["thresholds"]):
                rows = [(r["m"], r[key][i]) for r in results["p_star"]
                        if key in r and np.isfinite(_number(r[key][i]["p_star"]))]
                if not rows:
                    continue
                m = np.array([r[0] for r in rows], float)
                star = np.array([_number(r[1]["p_star"]) for r in rows])
                ci = np.array([[_number(b) for b in r[1]["ci"]] for r in rows])
                color = plt.get_cmap("viridis", len(results["thresholds"]) + 1)(i)
                what = f"A_L >= {threshold}" if key == "thresholds" else f"above chance >= {threshold}"
                ax.errorbar(m, star, yerr=[star - ci[:, 0], ci[:, 1] - star], fmt="o", capsize=3, color=color,
                            mfc=color if fill == "full" else "none", label=what)
                of = "metric" if key == "thresholds" else key
                fit = next((e for e in results["exponents"] if e["threshold"] == threshold and e.get("of", "metric") == of),
                           None)
                if fit:
                    ax.plot(m, fit["prefactor"] * m ** fit["exponent"], "-" if fill == "full" else "--", lw=0.8,
                            color=color, label=f"  exponent {fit['exponent']:.2f}{_interval(fit['ci'])}")
        ms = np.array(sorted({r["m"] for r in results["p_star"]}), float)
        P_L = np.array([c["P_l"][-1] for c in curves if c["m"] in ms])
        ax.plot(ms, P_L, "k:", label=f"P_{L} of Eq. 6 (slope {L + 1})")
        ax.set(xscale="log", yscale="log", xlabel="m", ylabel=f"P* ({results['metric']} A_L, 95% interval)")
        ax.set_xticks(ms, [str(int(x)) for x in ms])
        ax.legend(fontsize=7)
    _save(fig, path)


def plot_stages(results: dict, path) -> None:
    """Fig. 1b: A_l of generated sequences against the number of training sequences seen (steps
    x batch), error bars one binomial standard error, with P_l of Eq. 6 dotted."""
    stages = results["stages"]
    seen = np.array([row["samples_seen"] for row in stages])
    acc, se = np.array([row["accuracy"] for row in stages]), np.array([row["accuracy_se"] for row in stages])
    L = acc.shape[1]
    colors = plt.get_cmap("plasma", L + 1)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for level in range(1, L + 1):
        ax.errorbar(seen, acc[:, level - 1], yerr=np.nan_to_num(se[:, level - 1]), fmt="o-", ms=3, capsize=2,
                    color=colors(level - 1), label=f"A_{level}")
        if "P_l" in results:
            ax.axvline(results["P_l"][level - 1], color=colors(level - 1), ls=":", lw=0.8)
    kind = "fresh" if results.get("online") else "training"
    ax.set(xscale="log", ylim=(0, 1.02), xlabel=f"{kind} sequences seen (steps x batch)", ylabel="accuracy A_l",
           title=f"A_l during training\n({stages[0]['num_generated']} sequences per point"
                 + (f", {results['n_runs']} runs" if results.get("n_runs", 1) > 1 else "") + "; dotted: P_l of Eq. 6)")
    ax.legend(fontsize=8)
    _save(fig, path)


def mean_stages(runs: list[dict]) -> dict:
    """The stages (``results["stages"]``) of several runs of one config but another seed: at
    every step they all kept, A_l's mean and standard error over the runs (the binomial error
    of one run's A_l when there is one)."""
    steps = sorted(set.intersection(*[{row["step"] for row in r["stages"]} for r in runs]))
    stages = []
    for step in steps:
        rows = [next(row for row in r["stages"] if row["step"] == step) for r in runs]
        acc = np.array([row["accuracy"] for row in rows])
        se = acc.std(0, ddof=1) / np.sqrt(len(rows)) if len(rows) > 1 else np.asarray(rows[0]["accuracy_se"])
        stages.append({**rows[0], "accuracy": acc.mean(0).tolist(), "accuracy_se": se.tolist(), "n_runs": len(rows),
                       "accuracy_per_run": acc.tolist()})
    return {"stages": stages, "P_l": runs[0].get("P_l"), "online": runs[0].get("online"), "n_runs": len(runs)}


def plot_onestep(results: dict, path: str) -> None:
    """Separability of synonyms after one GD step vs P (App. B), P_2 marked per m; and the
    same against P / P_2."""
    fig, (ax, ax_scaled) = plt.subplots(1, 2, figsize=(10, 4))
    P = np.asarray(results["train_sizes"])
    cmap = plt.get_cmap("viridis", len(results["curves"]))
    for i, c in enumerate(results["curves"]):
        ax.plot(P, c["separability"], "o-", ms=3, color=cmap(i), label=f"m={c['m']}")
        ax.axvline(c["P_2"], color=cmap(i), ls=":", lw=0.8)
        ax_scaled.plot(P / c["P_2"], c["separability"], "o-", ms=3, color=cmap(i), label=f"m={c['m']}")
    ax.set(xscale="log", xlabel="P", ylabel="synonym separability (k-means purity)",
           title=f"one-step GD, v={results['v']} (dotted: P_2)")
    ax_scaled.set(xscale="log", xlabel="P / P_2", title="collapse onto P / P_2")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_correlations(results: dict, path: str) -> None:
    """Fig. 1c / Fig. 4b: token-token correlation vs distance t, per source, with each noise
    floor (a constant, or one value per distance) and, for the RHM, the theory curve."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    cmap = plt.get_cmap("tab10")
    for i, row in enumerate(results["curves"]):
        corr = np.asarray(row["correlation"], float)
        t = np.flatnonzero(np.isfinite(corr))
        ax.plot(t, corr[t], "o-", ms=3, color=cmap(i % 10), label=f"{row['name']} (N={row['num']})")
        if np.ndim(row["noise_floor"]):
            ax.plot(t, np.asarray(row["noise_floor"], float)[t], ":", color=cmap(i % 10), lw=0.8)
        else:
            ax.axhline(row["noise_floor"], color=cmap(i % 10), ls=":", lw=0.8)
    if "theory" in results:
        theory = np.asarray(results["theory"], float)
        t = np.flatnonzero(np.isfinite(theory))
        ax.plot(t, theory[t], "r--", lw=1.5, label="theory")
    ax.set(xscale="log", yscale="log", xlabel="distance t", ylabel="||Cov(x_i, x_{i+t})||_F",
           title="token correlations (dotted: noise floor)")
    shown = sorted({int(t) for row in results["curves"] for t in np.flatnonzero(np.isfinite(
        np.asarray(row["correlation"], float)))})
    if shown and shown[-1] <= 32:  # short sequences: label every distance
        ax.set_xticks(shown, [str(t) for t in shown])
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_rhm_correlations(results: dict, path) -> None:
    """Fig. 1c: the token-token correlation vs distance t of the data and of the sequences
    generated at every P (mean over seeds, error bars one standard error), with the estimator's
    noise floor at that N (dotted) and the theory (red dashed); right, the same with the floor
    subtracted in quadrature."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    cmap = plt.get_cmap("viridis", len(results["curves"]))
    for ax, key in zip(axes, ("correlation", "corrected")):
        for i, row in enumerate(results["curves"]):
            c = np.array([_number(x) for x in row[key]])
            se = np.array([_number(x) for x in row[f"{key}_se"]]) if row.get(f"{key}_se") else np.zeros_like(c)
            t = np.flatnonzero(np.isfinite(c) & (c > 0))
            style = dict(color="black", lw=2) if row["name"] == "RHM data" else dict(color=cmap(i))
            ax.errorbar(t, c[t], yerr=se[t], fmt="o-", ms=3, capsize=2, label=f"{row['name']}", **style)
        theory = np.array([_number(x) for x in results["theory"]])
        t = np.flatnonzero(np.isfinite(theory))
        ax.plot(t, theory[t], "r--", lw=1.5, label="theory")
        if key == "correlation":
            floor = results["curves"][0]["noise_floor"]
            ax.axhline(floor, color="black", ls=":", lw=1, label=f"noise floor (1 - 1/v)/sqrt(N), N={results['curves'][0]['num']}")
        ax.set(xscale="log", yscale="log", xlabel="distance t", xticks=list(range(1, results["d"])),
               title="||Cov(x_i, x_{i+t})||_F" + (" minus the floor (in quadrature)" if key == "corrected" else ""))
        ax.set_xticklabels([str(t) for t in range(1, results["d"])])
    axes[0].set_ylabel("correlation")
    axes[0].legend(fontsize=7)
    _save(fig, path)


def plot_sensitivity(results: dict, path: str) -> None:
    """Fig. 6: S_{k,l} of every U-Net block k (encoder top row, decoder bottom row, input side
    first) vs P, one color per level l of the synonym reset R_l (mean over seeds, error bars one
    standard error), with 1 - A_l dashed and S of the network at initialization dotted."""
    rows = results["by_P"]
    P = np.array([r["P"] for r in rows])
    blocks = list(rows[0]["sensitivity"])
    L = results["L"]
    encoders = sorted((b for b in blocks if b.startswith("encoder")), key=lambda b: int(b.split("_")[1]))
    decoders = sorted((b for b in blocks if b.startswith("decoder")), key=lambda b: -int(b.split("_")[1]))
    ncols = max(len(encoders), len(decoders), 1)
    fig, axes = plt.subplots(2, ncols, figsize=(3.6 * ncols, 6.5), squeeze=False, sharey=True)
    colors = plt.get_cmap("plasma", L + 1)
    for row_i, names in enumerate((encoders, decoders)):
        for ax, name in zip(axes[row_i], names):
            for level in range(1, L + 1):
                mean = np.array([r["sensitivity"][name][level - 1] for r in rows])
                se = np.array([_number(r["sensitivity_se"][name][level - 1]) if r["sensitivity_se"][name] else 0.0
                               for r in rows])
                ax.errorbar(P, mean, yerr=np.nan_to_num(se), fmt="o-", ms=3, capsize=2, color=colors(level - 1),
                            label=f"S under R_{level}")
                ax.plot(P, [r["initial"][name][level - 1] for r in rows], ":", lw=0.8, color=colors(level - 1))
                ax.plot(P, [1 - r["accuracy"][level - 1] for r in rows], "--", lw=0.8, color=colors(level - 1))
            ax.axhline(0.5, color="gray", lw=0.5)
            ax.set(xscale="log", ylim=(0, 1.25), title=name, xlabel="P")
    for ax in axes.ravel()[len(encoders):ncols]:
        ax.axis("off")
    for ax in axes[1][len(decoders):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("relative sensitivity S_{k,l}")
    axes[0][0].legend(fontsize=7, title=f"dashed: 1 - A_l; dotted: at init.; {_count(rows[0]['n_seeds'], 'seed')}",
                      title_fontsize=7)
    _save(fig, path)


def plot_perplexity(results: dict, path: str) -> None:
    """Fig. 8: perplexity of token x_T given a context of T tokens, per training stage and
    for validation text (dashed)."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    cmap = plt.get_cmap("viridis")
    rows = results["curves"]
    for i, row in enumerate(rows):
        ppl = np.asarray(row["perplexity"], float)
        style = dict(color="black", ls="--") if row["name"] == "validation data" else dict(
            color=cmap(i / max(len(rows) - 1, 1)))
        ax.plot(np.arange(1, len(ppl) + 1), ppl, label=f"{row['name']} (N={row['num']})", **style)
    ax.set(xscale="log", yscale="log", xlabel="context length T", ylabel="perplexity of x_T",
           title=f"perplexity under {os.path.basename(results['lm_path'].rstrip('/'))}")
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_mmd(results: dict, path: str) -> None:
    """Fig. 5b: MMD^2 between ResNet-18 features of generated and real images vs training
    step, one line per depth (early layers converge first)."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    steps = [row["step"] for row in results["stages"]]
    cmap = plt.get_cmap("viridis", len(results["depths"]))
    for i, depth in enumerate(results["depths"]):
        values = np.maximum([row["mmd"][depth] for row in results["stages"]], 1e-8)  # unbiased: can dip below 0
        ax.plot(steps, values, "o-", color=cmap(i), label=depth)
    ax.set(xscale="log", yscale="log", xlabel="training step", ylabel="MMD^2 (generated vs real)",
           title=f"ResNet-18 features ({'ImageNet' if results['resnet_weights'] else 'random'} weights)")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_mup_transfer(results: dict, path) -> None:
    """Validation bound (and, thin, the training estimate of the bound) vs step, one panel per
    U-Net variant, one curve per width (muP: the curves collapse and approach a limit as the
    width grows)."""
    variants = list(dict.fromkeys(c["variant"] for c in results["curves"]))
    fig, axes = plt.subplots(1, len(variants), figsize=(5.5 * len(variants), 4.2), squeeze=False, sharey=True)
    for ax, variant in zip(axes[0], variants):
        rows = sorted((c for c in results["curves"] if c["variant"] == variant), key=lambda c: c["width"])
        cmap = plt.get_cmap("viridis", len(rows) + 1)
        for i, c in enumerate(rows):
            ax.plot(c["steps"], c["train_vb_bits"], color=cmap(i), lw=0.6, alpha=0.5)
            ax.plot(c["val_steps"], c["val_loss"], "o-", ms=3, color=cmap(i),
                    label=f"width {c['width']} ({c['num_params'] / 1e6:.1f}M)")
        ax.set(xlabel="step", title=f"{variant} U-Net, {results['optimizer'].upper()} lr {results['lr']:g} (muP), "
               f"{results['objective']} loss")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("variational bound (bits/token): validation, training (thin)")
    _save(fig, path)


def plot_score_error(results: dict, path) -> None:
    """The denoiser's error against the exact posterior: top row, one panel per level (the
    tokens, then the latents 1..L), the error vs diffusion step t, one curve per P; bottom row,
    the error vs P at three steps, with 1 - A_l (dashed, right axis) for the latent levels."""
    runs = sorted(results["runs"], key=lambda r: r["P"])
    L = results["L"]
    fig, axes = plt.subplots(2, L + 1, figsize=(3.8 * (L + 1), 7), squeeze=False)
    cmap = plt.get_cmap("viridis", len(runs) + 1)
    level = lambda run, l: ([e["mean"] for e in run["token_kl"]] if l == 0 else
                            [e["mean"][l - 1] for e in run["level_kl"]])
    floor = 1e-5
    for l in range(L + 1):
        ax = axes[0][l]
        for i, run in enumerate(runs):
            ax.plot(run["t"], np.maximum(level(run, l), floor), "o-", ms=3, color=cmap(i), label=f"P={run['P']}")
        ax.set(xscale="log", yscale="log", xlabel="diffusion step t",
               title="tokens: KL(p || q)" if l == 0 else f"level {l}: KL of implied posteriors")
        if l == 0:
            ax.set_ylabel("nats (mean over positions)")
            ax.legend(fontsize=7)
        ax = axes[1][l]
        P = [run["P"] for run in runs]
        t_all = runs[0]["t"]
        picks = sorted({t_all[0], t_all[len(t_all) // 2], t_all[-1]})
        for j, t in enumerate(picks):
            k = t_all.index(t)
            ax.plot(P, [max(level(run, l)[k], floor) for run in runs], "s-", ms=3,
                    color=plt.get_cmap("plasma", len(picks) + 1)(j), label=f"t={t}")
        ax.set(xscale="log", yscale="log", xlabel="P (training points)")
        if l > 0:
            twin = ax.twinx()
            twin.plot(P, [1 - run["accuracy"][l - 1] for run in runs], "k--", lw=1, label=f"1 - A_{l}")
            twin.set(ylim=(0, 1.05))
            twin.legend(fontsize=7, loc="upper right")
        ax.legend(fontsize=7, loc="lower left")
    axes[1][0].set_ylabel("nats")
    _save(fig, path)


def plot_p_star_comparison(results: list[dict], path: str, thresholds=(0.5, 0.8)) -> None:
    """Fig. 2: P* vs m of the diffusion model (``sweep.json``) and of every clustering variant
    (``clustering_sweep.json``), one panel per L and per threshold of ``thresholds`` that the
    runs measured, 95% intervals over seeds, each label with its fitted exponent. Each P* is
    divided by its own v / (1 - m/v^{s-1}), so runs on different v share the axes and Eq. 6 is
    the line m^{L+1}."""
    prefactor = lambda v, s, m: v / (1.0 - np.asarray(m, float) / v ** (s - 1))
    series = []  # (L, threshold, label, color, marker, m, P*, lower, upper) normalized
    for res in results:
        if res.get("task") == "clustering_sweep":
            rows = [(row["L"], row["context"], row["m"], row["p_star"], row["exponents"]) for row in res["summary"]]
            label, color = "clustering, {} (v={})", None
        elif res.get("task") == "sweep":
            rows = [(res["L"], "diffusion", [r["m"] for r in res["p_star"]],
                     [[r["thresholds"][i] for r in res["p_star"]] for i in range(len(res["thresholds"]))],
                     [e for e in res["exponents"] if e.get("of", "metric") == "metric"])]
            label, color = "diffusion model (v={1})", "tab:blue"
        else:
            raise ValueError(f"expected clustering_sweep or sweep results, got task {res.get('task')!r}")
        for L, name, m, stars, fits in rows:
            for threshold, per_m in zip(res["thresholds"], stars):
                if threshold in thresholds:
                    norm = prefactor(res["v"], res["s"], m)
                    star = np.array([_number(st["p_star"]) for st in per_m])
                    ci = np.array([[_number(b) for b in st["ci"]] for st in per_m])
                    fit = next((f for f in fits if f["threshold"] == threshold), None)
                    text = label.format(name, res["v"]) + (
                        f": exponent {fit['exponent']:.2f}{_interval(fit['ci'])}" if fit else "")
                    series.append((L, threshold, text, color or CONTEXT_COLORS[name],
                                   "s" if name == "diffusion" else "o", np.asarray(m, float), star / norm,
                                   ci[:, 0] / norm, ci[:, 1] / norm))
    panels = sorted({(row[0], row[1]) for row in series})
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for ax, (L, threshold) in zip(axes[0], panels):
        ms = sorted({m for row in series if row[:2] == (L, threshold) for m in row[5]})
        for _, _, label, color, marker, m, star, lo, hi in (row for row in series if row[:2] == (L, threshold)):
            ok = np.isfinite(star)
            ax.errorbar(m[ok], star[ok], yerr=[star[ok] - lo[ok], hi[ok] - star[ok]], fmt=marker + "-", ms=4,
                        lw=0.8, capsize=2, color=color, label=label)
        grid = np.linspace(min(ms), max(ms), 50)
        ax.plot(grid, grid ** (L + 1), "k:", label=f"Eq. 6: m^{L + 1}")
        ax.set(xscale="log", yscale="log", xlabel="m", ylabel="P* (1 - m/v^(s-1)) / v",
               title=f"L = {L}, threshold {threshold} (A_L or clustering score)")
        ax.set_xticks(ms, [str(int(m)) for m in ms])
        ax.legend(fontsize=7)
    _save(fig, path)


def replot(workdir) -> list[str]:
    """Re-plot every results file in ``workdir`` that names its figure (``"figure"``: the
    plotting function of this module that drew it); returns the PNG paths written."""
    written = []
    for path in sorted(as_path(workdir).glob("*.json")):
        results = None
        with contextlib.suppress(ValueError, OSError):
            results = read_json(path)
        plot = globals().get(results.get("figure", "")) if isinstance(results, dict) else None
        if callable(plot) and plot.__name__.startswith("plot_"):
            png = path.with_suffix(".png")
            plot(results, png)
            written.append(str(png))
    return written


def main(argv) -> int:
    if len(argv) < 2 or (argv[1] in ("p_star", "stages") and len(argv) < 4):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    if argv[1] == "stages":
        runs = [read_json(os.path.join(w, "results.json")) for w in argv[3:]]
        merged = mean_stages(runs)
        plot_stages(merged, argv[2])
        out = os.path.splitext(argv[2])[0] + ".json"
        write_json(out, merged)
        print(f"wrote {argv[2]} and {out} (A_l at {len(merged['stages'])} steps, mean over {len(runs)} runs)")
        return 0
    if argv[1] == "p_star":
        results = []
        for workdir in argv[3:]:
            names = [n for n in ("clustering_sweep.json", "sweep.json") if os.path.exists(os.path.join(workdir, n))]
            if not names:
                print(f"rhmdiff: error: {workdir}: no clustering_sweep.json or sweep.json", file=sys.stderr)
                return 1
            results.append(read_json(os.path.join(workdir, names[0])))
        groups = {}  # the diffusion sweeps of one kind of grammar, pooled over their values of m
        for res in results:
            if res["task"] == "sweep":
                groups.setdefault((res["L"], res["v"], res["s"]), []).append(res)
        try:
            diffusion = [pool_sweeps(group) for group in groups.values()]
        except ValueError as e:
            print(f"rhmdiff: error: {e}", file=sys.stderr)
            return 1
        clustering = [r for r in results if r["task"] == "clustering_sweep"]
        plot_p_star_comparison(clustering + diffusion, argv[2])
        ratios = [row for d in diffusion for c in clustering if (d["v"], d["s"]) == (c["v"], c["s"])
                  for row in compare_sweeps(d, c)]
        exponents = [{"L": d["L"], "v": d["v"], "s": d["s"], "m": [row["m"] for row in d["p_star"]], **e}
                     for d in diffusion for e in d["exponents"]]
        out = os.path.splitext(argv[2])[0] + ".json"
        write_json(out, {"ratios": ratios, "exponents": exponents})
        print(f"wrote {argv[2]} and {out} ({len(ratios)} diffusion / clustering ratios on the same grammars)")
        for e in exponents:
            if e["of"] == "metric":
                print(f"diffusion model, L = {e['L']}, v = {e['v']}, m = {e['m']}: P* at A_L = {e['threshold']} "
                      f"grows as m^{e['exponent']:.2f}{_interval(e['ci'])} ({e['n']} P*; Eq. 6: {e['theory']})")
        return 0
    for workdir in argv[1:]:
        written = replot(workdir)
        print(f"{workdir}: {', '.join(written) if written else 'no known result files'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
