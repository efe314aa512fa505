"""Verification during training, on ``.bin`` sets (LFW, CFP-FP, AgeDB-30) or synthetic pairs.

A thin adapter over :mod:`recognition.evaluation.verification` and
:mod:`recognition.evaluation.embedding`: the protocol is insightface's (flip-fused,
L2-normalised embeddings, squared distances, 10 folds, best threshold on the other nine).
Targets are named as in ``--val``: a path to a ``.bin`` file, or ``synth:DIR`` for a
``parsing.synth`` folder of held-out identities, whose pairs are drawn with
:func:`recognition.evaluation.verification.sample_pairs` (half genuine, fixed seed).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from parsing.core.errors import InputError
from recognition.data.datasets import SynthFaceSet
from recognition.evaluation.embedding import embed
from recognition.evaluation.verification import (
    decode_images,
    distinct_pairs,
    load_bin,
    sample_pairs,
    verification_accuracy,
)

__all__ = ["VerificationSet"]


class VerificationSet:
    """Images (M, 3, 112, 112) uint8 and N pairs of indices into them with ``issame``."""

    def __init__(self, name: str, images: torch.Tensor, first: torch.Tensor,
                 second: torch.Tensor, issame: torch.Tensor) -> None:
        self.name, self.images = name, images
        self.first, self.second, self.issame = first, second, issame

    def __len__(self) -> int:
        return len(self.issame)

    @classmethod
    def from_target(cls, target: str) -> VerificationSet:
        """``synth:DIR`` or a ``.bin`` path."""
        if target.startswith("synth:"):
            return cls.from_synth(target.split(":", 1)[1])
        if target.endswith(".bin"):
            return cls.from_bin(target)
        raise InputError(f"verification target {target!r}: give a .bin file or synth:DIR")

    @classmethod
    def from_bin(cls, path: str | os.PathLike) -> VerificationSet:
        blobs, issame = load_bin(path)
        images = decode_images(blobs, source=path, progress=False)
        n = len(issame)
        return cls(Path(path).stem, images, torch.arange(0, 2 * n, 2),
                   torch.arange(1, 2 * n, 2), torch.from_numpy(issame))

    @classmethod
    def from_synth(cls, root: str | os.PathLike, max_pairs: int = 6000,
                   seed: int = 0) -> VerificationSet:
        dataset = SynthFaceSet(root)
        images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
        labels = dataset.labels.numpy()
        n_pairs = min(max_pairs, 10 * len(dataset), 2 * min(distinct_pairs(labels)))
        n_pairs -= n_pairs % 10  # whole folds
        first, second, issame = sample_pairs(labels, n_pairs, seed)
        return cls(Path(root).name, images, torch.from_numpy(first),
                   torch.from_numpy(second), torch.from_numpy(issame))

    @torch.no_grad()
    def evaluate(self, backbone: nn.Module, batch_size: int = 64) -> dict:
        """insightface's 10-fold accuracy of ``backbone`` (the caller puts it in eval mode)."""
        device = next(backbone.parameters()).device
        features = torch.cat([
            embed(backbone, self.images[s:s + batch_size].to(device)).float().cpu()
            for s in range(0, len(self.images), batch_size)])
        features = nn.functional.normalize(features, dim=1)
        pairs = torch.stack([features[self.first], features[self.second]], 1).flatten(0, 1)
        return verification_accuracy(pairs, self.issame.numpy())
