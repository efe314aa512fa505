"""Explanations for face models: Grad-CAM, RISE, Group-CAM and FS-CAM, per face region."""

from cam.base import Explanation, create_explainer, list_explainers, register_explainer
from cam.fscam import FSCAM
from cam.gradcam import GradCAM
from cam.groupcam import GroupCAM
from cam.regions import RegionStats, region_attribution
from cam.rise import RISE

__all__ = ["Explanation", "FSCAM", "GradCAM", "GroupCAM", "RISE", "RegionStats",
           "create_explainer", "list_explainers", "region_attribution", "register_explainer"]
