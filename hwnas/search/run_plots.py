"""Plots of a search run: choice probabilities per layer over epochs, and cost and accuracy over epochs."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from hwnas.core.fileio import write_bytes_atomic


def _png(fig: Any) -> bytes:
    from matplotlib import pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_plots(out: Path, metrics: list[dict[str, Any]], probs: list[dict[str, Any]], unit: str) -> list[Path]:
    """Write ``choices.png`` and ``progress.png`` into ``out``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not metrics:
        return []
    m = pd.DataFrame(metrics)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(m["epoch"], m["expected_cost"], marker="o", label=f"E[cost] ({unit})")
    ax.plot(m["epoch"], m["argmax_cost"], marker="x", ls="--", label=f"argmax cost ({unit})")
    ax.axhline(float(m["budget"].iloc[0]), color="red", lw=1, label="budget")
    ax.set_xlabel("epoch")
    ax.set_ylabel(unit)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2 = ax.twinx()
    ax2.plot(m["epoch"], m["val_acc"], color="green", marker="s", label="val accuracy (argmax)")
    ax2.set_ylabel("accuracy")
    ax2.set_ylim(0, 1)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [str(h.get_label()) for h in lines], fontsize=8, loc="best")
    ax.set_title("search progress")
    paths = [out / "progress.png"]
    write_bytes_atomic(paths[0], _png(fig))

    p = pd.DataFrame(probs)
    if p.empty:
        return paths
    groups = [(layer, factor) for (layer, factor), _ in p.groupby(["layer", "factor"], sort=True)]
    cols = 4
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.4 * rows), dpi=80, squeeze=False)
    for ax, (layer, factor) in zip(axes.flat, groups, strict=False):
        part = p[(p["layer"] == layer) & (p["factor"] == factor)]
        for choice, rows_ in part.groupby("choice", sort=False):
            ax.plot(rows_["epoch"], rows_["prob"], label=str(choice))
        ax.set_title(f"{'network' if layer < 0 else f'layer {layer}'}: {factor}", fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("probability", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=6, loc="upper left", ncol=2)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    paths.append(out / "choices.png")
    write_bytes_atomic(paths[1], _png(fig))
    return paths
