"""Occlusion robustness per face region: verification with one region group erased at a time.

Samples verification pairs (half genuine) from an identity-labelled set of aligned faces with
FSE-25 masks, erases one region group (eyes, nose, mouth, ...) in the probe of every pair
(``fserasing.erase_batch`` with explicit classes) and measures 10-fold accuracy
(reference §5.5), TAR at FAR 1e-2 / 1e-1 and AUC beside the unoccluded baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fserasing import MaskedImageFolder, erase_batch
from parsing.core.errors import DataError
from parsing.core.labels import FSE25
from parsing.core.progress import progress_bar
from parsing.synth import SynthFaces
from recognition.evaluation.embedding import embed
from recognition.evaluation.roc import verification_report
from recognition.evaluation.verification import verification_accuracy

DEFAULT_GROUPS = ("eyes", "brows", "around_eyes", "nose", "mouth", "cheeks", "chin",
                  "forehead", "ears", "hair")


OCCLUSION_FARS = (1e-2, 1e-1)


def open_faces(data: str, masks: str | None) -> tuple[torch.utils.data.Dataset, np.ndarray]:
    """A data set of samples with ``image`` and ``mask``, and the identity of each item:
    a parsing.synth folder, or with ``masks`` a masked ImageFolder."""
    if masks is None:
        dataset = SynthFaces(data)
        return dataset, np.asarray(dataset.identities)
    dataset = MaskedImageFolder(data, masks)
    return dataset, np.asarray(dataset.targets)


def read_faces(dataset: torch.utils.data.Dataset, indices: np.ndarray, source: str
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 (N, 3, 112, 112) and masks (N, 112, 112) of the items ``indices``."""
    samples = [dataset[int(i)] for i in progress_bar(indices, desc="read faces", unit="img")]
    images = torch.stack([s["image"].as_subclass(torch.Tensor) for s in samples])
    masks = torch.stack([s["mask"].as_subclass(torch.Tensor) for s in samples])
    if images.shape[-2:] != (112, 112):
        raise DataError(f"{source}: faces must be aligned 112x112, got "
                        f"{tuple(images.shape[-2:])}")
    return images, masks


@torch.no_grad()
def normalised_embeddings(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 32,
                          flip: bool = True, device: torch.device | str = "cpu") -> torch.Tensor:
    """L2-normalised float64 embeddings (N, D) on the CPU of uint8 faces (N, 3, 112, 112)."""
    out = [embed(model, images[s:s + batch_size].to(device), flip).double().cpu()
           for s in range(0, len(images), batch_size)]
    return F.normalize(torch.cat(out), dim=1)


def pair_metrics(gallery_emb: torch.Tensor, probe_emb: torch.Tensor, issame: np.ndarray
                 ) -> dict:
    """Verification of pairs (gallery_emb[i], probe_emb[i]), normalised embeddings:
    10-fold accuracy and its std (reference §5.5), TAR at :data:`OCCLUSION_FARS` and AUC."""
    interleaved = torch.stack([gallery_emb, probe_emb], dim=1).flatten(0, 1)
    entry = verification_accuracy(interleaved, issame)
    report, _, _ = verification_report((gallery_emb * probe_emb).sum(1).numpy(), issame,
                                       OCCLUSION_FARS)
    entry.update(tar_at_far=report["tar_at_far"], auc=report["auc"])
    return entry


def group_ids(group: str) -> list[int]:
    """FSE-25 ids of a group spec: a class or group name, or several joined by ``+``
    (``"eyes+nose"`` erases both together)."""
    return FSE25.ids([g.strip() for g in group.split("+")])


def elsewhere_mask(masks: torch.Tensor, protected: Sequence[int],
                   generator: torch.Generator | None = None, exclude: Sequence[int] = ()
                   ) -> torch.Tensor:
    """Pixels (B, H, W) bool of the same area as the ``protected`` classes in each mask, taken
    outside them and outside ``exclude`` (e.g. the identity regions, when the control of
    another group must not erase them): whole face regions (FSE-25 1..24) in a random order
    per image, the last one cut to size in raster order. The matched-area control of an
    occlusion: erasing it shows what erasing that much face *anywhere* costs. If the other
    regions are smaller than the protected area, all of them are taken."""
    labels = masks.long().flatten(1)
    batch, pixels = labels.shape
    table = torch.zeros(256, dtype=torch.bool, device=masks.device)
    table[protected] = True
    target = table[labels].sum(1)
    allowed = torch.zeros(256, dtype=torch.bool, device=masks.device)
    allowed[1:FSE25.num_classes] = True
    allowed[protected] = False
    allowed[list(exclude)] = False
    draws = torch.rand(batch, 256, generator=generator, device=masks.device)
    position = draws.argsort(1).argsort(1)  # a random rank of each class per image
    inside = allowed[labels]
    key = torch.where(inside, position.gather(1, labels) * pixels +
                      torch.arange(pixels, device=masks.device), 256 * pixels)
    rank = key.argsort(1).argsort(1)
    return ((rank < target[:, None]) & inside).view(masks.shape)


def occlusion_table(model: torch.nn.Module, gallery: torch.Tensor, probes: torch.Tensor,
                    probe_masks: torch.Tensor, issame: np.ndarray,
                    groups: Sequence[str] = DEFAULT_GROUPS, fill: str = "random",
                    batch_size: int = 32, flip: bool = True, seed: int = 0,
                    device: torch.device | str = "cpu", elsewhere: bool = False,
                    protect: Sequence[int] = ()) -> dict[str, dict]:
    """Verification of pairs (gallery[i], probes[i]) with nothing, then each region group
    (a name, or names joined by ``+``), erased in the probes -> {"none" | group: metrics}.

    With ``elsewhere``, each group also gets a row ``"{group} elsewhere"``: the same pixel
    area per probe erased in other face regions (:func:`elsewhere_mask`), never in the
    classes ``protect`` (the identity regions, say), the control that tells a region that
    matters from an area that matters.
    """
    gallery_emb = normalised_embeddings(model, gallery, batch_size, flip, device)
    rows = [("none", None, False)]
    for group in groups:
        rows.append((group, group_ids(group), False))
        if elsewhere:
            rows.append((f"{group} elsewhere", group_ids(group), True))
    table = {}
    for name, ids, control in progress_bar(rows, desc="occlusions"):
        erased, area = probes, 0.0
        if ids is not None:
            generator = torch.Generator(device=device).manual_seed(seed)
            chunks = []
            for s in range(0, len(probes), batch_size):
                masks = probe_masks[s:s + batch_size].to(device)
                if control:  # erase the chosen pixels as one pseudo-region (class 1)
                    masks = elsewhere_mask(masks, ids, generator, protect).to(torch.uint8)
                    classes = [1]
                else:
                    classes = ids
                area += float(torch.isin(masks.long(), torch.tensor(classes, device=device))
                              .float().sum())
                chunks.append(erase_batch(probes[s:s + batch_size].to(device), masks, p=1.0,
                                          n_erase=list(classes), fill=fill,
                                          generator=generator).cpu())
            erased = torch.cat(chunks)
            area /= probe_masks.numel()
        probe_emb = normalised_embeddings(model, erased, batch_size, flip, device)
        table[name] = {**pair_metrics(gallery_emb, probe_emb, issame), "erased_area": area}
    return table
