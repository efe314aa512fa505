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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

from parsing.core.errors import InputError
from parsing.core.progress import progress_bar

__all__ = ["ConfusionMatrix", "confusion_matrix", "parsing_scores", "format_scores"]


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


class ConfusionMatrix:
    """Accumulates :func:`confusion_matrix` over batches; ``scores()`` gives the metrics."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255,
                 names: Sequence[str] | None = None) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.names = list(names) if names is not None else [str(i) for i in range(num_classes)]
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        cm = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        if self.matrix.device != cm.device:
            self.matrix = self.matrix.to(cm.device)
        self.matrix += cm

    def scores(self, background: int | None = 0) -> dict:
        return parsing_scores(self.matrix, self.names, background)


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
    return "\n".join(lines)


def confusion_over(parser: Callable[[torch.Tensor], torch.Tensor], batches: Iterable,
                   progress: bool = True,
                   desc: str = "evaluate") -> tuple[ConfusionMatrix, list[str]]:
    """Accumulate one confusion matrix over batches of :func:`parsing.parser.data.collate`
    (``image``, ``mask``, ``errors``).

    Returns the matrix (on the parser's device) and the errors of skipped samples.
    """
    ls = parser.label_set
    cm = ConfusionMatrix(ls.num_classes, ignore_index=255, names=ls.names)
    skipped: list[str] = []
    for batch in progress_bar(batches, desc=desc, disable=not progress, leave=False):
        skipped += batch["errors"]
        if len(batch["image"]):
            pred = parser(batch["image"].to(parser.device, non_blocking=True))
            cm.update(pred, batch["mask"].to(parser.device, non_blocking=True))
    return cm, skipped
