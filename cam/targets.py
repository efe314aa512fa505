"""Targets: the score an explanation explains, computed batched from the model's output.

A target maps the model output for R rows, ``(R, D)``, to R scores. Rows may be perturbed
copies of the batch images (masked, blurred, one region kept): ``index`` ``(R,)`` says which
batch image each row comes from (``None``: row i is image i). Before scoring perturbed rows,
explainers call ``bind(clean_output)`` with the output ``(B, D)`` on the unperturbed batch,
which fixes what is defined by the image itself: its argmax class, its own embedding, the
embedding of its verification partner.

>>> SimilarityTarget(ref_embedding)   # "why does this face look like the reference?"
>>> SimilarityTarget()                # self-similarity: cosine to the image's own embedding
>>> PairTarget()                      # images = cat([a, b]): explain a against b and b against a
>>> ClassTarget(7, softmax=True)      # models with an identity/attribute head
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from parsing.core.errors import InputError

__all__ = ["Target", "ClassTarget", "SimilarityTarget", "PairTarget", "EmbeddingNormTarget",
           "as_target"]


def _rows(values: Tensor, index: Tensor | None) -> Tensor:
    """Per-image ``values`` (B, ...) (or one shared value) expanded to the scored rows."""
    if values.dim() == 0 or index is None:
        return values
    return values[index]


def _check_output(output: Tensor) -> None:
    if output.dim() != 2:
        raise InputError(f"targets expect model outputs of shape (B, D), got {tuple(output.shape)}")


class Target:
    """Base class: ``target(output (R, D), index (R,) | None) -> scores (R,)``."""

    def bind(self, clean_output: Tensor) -> Target:
        """Resolve image-relative parts from the output on the unperturbed batch."""
        return self

    def __call__(self, output: Tensor, index: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    @property
    def zero_gradient_at_image(self) -> bool:
        """True when the score has zero gradient at the clean image (useless for Grad-CAM)."""
        return False


class ClassTarget(Target):
    """Score of a class of a model with a classifier head.

    ``idx``: one class for all images, one per image ((B,) sequence or tensor), or ``None``
    for the argmax class on the clean image. The score is the logit by default (as
    pytorch-grad-cam's ``ClassifierOutputTarget``) or the softmax probability with
    ``softmax=True`` (as the FS-CAM reference).
    """

    def __init__(self, idx: int | Sequence[int] | Tensor | None = None, softmax: bool = False):
        self.idx = None if idx is None else torch.as_tensor(idx, dtype=torch.long)
        self.softmax = softmax

    def bind(self, clean_output: Tensor) -> ClassTarget:
        _check_output(clean_output)
        if self.idx is None:
            return ClassTarget(clean_output.argmax(dim=1), self.softmax)
        batch, num_classes = clean_output.shape
        if self.idx.dim() > 1 or (self.idx.dim() == 1 and len(self.idx) != batch):
            raise InputError(f"ClassTarget: expected one class or {batch} classes (one per "
                             f"image), got shape {tuple(self.idx.shape)}")
        if self.idx.numel() and not 0 <= int(self.idx.min()) <= int(self.idx.max()) < num_classes:
            raise InputError(f"ClassTarget: class ids must lie in 0..{num_classes - 1}, "
                             f"got {self.idx.tolist()}")
        return self

    def __call__(self, output: Tensor, index: Tensor | None = None) -> Tensor:
        _check_output(output)
        if self.idx is None:
            raise InputError("ClassTarget(None) needs bind(clean_output) to pick the argmax class")
        values = torch.softmax(output, dim=1) if self.softmax else output
        idx = _rows(self.idx.to(output.device), index).expand(len(output))
        return values.gather(1, idx[:, None])[:, 0]


class SimilarityTarget(Target):
    """Similarity of the embedding to a reference embedding: face verification.

    ``reference``: (D,) for all images, (B, D) one per image, or ``None`` for the image's own
    clean embedding (self-similarity). ``metric="cosine"`` (default) or ``"dot"``: the
    projection ``<f(x), r/|r|>``. The cosine to the image's own embedding is at its maximum
    on the clean image, so its gradient there is zero: gradient methods (Grad-CAM,
    Group-CAM) refuse it; use ``metric="dot"`` for those.
    """

    def __init__(self, reference: Tensor | None = None, metric: str = "cosine"):
        if metric not in ("cosine", "dot"):
            raise InputError(f"SimilarityTarget: metric must be 'cosine' or 'dot', got {metric!r}")
        self.reference = None if reference is None else torch.as_tensor(reference).detach()
        if self.reference is not None and self.reference.dim() == 2 and len(self.reference) == 1:
            self.reference = self.reference[0]  # backbone(reference_image): one row for all
        self.metric = metric

    @property
    def zero_gradient_at_image(self) -> bool:
        return self.reference is None and self.metric == "cosine"

    def bind(self, clean_output: Tensor) -> SimilarityTarget:
        _check_output(clean_output)
        if self.reference is None:
            return SimilarityTarget(clean_output.detach(), self.metric)
        batch, dim = clean_output.shape
        ref = self.reference
        if ref.shape not in ((dim,), (batch, dim)):
            raise InputError(f"SimilarityTarget: reference of shape {tuple(ref.shape)} does not "
                             f"fit model outputs {tuple(clean_output.shape)}; expected ({dim},) "
                             f"or ({batch}, {dim})")
        return self

    def __call__(self, output: Tensor, index: Tensor | None = None) -> Tensor:
        _check_output(output)
        if self.reference is None:
            raise InputError("SimilarityTarget(None) needs bind(clean_output) to fix the reference")
        ref = self.reference.to(device=output.device, dtype=output.dtype)
        ref = ref if ref.dim() == 1 else _rows(ref, index)
        if self.metric == "cosine":
            return F.cosine_similarity(output, ref.expand_as(output), dim=1)
        return (output * F.normalize(ref, dim=-1)).sum(dim=1)


class PairTarget(Target):
    """Explain both images of verification pairs: the batch is ``torch.cat([a, b])``.

    Image ``a[i]`` is scored by its similarity to the clean embedding of ``b[i]`` and vice
    versa, so one call explains both sides of every pair.
    """

    def __init__(self, metric: str = "cosine"):
        self.metric = metric

    def bind(self, clean_output: Tensor) -> SimilarityTarget:
        _check_output(clean_output)
        batch = len(clean_output)
        if batch % 2:
            raise InputError(f"PairTarget: the batch must be torch.cat([a, b]) of pairs, got an "
                             f"odd batch of {batch}")
        partner = clean_output.detach().roll(batch // 2, dims=0)
        return SimilarityTarget(partner, self.metric)

    def __call__(self, output: Tensor, index: Tensor | None = None) -> Tensor:
        raise InputError("PairTarget needs bind(clean_output) to find each image's partner")


class EmbeddingNormTarget(Target):
    """L2 norm of the embedding (a face-quality signal in margin-trained models)."""

    def __call__(self, output: Tensor, index: Tensor | None = None) -> Tensor:
        _check_output(output)
        return output.norm(dim=1)


class _PerImageTargets(Target):
    """A list of targets, one per batch image."""

    def __init__(self, targets: Sequence[Target]):
        self.targets = list(targets)

    @property
    def zero_gradient_at_image(self) -> bool:
        return any(t.zero_gradient_at_image for t in self.targets)

    def bind(self, clean_output: Tensor) -> _PerImageTargets:
        if len(self.targets) != len(clean_output):
            raise InputError(f"got {len(self.targets)} targets for a batch of "
                             f"{len(clean_output)} images; give one per image or one for all")
        return _PerImageTargets([t.bind(clean_output[i:i + 1]) for i, t in
                                 enumerate(self.targets)])

    def __call__(self, output: Tensor, index: Tensor | None = None) -> Tensor:
        if index is None:
            index = torch.arange(len(output), device=output.device)
        scores = output.new_empty(len(output))
        for i, target in enumerate(self.targets):  # B targets, not B pixels: a short loop
            rows = (index == i).nonzero()[:, 0]
            if len(rows):
                scores[rows] = target(output[rows], torch.zeros_like(rows))
        return scores


def as_target(targets: Target | int | Sequence[Target | int]) -> Target:
    """Normalise the ``targets`` argument of the explainers: a target for all images, a class
    id (``ClassTarget``), or a sequence with one target or class id per image."""
    if isinstance(targets, Target):
        return targets
    if isinstance(targets, int) and not isinstance(targets, bool):
        return ClassTarget(targets)
    if isinstance(targets, Tensor):
        return ClassTarget(targets)
    if isinstance(targets, Sequence) and targets:
        if all(isinstance(t, int) and not isinstance(t, bool) for t in targets):
            return ClassTarget(list(targets))
        return _PerImageTargets([as_target(t) for t in targets])
    raise InputError(f"targets must be a cam.targets.Target, a class id or a list of them (one "
                     f"per image), got {targets!r}; for embedding models use SimilarityTarget()")
