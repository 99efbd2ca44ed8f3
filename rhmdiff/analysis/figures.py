"""Figures from stored results (JSON written by the analysis tasks).

    python -m rhmdiff.analysis.figures runs/DIR [runs/DIR2 ...]

re-plots every known result file found in the given workdirs (PNG next to the JSON).
"""
from __future__ import annotations

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

CONTEXT_COLORS = {"token": "black", "tuple": "red"}


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
            for context, style in (("token", "-"), ("tuple", "--")):
                acc = np.mean([c["accuracy"] for c in results["curves"]
                               if (c["L"], c["m"], c["context"]) == (L, m, context)], axis=0)
                ax_curve.plot(P, acc, style, color=cmap(i), label=f"m={m}" if context == "token" else None)
        ax_curve.axhline(results["threshold"], color="gray", lw=0.8)
        ax_curve.set(xscale="log", xlabel="P", ylabel="clustering score",
                     title=f"L={L} (solid: first token, dashed: first tuple)")
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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


PLOTTERS = {"clustering_sweep.json": plot_clustering_sweep}


def replot(workdir: str) -> list[str]:
    """Re-plot every known result file in ``workdir``; returns the PNG paths written."""
    written = []
    for name, plot in PLOTTERS.items():
        path = os.path.join(workdir, name)
        if os.path.exists(path):
            with open(path) as f:
                plot(json.load(f), path[:-len(".json")] + ".png")
            written.append(path[:-len(".json")] + ".png")
    return written


def main(argv) -> int:
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    for workdir in argv[1:]:
        written = replot(workdir)
        print(f"{workdir}: {', '.join(written) if written else 'no known result files'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
