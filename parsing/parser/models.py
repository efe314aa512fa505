"""Face parser networks and their registry: ``create_model("unet_r18", num_classes=25)``.

* ``unet_r18``: U-Net with a ResNet-18 encoder (reference §6). A 3x3 stride-1 stem keeps full
  resolution for the first skip, so 112x112 aligned faces keep their detail (as in IResNet);
  four stages of two torchvision ``BasicBlock`` s at strides 2, 4, 8, 16; each decoder step
  is a 2x2 transposed convolution, concatenation with the encoder feature of that stride and
  two 3x3 convolutions (widths 128, 64, 32, 32 at strides 8, 4, 2, 1);
  a 1x1 classifier gives the logits.
* ``unet_timm:<name>``: the same decoder on any timm encoder (``features_only=True``, random
  weights: nothing is downloaded).
* ``smp_unet:<encoder>`` (``smp_unet_r18`` = ``smp_unet:resnet18``): segmentation_models_pytorch's
  ``Unet`` with random encoder weights (``encoder_weights=None``: nothing is downloaded), the
  baseline of ``benchmarks/study_parsing.py``; needs ``segmentation-models-pytorch`` (dev extra).
* ``scanet``: ``unet_r18`` plus SCANet's additions: DANet-style position (spatial) and channel
  attention on the deepest features, and an edge branch predicting label boundaries whose
  features also feed the classifier. In training mode it returns :class:`ParserOutput`
  (logits and edge logits); in eval mode, like every model here, just the logits.

Every model maps (B, 3, H, W) images (any H, W) to (B, num_classes, H, W) logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.resnet import BasicBlock

from parsing.core.errors import InputError
from parsing.core.registry import Registry

__all__ = ["ParserOutput", "UNet", "SCANet", "create_model", "fuse_batchnorm", "list_models",
           "register_model"]


class ParserOutput(NamedTuple):
    """Training-mode output of models with an edge branch."""

    logits: torch.Tensor  # (B, K, H, W)
    edges: torch.Tensor  # (B, 1, H, W) boundary logits


def _conv_bn_relu(c_in: int, c_out: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _fit(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop (or zero-pad at the far edges) ``x`` to spatial ``size``: undoes stride rounding."""
    h, w = int(size[0]), int(size[1])
    if x.shape[-2] < h or x.shape[-1] < w:
        x = F.pad(x, (0, max(0, w - x.shape[-1]), 0, max(0, h - x.shape[-2])))
    return x[..., :h, :w]


class ResNetEncoder(nn.Module):
    """ResNet-18 body behind a 3x3 stride-1 stem: features at strides 1, 2, 4, 8, 16."""

    def __init__(self, width: int = 64, blocks: Sequence[int] = (2, 2, 2, 2),
                 in_channels: int = 3) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(in_channels, width)
        chans = [width, width, 2 * width, 4 * width, 8 * width]
        self.stages = nn.ModuleList(
            self._stage(chans[i], chans[i + 1], n) for i, n in enumerate(blocks)
        )
        self.channels = tuple(chans)
        self.reductions = (1, 2, 4, 8, 16)

    @staticmethod
    def _stage(c_in: int, c_out: int, n_blocks: int) -> nn.Sequential:
        down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=2, bias=False), nn.BatchNorm2d(c_out))
        layers = [BasicBlock(c_in, c_out, stride=2, downsample=down)]
        layers += [BasicBlock(c_out, c_out) for _ in range(n_blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        return feats


class UpBlock(nn.Module):
    """Transposed-conv upsampling by ``scale``, concatenation with a skip, two 3x3 convs."""

    def __init__(self, c_in: int, c_skip: int, c_out: int, scale: int = 2) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, kernel_size=scale, stride=scale)
        self.conv = nn.Sequential(_conv_bn_relu(c_out + c_skip, c_out), _conv_bn_relu(c_out, c_out))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None,
                size: Sequence[int] | None = None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            x = torch.cat([_fit(x, skip.shape[-2:]), skip], dim=1)
        elif size is not None:
            x = _fit(x, size)
        return self.conv(x)


class UNetDecoder(nn.Module):
    """U-Net decoder over encoder features ordered shallow -> deep.

    One :class:`UpBlock` per skip; if the shallowest feature is coarser than the input
    (timm encoders start at stride 2 or 4) a last skip-less block brings it to full size.
    """

    def __init__(self, channels: Sequence[int], reductions: Sequence[int],
                 decoder_channels: Sequence[int]) -> None:
        super().__init__()
        n_skips = len(channels) - 1
        needs_final = reductions[0] > 1
        if len(decoder_channels) != n_skips + needs_final:
            raise InputError(
                f"decoder_channels needs {n_skips + needs_final} entries for this encoder, "
                f"got {len(decoder_channels)}"
            )
        blocks, c_in = [], channels[-1]
        for i in range(n_skips):
            skip = n_skips - 1 - i
            scale = max(1, reductions[skip + 1] // reductions[skip])
            blocks.append(UpBlock(c_in, channels[skip], decoder_channels[i], scale))
            c_in = decoder_channels[i]
        self.blocks = nn.ModuleList(blocks)
        self.final = UpBlock(c_in, 0, decoder_channels[-1], reductions[0]) if needs_final else None
        self.out_channels = decoder_channels[-1]

    def forward(self, feats: list[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        x = feats[-1]
        for block, skip in zip(self.blocks, reversed(feats[:-1]), strict=True):
            x = block(x, skip)
        return self.final(x, size=size) if self.final is not None else x


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class UNet(nn.Module):
    """Encoder + U-Net decoder + 1x1 classifier; ``forward`` returns (B, K, H, W) logits."""

    def __init__(self, encoder: nn.Module, num_classes: int,
                 decoder_channels: Sequence[int]) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = UNetDecoder(encoder.channels, encoder.reductions, decoder_channels)
        self.classifier = nn.Conv2d(self.decoder.out_channels, num_classes, 1)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        return self.classifier(self.decoder(feats, x.shape[-2:]))


class TimmEncoder(nn.Module):
    """A timm backbone as a feature pyramid (``features_only=True``, random weights)."""

    def __init__(self, name: str, **kwargs) -> None:
        super().__init__()
        import timm

        try:
            self.body = timm.create_model(name, features_only=True, pretrained=False, **kwargs)
        except RuntimeError as exc:  # timm: "Unknown model (...)"
            raise InputError(f"timm encoder {name!r}: {exc}") from None
        self.channels = tuple(self.body.feature_info.channels())
        self.reductions = tuple(self.body.feature_info.reduction())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))


class PositionAttention(nn.Module):
    """DANet position attention: every position attends to every other (unscaled dot product)."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        inner = max(1, channels // reduction)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)[:, None]  # (B, 1, HW, C')
        k = self.key(x).flatten(2).transpose(1, 2)[:, None]
        v = self.value(x).flatten(2).transpose(1, 2)[:, None]  # (B, 1, HW, C)
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        return x + self.gamma * out[:, 0].transpose(1, 2).reshape(b, c, h, w)


class ChannelAttention(nn.Module):
    """DANet channel attention: channels re-weighted by their (max-subtracted) Gram matrix."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.flatten(2)  # (B, C, HW)
        energy = flat @ flat.transpose(1, 2)
        attn = torch.softmax(energy.amax(-1, keepdim=True) - energy, dim=-1)
        return x + self.gamma * (attn @ flat).reshape(b, c, h, w)


class DualAttention(nn.Module):
    """DANet head on the deepest features: parallel position and channel attention, summed."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = max(1, channels // 4)
        self.position = nn.Sequential(_conv_bn_relu(channels, inner), PositionAttention(inner),
                                      _conv_bn_relu(inner, inner))
        self.channel = nn.Sequential(_conv_bn_relu(channels, inner), ChannelAttention(),
                                     _conv_bn_relu(inner, inner))
        self.project = _conv_bn_relu(inner, channels, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.position(x) + self.channel(x))


class SCANet(UNet):
    """``unet_r18`` with dual attention on the deepest features and an edge branch (ref. §6)."""

    def __init__(self, encoder: ResNetEncoder, num_classes: int,
                 decoder_channels: Sequence[int], edge_channels: int = 16) -> None:
        super().__init__(encoder, num_classes, decoder_channels)
        self.attention = DualAttention(encoder.channels[-1])
        self.edge_features = _conv_bn_relu(self.decoder.out_channels + encoder.channels[0],
                                           edge_channels)
        self.edge_head = nn.Conv2d(edge_channels, 1, 1)
        self.classifier = nn.Conv2d(self.decoder.out_channels + edge_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | ParserOutput:
        feats = self.encoder(x)
        feats[-1] = self.attention(feats[-1])
        dec = self.decoder(feats, x.shape[-2:])
        edge = self.edge_features(torch.cat([dec, feats[0]], dim=1))
        logits = self.classifier(torch.cat([dec, edge], dim=1))
        return ParserOutput(logits, self.edge_head(edge)) if self.training else logits


_MODELS: Registry[Callable[..., nn.Module]] = Registry(
    "model", "unet_timm:<timm name>, smp_unet:<smp encoder>")


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a model constructor ``fn(num_classes, **kw)`` to the registry."""
    return _MODELS.register(name)


def _default_decoder(width: int) -> tuple[int, ...]:
    # 2w, w, w/2 at strides 8, 4, 2 (smp's Unet widths at width 64), never below 32: with 16 or
    # fewer full-resolution channels, 25 classes are learnt several times more slowly
    return tuple(max(32, width * c // 64) for c in (128, 64, 32, 32))


@register_model("unet_r18")
def unet_r18(num_classes: int = 25, width: int = 64,
             decoder_channels: Sequence[int] | None = None) -> UNet:
    """ResNet-18 U-Net; ``width`` is the stem/first-stage width (64 = ResNet-18)."""
    model = UNet(ResNetEncoder(width), num_classes, decoder_channels or _default_decoder(width))
    _init_weights(model)
    return model


@register_model("scanet")
def scanet(num_classes: int = 25, width: int = 64,
           decoder_channels: Sequence[int] | None = None, edge_channels: int = 16) -> SCANet:
    """``unet_r18`` + position/channel attention + edge branch."""
    model = SCANet(ResNetEncoder(width), num_classes, decoder_channels or _default_decoder(width),
                   edge_channels)
    _init_weights(model)
    return model


def unet_timm(encoder: str, num_classes: int = 25,
              decoder_channels: Sequence[int] | None = None, **encoder_kwargs) -> UNet:
    """U-Net decoder on a timm encoder; decoder widths default to halving from 256."""
    enc = TimmEncoder(encoder, **encoder_kwargs)
    n = len(enc.channels) - 1 + (enc.reductions[0] > 1)
    dec = decoder_channels or tuple(max(16, 256 >> i) for i in range(n))
    model = UNet(enc, num_classes, dec)
    _init_weights(model.decoder)
    return model


def smp_unet(encoder: str, num_classes: int = 25,
             decoder_channels: Sequence[int] | None = None) -> nn.Module:
    """``segmentation_models_pytorch.Unet(encoder, encoder_weights=None)``; decoder widths
    default to smp's (256, 128, 64, 32, 16)."""
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        raise InputError("smp_unet models need segmentation-models-pytorch "
                         "(pip install segmentation-models-pytorch)") from None
    kwargs = {} if decoder_channels is None else {"decoder_channels": tuple(decoder_channels)}
    try:
        return smp.Unet(encoder, encoder_weights=None, classes=num_classes, **kwargs)
    except (KeyError, ValueError) as exc:  # smp: unknown encoder / wrong decoder length
        raise InputError(f"smp_unet:{encoder}: {exc}") from None


@register_model("smp_unet_r18")
def smp_unet_r18(num_classes: int = 25,
                 decoder_channels: Sequence[int] | None = None) -> nn.Module:
    """``smp.Unet("resnet18", encoder_weights=None)``: the usual ResNet-18 U-Net baseline."""
    return smp_unet("resnet18", num_classes, decoder_channels)


@torch.no_grad()
def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that follows a convolution into it, in place (eval mode only).

    Covers ``Sequential(conv, bn, ...)`` and torchvision ``BasicBlock`` s, i.e. all of
    ``unet_r18``/``scanet``; the outputs change only by float rounding.
    """
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.Sequential):
            for i in range(len(m) - 1):
                if isinstance(m[i], nn.Conv2d) and isinstance(m[i + 1], nn.BatchNorm2d):
                    m[i], m[i + 1] = fuse_conv_bn_eval(m[i], m[i + 1]), nn.Identity()
        elif isinstance(m, BasicBlock):
            m.conv1, m.bn1 = fuse_conv_bn_eval(m.conv1, m.bn1), nn.Identity()
            m.conv2, m.bn2 = fuse_conv_bn_eval(m.conv2, m.bn2), nn.Identity()
    return model


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching ``pattern``; any timm model also works as
    ``"unet_timm:<timm name>"``, any smp encoder as ``"smp_unet:<encoder>"``."""
    return _MODELS.names(pattern)


def create_model(name: str, num_classes: int = 25, **kwargs) -> nn.Module:
    """Build a parser by registry name, e.g. ``create_model("unet_r18", num_classes=25)``."""
    if name.startswith("unet_timm:"):
        return unet_timm(name.split(":", 1)[1], num_classes=num_classes, **kwargs)
    if name.startswith("smp_unet:"):
        return smp_unet(name.split(":", 1)[1], num_classes=num_classes, **kwargs)
    return _MODELS.create(name, num_classes=num_classes, **kwargs)
