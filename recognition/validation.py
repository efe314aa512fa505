"""Verification during training: pair accuracy on synthetic identities (``synth:DIR``).

The protocol follows LFW's as insightface computes it: embeddings of each image and its
mirror image are summed and L2-normalised, pairs are scored by cosine similarity, and the
accuracy is the mean over 10 folds of the test-fold accuracy at the threshold that is best on
the other nine.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from parsing.errors import DataError
from recognition.augment import normalise
from recognition.data import SynthFaceSet

__all__ = ["SynthPairs", "embed", "pair_accuracy"]


@torch.no_grad()
def embed(backbone: nn.Module, images: torch.Tensor, batch_size: int = 64,
          flip: bool = True) -> torch.Tensor:
    """L2-normalised embeddings (N, D) of uint8 faces (N, 3, H, W), with mirror-image TTA.

    Batches go to the backbone's device; the result stays there.
    """
    device = next(backbone.parameters()).device
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = normalise(images[start:start + batch_size].to(device))
        e = backbone(x).float()
        if flip:
            e = e + backbone(x.flip(-1)).float()
        out.append(nn.functional.normalize(e, dim=1))
    return torch.cat(out)


def _best_threshold(scores: torch.Tensor, same: torch.Tensor) -> float:
    """Threshold t maximising the accuracy of ``score >= t`` (ties kept together), halfway
    to the next lower score so that unseen pairs near the boundary are not all misread."""
    order = scores.argsort(descending=True)
    s, y = scores[order], same[order].double()
    tp = y.cumsum(0)
    fp = torch.arange(1, len(s) + 1, dtype=torch.float64, device=s.device) - tp
    accuracy = tp + (len(s) - y.sum() - fp)
    last_of_tie = torch.ones_like(s, dtype=torch.bool)
    last_of_tie[:-1] = s[:-1] > s[1:]
    accuracy = torch.where(last_of_tie, accuracy, -1.0)
    k = int(accuracy.argmax())
    if accuracy[k] < len(s) - y.sum():  # calling nothing "same" is better
        return float(s[0]) + 1.0
    return float(s[k] + s[k + 1]) / 2 if k + 1 < len(s) else float(s[k]) - 1.0


def pair_accuracy(scores: torch.Tensor, same: torch.Tensor, folds: int = 10
                  ) -> tuple[float, float]:
    """Mean and std of the k-fold verification accuracy of similarity ``scores`` (N,)."""
    n = scores.shape[0]
    folds = max(2, min(folds, n))
    fold_of = torch.arange(n, device=scores.device) * folds // n
    accuracies = []
    for k in range(folds):
        test = fold_of == k
        t = _best_threshold(scores[~test], same[~test])
        accuracies.append(((scores[test] >= t) == same[test]).double().mean())
    acc = torch.stack(accuracies)
    return float(acc.mean()), float(acc.std(unbiased=False))


class SynthPairs:
    """Genuine and impostor pairs of a ``parsing.synth`` folder (held-out identities).

    Genuine pairs are every pair of images of the same identity (at most ``max_pairs // 2``,
    chosen with ``seed``); as many impostor pairs are drawn among different identities.
    """

    def __init__(self, root: str | os.PathLike, max_pairs: int = 6000, seed: int = 0) -> None:
        self.name = f"synth:{Path(root).name}"
        dataset = SynthFaceSet(root)
        samples = [dataset[i] for i in range(len(dataset))]
        self.images = torch.stack([s["image"] for s in samples])
        labels = dataset.labels
        g = torch.Generator().manual_seed(seed)
        i, j = torch.triu_indices(len(labels), len(labels), offset=1)
        genuine = labels[i] == labels[j]
        if not genuine.any() or genuine.all():
            raise DataError(f"{root}: need several images of several identities for pairs")
        gi = torch.nonzero(genuine).squeeze(1)
        gi = gi[torch.randperm(len(gi), generator=g)[: max_pairs // 2]]
        ii = torch.nonzero(~genuine).squeeze(1)
        ii = ii[torch.randperm(len(ii), generator=g)[: len(gi)]]
        chosen = torch.cat([gi, ii])
        chosen = chosen[torch.randperm(len(chosen), generator=g)]  # folds mix both kinds
        self.pairs = torch.stack([i[chosen], j[chosen]], 1)
        self.same = genuine[chosen]

    def __len__(self) -> int:
        return len(self.pairs)

    def evaluate(self, backbone: nn.Module, batch_size: int = 64) -> dict[str, float]:
        """``{"accuracy", "std"}`` of ``backbone`` (put in eval mode by the caller)."""
        emb = embed(backbone, self.images, batch_size).cpu()
        scores = (emb[self.pairs[:, 0]] * emb[self.pairs[:, 1]]).sum(1)
        acc, std = pair_accuracy(scores, self.same)
        return {"accuracy": acc, "std": std}
