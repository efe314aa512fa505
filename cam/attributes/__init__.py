"""Which face regions drive which facial attribute: FS-CAM and region-aggregated Grad-CAM with
``ClassTarget`` on each output of a ``recognition.attributes`` model.

For every explained output (an attribute, or an expression class) the faces where it is
present are explained, one region score per FSE-25 class and face:

* ``fscam``: :class:`cam.FSCAM` with ``ClassTarget(column)`` (the logit): by default
  ``mode="keep"`` (reference §4.1), the logit with only the region kept; ``mode="remove"``,
  how much the logit drops when the region is erased. On synthetic attributes keep puts
  eyeglasses, hats and open mouths on their regions far more often than remove, whose
  erasure of a large region moves any logit (``benchmarks/RESULTS.md``, attribute study);
* ``gradcam``: the share of Grad-CAM's positive mass in each region
  (``region_attribution(..., reduce="share")``, the default), or its mean over the region's
  pixels (``gradcam_reduce="mean"``: a density, which a small region can top; the share favours
  large regions).

:class:`AttributeRegions` accumulates them into an outputs x regions table (mean +- std over
faces, :class:`cam.RegionStats`) and, for outputs whose true regions are known
(:data:`TRUE_REGIONS`, exact on synthetic faces), the top-1 hit rate: the share of faces whose
highest-scored region present is one of the true regions (:func:`cam.metrics.top_k_hit_rate`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from cam.base import Explainer
from cam.fscam import FSCAM
from cam.gradcam import GradCAM
from cam.metrics import top_k_hit_rate
from cam.regions import RegionStats, region_attribution
from cam.targets import ClassTarget
from parsing.core.errors import InputError
from parsing.core.labels import FSE25

__all__ = ["METHODS", "TRUE_REGIONS", "AttributeRegions", "Output", "plot_heatmap",
           "region_scores"]

METHODS = ("fscam", "gradcam")
#: FSE-25 regions (groups and classes) that carry each attribute on synthetic faces
TRUE_REGIONS: dict[str, tuple[str, ...]] = {
    "Eyeglasses": ("eyes", "around_eyes", "glasses"),
    "Wearing_Hat": ("headwear", "forehead"),
    "Mouth_Slightly_Open": ("mouth",),
    "Smiling": ("mouth",),
    "Bangs": ("hair", "forehead"),
    "Black_Hair": ("hair",), "Blond_Hair": ("hair",), "Brown_Hair": ("hair",),
    "Gray_Hair": ("hair",), "Wavy_Hair": ("hair",),
}


@dataclass
class Output:
    """One explained model output: its name, its column in the model output, and the FSE-25
    ids of its true regions (empty: unknown)."""

    name: str
    column: int
    truth: tuple[int, ...] = ()


def region_scores(method: str, explainer: Explainer, images: Tensor, label_maps: Tensor,
                  column: int, gradcam_reduce: str = "share") -> Tensor:
    """(B, 25) scores of each region for output ``column`` (NaN where a region is absent);
    ``gradcam_reduce``: ``share`` or ``mean`` (module docstring)."""
    target = ClassTarget(column)
    present = region_attribution(torch.ones(label_maps.shape, device=images.device),
                                 label_maps) > 0
    if method == "fscam":
        scores = explainer.explain(images, target, label_maps=label_maps).region_scores
    elif method == "gradcam":
        if gradcam_reduce not in ("share", "mean"):
            raise InputError(f"gradcam_reduce must be 'share' or 'mean', got {gradcam_reduce!r}")
        scores = region_attribution(explainer.explain(images, target).raw, label_maps,
                                    reduce=gradcam_reduce)
    else:
        raise InputError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return torch.where(present, scores, float("nan"))


@dataclass
class AttributeRegions:
    """Per method and output: region statistics and per-face hit rates, batch by batch.

    Args:
        model: a ``recognition.attributes.AttributeNet`` (or any (B, D) classifier).
        outputs: the outputs to explain.
        methods: ``fscam`` and/or ``gradcam``.
        target_layer: Grad-CAM's layer (module or dotted name).
        mode: FS-CAM ``keep`` (default) or ``remove``.
        batch_size: FS-CAM rows per forward pass.
        gradcam_reduce: Grad-CAM per region: ``share`` (default) or ``mean``.
    """

    model: nn.Module
    outputs: Sequence[Output]
    methods: Sequence[str] = METHODS
    target_layer: nn.Module | str | None = None
    mode: str = "keep"
    batch_size: int = 64
    gradcam_reduce: str = "share"
    stats: dict[str, dict[str, RegionStats]] = field(init=False)
    hits: dict[str, dict[str, list[float]]] = field(init=False)

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise InputError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
        self.explainers: dict[str, Explainer] = {}
        for method in self.methods:
            if method == "fscam":
                self.explainers[method] = FSCAM(self.model, mode=self.mode,
                                                batch_size=self.batch_size)
            else:
                if self.target_layer is None:
                    raise InputError("gradcam needs a target layer")
                self.explainers[method] = GradCAM(self.model, self.target_layer)
        self.stats = {m: {o.name: RegionStats() for o in self.outputs} for m in self.methods}
        self.hits = {m: {o.name: [] for o in self.outputs} for m in self.methods}

    def update(self, images: Tensor, label_maps: Tensor, positive: Tensor) -> None:
        """Explain the faces of a batch where each output is present: ``images`` (B, 3, H, W)
        normalised, ``label_maps`` (B, H, W) FSE-25, ``positive`` (B, len(outputs)) bool."""
        for k, out in enumerate(self.outputs):
            chosen = positive[:, k].nonzero()[:, 0]
            if not len(chosen):
                continue
            x, labels = images[chosen], label_maps[chosen]
            for method, explainer in self.explainers.items():
                scores = region_scores(method, explainer, x, labels, out.column,
                                       self.gradcam_reduce).cpu()
                self.stats[method][out.name].update(scores)
                if out.truth:
                    truth = torch.zeros(FSE25.num_classes, dtype=torch.bool)
                    truth[list(out.truth)] = True
                    rate = top_k_hit_rate(scores, truth, k=1)
                    self.hits[method][out.name] += rate[~rate.isnan()].tolist()

    def close(self) -> None:
        """Remove the explainers' hooks from the model."""
        for explainer in self.explainers.values():
            explainer.close()

    def table(self, method: str) -> np.ndarray:
        """(outputs, 25) mean score of each region (NaN: never present on those faces)."""
        return np.stack([self.stats[method][o.name].mean.numpy() for o in self.outputs])

    def result(self) -> dict[str, Any]:
        """Per method: each output's faces, mean/std per region, top region and hit rate."""
        out: dict[str, Any] = {}
        for method in self.methods:
            rows = []
            for o in self.outputs:
                stats = self.stats[method][o.name]
                mean = stats.mean
                top = int(torch.where(mean.isnan(), -math.inf, mean).argmax())
                hits = self.hits[method][o.name]
                rows.append({
                    "output": o.name, "faces": int(stats.count.max()),
                    "top_region": FSE25.names[top] if stats.count.max() > 0 else None,
                    "true_regions": [FSE25.names[i] for i in o.truth],
                    "hit_rate": float(np.mean(hits)) if hits else None,
                    "hit_faces": len(hits),
                    "regions": {r["region"]: {"mean": r["mean"], "std": r["std"],
                                              "count": r["count"]} for r in stats.table()}})
            out[method] = rows
        return out


def plot_heatmap(table: np.ndarray, rows: Sequence[str], path: str | Path, title: str) -> None:
    """Outputs x regions heat map, each row scaled by its largest absolute mean (blank: the
    region never present)."""
    scale = np.abs(np.nan_to_num(table)).max(axis=1, keepdims=True)
    scaled = table / np.where(scale > 0, scale, 1.0)
    fig = Figure(figsize=(0.36 * FSE25.num_classes + 2.5, 0.32 * len(rows) + 1.8))
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(scaled), cmap="RdBu_r", vmin=-1, vmax=1,
                      aspect="auto")
    ax.set_xticks(range(FSE25.num_classes), FSE25.names, rotation=70, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.03, label="mean score / row max |mean|")
    fig.savefig(path, dpi=120, bbox_inches="tight")
