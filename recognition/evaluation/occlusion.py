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
    """A data set whose items start with (image, mask), and the identity of each item:
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
    images = torch.stack([s[0].as_subclass(torch.Tensor) for s in samples])
    masks = torch.stack([s[1].as_subclass(torch.Tensor) for s in samples])
    if images.shape[-2:] != (112, 112):
        raise DataError(f"{source}: faces must be aligned 112x112, got "
                        f"{tuple(images.shape[-2:])}")
    return images, masks


@torch.no_grad()
def _normalised_embeddings(model, images, batch_size, flip, device) -> torch.Tensor:
    out = [embed(model, images[s:s + batch_size].to(device), flip).double().cpu()
           for s in range(0, len(images), batch_size)]
    return F.normalize(torch.cat(out), dim=1)


def occlusion_table(model: torch.nn.Module, gallery: torch.Tensor, probes: torch.Tensor,
                    probe_masks: torch.Tensor, issame: np.ndarray,
                    groups: Sequence[str] = DEFAULT_GROUPS, fill: str = "random",
                    batch_size: int = 32, flip: bool = True, seed: int = 0,
                    device: torch.device | str = "cpu") -> dict[str, dict]:
    """Verification of pairs (gallery[i], probes[i]) with nothing, then each region group,
    erased in the probes -> {"none" | group: metrics}."""
    gallery_emb = _normalised_embeddings(model, gallery, batch_size, flip, device)
    table = {}
    for group in progress_bar(["none", *groups], desc="occlusions"):
        erased = probes
        area = 0.0
        if group != "none":
            ids = torch.tensor(FSE25.ids(group))
            area = float(torch.isin(probe_masks, ids).float().mean())
            generator = torch.Generator(device=device).manual_seed(seed)
            erased = torch.cat([
                erase_batch(probes[s:s + batch_size].to(device),
                            probe_masks[s:s + batch_size].to(device), p=1.0,
                            n_erase=[group], fill=fill, generator=generator).cpu()
                for s in range(0, len(probes), batch_size)])
        probe_emb = _normalised_embeddings(model, erased, batch_size, flip, device)
        interleaved = torch.stack([gallery_emb, probe_emb], dim=1).flatten(0, 1)
        entry = verification_accuracy(interleaved, issame)
        report, _, _ = verification_report((gallery_emb * probe_emb).sum(1).numpy(), issame,
                                           OCCLUSION_FARS)
        entry.update(tar_at_far=report["tar_at_far"], auc=report["auc"], erased_area=area)
        table[group] = entry
    return table
