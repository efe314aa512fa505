"""Small data sets written in the published layouts, and a kill switch for training runs,
for the parsing tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from parsing.core.io import write_label_map


def blob_sample(rng: np.random.Generator, size: int = 32, n_classes: int = 25):
    """An image whose pixels are a noisy colour per class, and its label map."""
    label_map = np.zeros((size, size), dtype=np.uint8)
    for _ in range(6):
        c = rng.integers(1, n_classes)
        y, x = rng.integers(0, size - 8, 2)
        h, w = rng.integers(4, size // 2, 2)
        label_map[y:y + h, x:x + w] = c
    palette = np.random.default_rng(123).integers(0, 256, (256, 3))
    image = palette[label_map] + rng.normal(0, 8, (size, size, 3))
    return image.clip(0, 255).astype(np.uint8), label_map


def write_synth_layout(root: Path, n: int, size: int = 32, seed: int = 0,
                       failed: tuple[int, ...] = ()) -> Path:
    """A ``python -m parsing.synth`` layout of blob images: ``images/{id:06d}.png``,
    ``labels_25/{id:06d}_seg.png``, ``anno_list.csv``, ``landmarks.csv``, ``identities.csv``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels_25").mkdir(exist_ok=True)
    rows = ["frame_id,with_25"]
    for i in range(n):
        image, label_map = blob_sample(rng, size)
        Image.fromarray(image).save(root / "images" / f"{i:06d}.png")
        if i not in failed:
            write_label_map(root / "labels_25" / f"{i:06d}_seg.png", label_map)
        rows.append(f"{i},{0 if i in failed else 1}")
    (root / "anno_list.csv").write_text("\n".join(rows) + "\n")
    header = "frame_id," + ",".join(f"{a}{k}" for k in range(1, 6) for a in "xy")
    (root / "landmarks.csv").write_text(
        "\n".join([header] + [f"{i}" + ",0.0" * 10 for i in range(n)]) + "\n")
    (root / "identities.csv").write_text(
        "\n".join(["frame_id,identity"] + [f"{i},{i}" for i in range(n)]) + "\n")
    return root


class Killed(Exception):
    """Raised by :func:`killed_after_checkpoint` where a real run would have been killed."""


@contextlib.contextmanager
def killed_after_checkpoint(monkeypatch: pytest.MonkeyPatch,
                            when: Callable[[dict[str, Any]], bool]) -> Iterator[None]:
    """The training run inside the block stops (raises :class:`Killed`) right after it wrote
    a ``checkpoint.pt`` for which ``when(state)`` holds, as a run killed there would."""
    import parsing.core.training as core_training

    real_save = core_training.atomic_save

    def save_then_die(obj: Any, path: Path) -> None:
        real_save(obj, path)
        if path.name == "checkpoint.pt" and when(obj):
            raise Killed

    monkeypatch.setattr(core_training, "atomic_save", save_then_die)
    try:
        with pytest.raises(Killed):
            yield
    finally:
        monkeypatch.setattr(core_training, "atomic_save", real_save)
