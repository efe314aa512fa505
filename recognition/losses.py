"""Margin-based softmax losses for face recognition: combined angular margins and PartialFC.

>>> margin = CombinedMarginLoss(s=64.0, m1=1.0, m2=0.5, m3=0.0)          # ArcFace
>>> head = PartialFC(margin, embedding_size=512, num_classes=10_572)     # classifier + loss
>>> loss = head(backbone(images), labels)

``PartialFC`` with ``sample_rate=1`` is the plain (full softmax) head, on one process or with
the class centres sharded over ``torch.distributed`` ranks (reference §5.3).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from parsing.core.errors import InputError

__all__ = ["CombinedMarginLoss", "PartialFC"]


class CombinedMarginLoss(nn.Module):
    """Combined angular margin: the target logit becomes ``s * (cos(m1*theta + m2) - m3)``.

    Takes cosine logits (B, C) -- normalised embeddings times normalised class centres -- and
    int64 labels (B,), where -1 marks a sample whose class is not among these C columns (the
    class lives on another PartialFC rank); returns the scaled logits (B, C) for a softmax
    cross-entropy. Non-target logits become ``s * cos(theta)``. The input is not modified.

    ArcFace = (1, 0.5, 0), CosFace = (1, 0, 0.4), SphereFace-style multiplicative margins use
    ``m1`` (e.g. 1.35), and any combination works (e.g. (1, 0.3, 0.2) from the ArcFace paper).

    Differences from insightface's ``CombinedMarginLoss`` (``arcface_torch/losses.py``):

    * Gradient: insightface computes ``cos(theta + m2)`` under ``torch.no_grad`` and writes it
      into the logits in place, so backward sees ``s * cos_theta`` plus a constant: the margin
      does not change the gradient's scale. Here the target logit is differentiated exactly:
      d/dcos of ``cos(m1*theta + m2)`` is ``m1 * sin(m1*theta + m2) / sin(theta)``.
    * Margins: insightface supports only ArcFace (``m1 == 1, m3 == 0``) and CosFace
      (``m3 > 0``, ignoring ``m2``); this class supports every (m1, m2, m3).
    * Numerics: theta near 0 and pi. For ``m1 == 1`` the target is computed as
      ``cos*cos(m2) - sin*sin(m2)`` with ``sin = sqrt(max(1 - cos^2, eps))`` (no acos); for
      ``m1 != 1`` via ``acos`` of cos clamped to ``[-1 + eps, 1 - eps]`` (eps = the dtype's
      machine epsilon). Gradients stay finite at cos = +-1; only the clamped part of the
      gradient vanishes inside that eps band.
    * Beyond ``m1*theta + m2 = pi``, ``cos(m1*theta + m2)`` would rise again and reward a
      larger angle. There the target becomes ``cos(theta) - (1 + cos(theta_max))`` with
      ``theta_max = (pi - m2) / m1``: the classic ArcFace fallback (a CosFace-style penalty),
      shifted so the target stays continuous (value -1 at ``theta_max``) and decreasing in
      theta over [0, pi]. insightface's ``CombinedMarginLoss`` keeps ``cos(theta + m2)``.

    Args:
        s: logit scale.
        m1: multiplicative angular margin (SphereFace), > 0.
        m2: additive angular margin (ArcFace), in [0, pi).
        m3: additive cosine margin (CosFace).
        interclass_filtering_threshold: if > 0, non-target cosines above it are set to 0 before
            the margin, as in insightface (robust to label noise; 0.4 in its configs).
    """

    def __init__(self, s: float = 64.0, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0,
                 interclass_filtering_threshold: float = 0.0) -> None:
        super().__init__()
        if s <= 0:
            raise InputError(f"CombinedMarginLoss: scale s must be > 0, got {s}")
        if m1 <= 0:
            raise InputError(f"CombinedMarginLoss: m1 must be > 0, got {m1}")
        if not 0.0 <= m2 < math.pi:
            raise InputError(f"CombinedMarginLoss: m2 must be in [0, pi), got {m2}")
        self.s = float(s)
        self.m1 = float(m1)
        self.m2 = float(m2)
        self.m3 = float(m3)
        self.interclass_filtering_threshold = float(interclass_filtering_threshold)
        self.theta_max = (math.pi - self.m2) / self.m1
        self.cos_theta_max = math.cos(self.theta_max) if self.theta_max < math.pi else -1.0

    def extra_repr(self) -> str:
        text = f"s={self.s}, m1={self.m1}, m2={self.m2}, m3={self.m3}"
        if self.interclass_filtering_threshold > 0:
            text += f", interclass_filtering_threshold={self.interclass_filtering_threshold}"
        return text

    def target_logit(self, cos_theta: torch.Tensor) -> torch.Tensor:
        """Unscaled margin target ``cos(m1*theta + m2) - m3`` (with the fallback above)."""
        eps = torch.finfo(cos_theta.dtype).eps
        if self.m1 == 1.0:
            if self.m2 == 0.0:
                target = cos_theta
            else:
                sin_theta = (1.0 - cos_theta * cos_theta).clamp(min=eps).sqrt()
                target = cos_theta * math.cos(self.m2) - sin_theta * math.sin(self.m2)
        else:
            theta = cos_theta.clamp(-1.0 + eps, 1.0 - eps).acos()
            target = torch.cos(self.m1 * theta + self.m2)
        if self.theta_max < math.pi:
            fallback = cos_theta - (1.0 + self.cos_theta_max)
            target = torch.where(cos_theta > self.cos_theta_max, target, fallback)
        return target - self.m3

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cosines (B, C) and labels (B,) in [-1, C) -> scaled, margin-adjusted logits (B, C)."""
        if logits.dim() != 2 or labels.shape != logits.shape[:1]:
            raise InputError(f"CombinedMarginLoss expects logits (B, C) and labels (B,), got "
                             f"{tuple(logits.shape)} and {tuple(labels.shape)}")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise InputError(f"CombinedMarginLoss: labels must be integer class indices, got "
                             f"{labels.dtype}")
        if bool(((labels < -1) | (labels >= logits.shape[1])).any()):
            raise InputError(f"CombinedMarginLoss: labels must be in [-1, {logits.shape[1]}), got "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        rows = torch.nonzero(labels != -1).squeeze(1)
        cols = labels[rows]
        if self.interclass_filtering_threshold > 0:
            dirty = logits.detach() > self.interclass_filtering_threshold
            dirty[rows, cols] = False
            logits = logits.masked_fill(dirty, 0.0)
        target = self.target_logit(logits[rows, cols])
        # One (B, C) copy: the scaled logits, then the targets written into it.
        return (logits * self.s).index_put_((rows, cols), target * self.s)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class _GatherForDataParallel(torch.autograd.Function):
    """all_gather along dim 0 whose backward returns ``world_size`` x the exact gradient.

    The exact gradient of the (replicated) global loss w.r.t. a rank's embeddings is the sum
    over ranks of the gradients flowing into that rank's slice. DDP then *averages* backbone
    gradients over ranks, so scaling by world_size makes the backbone see the exact gradient
    of the global-batch loss (as insightface's ``AllGather`` does).
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        world = dist.get_world_size(group)
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous(), group=group)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        world = dist.get_world_size(ctx.group)
        rank = dist.get_rank(ctx.group)
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad.chunk(world)[rank] * world, None


class _DistributedSoftmaxCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy over logits whose columns are split across ranks.

    Each rank holds logits (N, C_local) for the same N samples; ``labels`` index the local
    columns or are -1 where the target is on another rank. Row maxima and exp-sums are
    all-reduced; the returned loss is identical on every rank.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, group) -> torch.Tensor:
        distributed = _distributed()
        row_max = logits.amax(dim=1, keepdim=True)
        if distributed:
            dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=group)
        shifted = logits - row_max
        rows = torch.nonzero(labels != -1).squeeze(1)
        target = torch.zeros(logits.shape[0], dtype=logits.dtype, device=logits.device)
        target[rows] = shifted[rows, labels[rows]]
        probs = shifted.exp_()
        sum_exp = probs.sum(dim=1, keepdim=True)
        if distributed:
            dist.all_reduce(sum_exp, op=dist.ReduceOp.SUM, group=group)
            dist.all_reduce(target, op=dist.ReduceOp.SUM, group=group)
        probs.div_(sum_exp)
        ctx.save_for_backward(probs, rows, labels[rows])
        return (sum_exp.squeeze(1).log() - target).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        probs, rows, cols = ctx.saved_tensors
        scale = grad / probs.shape[0]
        grad_logits = probs * scale  # out of place: the graph may be retained and re-run
        grad_logits[rows, cols] -= scale
        return grad_logits, None, None


class PartialFC(nn.Module):
    """Classifier + margin softmax loss with class centres sharded over ranks (PartialFC).

    Follows insightface's PartialFC_V2 (An et al., 2022): rank r holds ``weight``
    (num_local, embedding_size), the centres of classes ``[class_start, class_start +
    num_local)``; embeddings and labels are all-gathered from every rank; each rank scores the
    gathered batch against its centres (in training, against all centres of the batch's
    classes plus random negatives, ``int(sample_rate * num_local)`` centres in all);
    the softmax cross-entropy is computed across ranks. Without an initialised process group
    it runs as world size 1, and with ``sample_rate=1`` it is exactly
    ``F.cross_entropy(margin_loss(normalize(x) @ normalize(W).T, y), y)``.

    Use: wrap only the backbone in DDP, never this module (each rank owns a different shard;
    save ``state_dict()`` per rank and resume with the same world size). Every rank must pass
    the same batch size at each step (``DistributedSampler`` guarantees it). The gradient that
    reaches each rank's embeddings is ``world_size`` x the exact gradient, so that DDP's
    averaging gives the backbone the exact gradient of the global-batch mean loss.
    Negative sampling draws from the global torch RNG on the weight's device; in eval mode
    every local centre is used. Labels are range-checked on every call (one host sync).

    Args:
        margin_loss: maps (cosines (N, C), labels (N,) with -1 = elsewhere) to logits, e.g.
            :class:`CombinedMarginLoss`.
        embedding_size: embedding dimension.
        num_classes: total number of identities over all ranks.
        sample_rate: fraction of each rank's centres used per training step, in (0, 1].
        process_group: the group to shard over (default: the world).
    """

    def __init__(self, margin_loss: nn.Module, embedding_size: int, num_classes: int,
                 sample_rate: float = 1.0, process_group: dist.ProcessGroup | None = None) -> None:
        super().__init__()
        if not 0.0 < sample_rate <= 1.0:
            raise InputError(f"PartialFC: sample_rate must be in (0, 1], got {sample_rate}")
        if embedding_size < 1 or num_classes < 1:
            raise InputError("PartialFC: embedding_size and num_classes must be positive, got "
                             f"{embedding_size} and {num_classes}")
        self.process_group = process_group
        if _distributed():
            self.world_size = dist.get_world_size(process_group)
            self.rank = dist.get_rank(process_group)
        else:
            self.world_size, self.rank = 1, 0
        if num_classes < self.world_size:
            raise InputError(f"PartialFC: {num_classes} classes cannot be sharded over "
                             f"{self.world_size} ranks")
        self.margin_loss = margin_loss
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        self.sample_rate = sample_rate
        base, extra = divmod(num_classes, self.world_size)
        self.num_local = base + int(self.rank < extra)
        self.class_start = base * self.rank + min(self.rank, extra)
        self.num_sample = max(1, int(sample_rate * self.num_local))
        self.weight = nn.Parameter(torch.normal(0.0, 0.01, (self.num_local, embedding_size)))

    def extra_repr(self) -> str:
        return (f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, "
                f"sample_rate={self.sample_rate}, rank={self.rank}/{self.world_size}, "
                f"classes=[{self.class_start}, {self.class_start + self.num_local})")

    @torch.no_grad()
    def sample(self, local_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick the centres to score: every positive class here plus random negatives.

        Args:
            local_labels: (N,) class index into this shard, -1 for classes on other ranks.

        Returns:
            ``(index, labels)``: sorted indices of the chosen centres (at least
            ``num_sample``, more only if the batch has more distinct local positives) and the
            labels re-indexed into them (-1 kept).
        """
        positives = torch.unique(local_labels[local_labels >= 0])  # sorted
        if positives.numel() >= self.num_sample:
            index = positives
        else:
            score = torch.rand(self.num_local, device=self.weight.device)
            score[positives] = 2.0
            index = score.topk(self.num_sample).indices.sort().values
        remapped = torch.searchsorted(index, local_labels.clamp(min=0))
        return index, torch.where(local_labels >= 0, remapped, -1)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, D) and global class labels (B,) in [0, num_classes) -> scalar loss."""
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embedding_size:
            raise InputError(f"PartialFC expects embeddings (B, {self.embedding_size}), got "
                             f"{tuple(embeddings.shape)}")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise InputError(f"PartialFC: labels must be integer class indices, got {labels.dtype}")
        labels = labels.reshape(-1).long()
        if labels.shape[0] != embeddings.shape[0]:
            raise InputError(f"PartialFC: {labels.shape[0]} labels for {embeddings.shape[0]} "
                             "embeddings")
        if bool(((labels < 0) | (labels >= self.num_classes)).any()):
            raise InputError(f"PartialFC: labels must be in [0, {self.num_classes}), got "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        if self.world_size > 1:
            embeddings = _GatherForDataParallel.apply(embeddings, self.process_group)
            gathered = [torch.empty_like(labels) for _ in range(self.world_size)]
            dist.all_gather(gathered, labels, group=self.process_group)
            labels = torch.cat(gathered)

        local = labels - self.class_start
        local = torch.where((local >= 0) & (local < self.num_local), local, -1)
        weight = self.weight
        if self.training and self.num_sample < self.num_local:
            index, local = self.sample(local)
            weight = weight[index]

        cosines = F.linear(F.normalize(embeddings), F.normalize(weight))
        # Under autocast the product is half precision; margins and softmax run in >= float32.
        cosines = cosines.to(torch.promote_types(cosines.dtype, torch.float32))
        logits = self.margin_loss(cosines, local)
        return _DistributedSoftmaxCrossEntropy.apply(logits, local, self.process_group)
