"""Shared machinery of the explainers: results, layer lookup, hooks, batched scoring."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cam.targets import Target, as_target
from parsing.core.errors import InputError
from parsing.core.progress import progress_bar
from parsing.core.registry import Registry

__all__ = ["Explanation", "Explainer", "ActivationGradientExplainer", "create_explainer",
           "explainer_class", "list_explainers", "minmax", "register_explainer", "resolve_layer"]


@dataclass
class Explanation:
    """What an explainer returns from ``explain``; every tensor is on the input's device.

    ``map`` (B, H, W): the explanation scaled to [0, 1] per image (min-max).
    ``raw`` (B, H, W): the same map before min-max, at the input resolution.
    ``scores`` (B,): the target score on the unmodified images.
    ``region_scores`` (B, num_classes): FS-CAM only (see ``FSCAM``).
    """

    map: Tensor
    raw: Tensor
    scores: Tensor
    region_scores: Tensor | None = None

    def to(self, device: torch.device | str) -> Explanation:
        return Explanation(*(None if t is None else t.to(device) for t in
                             (self.map, self.raw, self.scores, self.region_scores)))


def minmax(maps: Tensor, eps: float = 1e-7) -> Tensor:
    """Per-image min-max over the last two dims as pytorch-grad-cam: (x-min) / (max-min+eps)."""
    flat = maps.flatten(-2)
    low = flat.min(dim=-1, keepdim=True).values
    flat = flat - low
    return (flat / (flat.max(dim=-1, keepdim=True).values + eps)).view_as(maps)


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> nn.Module:
    """A module of ``model`` given as itself or as a dotted name such as ``"layer4.2"``."""
    if isinstance(layer, str):
        if not layer.strip():
            raise InputError("target_layer is empty: name a layer such as 'layer4.2'")
        try:
            return model.get_submodule(layer)
        except AttributeError:
            children = ", ".join(name for name, _ in model.named_children())
            raise InputError(f"target layer {layer!r} is not a submodule of "
                             f"{type(model).__name__} (top-level children: {children})") from None
    if not any(m is layer for m in model.modules()):
        raise InputError(f"target layer {type(layer).__name__} is not a submodule of the model")
    return layer


def check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise InputError(f"images must be a float tensor (B, C, H, W), got {shape}")


class Explainer:
    """Base: ``explainer(images, targets) -> maps (B, H, W)``; ``explain`` -> ``Explanation``.

    ``targets``: a ``cam.targets.Target`` for all images, a class id, or one per image. The
    model is put in eval mode (as pytorch-grad-cam does). Use as a context manager (or call
    ``close()``) to remove the hooks an explainer puts on the model.
    """

    def __init__(self, model: nn.Module, batch_size: int = 64, progress: bool = False):
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.batch_size = batch_size
        self.progress = progress
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def device(self) -> torch.device:
        param = next(self.model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def explain(self, images: Tensor, targets: Target | int | Sequence) -> Explanation:
        check_images(images)
        target = as_target(targets)
        return self._explain(images.to(self.device), target).to(images.device)

    def _explain(self, images: Tensor, target: Target) -> Explanation:
        raise NotImplementedError

    def __call__(self, images: Tensor, targets: Target | int | Sequence) -> Tensor:
        return self.explain(images, targets).map

    def close(self) -> None:
        """Remove the hooks this explainer registered on the model."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @torch.no_grad()
    def forward_rows(self, make_rows: Callable[[int, int], Tensor], n_rows: int,
                     desc: str | None = None) -> Tensor:
        """Model outputs for ``n_rows`` inputs built chunk by chunk by ``make_rows(start, stop)``,
        in forward passes of at most ``batch_size`` rows (a progress bar if ``desc`` is given)."""
        starts = range(0, n_rows, self.batch_size)
        outputs = [self.model(make_rows(s, min(s + self.batch_size, n_rows)))
                   for s in progress_bar(starts, desc=desc, leave=False,
                                 disable=desc is None or not self.progress)]
        return torch.cat(outputs)


_EXPLAINERS: Registry[type[Explainer]] = Registry("explainer")


def register_explainer(name: str) -> Callable[[type[Explainer]], type[Explainer]]:
    """Class decorator adding an :class:`Explainer` subclass to the registry under ``name``."""
    return _EXPLAINERS.register(name)


def list_explainers(pattern: str = "*") -> list[str]:
    """Sorted names of the registered explainers matching ``pattern``."""
    return _EXPLAINERS.names(pattern)


def explainer_class(name: str) -> type[Explainer]:
    """The class registered as ``name`` (e.g. to ask whether it needs a target layer)."""
    return _EXPLAINERS.get(name)


def create_explainer(name: str, model: nn.Module, **kwargs) -> Explainer:
    """``create_explainer("gradcam", model, target_layer="layer4.2")``: the registered
    explainer ``name`` on ``model``; ``kwargs`` go to its constructor."""
    return _EXPLAINERS.create(name, model, **kwargs)


class ActivationGradientExplainer(Explainer):
    """Base for Grad-CAM-like methods: activations of a layer and the target's gradient there.

    The forward pass runs without autograd up to the target layer; the layer's output becomes a
    leaf requiring grad and autograd records from there on, so ``torch.autograd.grad`` of the
    score stops at the layer: no backward through the earlier layers or into any parameter.
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module | str, batch_size: int = 64,
                 progress: bool = False):
        super().__init__(model, batch_size, progress)
        self.target_layer = resolve_layer(model, target_layer)
        self._capturing = False
        self._activations: list[Tensor] = []
        self.handles.append(self.target_layer.register_forward_hook(self._capture))

    def _capture(self, module: nn.Module, inputs: tuple, output: Tensor) -> Tensor | None:
        if not self._capturing:
            return None
        if not isinstance(output, Tensor):
            raise InputError(f"target layer {type(module).__name__} returns "
                             f"{type(output).__name__}, not a tensor")
        activation = output.detach().requires_grad_()
        self._activations.append(activation)
        torch.set_grad_enabled(True)  # record the graph from here on; restored by no_grad's exit
        return activation.clone()  # a non-leaf, so in-place ops after the layer stay legal

    def activations_and_gradients(self, images: Tensor, target: Target
                                  ) -> tuple[Tensor, Tensor, Tensor, Target]:
        """(activations (B,C,h,w), d score / d activations, scores (B,), bound target)."""
        if target.zero_gradient_at_image:
            raise InputError(f"{type(self).__name__}: the cosine similarity to the image's own "
                             "embedding has zero gradient at the image; use "
                             "SimilarityTarget(metric='dot'), EmbeddingNormTarget() or a reference")
        if not self.handles:
            raise InputError(f"{type(self).__name__} was closed; create a new one")
        self._capturing, self._activations = True, []
        try:
            with torch.no_grad():
                output = self.model(images)
        finally:
            self._capturing = False
        activations, self._activations = self._activations, []
        if len(activations) != 1:
            raise InputError(f"the target layer ran {len(activations)} times in one forward pass; "
                             "pick a layer that runs exactly once")
        target = target.bind(output.detach())
        with torch.enable_grad():  # also when called under the user's no_grad
            scores = target(output)
            (grads,) = torch.autograd.grad(scores.sum(), activations[0])
        return activations[0].detach(), grads, scores.detach(), target


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of (B, N, h, w) maps to ``size`` (half-pixel centres, as cv2.resize)."""
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
