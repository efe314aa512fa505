"""Faithfulness metrics for any explanation map: deletion and insertion (reference §4.3), and a
deletion curve over face regions."""

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

__all__ = ["Curve", "deletion", "insertion", "perturbation_curve", "region_deletion"]


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
