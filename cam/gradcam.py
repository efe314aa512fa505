"""Grad-CAM (Selvaraju et al. 2017), reference §4.2."""

from __future__ import annotations

from torch import Tensor, nn

from cam.base import (
    ActivationGradientExplainer,
    Explanation,
    minmax,
    register_explainer,
    upsample,
)
from cam.targets import Target

__all__ = ["GradCAM"]


@register_explainer("gradcam")
class GradCAM(ActivationGradientExplainer):
    """Grad-CAM: ReLU(sum_c mean_spatial(dS/dA)_c * A_c), bilinear upsample, min-max.

    ``target_layer`` is a module of ``model`` or its dotted name (``"layer4.2"``: the last
    block of IResNet-34, 7x7 at 112x112). ``map`` equals ``pytorch_grad_cam.GradCAM``'s output
    (min-max at layer resolution, bilinear resize, min-max again); ``raw`` is the upsampled
    map before any min-max. The backward pass stops at the target layer.

    >>> with GradCAM(backbone, "layer4.2") as gradcam:
    ...     maps = gradcam(images, SimilarityTarget(reference_embedding))   # (B, H, W)
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module | str):
        super().__init__(model, target_layer)

    def _explain(self, images: Tensor, target: Target) -> Explanation:
        activations, grads, scores, _ = self.activations_and_gradients(images, target)
        weights = grads.mean(dim=(2, 3), keepdim=True)
        cam = (weights * activations).sum(dim=1, keepdim=True).relu()
        size = images.shape[-2:]
        raw = upsample(cam, size)[:, 0]
        return Explanation(minmax(upsample(minmax(cam), size)[:, 0]), raw, scores)
