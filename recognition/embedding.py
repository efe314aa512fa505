"""Flip-fused face embeddings in batches (insightface's test-time protocol, SPEC §5.5)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from tqdm import tqdm


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (B, 3, H, W) -> float ``(x / 255 - 0.5) / 0.5`` (SPEC §5.1)."""
    return images.float().div_(255).sub_(0.5).div_(0.5)


@torch.no_grad()
def embed(model: nn.Module, images: torch.Tensor, flip: bool = True) -> torch.Tensor:
    """Embeddings of uint8 (B, 3, H, W) faces: ``f(x) + f(flip x)`` (or ``f(x)``), (B, D).

    The image and its mirror go through the model as one batch of 2B.
    """
    x = to_model_input(images)
    if not flip:
        return model(x)
    out = model(torch.cat([x, x.flip(-1)]))
    return out[:len(x)] + out[len(x):]


@torch.no_grad()
def embed_batches(model: nn.Module, batches: Iterable[torch.Tensor], flip: bool = True,
                  device: torch.device | str = "cpu", total: int | None = None,
                  desc: str = "embed") -> torch.Tensor:
    """Embed an iterable of uint8 image batches with a progress bar -> (N, D) float32, CPU."""
    features = []
    with tqdm(total=total, desc=desc, unit="img") as bar:
        for images in batches:
            features.append(embed(model, images.to(device), flip).float().cpu())
            bar.update(len(images))
    if not features:
        return torch.empty(0, 0)
    return torch.cat(features)


def image_batches(images: torch.Tensor, batch_size: int) -> Iterable[torch.Tensor]:
    """Consecutive batches of an (N, ...) tensor."""
    return (images[s:s + batch_size] for s in range(0, len(images), batch_size))


def load_backbone(network: str, checkpoint: str, device: torch.device | str = "cpu"
                  ) -> nn.Module:
    """``recognition.create_backbone(network)`` with the weights of ``checkpoint`` (a plain
    state_dict or a training checkpoint), in eval mode on ``device``."""
    from recognition import create_backbone

    return create_backbone(network, checkpoint_path=checkpoint).to(device).eval()
