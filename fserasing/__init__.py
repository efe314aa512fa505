"""Face Semantic Erasing: erase random face regions, per sample in v2 pipelines or batched."""

from fserasing.erasing import FILL_MODES, BatchFSErasing, Erasure, RegionEraser, erase_batch
from fserasing.transforms import FSErasing

__all__ = ["FILL_MODES", "BatchFSErasing", "Erasure", "FSErasing", "RegionEraser", "erase_batch"]
