"""Face Semantic Erasing: erase random face regions, per sample in v2 pipelines or batched."""

from fserasing.erasing import (
    FILL_MODES,
    BatchFSErasing,
    Erasure,
    FillMode,
    RegionEraser,
    erase_batch,
    list_fill_modes,
    register_fill_mode,
)
from fserasing.masks import (
    MaskCallable,
    MaskedImageFolder,
    MaskFolder,
    MaskSource,
    MaskStoreSource,
    MaskTensor,
    open_mask_source,
)
from fserasing.transforms import FSErasing

__all__ = [
    "FILL_MODES",
    "BatchFSErasing",
    "Erasure",
    "FSErasing",
    "FillMode",
    "MaskCallable",
    "MaskFolder",
    "MaskSource",
    "MaskStoreSource",
    "MaskTensor",
    "MaskedImageFolder",
    "RegionEraser",
    "erase_batch",
    "list_fill_modes",
    "open_mask_source",
    "register_fill_mode",
]
