"""Sub-labels: the FSE-25 classes plus detail ids inside a class (iris, nostril, teeth, ...).

The renderer draws sub-labels; the label map is their class, the image their colour. Ids 0-24
are the FSE-25 classes themselves.
"""

from __future__ import annotations

import numpy as np

_DETAIL = {
    "iris_r": 11, "iris_l": 12, "pupil_r": 11, "pupil_l": 12, "glint_r": 11, "glint_l": 12,
    "lash_r": 11, "lash_l": 12, "nostril": 10, "nose_side": 10, "nose_ridge": 10, "teeth": 17,
    "ear_inner_r": 15, "ear_inner_l": 16, "neck_shadow": 20, "lens": 23, "hat_band": 24,
    "hat_brim": 24, "collar": 22, "hair_back": 21,
}
SUB = {name: 32 + i for i, name in enumerate(_DETAIL)}
MOLE = 64  # MOLE + k: a mole inside skin region k (1..9)

SUB_TO_CLASS = np.arange(256, dtype=np.uint8)
for _name, _cls in _DETAIL.items():
    SUB_TO_CLASS[SUB[_name]] = _cls
SUB_TO_CLASS[MOLE + 1 : MOLE + 10] = np.arange(1, 10)

# How strongly each sub-label takes skin shading (alpha channel of the colour table, 0-255).
SKIN_WEIGHT = np.zeros(256, np.uint8)
SKIN_WEIGHT[[*range(1, 11), 15, 16, 20, *range(MOLE + 1, MOLE + 10)]] = 255
SKIN_WEIGHT[[SUB[k] for k in ("nostril", "nose_side", "nose_ridge", "ear_inner_r",
                              "ear_inner_l", "neck_shadow")]] = 255
SKIN_WEIGHT[[18, 19]] = 110

# Texture weights per sub-label, (256, 4) uint8: background, hair strands, fabric, unused.
MATERIAL = np.zeros((256, 4), np.uint8)
MATERIAL[0, 0] = 255
MATERIAL[[21, SUB["hair_back"]], 1] = 255
MATERIAL[[13, 14], 1] = 150
MATERIAL[[22, SUB["collar"], 24, SUB["hat_band"], SUB["hat_brim"]], 2] = 255
MATERIAL_TABLE = MATERIAL.view(np.uint32).ravel()  # one 4-byte lookup per pixel
