"""Training losses for the parser: class-weighted CE, edge loss, self-distillation (reference §6).

* Class weights come from training-set pixel frequencies ``f_c`` (:func:`class_weights`):
  ``"inverse_sqrt"`` gives ``w_c = 1 / sqrt(f_c)`` (gentle; default), ``"median_frequency"``
  gives ``w_c = median(f) / f_c`` (Eigen & Fergus, with global frequencies). Both are scaled so
  the pixel-weighted mean weight is 1; classes with no pixels get weight 0 (they never occur
  as targets).
* Edge targets (:func:`edge_targets`) mark both pixels of every 4-neighbour pair whose labels
  differ (pairs touching an ignored pixel do not count).
* :class:`ParsingLoss` adds ``edge_weight`` times an edge term: binary CE on the edge logits
  for models with an edge branch (``scanet``, positive pixels re-weighted by the batch's
  non-edge/edge ratio), otherwise the segmentation CE averaged over edge pixels only
  ("edge-focused" CE) for models without one.
* :func:`distillation_loss`: ``T^2 * KL(teacher || student)`` of temperature-``T`` softmaxes,
  averaged over labelled pixels (self-distillation: the teacher is a frozen copy of the
  trained parser).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from parsing.core.errors import InputError
from parsing.parser.models import ParserOutput

__all__ = ["ParsingLoss", "class_weights", "distillation_loss", "edge_targets"]

CLASS_WEIGHT_METHODS = ("inverse_sqrt", "median_frequency")


def class_weights(counts: torch.Tensor, method: str = "inverse_sqrt") -> torch.Tensor:
    """(K,) float32 loss weights from (K,) per-class pixel counts (see module docstring)."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    present = counts > 0
    if not present.any():
        raise InputError("class weights: the training labels contain no counted pixels")
    freq = counts / counts.sum()
    w = torch.zeros_like(freq)
    if method == "inverse_sqrt":
        w[present] = freq[present].rsqrt()
    elif method == "median_frequency":
        w[present] = freq[present].median() / freq[present]
    else:
        raise InputError(f"unknown class-weight method {method!r}; use one of "
                         f"{', '.join(CLASS_WEIGHT_METHODS)}")
    return (w / (w * freq).sum()).to(torch.float32)


def edge_targets(labels: torch.Tensor, ignore_index: int | None = 255) -> torch.Tensor:
    """(B, H, W) bool: pixels with a differently labelled 4-neighbour."""
    valid = (labels != ignore_index if ignore_index is not None
             else torch.ones_like(labels, dtype=torch.bool))
    vert = (labels[:, 1:] != labels[:, :-1]) & valid[:, 1:] & valid[:, :-1]  # (B, H-1, W)
    horiz = (labels[:, :, 1:] != labels[:, :, :-1]) & valid[:, :, 1:] & valid[:, :, :-1]
    edges = torch.zeros_like(labels, dtype=torch.bool)
    edges[:, 1:] |= vert
    edges[:, :-1] |= vert
    edges[:, :, 1:] |= horiz
    edges[:, :, :-1] |= horiz
    return edges


class ParsingLoss(nn.Module):
    """Cross-entropy (optionally class-weighted) plus ``edge_weight`` x edge loss.

    ``forward(output, target)`` takes logits (B, K, H, W) or a :class:`ParserOutput` and int64
    targets (B, H, W); returns ``(total, parts)`` with ``parts`` the detached terms (tensors:
    reading them waits for the device).
    """

    def __init__(self, weight: torch.Tensor | None = None, edge_weight: float = 0.0,
                 ignore_index: int = 255) -> None:
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)
        self.edge_weight = edge_weight
        self.ignore_index = ignore_index

    def forward(self, output: torch.Tensor | ParserOutput,
                target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        logits, edge_logits = (output if isinstance(output, ParserOutput) else (output, None))
        pixel_ce = F.cross_entropy(logits.float(), target, weight=self.weight,
                                   ignore_index=self.ignore_index, reduction="none")
        valid = target != self.ignore_index
        if self.weight is not None:
            pixel_w = self.weight[target.clamp(0, len(self.weight) - 1)] * valid
        else:
            pixel_w = valid.to(pixel_ce.dtype)
        seg = pixel_ce.sum() / pixel_w.sum().clamp(min=1e-12)
        parts = {"ce": seg.detach()}
        total = seg
        if self.edge_weight > 0:
            edges = edge_targets(target, self.ignore_index)
            if edge_logits is not None:
                pos = edges.sum().clamp(min=1)
                neg = (valid & ~edges).sum()
                edge = F.binary_cross_entropy_with_logits(
                    edge_logits[:, 0].float()[valid], edges[valid].float(),
                    pos_weight=(neg / pos).to(pixel_ce.dtype))
            else:
                edge = (pixel_ce * edges).sum() / (pixel_w * edges).sum().clamp(min=1e-12)
            parts["edge"] = edge.detach()
            total = total + self.edge_weight * edge
        return total, parts


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      target: torch.Tensor | None = None, temperature: float = 1.0,
                      ignore_index: int = 255) -> torch.Tensor:
    """Pixel-wise ``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, mean over pixels.

    With ``target`` given, pixels labelled ``ignore_index`` are left out.
    """
    log_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_t = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum(1)  # (B, H, W)
    if target is not None:
        valid = target != ignore_index
        kl = (kl * valid).sum() / valid.sum().clamp(min=1)
    else:
        kl = kl.mean()
    return kl * temperature**2
