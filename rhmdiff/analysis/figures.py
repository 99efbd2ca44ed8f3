"""Figures from stored results (JSON written by the analysis tasks).

    python -m rhmdiff.analysis.figures runs/DIR [runs/DIR2 ...]

re-plots every known result file found in the given workdirs (PNG next to the JSON);

    python -m rhmdiff.analysis.figures p_star OUT.png runs/clustering_m runs/sweep_m_L3 ...

draws Fig. 2: P* vs m of the clustering algorithm and of the diffusion model side by side.
"""
from __future__ import annotations

import os
import sys

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rhmdiff.files import as_path, read_json, save_png  # noqa: E402

CONTEXT_COLORS = {"token": "black", "tuple": "red", "token-deep": "gray", "tuple-deep": "orange"}
CONTEXT_STYLES = {"token": "-", "tuple": "--", "token-deep": ":", "tuple-deep": "-."}


def _save(fig, path) -> None:
    """Tidy log axes (no minor-tick labels), save as PNG (atomically, local or gs://), close."""
    for ax in fig.axes:
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale == "log":
                axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    fig.tight_layout()
    save_png(path, fig)
    plt.close(fig)


def plot_clustering_sweep(results: dict, path: str) -> None:
    """Left: seed-averaged clustering score vs P per m (one panel row per L). Right: P* vs m
    on log-log axes with the fitted power law and the theory's m^{L+1} (Fig. 2 / Fig. 7)."""
    Ls = sorted({row["L"] for row in results["summary"]})
    fig, axes = plt.subplots(len(Ls), 2, figsize=(10, 4 * len(Ls)), squeeze=False)
    P = np.asarray(results["train_sizes"])
    for (ax_curve, ax_star), L in zip(axes, Ls):
        ms = sorted({c["m"] for c in results["curves"] if c["L"] == L})
        cmap = plt.get_cmap("viridis", len(ms))
        for i, m in enumerate(ms):
            for context, style in CONTEXT_STYLES.items():
                rows = [c["accuracy"] for c in results["curves"] if (c["L"], c["m"], c["context"]) == (L, m, context)]
                if rows:
                    ax_curve.plot(P, np.mean(rows, axis=0), style, color=cmap(i),
                                  label=f"m={m}" if context == "token" else None)
        ax_curve.axhline(results["threshold"], color="gray", lw=0.8)
        ax_curve.set(xscale="log", xlabel="P", ylabel="clustering score",
                     title=f"L={L} (-: first token, --: first tuple; deep: : and -.)")
        ax_curve.legend(fontsize=8)
        for row in results["summary"]:
            if row["L"] != L:
                continue
            m, stars = np.asarray(row["m"]), np.asarray(row["p_star"])
            color = CONTEXT_COLORS[row["context"]]
            ax_star.plot(m, stars, "o", color=color, label=f"{row['context']}: exponent {row['exponent']:.2f}")
            ax_star.plot(m, row["prefactor"] * m ** row["exponent"], "-", color=color, lw=0.8)
            ref = np.asarray(row["theory_P"])
        ax_star.plot(m, ref, "k:", label=f"theory P_{L} ~ m^{L + 1}")
        ax_star.set(xscale="log", yscale="log", xlabel="m", ylabel="P*", title=f"sample complexity, L={L}")
        ax_star.legend(fontsize=8)
    _save(fig, path)


def plot_sweep(results: dict, path: str) -> None:
    """Fig. 1a: A_l of generated data vs P (mean over seeds, one figure per m), with the
    inset A_l vs P / m^{l+1}; and, with several m, P* vs m (Fig. 2)."""
    points = results["points"]
    ms = sorted({p["m"] for p in points})
    L = results["L"]
    ncols = len(ms) + (len(results["p_star"]) >= 2)
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 4), squeeze=False)
    colors = plt.get_cmap("plasma", L + 1)
    for ax, m in zip(axes[0], ms):
        Ps = sorted({p["P"] for p in points if p["m"] == m})
        acc = np.array([np.mean([p["accuracy"] for p in points if (p["m"], p["P"]) == (m, P)], axis=0) for P in Ps])
        inset = ax.inset_axes([0.6, 0.12, 0.37, 0.35])
        for level in range(1, L + 1):
            ax.plot(Ps, acc[:, level - 1], "o-", color=colors(level - 1), label=f"A_{level}")
            inset.plot(np.asarray(Ps) / m ** (level + 1), acc[:, level - 1], "o-", ms=3, color=colors(level - 1))
        inset.set(xscale="log", title="vs P / m^(l+1)")
        inset.tick_params(labelsize=6)
        inset.title.set_fontsize(7)
        ax.set(xscale="log", ylim=(0, 1.02), xlabel="P (training points)", ylabel="accuracy A_l",
               title=f"v={results['v']}, m={m}, L={L}")
        ax.legend(loc="upper left", fontsize=8)
    if ncols > len(ms):
        ax = axes[0][-1]
        rows = [r for r in results["p_star"] if np.isfinite(r["p_star"])]
        if not rows:
            ax.text(0.5, 0.5, f"A_L never reached {results['threshold']}:\nno finite P*", ha="center",
                    va="center", transform=ax.transAxes)
            _save(fig, path)
            return
        m = np.array([r["m"] for r in rows], float)
        stars = np.array([r["p_star"] for r in rows])
        ax.plot(m, stars, "o", color="tab:blue", label="diffusion model")
        if "exponent" in results:
            ax.plot(m, results["prefactor"] * m ** results["exponent"], "-", color="tab:blue",
                    label=f"fit: exponent {results['exponent']:.2f}")
        ax.plot(m, stars[0] * (m / m[0]) ** (L + 1), "k:", label=f"m^{L + 1}")
        ax.set(xscale="log", yscale="log", xlabel="m",
               ylabel=f"P* ({results.get('metric', 'accuracy')} A_L >= {results['threshold']})")
        ax.legend(fontsize=8)
    _save(fig, path)


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


def plot_sensitivity(results: dict, path: str) -> None:
    """Fig. 6: S_{k,l} of every U-Net block k (encoder top row, decoder bottom row, input side
    first) vs P, one color per level l of synonym resets, with 1 - A_l dashed."""
    runs = sorted(results["runs"], key=lambda r: r["P"])
    P = np.array([r["P"] for r in runs])
    blocks = list(runs[0]["sensitivity"])
    L = len(runs[0]["accuracy"])
    encoders = sorted((b for b in blocks if b.startswith("encoder")), key=lambda b: int(b.split("_")[1]))
    decoders = sorted((b for b in blocks if b.startswith("decoder")), key=lambda b: -int(b.split("_")[1]))
    ncols = max(len(encoders), len(decoders), 1)
    fig, axes = plt.subplots(2, ncols, figsize=(3.6 * ncols, 6.5), squeeze=False, sharey=True)
    colors = plt.get_cmap("plasma", L + 1)
    for row, names in enumerate((encoders, decoders)):
        for ax, name in zip(axes[row], names):
            for level in range(1, L + 1):
                ax.plot(P, [r["sensitivity"][name][level - 1] for r in runs], "o-", ms=3, color=colors(level - 1),
                        label=f"S, level {level}")
                ax.plot(P, [1 - r["accuracy"][level - 1] for r in runs], "--", lw=0.8, color=colors(level - 1))
            ax.set(xscale="log", ylim=(0, 1.15), title=name, xlabel="P")
    for ax in axes.ravel()[len(encoders):ncols]:
        ax.axis("off")
    for ax in axes[1][len(decoders):]:
        ax.axis("off")
    axes[0][0].set_ylabel("relative sensitivity S_{k,l}")
    axes[1][0].set_ylabel("relative sensitivity S_{k,l}")
    axes[0][0].legend(fontsize=7, title="dashed: 1 - A_l", title_fontsize=7)
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


def plot_p_star_comparison(results: list[dict], path: str) -> None:
    """Fig. 2: P* vs m of every clustering variant (``clustering_sweep.json``) and of the
    diffusion model (``sweep.json``), one panel per L. Each P* is divided by its own
    v / (1 - m / v^{s-1}), so runs on different v share the axes and the theory (Eq. 6) is
    the line m^{L+1}."""
    prefactor = lambda v, s, m: v / (1.0 - np.asarray(m, float) / v ** (s - 1))
    series = []  # (L, label, color, m, normalized P*)
    for res in results:
        if res.get("task") == "clustering_sweep":
            for row in res["summary"]:
                series.append((row["L"], f"clustering, {row['context']} (v={res['v']})", CONTEXT_COLORS[row["context"]],
                               row["m"], np.asarray(row["p_star"]) / prefactor(res["v"], res["s"], row["m"])))
        elif res.get("task") == "sweep":
            m = [r["m"] for r in res["p_star"]]
            series.append((res["L"], f"diffusion model (v={res['v']})", "tab:blue", m,
                           np.asarray([r["p_star"] for r in res["p_star"]]) / prefactor(res["v"], res["s"], m)))
        else:
            raise ValueError(f"expected clustering_sweep or sweep results, got task {res.get('task')!r}")
    series = list({(row[0], row[1]): row for row in series}.values())  # the same run given twice: once
    Ls = sorted({row[0] for row in series})
    fig, axes = plt.subplots(1, len(Ls), figsize=(5.5 * len(Ls), 4.5), squeeze=False)
    for ax, L in zip(axes[0], Ls):
        ms = sorted({m for row in series if row[0] == L for m in row[3]})
        for _, label, color, m, stars in (row for row in series if row[0] == L):
            finite = np.isfinite(stars)
            marker = "s-" if color == "tab:blue" else "o--"
            missing = [mm for mm, f in zip(m, finite) if not f]
            label += f" (no P* at m = {', '.join(map(str, missing))})" if missing else ""
            ax.plot(np.asarray(m)[finite], stars[finite], marker, color=color, ms=5, lw=0.8, label=label)
        grid = np.linspace(min(ms), max(ms), 50)
        ax.plot(grid, grid ** (L + 1), "k:", label=f"theory m^{L + 1}")
        ax.set(xscale="log", yscale="log", xlabel="m", ylabel="P* (1 - m/v^(s-1)) / v", title=f"L = {L}")
        ax.set_xticks(ms, [str(m) for m in ms])
        ax.legend(fontsize=7)
    _save(fig, path)


PLOTTERS = {"mmd.json": plot_mmd, "correlations.json": plot_correlations, "text_correlations.json": plot_correlations,
            "perplexity.json": plot_perplexity, "clustering_sweep.json": plot_clustering_sweep,
            "sensitivity.json": plot_sensitivity, "sweep.json": plot_sweep, "onestep.json": plot_onestep,
            "mup_transfer.json": plot_mup_transfer, "score_error.json": plot_score_error}


def replot(workdir) -> list[str]:
    """Re-plot every known result file in ``workdir``; returns the PNG paths written."""
    written = []
    for name, plot in PLOTTERS.items():
        path = as_path(workdir) / name
        if path.exists():
            png = path.with_suffix(".png")
            plot(read_json(path), png)
            written.append(str(png))
    return written


def main(argv) -> int:
    if len(argv) < 2 or (argv[1] == "p_star" and len(argv) < 4):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    if argv[1] == "p_star":
        results = []
        for workdir in argv[3:]:
            names = [n for n in ("clustering_sweep.json", "sweep.json") if os.path.exists(os.path.join(workdir, n))]
            if not names:
                print(f"rhmdiff: error: {workdir}: no clustering_sweep.json or sweep.json", file=sys.stderr)
                return 1
            results.append(read_json(os.path.join(workdir, names[0])))
        plot_p_star_comparison(results, argv[2])
        print(f"wrote {argv[2]}")
        return 0
    for workdir in argv[1:]:
        written = replot(workdir)
        print(f"{workdir}: {', '.join(written) if written else 'no known result files'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
