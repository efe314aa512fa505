"""Metrics of explanations: faithfulness of any map (deletion and insertion, reference §4.3, and
a deletion curve over face regions) and region-level scores against a known set of regions
(top-k hit rate, ROC-AUC) or against another explanation (Spearman rank correlation)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from kornia.filters import gaussian_blur2d
from torch import Tensor, nn

from cam.base import Explainer, check_images
from cam.regions import check_label_maps
from cam.targets import Target, as_target
from parsing.core.errors import InputError
from parsing.core.labels import LabelSet, get_label_set

__all__ = ["Curve", "deletion", "insertion", "perturbation_curve", "region_auc",
           "region_deletion", "spearman", "top_k_hit_rate"]


@dataclass
class Curve:
    """A perturbation curve per image: ``scores`` (B, T) at ``fraction`` (B, T) of the pixels
    moved (x in [0, 1]); ``auc`` (B,) by the trapezoid rule. Region curves also carry the
    region ``order`` (B, num_classes) in which regions were removed."""

    fraction: Tensor
    scores: Tensor
    auc: Tensor
    order: Tensor | None = None


def perturbation_curve(model: nn.Module, start: Tensor, end: Tensor, maps: Tensor,
                       targets: Target | int | Sequence, step: int = 224,
                       reference: Tensor | None = None, batch_size: int = 64,
                       progress: bool = False) -> Curve:
    """Move ``step`` pixels per step from ``start`` to ``end`` images (B, C, H, W) in order of
    decreasing ``maps`` (B, H, W) and record the target score after each step.

    The target is bound on ``reference`` (default ``start``), the unperturbed images.
    T = ceil(H W / step) + 1 points per image, all scored in batched forward passes.
    """
    for images in (start, end):
        check_images(images)
    if start.shape != end.shape or maps.shape != (start.shape[0], *start.shape[-2:]):
        raise InputError(f"start {tuple(start.shape)}, end {tuple(end.shape)} and maps "
                         f"{tuple(maps.shape)} do not match")
    if step < 1:
        raise InputError(f"step must be >= 1, got {step}")
    scorer = Explainer(model, batch_size=batch_size, progress=progress)  # batched forwards
    device = start.device
    start, end = start.to(scorer.device), end.to(scorer.device)
    reference = start if reference is None else reference.to(scorer.device)
    batch, pixels = len(start), maps[0].numel()
    n_points = math.ceil(pixels / step) + 1
    order = maps.flatten(1).to(scorer.device).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(pixels, device=order.device).expand_as(order))
    index = torch.arange(batch, device=order.device).repeat_interleave(n_points)
    moved = (torch.arange(n_points, device=order.device) * step).clamp(max=pixels)
    moved = moved.repeat(batch)

    def rows(lo: int, hi: int) -> Tensor:
        b = index[lo:hi]
        take_end = (rank[b] < moved[lo:hi, None]).view(-1, 1, *start.shape[-2:])
        return torch.where(take_end, end[b], start[b])

    target = as_target(targets).bind(scorer.forward_rows(lambda lo, hi: reference[lo:hi], batch))
    scores = target(scorer.forward_rows(rows, len(index), desc="curve"), index)
    fraction = (moved[:n_points] / pixels).expand(batch, n_points)
    scores = scores.view(batch, n_points)
    return Curve(fraction.to(device), scores.to(device),
                 torch.trapezoid(scores, fraction, dim=1).to(device))


def deletion(model: nn.Module, images: Tensor, maps: Tensor, targets: Target | int | Sequence,
             step: int = 224, substrate: float = 0.0, batch_size: int = 64,
             progress: bool = False) -> Curve:
    """Deletion: pixels go, most salient first, from the image to ``substrate`` (0 = the mean
    in normalised space). Lower AUC is better."""
    return perturbation_curve(model, images, torch.full_like(images, substrate), maps, targets,
                              step, batch_size=batch_size, progress=progress)


def insertion(model: nn.Module, images: Tensor, maps: Tensor, targets: Target | int | Sequence,
              step: int = 224, blur: Callable[[Tensor], Tensor] | None = None,
              batch_size: int = 64, progress: bool = False) -> Curve:
    """Insertion: pixels go, most salient first, from a blurred copy to the image (default
    blur: Gaussian, kernel 11, sigma 5, as the RISE code). Higher AUC is better."""
    blurred = blur(images) if blur is not None else \
        gaussian_blur2d(images, (11, 11), (5.0, 5.0), border_type="reflect")
    return perturbation_curve(model, blurred, images, maps, targets, step, reference=images,
                              batch_size=batch_size, progress=progress)


def region_deletion(model: nn.Module, images: Tensor, label_maps: Tensor,
                    region_scores: Tensor, targets: Target | int | Sequence,
                    label_set: str | LabelSet = "fse25", substrate: float = 0.0,
                    batch_size: int = 64, progress: bool = False) -> Curve:
    """Remove whole regions, highest ``region_scores`` (B, num_classes) first, and record the
    target score after each: num_classes + 1 points per image. Regions that are absent or
    NaN-scored come last (removing them changes nothing, so the curve ends flat). ``fraction``
    is the share of pixels removed so far."""
    check_images(images)
    label_set = get_label_set(label_set)
    labels = check_label_maps(label_maps, images, label_set)
    batch, num_classes = len(images), label_set.num_classes
    if tuple(region_scores.shape) != (batch, num_classes):
        raise InputError(f"region_scores must be ({batch}, {num_classes}), got "
                         f"{tuple(region_scores.shape)}")
    ranking = region_scores.to(images.device).nan_to_num(float("-inf"))
    order = ranking.argsort(dim=1, descending=True, stable=True)
    position = torch.empty_like(order).scatter_(
        1, order, torch.arange(num_classes, device=order.device).expand_as(order))
    # a pixel's region position is the step at which it is removed; ignore ids stay
    pixel_step = torch.where(labels < num_classes,
                             position.gather(1, labels.clamp(max=num_classes - 1).flatten(1))
                             .view_as(labels), num_classes + 1)
    scorer = Explainer(model, batch_size=batch_size, progress=progress)
    x = images.to(scorer.device)
    pixel_step = pixel_step.to(scorer.device)
    n_points = num_classes + 1
    index = torch.arange(batch, device=x.device).repeat_interleave(n_points)
    steps = torch.arange(n_points, device=x.device).repeat(batch)

    def rows(lo: int, hi: int) -> Tensor:
        b = index[lo:hi]
        removed = pixel_step[b] < steps[lo:hi, None, None]
        return torch.where(removed[:, None], substrate, x[b])

    target = as_target(targets).bind(scorer.forward_rows(lambda lo, hi: x[lo:hi], batch))
    scores = target(scorer.forward_rows(rows, len(index), desc="regions"), index)
    scores = scores.view(batch, n_points)
    removed = (pixel_step[:, None] < torch.arange(n_points, device=x.device)[None, :, None, None])
    fraction = removed.flatten(2).float().mean(dim=2)
    return Curve(fraction.to(images.device), scores.to(images.device),
                 torch.trapezoid(scores, fraction, dim=1).to(images.device), order)


# ------------------------------------------------------------------ region-level scoring
def _region_inputs(scores: Tensor, other: Tensor, valid: Tensor | None, what: str
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """(B, K) float64 scores, ``other`` broadcast to (B, K), and the valid entries: given,
    else the non-NaN scores."""
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        raise InputError(f"{what}: scores must be a tensor (B, num_regions), got "
                         f"{tuple(scores.shape) if isinstance(scores, Tensor) else type(scores)}")
    scores = scores.detach().double()
    try:
        other = torch.as_tensor(other, device=scores.device).expand_as(scores)
        valid = (~scores.isnan() if valid is None else
                 torch.as_tensor(valid, device=scores.device).bool().expand_as(scores))
    except RuntimeError:
        raise InputError(f"{what}: scores {tuple(scores.shape)} and the second argument / valid "
                         "do not broadcast") from None
    return scores, other, valid & ~scores.isnan()


def top_k_hit_rate(region_scores: Tensor, truth: Tensor, k: int | None = None,
                   valid: Tensor | None = None) -> Tensor:
    """Share of the ``k`` highest-scored regions that are true regions, per image -> (B,).

    ``region_scores`` (B, K); ``truth`` (K,) or (B, K) bool, the known regions; ``valid``
    (B, K) bool, the regions to rank (default: the non-NaN scores, i.e. regions present).
    ``k`` defaults to the number of valid true regions of each image (then 1.0 means the true
    regions are exactly the top ones). Ties at the k-th score count as a random tie-break
    would on average: the free slots are shared over the tied regions, so a constant score
    gets the chance rate. NaN for an image with no valid true region (or ``k`` = 0).
    """
    scores, truth, valid = _region_inputs(region_scores, truth, valid, "top_k_hit_rate")
    truth = truth.bool() & valid
    kk = truth.sum(1).double() if k is None else torch.full_like(scores[:, 0], float(k))
    kk = torch.minimum(kk, valid.sum(1).double())
    ranked = torch.where(valid, scores, float("-inf"))
    kth = ranked.sort(dim=1, descending=True).values.gather(
        1, (kk.long() - 1).clamp(min=0)[:, None])
    above, at = valid & (ranked > kth), valid & (ranked == kth)
    slots = kk - above.sum(1)
    hits = (above & truth).sum(1) + slots * (at & truth).sum(1) / at.sum(1).clamp(min=1)
    return torch.where((kk > 0) & truth.any(1), hits / kk.clamp(min=1), float("nan"))


def region_auc(region_scores: Tensor, truth: Tensor, valid: Tensor | None = None) -> Tensor:
    """ROC-AUC of region scores against the true-region indicator, per image -> (B,).

    The probability that a true region outscores a false one, ties counting 1/2
    (Mann-Whitney U / (n_true n_false)), over the ``valid`` regions (default: non-NaN).
    NaN where an image has no valid true or no valid false region.
    """
    scores, truth, valid = _region_inputs(region_scores, truth, valid, "region_auc")
    pos, neg = truth.bool() & valid, ~truth.bool() & valid
    pairs = pos[:, :, None] & neg[:, None, :]
    wins = (scores[:, :, None] > scores[:, None, :]).double() + \
        0.5 * (scores[:, :, None] == scores[:, None, :]).double()
    n = pairs.sum(dim=(1, 2)).double()
    return torch.where(n > 0, (wins * pairs).sum(dim=(1, 2)) / n.clamp(min=1), float("nan"))


def _average_ranks(values: Tensor, valid: Tensor) -> Tensor:
    """Ranks 1..n among the valid entries of each row, ties sharing their mean rank."""
    v = valid[:, None, :]
    below = ((values[:, None, :] < values[:, :, None]) & v).sum(2).double()
    equal = ((values[:, None, :] == values[:, :, None]) & v).sum(2).double()
    return below + (equal + 1) / 2


def spearman(a: Tensor, b: Tensor, valid: Tensor | None = None) -> Tensor:
    """Spearman rank correlation of two region-score vectors per image: (B, K), (B, K) -> (B,).

    Average ranks for ties (as ``scipy.stats.spearmanr``) over the entries valid in both
    (default: non-NaN in both). NaN where fewer than two entries are valid or one side is
    constant.
    """
    a, b, valid = _region_inputs(a, b, valid, "spearman")
    b = b.double()
    valid = valid & ~b.isnan()
    ra, rb = _average_ranks(a, valid), _average_ranks(b, valid)
    n = valid.sum(1).double().clamp(min=1)
    ra = torch.where(valid, ra - (ra * valid).sum(1, keepdim=True) / n[:, None], 0.0)
    rb = torch.where(valid, rb - (rb * valid).sum(1, keepdim=True) / n[:, None], 0.0)
    denominator = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    return torch.where(denominator > 0, (ra * rb).sum(1) / denominator.clamp(min=1e-300),
                       float("nan"))
