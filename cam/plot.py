"""Figures for explanations: overlay on the face, per-region bars, methods side by side.

Every function returns a ``matplotlib.figure.Figure`` (no pyplot state, works with Agg), draws
into ``ax`` when given, and writes a PNG when ``path`` is given.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from parsing.core.labels import LabelSet, get_label_set

__all__ = ["to_rgb", "overlay", "region_bars", "compare"]


def to_rgb(image: Tensor | np.ndarray) -> np.ndarray:
    """(H, W, 3) float RGB in [0, 1] from a (3, H, W) tensor (float normalised with
    mean = std = 0.5, or uint8) or an (H, W, 3) uint8 array."""
    if isinstance(image, Tensor):
        t = image.detach().cpu()
        t = t.float() / 255 if t.dtype == torch.uint8 else t.float() * 0.5 + 0.5
        return t.permute(1, 2, 0).clamp(0, 1).numpy()
    arr = np.asarray(image)
    return arr.astype(np.float32) / 255 if arr.dtype == np.uint8 else np.clip(arr, 0, 1)


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    return ax if ax is not None else Figure(figsize=figsize).add_subplot()


def _finish(fig: Figure, path: str | os.PathLike | None) -> Figure:
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def overlay(image: Tensor | np.ndarray, saliency: Tensor, ax: Axes | None = None,
            alpha: float = 0.5, cmap: str = "jet", title: str | None = None,
            path: str | os.PathLike | None = None) -> Figure:
    """A map (H, W) in [0, 1] drawn over the face image."""
    ax = _axes(ax, (3, 3))
    ax.imshow(to_rgb(image))
    ax.imshow(torch.as_tensor(saliency).detach().cpu().float().numpy(), cmap=cmap, alpha=alpha,
              vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return _finish(ax.figure, path)


def region_bars(region_scores: Tensor, label_set: str | LabelSet = "fse25",
                ax: Axes | None = None, title: str | None = None, top: int | None = None,
                path: str | os.PathLike | None = None) -> Figure:
    """Horizontal bars of per-region scores (num_classes,), largest on top, in each region's
    palette colour; NaN (absent) regions are left out, ``top`` keeps the largest few."""
    label_set = get_label_set(label_set)
    scores = torch.as_tensor(region_scores).detach().cpu().double()
    ids = [k for k in scores.argsort(descending=True).tolist() if not scores[k].isnan()][:top]
    ax = _axes(ax, (4, 0.25 * max(len(ids), 4) + 0.6))
    colours = label_set.palette[ids] / 255.0
    ax.barh(range(len(ids)), scores[ids].numpy(), color=colours, edgecolor="0.3", linewidth=0.5)
    ax.set_yticks(range(len(ids)), [label_set.names[k] for k in ids], fontsize=7)
    ax.invert_yaxis()
    ax.tick_params(axis="x", labelsize=7)
    ax.axvline(0, color="0.3", linewidth=0.5)
    if title:
        ax.set_title(title, fontsize=9)
    return _finish(ax.figure, path)


def compare(image: Tensor | np.ndarray, maps: Mapping[str, Tensor],
            region_scores: Mapping[str, Tensor] | None = None, label_map: Tensor | None = None,
            label_set: str | LabelSet = "fse25", top: int | None = 12, title: str | None = None,
            path: str | os.PathLike | None = None, marked: Tensor | None = None) -> Figure:
    """Methods side by side: the face (and its colour-coded label map), one overlay per method,
    and under each overlay that method's region bars when ``region_scores`` are given.
    ``marked`` (H, W) bool, e.g. the true identity regions, is outlined in white on every
    image, and ``label_map`` regions that touch it get a ``*`` in the bars."""
    label_set = get_label_set(label_set)
    lead = 2 if label_map is not None else 1
    cols = lead + len(maps)
    rows = 2 if region_scores else 1
    fig = Figure(figsize=(2.6 * cols, 2.8 + (3.2 if rows == 2 else 0)))
    grid = fig.add_gridspec(rows, cols, height_ratios=[1, 1.2][:rows])
    face = fig.add_subplot(grid[0, 0])
    face.imshow(to_rgb(image))
    face.set_axis_off()
    face.set_title("input", fontsize=9)
    if label_map is not None:
        parsed = fig.add_subplot(grid[0, 1])
        parsed.imshow(label_set.colorize(label_map))
        parsed.set_axis_off()
        parsed.set_title("regions", fontsize=9)
    images = [face, *([parsed] if label_map is not None else [])]
    for i, (name, saliency) in enumerate(maps.items()):
        images.append(fig.add_subplot(grid[0, lead + i]))
        overlay(image, saliency, ax=images[-1], title=name)
        if region_scores and name in region_scores:
            bars = fig.add_subplot(grid[1, lead + i])
            region_bars(region_scores[name], label_set, ax=bars, top=top)
            if marked is not None and label_map is not None:
                starred = {label_set.names[k] for k in
                           torch.as_tensor(label_map)[torch.as_tensor(marked).bool()].unique()}
                bars.set_yticks(bars.get_yticks(), [
                    t.get_text() + (" *" if t.get_text() in starred else "")
                    for t in bars.get_yticklabels()], fontsize=7)
    if marked is not None:
        outline = torch.as_tensor(marked).detach().cpu().float().numpy()
        for ax in images:
            ax.contour(outline, levels=[0.5], colors="white", linewidths=1.2)
    if title:
        fig.suptitle(textwrap.fill(title, width=int(16 * cols)), fontsize=9)
    fig.tight_layout()
    return _finish(fig, path)
