"""Evaluation protocols written from synthetic faces: an IJB-C-layout protocol.

Each identity becomes a subject with one gallery template and one or two probe templates;
images within a template are grouped into media of one to three images (stills and short
"videos"); the subjects are split into galleries G1 and G2 (S1/S2 for ``name="ijbb"``).
Written: ``loose_crop/{n}.jpg`` and the ``meta/`` files of the public release, with every
probe compared to every gallery template in the 1:1 pair list.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from parsing.core.errors import InputError
from parsing.core.progress import progress_bar
from recognition.evaluation.ijbc import (
    GALLERY_NAMES,
    IdentificationProtocol,
    IJBProtocol,
    write_meta,
)


def write_synthetic_protocol(
    out_dir: str | os.PathLike,
    images: torch.Tensor,
    landmarks: torch.Tensor | np.ndarray,
    identities: torch.Tensor | np.ndarray,
    name: str = "ijbc",
    seed: int = 0,
) -> tuple[IJBProtocol, IdentificationProtocol]:
    """Write faces (N, 3, H, W) uint8 with five points (N, 5, 2) and identities (N,) as an
    IJB protocol in ``out_dir``; returns what :func:`recognition.evaluation.ijbc.read_protocol` and
    ``read_identification_protocol`` will read back."""
    if name not in GALLERY_NAMES:
        raise InputError(f"protocol name must be one of {tuple(GALLERY_NAMES)}, got {name!r}")
    images = torch.as_tensor(images)
    landmarks = np.asarray(torch.as_tensor(landmarks).cpu(), dtype=np.float32)
    identities = np.asarray(torch.as_tensor(identities).cpu(), dtype=np.int64)
    if images.dim() != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise InputError(f"images must be uint8 (N, 3, H, W), got {images.dtype} "
                         f"{tuple(images.shape)}")
    if landmarks.shape != (len(images), 5, 2) or identities.shape != (len(images),):
        raise InputError(f"need (N, 5, 2) landmarks and (N,) identities for {len(images)} "
                         f"images, got {landmarks.shape} and {identities.shape}")
    subjects, counts = np.unique(identities, return_counts=True)
    if len(subjects) < 2 or counts.min() < 2:
        raise InputError("need at least 2 identities with at least 2 images each, got "
                         f"{len(subjects)} identities with {counts.min()}+ images")
    rng = np.random.default_rng(seed)

    order, templates, medias = [], [], []
    gallery_templates, probe_templates, probe_subjects = [], [], []
    next_template, next_media = 1, 1
    for subject in subjects:
        members = np.flatnonzero(identities == subject)
        n_gallery = max(1, len(members) // 3)
        n_probe_templates = 2 if len(members) - n_gallery >= 4 else 1
        parts = [members[:n_gallery],
                 *np.array_split(members[n_gallery:], n_probe_templates)]
        for k, part in enumerate(parts):
            (gallery_templates if k == 0 else probe_templates).append(next_template)
            if k > 0:
                probe_subjects.append(subject)
            media_sizes = []
            while sum(media_sizes) < len(part):
                media_sizes.append(int(rng.integers(1, 4)))
            media_sizes[-1] -= sum(media_sizes) - len(part)
            for size in media_sizes:
                medias.extend([next_media] * size)
                next_media += 1
            order.extend(part.tolist())
            templates.extend([next_template] * len(part))
            next_template += 1

    order = np.asarray(order)
    root = Path(out_dir)
    crops = root / "loose_crop"
    crops.mkdir(parents=True, exist_ok=True)
    names = np.array([f"{k + 1}.jpg" for k in range(len(order))])
    for k, i in enumerate(progress_bar(order, desc="write loose_crop", unit="img")):
        Image.fromarray(images[i].permute(1, 2, 0).cpu().numpy()).save(crops / names[k],
                                                                       quality=95)
    gallery_templates = np.asarray(gallery_templates)
    probe_templates, probe_subjects = np.asarray(probe_templates), np.asarray(probe_subjects)
    pairs = np.array([(g, p) for g in gallery_templates for p in probe_templates])
    labels = subjects[np.searchsorted(gallery_templates, pairs[:, 0])] == \
        probe_subjects[np.searchsorted(probe_templates, pairs[:, 1])]
    protocol = IJBProtocol(root, name, names, np.asarray(templates), np.asarray(medias),
                           landmarks[order], rng.uniform(0.8, 1.0, len(order)).astype(np.float32),
                           pairs, labels)
    in_first = np.zeros(len(subjects), dtype=bool)
    in_first[rng.permutation(len(subjects))[:len(subjects) // 2]] = True
    first, second = GALLERY_NAMES[name]
    identification = IdentificationProtocol(
        {first: (gallery_templates[in_first], subjects[in_first]),
         second: (gallery_templates[~in_first], subjects[~in_first])},
        probe_templates, probe_subjects)
    write_meta(protocol, identification)
    return protocol, identification
