"""Parsing metrics (reference §2.5): one confusion matrix over a whole set, then F1/IoU/accuracy.

Conventions used by :func:`parsing_scores`:

* ``confusion[t, p]`` counts pixels of true class ``t`` predicted as ``p``; pixels whose
  target is ``ignore_index`` (or outside the label set) are not counted.
* Per-class F1 = 2TP / (2TP + FP + FN), IoU = TP / (TP + FP + FN). A class that occurs in
  neither the targets nor the predictions has no score (``None``) and is left out of every
  mean (a mean over no classes is ``None`` too).
* ``mean_f1``: mean F1 over foreground classes (background, id 0, excluded).
* ``miou``: mean IoU over all classes including background; ``miou_foreground`` excludes it.
* ``pixel_accuracy``: trace / total over counted pixels.

Boundary F1 (:class:`BoundaryF1`; ``ConfusionMatrix(boundary_tolerances=(1, 2))`` adds it to
``scores()`` as ``"boundary"``): the contour F-measure of BSDS (Martin et al., PAMI 2004) per
class, as in Csurka et al. (BMVC 2013, "BF score", used for DeepLab-style boundary evaluation)
and the DAVIS F measure (Perazzi et al., CVPR 2016):

* The boundary of class ``c`` in a label map is the set of pixels labelled ``c`` with a
  4-neighbour of another label (both labels of the pair counted: the same pixels as the
  edge-branch targets, :func:`parsing.parser.losses.edge_targets`). Pixels whose target is
  ``ignore_index`` are left out of both maps, and pairs touching them do not count; the
  image frame is not a boundary.
* A predicted boundary pixel is matched when a target boundary pixel of the same class lies
  within Euclidean distance ``tolerance`` (pixels), and vice versa. There is no one-to-one
  assignment (BSDS' bipartite matching is approximated by this distance test, as in the BF
  score and DAVIS).
* Per class, over the whole set (counts summed over images, like the confusion matrix):
  precision P = matched predicted / predicted boundary pixels, recall R = matched target /
  target boundary pixels, F1 = 2PR / (P + R) (0 when either is 0). A class with boundary
  pixels in neither map has no score (``None``); ``mean_f1`` averages the scored foreground
  classes (background excluded, as for ``mean_f1`` above).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from parsing.core.errors import InputError
from parsing.core.progress import progress_bar
from parsing.parser.losses import edge_targets

__all__ = ["BoundaryF1", "ConfusionMatrix", "boundary_counts", "confusion_matrix",
           "parsing_scores", "format_scores"]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None = 255) -> torch.Tensor:
    """(K, K) int64 counts of (target, prediction) pairs, on the inputs' device (one bincount)."""
    if pred.shape != target.shape:
        raise InputError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    t, p = target.reshape(-1).long(), pred.reshape(-1).long()
    keep = (t >= 0) & (t < num_classes)
    if ignore_index is not None:
        keep &= t != ignore_index
    t, p = t[keep], p[keep]
    if p.numel() and (p.min() < 0 or p.max() >= num_classes):
        raise InputError(f"predicted ids must be in 0..{num_classes - 1}")
    return torch.bincount(t * num_classes + p, minlength=num_classes**2).view(
        num_classes, num_classes)


def _disk(radius: int, device: torch.device) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1, device=device)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2).float()[None, None]


def boundary_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                    tolerance: int = 1, ignore_index: int | None = 255) -> torch.Tensor:
    """(K, 4) int64 per-class boundary counts of (B, H, W) or (H, W) label maps:
    matched predicted, predicted, matched target, target boundary pixels (module docstring)."""
    if pred.shape != target.shape:
        raise InputError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if tolerance < 0:
        raise InputError(f"boundary tolerance must be >= 0, got {tolerance}")
    t, p = target.long(), pred.long()
    if t.dim() == 2:
        t, p = t[None], p[None]
    ignore = -1 if ignore_index is None else ignore_index
    valid = (t >= 0) & (t < num_classes) & (t != ignore)
    t, p = t.masked_fill(~valid, ignore), p.masked_fill(~valid, ignore)
    if p[valid].numel() and (p[valid].min() < 0 or p[valid].max() >= num_classes):
        raise InputError(f"predicted ids must be in 0..{num_classes - 1}")
    disk = _disk(tolerance, t.device)

    def per_class(labels: torch.Tensor) -> torch.Tensor:  # (B, K, H, W) bool boundaries
        edges = edge_targets(labels, ignore) & valid
        return F.one_hot(labels.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2).bool() \
            & edges[:, None]

    def near(b: torch.Tensor) -> torch.Tensor:  # within `tolerance` of a boundary pixel
        flat = b.flatten(0, 1)[:, None].float()
        return (F.conv2d(flat, disk, padding=tolerance) > 0.5).view_as(b)

    bp, bt = per_class(p), per_class(t)
    dims = (0, 2, 3)
    return torch.stack([(bp & near(bt)).sum(dims), bp.sum(dims),
                        (bt & near(bp)).sum(dims), bt.sum(dims)], dim=1)


class BoundaryF1:
    """Accumulates :func:`boundary_counts` over batches; ``scores()`` gives per-class and mean
    boundary F1 at ``tolerance`` pixels (module docstring)."""

    def __init__(self, num_classes: int, tolerance: int = 1, ignore_index: int | None = 255,
                 names: Sequence[str] | None = None) -> None:
        self.num_classes, self.tolerance, self.ignore_index = num_classes, tolerance, ignore_index
        self.names = list(names) if names is not None else [str(i) for i in range(num_classes)]
        self.counts = torch.zeros(num_classes, 4, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        c = boundary_counts(pred, target, self.num_classes, self.tolerance, self.ignore_index)
        self.counts = self.counts.to(c.device) + c

    def scores(self, background: int | None = 0) -> dict:
        c = self.counts.detach().cpu().to(torch.float64)
        matched_p, n_p, matched_t, n_t = c.unbind(1)
        precision = matched_p / n_p.clamp(min=1)
        recall = matched_t / n_t.clamp(min=1)
        f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
        occurs = (n_p + n_t) > 0
        rows = [{"id": i, "name": self.names[i],
                 "f1": float(f1[i]) if occurs[i] else None,
                 "precision": float(precision[i]) if n_p[i] > 0 else None,
                 "recall": float(recall[i]) if n_t[i] > 0 else None,
                 "target_pixels": int(n_t[i]), "predicted_pixels": int(n_p[i])}
                for i in range(self.num_classes)]
        fg = [r["f1"] for r in rows if r["id"] != background and r["f1"] is not None]
        return {"tolerance": self.tolerance,
                "mean_f1": sum(fg) / len(fg) if fg else None, "per_class": rows}


class ConfusionMatrix:
    """Accumulates :func:`confusion_matrix` over batches; ``scores()`` gives the metrics.

    With ``boundary_tolerances`` it also accumulates a :class:`BoundaryF1` per tolerance;
    ``scores()`` then has ``"boundary"``, a list of their scores.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255,
                 names: Sequence[str] | None = None,
                 boundary_tolerances: Sequence[int] = ()) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.names = list(names) if names is not None else [str(i) for i in range(num_classes)]
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.boundaries = [BoundaryF1(num_classes, t, ignore_index, self.names)
                           for t in boundary_tolerances]

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        cm = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        if self.matrix.device != cm.device:
            self.matrix = self.matrix.to(cm.device)
        self.matrix += cm
        for b in self.boundaries:
            b.update(pred, target)

    def scores(self, background: int | None = 0) -> dict:
        scores = parsing_scores(self.matrix, self.names, background)
        if self.boundaries:
            scores["boundary"] = [b.scores(background) for b in self.boundaries]
        return scores


def parsing_scores(matrix: torch.Tensor, names: Sequence[str] | None = None,
                   background: int | None = 0) -> dict:
    """Per-class and mean scores from a confusion matrix (see module docstring)."""
    cm = matrix.detach().cpu().to(torch.float64)
    k = cm.shape[0]
    names = list(names) if names is not None else [str(i) for i in range(k)]
    tp = cm.diagonal()
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    occurs = (tp + fp + fn) > 0
    f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
    iou = tp / (tp + fp + fn).clamp(min=1)
    fg = torch.ones(k, dtype=torch.bool)
    if background is not None:
        fg[background] = False
    total = cm.sum()

    def mean(values: torch.Tensor, sel: torch.Tensor) -> float | None:
        sel = sel & occurs
        return float(values[sel].mean()) if sel.any() else None

    def score(values: torch.Tensor, i: int) -> float | None:
        return float(values[i]) if occurs[i] else None

    return {
        "mean_f1": mean(f1, fg),
        "miou": mean(iou, torch.ones(k, dtype=torch.bool)),
        "miou_foreground": mean(iou, fg),
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else None,
        "num_pixels": int(total),
        "mean_f1_classes": [names[i] for i in range(k) if fg[i] and occurs[i]],
        "per_class": [
            {"id": i, "name": names[i], "f1": score(f1, i), "iou": score(iou, i),
             "support": int(cm[i].sum()), "predicted": int(cm[:, i].sum())}
            for i in range(k)
        ],
        "confusion_matrix": matrix.detach().cpu().tolist(),
    }


def format_scores(scores: dict) -> str:
    """A fixed-width table of per-class F1/IoU/support followed by the summary lines."""
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.2f}"

    lines = [f"{'id':>3} {'class':<18} {'F1':>7} {'IoU':>7} {'support':>10}"]
    for row in scores["per_class"]:
        lines.append(f"{row['id']:>3} {row['name']:<18} {pct(row['f1']):>7} "
                     f"{pct(row['iou']):>7} {row['support']:>10}")
    lines.append(f"mean F1 (foreground, {len(scores['mean_f1_classes'])} classes): "
                 f"{pct(scores['mean_f1'])}")
    lines.append(f"mIoU (all classes incl. background): {pct(scores['miou'])}   "
                 f"mIoU (foreground): {pct(scores['miou_foreground'])}")
    lines.append(f"pixel accuracy: {pct(scores['pixel_accuracy'])}")
    for b in scores.get("boundary", ()):
        lines.append(f"boundary F1 within {b['tolerance']} px (foreground mean): "
                     f"{pct(b['mean_f1'])}")
    return "\n".join(lines)


def confusion_over(parser: Callable[[torch.Tensor], torch.Tensor], batches: Iterable,
                   progress: bool = True, desc: str = "evaluate",
                   boundary_tolerances: Sequence[int] = ()) -> tuple[ConfusionMatrix, list[str]]:
    """Accumulate one confusion matrix over batches of :func:`parsing.parser.data.collate`
    (``image``, ``mask``, ``errors``).

    Returns the matrix (on the parser's device; with boundary F1 at ``boundary_tolerances``)
    and the errors of skipped samples.
    """
    ls = parser.label_set
    cm = ConfusionMatrix(ls.num_classes, ignore_index=255, names=ls.names,
                         boundary_tolerances=boundary_tolerances)
    skipped: list[str] = []
    for batch in progress_bar(batches, desc=desc, disable=not progress, leave=False):
        skipped += batch["errors"]
        if len(batch["image"]):
            pred = parser(batch["image"].to(parser.device, non_blocking=True))
            cm.update(pred, batch["mask"].to(parser.device, non_blocking=True))
    return cm, skipped
