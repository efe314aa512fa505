"""Evaluate an attribute model on a data set, and plot the result.

The model's attributes are matched to the data set's by name, so a model trained on the
synthetic set's 11 attributes is scored on those 11 of CelebA's 40; expressions need the same
classes in the same order.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader

from parsing.core.errors import InputError
from parsing.core.pixels import normalise
from parsing.core.progress import progress_bar
from parsing.core.samples import BadSample
from recognition.attributes.data import AttributeDataset
from recognition.attributes.metrics import AttributeMeter, ExpressionMeter
from recognition.attributes.models import AttributeNet
from recognition.data.datasets import collate_faces

__all__ = ["evaluate", "plot_attributes", "plot_confusion", "shared_attributes"]


def shared_attributes(model: AttributeNet, dataset: AttributeDataset
                      ) -> tuple[list[str], list[int], list[int]]:
    """The attribute names both know, their model columns and their data-set columns."""
    names = [n for n in model.attribute_names if n in dataset.attribute_names]
    return (names, [model.attribute_names.index(n) for n in names],
            [dataset.attribute_names.index(n) for n in names])


@torch.no_grad()
def evaluate(model: AttributeNet, dataset: AttributeDataset, batch_size: int = 64,
             workers: int = 0, progress: bool = True) -> dict[str, Any]:
    """Attribute and expression metrics (:mod:`recognition.attributes.metrics`) of ``model``
    (in eval mode, on its device) over ``dataset``; ``skipped`` counts unreadable images."""
    names, model_cols, data_cols = shared_attributes(model, dataset)
    has_expressions = dataset.expressions is not None and model.num_expressions > 0
    if has_expressions and model.expression_names != dataset.expression_names:
        raise InputError(f"the model's expressions {model.expression_names} are not the data "
                         f"set's {dataset.expression_names}")
    if not names and not has_expressions:
        raise InputError(f"the model predicts none of the data set's labels (model: "
                         f"{model.attribute_names + model.expression_names})")
    device = next(model.parameters()).device
    attributes = AttributeMeter(names) if names else None
    expressions = ExpressionMeter(model.expression_names) if has_expressions else None
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                        collate_fn=_collate)
    skipped = 0
    model.eval()
    for batch in progress_bar(loader, desc="evaluate", unit="batch", disable=not progress):
        if batch is None:  # every sample unreadable (skip_bad)
            continue
        skipped += batch["skipped"]
        attr_logits, expr_logits = model.split(model(normalise(batch["image"].to(device))))
        if attributes is not None:
            attributes.update(attr_logits[:, model_cols], batch["attributes"][:, data_cols])
        if expressions is not None:
            expressions.update(expr_logits, batch["expression"])
    result: dict[str, Any] = {"images": len(dataset) - skipped, "skipped": skipped}
    if attributes is not None:
        result.update(attributes.result())
    if expressions is not None:
        result["expression"] = expressions.result()
    return result


def _collate(batch: list[dict[str, Any] | BadSample]) -> dict[str, Any] | None:
    """``collate_faces`` without filling: an evaluation counts each readable image once."""
    good = [s for s in batch if not isinstance(s, BadSample)]
    if not good:
        return None
    out = collate_faces(good)
    out["skipped"] = len(batch) - len(good)
    return out


def plot_attributes(result: dict[str, Any], path: str | Path, title: str = "") -> None:
    """Bar chart: accuracy and balanced accuracy of each attribute."""
    rows = result["attributes"]
    fig = Figure(figsize=(max(6.0, 0.32 * len(rows) + 2), 4.2))
    ax = fig.subplots()
    x = torch.arange(len(rows)).numpy()
    for offset, key, label in ((-0.2, "accuracy", "accuracy"),
                               (0.2, "balanced_accuracy", "balanced accuracy")):
        ax.bar(x + offset, [0.0 if math.isnan(r[key]) else r[key] for r in rows], 0.4,
               label=label)
    ax.set_xticks(x, [r["attribute"] for r in rows], rotation=70, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.axhline(0.5, color="grey", lw=0.6, ls=":")
    ax.set_title(title or f"mean accuracy {result['mean_accuracy']:.3f}, mean balanced "
                          f"{result['mean_balanced_accuracy']:.3f}")
    ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=120, bbox_inches="tight")


def plot_confusion(result: dict[str, Any], path: str | Path) -> None:
    """The expression confusion matrix, each row (true class) as shares of its images."""
    names = [c["expression"] for c in result["classes"]]
    counts = torch.tensor(result["confusion"], dtype=torch.float64)
    shares = counts / counts.sum(1, keepdim=True).clamp(min=1)
    fig = Figure(figsize=(1.0 + 0.7 * len(names), 0.8 + 0.6 * len(names)))
    ax = fig.subplots()
    ax.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{shares[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {result['accuracy']:.3f}, mean class "
                 f"{result['mean_class_accuracy']:.3f}", fontsize=9)
    fig.savefig(path, dpi=120, bbox_inches="tight")
