"""Figures of the evaluations: ROC curves and accuracy under occlusion per region."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from recognition.evaluation.occlusion import OCCLUSION_FARS
from recognition.evaluation.roc import FARS, far_key


def plot_occlusion(table: dict[str, dict], path: Path, title: str) -> None:
    """Bars of accuracy and TAR@FAR=1e-2 per erased group, baseline as lines."""
    groups = [g for g in table if g != "none"]
    x = np.arange(len(groups))
    key = far_key(OCCLUSION_FARS[0])
    fig = Figure(figsize=(max(6.0, 0.6 * len(groups) + 2), 4.8))
    ax = fig.subplots()
    ax.bar(x - 0.2, [100 * table[g]["accuracy"] for g in groups], 0.4, label="accuracy")
    ax.bar(x + 0.2, [100 * table[g]["tar_at_far"][key] for g in groups], 0.4,
           label=f"TAR @ FAR {key}")
    ax.axhline(100 * table["none"]["accuracy"], color="C0", ls="--", lw=1,
               label="accuracy, nothing erased")
    ax.axhline(100 * table["none"]["tar_at_far"][key], color="C1", ls="--", lw=1,
               label=f"TAR @ FAR {key}, nothing erased")
    ax.set_xticks(x, groups, rotation=30, ha="right")
    ax.set(ylabel="%", ylim=(0, 100), title=title)
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_roc(fpr: np.ndarray, tpr: np.ndarray, report: dict, label: str, path: Path) -> None:
    """ROC on a log-FAR axis with the TAR@FAR table points marked."""
    fig = Figure(figsize=(5.5, 4.2))
    ax = fig.subplots()
    ax.plot(np.maximum(fpr, 1e-7), tpr, lw=1.5, label=f"{label} (AUC {100 * report['auc']:.2f}%)")
    tars = [report["tar_at_far"][far_key(f)] for f in FARS]
    ax.plot(FARS, tars, "o", ms=4, color="C3", label="TAR @ FAR (nearest ROC point)")
    ax.set(xscale="log", xlim=(1e-6, 1), ylim=(0, 1.0), xlabel="False accept rate",
           ylabel="True accept rate", title=f"ROC on {label}")
    ax.grid(True, which="both", ls=":", lw=0.5)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
