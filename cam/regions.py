"""Explanations per face region: FS-CAM (reference §4.1), per-region aggregation of any map, and
dataset-level statistics per region."""

from __future__ import annotations

import torch
from torch import Tensor

from parsing.core.errors import InputError
from parsing.core.labels import LabelSet, get_label_set

__all__ = ["RegionStats", "check_label_maps", "paint_regions", "region_attribution"]


def check_label_maps(label_maps: Tensor, images_or_maps: Tensor, label_set: LabelSet) -> Tensor:
    """Label maps (B, H, W) that fit ``images_or_maps`` and ``label_set``, as int64 on its
    device; a clear :class:`InputError` otherwise."""
    shape = images_or_maps.shape
    expected = (shape[0], *shape[-2:])
    if not isinstance(label_maps, Tensor) or tuple(label_maps.shape) != expected:
        got = tuple(label_maps.shape) if isinstance(label_maps, Tensor) else type(label_maps)
        raise InputError(f"label maps must have shape {expected} (B, H, W) to match, got {got}")
    label_set.check(label_maps, "label maps")
    return label_maps.to(device=images_or_maps.device, dtype=torch.long)


def paint_regions(values: Tensor, label_maps: Tensor) -> Tensor:
    """Paint each pixel with its region's value: (B, K) values, (B, H, W) ids -> (B, H, W).

    Ids outside 0..K-1 (an ignore id such as 255) get 0.
    """
    num_classes = values.shape[1]
    labels = label_maps.long().flatten(1)
    inside = labels < num_classes
    painted = values.gather(1, labels.clamp(max=num_classes - 1)) * inside
    return painted.view(label_maps.shape).to(values.dtype)


def region_attribution(maps: Tensor, label_maps: Tensor, label_set: str | LabelSet = "fse25",
                       reduce: str = "sum") -> Tensor:
    """Aggregate any map (B, H, W) per region of its label map (B, H, W) -> (B, num_classes).

    ``reduce``: ``"sum"`` of the map over the region (0 for absent regions), ``"mean"`` over
    its pixels (NaN for absent regions), ``"share"`` of the image's positive mass,
    sum(ReLU(map) in region) / sum(ReLU(map)) (0 for absent regions; rows sum to 1 unless the
    map has no positive mass). Pixels with an ignore id (e.g. 255) count for no region.
    """
    label_set = get_label_set(label_set)
    if reduce not in ("sum", "mean", "share"):
        raise InputError(f"reduce must be 'sum', 'mean' or 'share', got {reduce!r}")
    if not isinstance(maps, Tensor) or maps.dim() != 3:
        raise InputError(f"maps must be a tensor (B, H, W), got "
                         f"{tuple(maps.shape) if isinstance(maps, Tensor) else type(maps)}")
    labels = check_label_maps(label_maps, maps, label_set).flatten(1)
    batch, num_classes = len(maps), label_set.num_classes
    values = maps.flatten(1).float()
    if reduce == "share":
        values = values.relu()
    inside = labels < num_classes
    bins = (torch.arange(batch, device=maps.device)[:, None] * num_classes + labels)[inside]
    sums = torch.zeros(batch * num_classes, device=maps.device).index_add_(0, bins, values[inside])
    sums = sums.view(batch, num_classes)
    if reduce == "sum":
        return sums
    if reduce == "share":
        total = sums.sum(dim=1, keepdim=True)
        return torch.where(total > 0, sums / total.clamp(min=torch.finfo(sums.dtype).tiny), 0.0)
    counts = torch.bincount(bins, minlength=batch * num_classes).view(batch, num_classes)
    return torch.where(counts > 0, sums / counts.clamp(min=1), float("nan"))


class RegionStats:
    """Dataset-level mean +- std per region of per-image region scores, batch by batch.

    ``update(scores (B, num_classes))``; NaN entries (region absent) are skipped, so each
    region has its own ``count``. ``std`` is the sample standard deviation (NaN below two
    values). Merges batches with Chan's parallel formula, in float64.
    """

    def __init__(self, label_set: str | LabelSet = "fse25"):
        self.label_set = get_label_set(label_set)
        k = self.label_set.num_classes
        self.count = torch.zeros(k, dtype=torch.float64)
        self._mean = torch.zeros(k, dtype=torch.float64)
        self._m2 = torch.zeros(k, dtype=torch.float64)

    def update(self, region_scores: Tensor) -> None:
        scores = torch.as_tensor(region_scores).detach().cpu().double()
        if scores.dim() != 2 or scores.shape[1] != self.label_set.num_classes:
            raise InputError(f"RegionStats.update expects (B, {self.label_set.num_classes}) "
                             f"scores, got {tuple(scores.shape)}")
        valid = ~scores.isnan()
        n = valid.sum(dim=0).double()
        mean = torch.where(valid, scores, 0.0).sum(dim=0) / n.clamp(min=1)
        m2 = torch.where(valid, scores - mean, 0.0).square().sum(dim=0)
        total = self.count + n
        delta = mean - self._mean
        share = n / total.clamp(min=1)
        self._mean = self._mean + delta * share
        self._m2 = self._m2 + m2 + delta.square() * self.count * share
        self.count = total

    @property
    def mean(self) -> Tensor:
        return torch.where(self.count > 0, self._mean, float("nan"))

    @property
    def std(self) -> Tensor:
        return torch.where(self.count > 1, (self._m2 / (self.count - 1).clamp(min=1)).sqrt(),
                           float("nan"))

    def table(self) -> list[dict[str, float | int | str]]:
        """One row per region seen at least once: id, name, count, mean, std."""
        return [{"id": k, "region": self.label_set.names[k], "count": int(self.count[k]),
                 "mean": float(self.mean[k]), "std": float(self.std[k])}
                for k in range(self.label_set.num_classes) if self.count[k] > 0]
