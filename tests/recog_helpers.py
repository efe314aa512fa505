"""Helpers for the recognition tests: tiny backbones (registered on import, so a training run
can use them with ``--import tests.recog_helpers``) and a small face set writer."""

import torch
from torch import nn

from recognition.backbones import register_backbone


class TinyNet(nn.Module):
    """8x8 average pool -> small MLP (optionally a BatchNorm) -> embedding."""

    def __init__(self, num_features: int = 512, hidden: int = 32, batch_norm: bool = True):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(8)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8) if batch_norm else nn.Identity()
        self.act = nn.PReLU(8)
        self.fc1 = nn.Linear(8 * 8 * 8, hidden)
        self.fc2 = nn.Linear(hidden, num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.conv(self.pool(x))))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


@register_backbone
def tiny_cnn(num_features: int = 512, **kwargs) -> nn.Module:
    return TinyNet(num_features, batch_norm=True, **kwargs)


@register_backbone
def tiny_nobn(num_features: int = 512, **kwargs) -> nn.Module:
    return TinyNet(num_features, batch_norm=False, **kwargs)


def write_face_set(root, identities: int, per_identity: int, seed: int = 0, size: int = 112):
    """A small set in the ``parsing.synth`` layout (images/, labels_25/, identities.csv).

    Each identity is a random 8x8 colour pattern (plus noise per image), so identities are
    learnable in a few steps; label maps are random 8x8 blocks of FSE-25 ids.
    """
    from pathlib import Path

    import numpy as np
    from PIL import Image

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels_25").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    cell = size // 8
    rows = ["frame_id,identity"]
    for i in range(identities):
        pattern = rng.integers(0, 256, (8, 8, 3))
        for k in range(per_identity):
            n = i * per_identity + k
            img = np.kron(pattern, np.ones((cell, cell, 1))) + rng.normal(0, 20, (size, size, 3))
            image = Image.fromarray(img.clip(0, 255).astype(np.uint8))
            image.save(root / "images" / f"{n:06d}.png")
            labels = np.kron(rng.integers(0, 25, (8, 8)), np.ones((cell, cell))).astype(np.uint8)
            Image.fromarray(labels, mode="L").save(root / "labels_25" / f"{n:06d}_seg.png")
            rows.append(f"{n:06d},{100 + i}")
    (root / "identities.csv").write_text("\n".join(rows) + "\n")
    return root
