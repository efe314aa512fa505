"""Explanations per face region: FS-CAM (SPEC §4.1), per-region aggregation of any map, and
dataset-level statistics per region."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from cam.base import Explainer, Explanation, check_images, minmax
from cam.targets import Target, as_target
from parsing.errors import InputError
from parsing.labels import LabelSet, get_label_set

__all__ = ["FSCAM", "RegionStats", "check_label_maps", "paint_regions", "region_attribution"]


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


class FSCAM(Explainer):
    """FS-CAM: a score per face region, painted on the region (SPEC §4.1).

    ``mode="keep"`` (the reference): region k's score is the target score of x with every
    pixel outside region k set to ``fill`` (0, the neutral value in normalised space).
    ``mode="remove"`` (deletion): the drop S(x) - S(x with region k set to ``fill``).
    One batched forward pass over the regions present in every image plus the images
    themselves (regions present + 1 passes per image, in chunks of ``batch_size``).
    The map paints each pixel with ReLU(its region's score): plain sum, no area
    normalisation, then per-image min-max.

    Label maps are given to ``explain``/``__call__`` or computed by ``parser(images) ->
    (B, H, W)``. ``regions`` limits the scored regions (ids, names or groups of ``label_set``;
    default: all). ``Explanation.region_scores`` (B, num_classes) is NaN for regions absent
    from an image or not scored. For the reference's classifier setting use
    ``ClassTarget(softmax=True)``; for embedding models ``SimilarityTarget``.

    >>> fscam = FSCAM(backbone, parser=parser)
    >>> result = fscam.explain(images, SimilarityTarget(reference_embedding))
    >>> result.map, result.region_scores      # (B, H, W), (B, 25)
    """

    def __init__(self, model: nn.Module, parser: Callable[[Tensor], Tensor] | None = None,
                 label_set: str | LabelSet = "fse25", mode: str = "keep",
                 regions: int | str | Iterable[int | str] | None = None, fill: float = 0.0,
                 batch_size: int = 64, progress: bool = False):
        super().__init__(model, batch_size, progress)
        if mode not in ("keep", "remove"):
            raise InputError(f"FSCAM mode must be 'keep' or 'remove', got {mode!r}")
        self.parser, self.mode, self.fill = parser, mode, fill
        self.label_set = get_label_set(label_set)
        scored = torch.zeros(self.label_set.num_classes, dtype=torch.bool)
        scored[self.label_set.ids(regions) if regions is not None else slice(None)] = True
        self.scored = scored

    def explain(self, images: Tensor, targets: Target | int | Sequence,
                label_maps: Tensor | None = None) -> Explanation:
        check_images(images)
        x = images.to(self.device)
        if label_maps is None:
            if self.parser is None:
                raise InputError("FSCAM needs label maps: pass label_maps= or create it with "
                                 "a parser")
            with torch.no_grad():
                label_maps = self.parser(x)
        labels = check_label_maps(torch.as_tensor(label_maps), x, self.label_set)
        return self._regions(x, as_target(targets), labels).to(images.device)

    def __call__(self, images: Tensor, targets: Target | int | Sequence,
                 label_maps: Tensor | None = None) -> Tensor:
        return self.explain(images, targets, label_maps).map

    def _regions(self, images: Tensor, target: Target, labels: Tensor) -> Explanation:
        batch, num_classes = len(images), self.label_set.num_classes
        present = region_attribution(torch.ones(labels.shape, device=images.device), labels,
                                     self.label_set) > 0
        pairs = (present & self.scored.to(images.device)).nonzero()  # (P, 2): image, region
        index = torch.cat([torch.arange(batch, device=images.device), pairs[:, 0]])
        region = torch.cat([torch.full((batch,), -1, device=images.device), pairs[:, 1]])

        def rows(start: int, stop: int) -> Tensor:
            b, k = index[start:stop], region[start:stop, None, None]
            kept = (labels[b] == k) | (k < 0) if self.mode == "keep" else labels[b] != k
            return torch.where(kept[:, None], images[b], self.fill)

        out = self.forward_rows(rows, len(index), desc="FS-CAM")
        target = target.bind(out[:batch])
        row_scores = target(out, index)
        scores, pair_scores = row_scores[:batch], row_scores[batch:]
        if self.mode == "remove":
            pair_scores = scores[pairs[:, 0]] - pair_scores
        region_scores = torch.full((batch, num_classes), float("nan"), device=images.device,
                                   dtype=row_scores.dtype)
        region_scores[pairs[:, 0], pairs[:, 1]] = pair_scores
        raw = paint_regions(region_scores.nan_to_num(0.0).relu(), labels)
        return Explanation(minmax(raw), raw, scores, region_scores)


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
