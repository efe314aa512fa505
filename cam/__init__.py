"""Explanations for face models: Grad-CAM, RISE, Group-CAM and FS-CAM, per face region."""

from cam.base import Explanation
from cam.fscam import FSCAM
from cam.gradcam import GradCAM
from cam.groupcam import GroupCAM
from cam.regions import RegionStats, region_attribution
from cam.rise import RISE

__all__ = ["Explanation", "FSCAM", "GradCAM", "GroupCAM", "RISE", "RegionStats",
           "region_attribution"]
