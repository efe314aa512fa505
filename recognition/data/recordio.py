"""Face data sets in insightface's RecordIO layout: pack an ImageFolder into ``train.rec``.

The format (frames, ``.idx``, ``IRHeader``, the insightface key layout) is read and written by
:mod:`parsing.core.recordio`. ``python -m recognition.make_recordio --images DIR --out DIR``
packs an ImageFolder.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from parsing.core.errors import DataError, InputError
from parsing.core.io import IMAGE_EXTENSIONS
from parsing.core.progress import progress_bar
from parsing.core.recordio import RecordIOWriter, pack

__all__ = ["pack_image_folder", "write_recordio"]


def _encode_image(image: bytes | np.ndarray | torch.Tensor, quality: int) -> bytes:
    if isinstance(image, bytes):
        return image
    arr = image.permute(1, 2, 0).cpu().numpy() if isinstance(image, torch.Tensor) else image
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)).save(out, "JPEG", quality=quality)
    return out.getvalue()


def write_recordio(
    out_dir: str | os.PathLike,
    samples: Iterable[tuple[bytes | np.ndarray | torch.Tensor, int]],
    *,
    quality: int = 95,
) -> int:
    """Write ``out_dir/train.rec`` + ``train.idx`` in insightface's layout; returns #images.

    ``samples`` yields ``(image, label)`` grouped by label with labels 0, 1, 2, ... in order;
    an image is encoded bytes (kept as they are) or an (H, W, 3) array / (3, H, W) uint8
    tensor (JPEG-encoded at ``quality``). Images get keys 1..N, identity records N+1..N+K and
    the header record is key 0, as insightface's packing scripts write them.
    """
    out = Path(out_dir)
    ranges: list[tuple[int, int]] = []
    key = 0
    with RecordIOWriter(out / "train.rec", out / "train.idx") as writer:
        for image, label in samples:
            label = int(label)
            key += 1
            if label == len(ranges):
                ranges.append((key, key + 1))
            elif label == len(ranges) - 1:
                ranges[-1] = (ranges[-1][0], key + 1)
            else:
                raise InputError(
                    f"write_recordio: samples must be grouped by label 0, 1, 2, ...; got label "
                    f"{label} after {len(ranges) - 1}")
            writer.write(key, pack(float(label), _encode_image(image, quality), id=key))
        n_images = key
        for label, (first, end) in enumerate(ranges):
            writer.write(n_images + 1 + label, pack([first, end], b"", id=n_images + 1 + label))
        writer.write(0, pack([n_images + 1, n_images + 1 + len(ranges)], b""))
    return n_images


def pack_image_folder(root: str | os.PathLike, out_dir: str | os.PathLike) -> int:
    """Pack an ImageFolder (one folder per identity, sorted) into ``out_dir/train.rec``."""
    root = Path(root)
    classes = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not classes:
        raise DataError(f"{root}: no identity folders")
    files = [
        (f, label) for label, c in enumerate(classes)
        for f in sorted(c.rglob("*")) if f.suffix.lower() in IMAGE_EXTENSIONS
    ]
    samples = ((f.read_bytes(), label)
               for f, label in progress_bar(files, desc="packing", unit="img"))
    return write_recordio(out_dir, samples)
