"""FS-CAM (reference §4.1): the score lost (or kept) when each face region is erased.

``python -m cam.fscam`` (``cam/fscam/__main__.py``) explains faces with it beside Grad-CAM,
RISE and Group-CAM.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from cam.base import Explainer, Explanation, check_images, minmax, register_explainer
from cam.regions import check_label_maps, paint_regions, region_attribution
from cam.targets import Target, as_target
from parsing.core.errors import InputError
from parsing.core.labels import LabelSet, get_label_set


@register_explainer("fscam")
class FSCAM(Explainer):
    """FS-CAM: a score per face region, painted on the region (reference §4.1).

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
