"""Group-CAM (Zhang et al. 2021), reference §4.4."""

from __future__ import annotations

import torch
from kornia.filters import gaussian_blur2d
from torch import Tensor, nn

from cam.base import (
    ActivationGradientExplainer,
    Explanation,
    minmax,
    register_explainer,
    upsample,
)
from cam.targets import Target
from parsing.core.errors import InputError

__all__ = ["GroupCAM"]


@register_explainer("groupcam")
class GroupCAM(ActivationGradientExplainer):
    """Group-CAM: Grad-CAM-weighted activations summed in ``groups`` channel groups become
    masks M_l (ReLU, bilinear upsample, per-group min-max); each scores
    beta_l = ReLU(S(x M_l + blur(x) (1 - M_l)) - S(blur(x))); map = min-max(sum_l beta_l M_l).

    The blur is Gaussian (``blur_kernel`` 51, ``blur_sigma`` 50, reflect borders). As reference §4.4
    the map sums the normalised masks M_l; the authors' code weights the group maps before
    their min-max. Forward passes per image: 1 (gradients) + 1 (blurred) + ``groups``.
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module | str, groups: int = 32,
                 blur_kernel: int = 51, blur_sigma: float = 50.0, batch_size: int = 64,
                 progress: bool = False):
        super().__init__(model, target_layer, batch_size, progress)
        if groups < 1 or blur_kernel < 1 or blur_kernel % 2 == 0:
            raise InputError(f"GroupCAM needs groups >= 1 and an odd blur_kernel, got "
                             f"groups={groups}, blur_kernel={blur_kernel}")
        self.groups, self.blur_kernel, self.blur_sigma = groups, blur_kernel, blur_sigma

    def blur(self, images: Tensor) -> Tensor:
        if self.blur_kernel // 2 >= min(images.shape[-2:]):
            raise InputError(f"GroupCAM: blur_kernel {self.blur_kernel} is too large for "
                             f"{tuple(images.shape[-2:])} images (reflect padding)")
        k, s = self.blur_kernel, self.blur_sigma
        return gaussian_blur2d(images, (k, k), (s, s), border_type="reflect")

    def _explain(self, images: Tensor, target: Target) -> Explanation:
        activations, grads, scores, target = self.activations_and_gradients(images, target)
        channels = activations.shape[1]
        if channels < self.groups:
            raise InputError(f"GroupCAM: {self.groups} groups but the target layer has only "
                             f"{channels} channels")
        # contiguous, near-equal channel groups as a (groups, channels) 0/1 matrix
        group_of = torch.arange(channels, device=images.device) * self.groups // channels
        membership = nn.functional.one_hot(group_of, self.groups).T.to(activations.dtype)
        weighted = grads.mean(dim=(2, 3), keepdim=True) * activations
        group_maps = torch.einsum("gc,bchw->bghw", membership, weighted).relu()
        masks = minmax(upsample(group_maps, images.shape[-2:]))  # (B, G, H, W)

        batch = len(images)
        blurred = self.blur(images)
        baseline = target(self.forward_rows(lambda s, e: blurred[s:e], batch))
        index = torch.arange(batch, device=images.device).repeat_interleave(self.groups)

        def rows(start: int, stop: int) -> Tensor:
            b, m = index[start:stop], masks.flatten(0, 1)[start:stop, None]
            return images[b] * m + blurred[b] * (1 - m)

        out = self.forward_rows(rows, len(index), desc="Group-CAM")
        beta = (target(out, index) - baseline[index]).relu().view(batch, self.groups)
        raw = torch.einsum("bg,bghw->bhw", beta, masks)
        return Explanation(minmax(raw), raw, scores)
