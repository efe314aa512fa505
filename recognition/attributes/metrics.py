"""Metrics of attribute and expression predictions, accumulated batch by batch.

Attributes (multi-label, logit > 0 means present): per-attribute accuracy, its mean over
attributes (CelebA's usual figure), and balanced accuracy (TPR + TNR) / 2, which is not
fooled by CelebA's imbalance (an attribute present in 2 % of faces gets 98 % accuracy from a
constant "absent"). Expressions (single-label, argmax): accuracy, mean class accuracy (the
mean recall over classes, RAF-DB's usual second figure) and the confusion matrix (rows: true
class, columns: predicted).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["AttributeMeter", "ExpressionMeter"]


class AttributeMeter:
    """Confusion counts per attribute: ``update(logits (B, A), truth (B, A) of 0/1)``."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.tp, self.tn, self.fp, self.fn = (torch.zeros(len(names), dtype=torch.long)
                                              for _ in range(4))

    def update(self, logits: torch.Tensor, truth: torch.Tensor) -> None:
        pred, true = logits.detach().cpu() > 0, truth.detach().cpu() > 0.5
        self.tp += (pred & true).sum(0)
        self.tn += (~pred & ~true).sum(0)
        self.fp += (pred & ~true).sum(0)
        self.fn += (~pred & true).sum(0)

    def result(self) -> dict[str, Any]:
        """``mean_accuracy``, ``mean_balanced_accuracy`` and a row per attribute (accuracy,
        balanced accuracy, positives, count). A rate without its examples (no positive or no
        negative) is NaN and left out of the balanced mean."""
        rows, acc, bal = [], [], []
        for k, name in enumerate(self.names):
            tp, tn, fp, fn = (int(t[k]) for t in (self.tp, self.tn, self.fp, self.fn))
            n, pos, neg = tp + tn + fp + fn, tp + fn, tn + fp
            accuracy = (tp + tn) / n if n else math.nan
            tpr = tp / pos if pos else math.nan
            tnr = tn / neg if neg else math.nan
            balanced = (tpr + tnr) / 2
            rows.append({"attribute": name, "accuracy": accuracy, "balanced_accuracy": balanced,
                         "tpr": tpr, "tnr": tnr, "positives": pos, "count": n})
            acc.append(accuracy)
            bal.append(balanced)
        return {"mean_accuracy": _mean(acc), "mean_balanced_accuracy": _mean(bal),
                "attributes": rows}


class ExpressionMeter:
    """Confusion matrix of expressions: ``update(logits (B, E), truth (B,))``."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.confusion = torch.zeros(len(names), len(names), dtype=torch.long)

    def update(self, logits: torch.Tensor, truth: torch.Tensor) -> None:
        k = len(self.names)
        pred, true = logits.detach().cpu().argmax(1), truth.detach().cpu().long()
        self.confusion += torch.bincount(true * k + pred, minlength=k * k).view(k, k)

    def result(self) -> dict[str, Any]:
        """``accuracy``, ``mean_class_accuracy`` (over classes with examples), per-class
        recall and the confusion matrix."""
        total = int(self.confusion.sum())
        per_class = self.confusion.sum(1)
        recall = [int(self.confusion[c, c]) / int(per_class[c]) if per_class[c] else math.nan
                  for c in range(len(self.names))]
        return {"accuracy": int(self.confusion.trace()) / total if total else math.nan,
                "mean_class_accuracy": _mean(recall),
                "classes": [{"expression": n, "accuracy": r, "count": int(c)}
                            for n, r, c in zip(self.names, recall, per_class.tolist(),
                                               strict=True)],
                "confusion": self.confusion.tolist()}


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan
