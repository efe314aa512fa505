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
# distinctive marks of identity regions (see parsing.synth.genes.MARK_GENES)
_MARKS = {
    "iris_ring_r": 11, "iris_ring_l": 12, "brow_tip_r": 13, "brow_tip_l": 14, "nose_spot": 10,
    "nose_stud": 10, "lip_stud": 19, "hair_streak": 21, "eye_shadow_r": 8, "eye_shadow_l": 9,
    "eye_paint_r": 8, "eye_paint_l": 9,
}
SUB = {name: 32 + i for i, name in enumerate(_DETAIL)} | {
    name: 52 + i for i, name in enumerate(_MARKS)}
MOLE = 64  # MOLE + k: a mole inside skin region k (1..9)

# Occluders drawn over a finished face (parsing.synth.genes.OCCLUDER_KINDS): sub-label ->
# (FSE-25 class, occluder kind 1..4). Sunglasses are glasses and a scarf is clothing, so they
# take those classes; FSE-25 has no class for a surgical mask or a hand, so the label map keeps
# the class underneath them (the occluder mask says they are covered).
_OCCLUDERS = {
    "occ_lens": (23, 1), "occ_frame": (23, 1), "occ_mask": (0, 2), "occ_pleat": (0, 2),
    "occ_loop": (0, 2), "occ_hand": (0, 3), "occ_finger": (0, 3), "occ_scarf": (22, 4),
    "occ_fold": (22, 4),
}
SUB |= {name: 80 + i for i, name in enumerate(_OCCLUDERS)}
OCCLUDER_KIND = np.zeros(256, np.uint8)  # sub-label -> occluder kind (0: not an occluder)
KEEP_UNDERNEATH = (2, 3)  # occluder kinds whose pixels keep the label of what they cover

SUB_TO_CLASS = np.arange(256, dtype=np.uint8)
for _name, _cls in _DETAIL.items():
    SUB_TO_CLASS[SUB[_name]] = _cls
for _name, _cls in _MARKS.items():
    SUB_TO_CLASS[SUB[_name]] = _cls
for _name, (_cls, _kind) in _OCCLUDERS.items():
    SUB_TO_CLASS[SUB[_name]] = _cls
    OCCLUDER_KIND[SUB[_name]] = _kind
SUB_TO_CLASS[MOLE + 1 : MOLE + 10] = np.arange(1, 10)

# How strongly each sub-label takes skin shading (alpha channel of the colour table, 0-255).
SKIN_WEIGHT = np.zeros(256, np.uint8)
SKIN_WEIGHT[[*range(1, 11), 15, 16, 20, *range(MOLE + 1, MOLE + 10)]] = 255
SKIN_WEIGHT[[SUB[k] for k in ("nostril", "nose_side", "nose_ridge", "ear_inner_r",
                              "ear_inner_l", "neck_shadow")]] = 255
SKIN_WEIGHT[[18, 19, SUB["eye_shadow_r"], SUB["eye_shadow_l"]]] = 110

# Texture weights per sub-label, (256, 4) uint8: background, hair strands, fabric, unused.
MATERIAL = np.zeros((256, 4), np.uint8)
MATERIAL[0, 0] = 255
MATERIAL[[21, SUB["hair_back"], SUB["hair_streak"]], 1] = 255
MATERIAL[[13, 14, SUB["brow_tip_r"], SUB["brow_tip_l"]], 1] = 150
MATERIAL[[22, SUB["collar"], 24, SUB["hat_band"], SUB["hat_brim"], SUB["occ_scarf"],
          SUB["occ_fold"]], 2] = 255
MATERIAL_TABLE = MATERIAL.view(np.uint32).ravel()  # one 4-byte lookup per pixel
