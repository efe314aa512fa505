"""Face-embedding backbones and their registry.

>>> backbone = create_backbone("iresnet34")          # insightface state_dict compatible
>>> small = create_backbone("mbf")                    # MobileFaceNet for CPU runs
>>> other = create_backbone("timm:convnext_nano")     # any timm trunk + 512-d head
"""

from recognition.backbones.iresnet import (
    IBasicBlock,
    IResNet,
    iresnet18,
    iresnet34,
    iresnet50,
    iresnet100,
    iresnet200,
)
from recognition.backbones.mobilefacenet import MobileFaceNet, mbf, mbf_large
from recognition.backbones.registry import create_backbone, list_backbones, register_backbone
from recognition.backbones.timm_backbone import TimmBackbone

__all__ = ["IBasicBlock", "IResNet", "MobileFaceNet", "TimmBackbone", "create_backbone",
           "iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet200", "list_backbones",
           "mbf", "mbf_large", "register_backbone"]
