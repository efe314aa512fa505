"""Colouring a rendered sub-label map: palette, textures, lighting and camera effects."""

from __future__ import annotations

import colorsys
import functools
from typing import Any, NamedTuple

import cv2
import numpy as np

from parsing.synth.genes import MARKS
from parsing.synth.sublabels import MATERIAL_TABLE, MOLE, SKIN_WEIGHT, SUB, SUB_TO_CLASS
from parsing.synth.textures import TextureBank, texture_bank

_MID = 56.0
_SKIN_TONES = np.array([(255, 228, 206), (246, 206, 176), (232, 183, 148), (210, 154, 115),
                        (176, 120, 84), (134, 88, 60), (96, 63, 44)], np.float32)
_HAIR_COLOURS = np.array([(22, 18, 16), (48, 32, 24), (82, 54, 34), (122, 82, 48),
                          (176, 136, 84), (226, 196, 132), (150, 64, 32), (150, 146, 142),
                          (228, 226, 220)], np.float32)
_IRIS_COLOURS = np.array([(50, 30, 18), (110, 64, 28), (150, 100, 40), (116, 112, 52),
                          (58, 128, 72), (56, 112, 196), (118, 140, 162), (132, 172, 222)],
                         np.float32)
_BROW_COLOURS = np.array([(26, 20, 18), (56, 38, 28), (94, 64, 42), (150, 116, 76)], np.float32)
_LIP_RED = np.array([196.0, 72.0, 88.0], np.float32)
_LUMA = np.ones((3, 1)) @ np.array([[0.299, 0.587, 0.114]])


def _lerp(lo: float, hi: float, t: float) -> float:
    return lo + (hi - lo) * t


def _pick(table: np.ndarray, t: float) -> np.ndarray:
    return table[min(int(t * len(table)), len(table) - 1)]


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32) * 255


_FIXED = np.zeros((256, 3), np.float32)  # colours that do not depend on the person
_FIXED[[SUB["pupil_r"], SUB["pupil_l"]]] = (14, 12, 12)
_FIXED[[SUB["glint_r"], SUB["glint_l"]]] = (250, 250, 250)
_FIXED[[SUB["lash_r"], SUB["lash_l"]]] = (28, 22, 22)
_FIXED[17] = (92, 26, 32)
_FRAMES = np.array([(20, 20, 22), (70, 45, 30), (170, 170, 175), (150, 30, 40), (40, 60, 130)],
                   np.float32)
# sub-labels coloured as the skin tone times a per-image factor, in the order of `factors` below
_SKIN_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, SUB["nose_side"], SUB["nose_ridge"], SUB["nostril"],
             15, 16, SUB["ear_inner_r"], SUB["ear_inner_l"], 20, SUB["neck_shadow"],
             *range(MOLE + 1, MOLE + 10)]


_MASK_COLOURS = np.array([(150, 200, 232), (236, 238, 240), (36, 36, 42), (236, 180, 196),
                          (120, 170, 150)], np.float32)


def _marks_palette(rgb: np.ndarray, marks: dict[str, Any]) -> None:
    """Vivid, per-identity colours of the groups with marks (see genes.MARK_GENES)."""
    if (m := marks.get("eyes")) is not None:
        rgb[[SUB["iris_r"], SUB["iris_l"]]] = _hsv(m.iris_hue, _lerp(0.45, 1.0, m.iris_sat),
                                                   _lerp(0.35, 1.0, m.iris_val))
        rgb[[SUB["iris_ring_r"], SUB["iris_ring_l"]]] = _hsv(
            m.ring_hue, 0.85, _lerp(0.95, 0.25, m.iris_val))
        sclera = _lerp(215.0, 245.0, m.sclera_tint)
        rgb[[11, 12]] = sclera + (_hsv(m.sclera_hue, 1.0, 1.0) - sclera) * _lerp(
            0.25, 0.6, m.sclera_tint)
        rgb[[SUB["lash_r"], SUB["lash_l"]]] = _hsv(m.liner_hue, 0.85, 0.6)
    if (m := marks.get("brows")) is not None:
        rgb[[13, 14]] = _hsv(m.hue, _lerp(0.3, 1.0, m.sat), _lerp(0.12, 0.85, m.val))
        rgb[[SUB["brow_tip_r"], SUB["brow_tip_l"]]] = _hsv(m.tip_hue, 0.85, 0.8)
    if (m := marks.get("nose")) is not None:
        paint = _hsv(m.hue, 0.85, 0.85)
        ids = [10, SUB["nose_side"], SUB["nose_ridge"]]
        rgb[ids] += (paint - rgb[ids]) * _lerp(0.8, 1.0, m.tint)
        rgb[SUB["nose_spot"]] = _hsv(m.hue + 0.5, 0.75, 0.3)
        rgb[SUB["nose_stud"]] = _hsv(m.stud_hue, 0.45, 0.98)
    if (m := marks.get("mouth")) is not None:
        upper = _hsv(m.hue, _lerp(0.5, 1.0, m.sat), _lerp(0.35, 0.95, m.val))
        lower = (_hsv(m.lower_hue, _lerp(0.5, 1.0, m.sat), _lerp(0.95, 0.35, m.val))
                 if m.two_tone > 0.5 else upper * 1.08)
        rgb[18], rgb[19] = upper, lower
        rgb[SUB["lip_stud"]] = (235.0, 235.0, 240.0) if m.mark_x < 0.5 else (235.0, 190.0, 70.0)
    if (m := marks.get("hair")) is not None:
        hair_rgb = _hsv(m.hue, _lerp(0.15, 0.95, m.sat), _lerp(0.12, 0.95, m.val))
        rgb[21], rgb[SUB["hair_back"]] = hair_rgb, hair_rgb * 0.78
        rgb[SUB["hair_streak"]] = _hsv(m.streak_hue, 0.85, 0.9)
    if (m := marks.get("around_eyes")) is not None:
        rgb[[SUB["eye_shadow_r"], SUB["eye_shadow_l"]]] = _hsv(
            m.hue, _lerp(0.6, 1.0, m.sat), _lerp(0.45, 1.0, m.val))
        # paint in a colour far from the shadow's, light when the shadow is dark
        rgb[[SUB["eye_paint_r"], SUB["eye_paint_l"]]] = _hsv(
            m.hue + _lerp(0.25, 0.75, m.paint_hue), 0.9, _lerp(1.0, 0.55, m.val))


def _occluder_palette(rgb: np.ndarray, occ: Any) -> None:
    rgb[SUB["occ_lens"]] = _lerp(12.0, 55.0, occ.val) * np.array([1.0, 1.0 + 0.1 * occ.sat, 1.1])
    rgb[SUB["occ_frame"]] = _pick(_FRAMES, occ.hue)
    rgb[SUB["occ_mask"]] = _pick(_MASK_COLOURS, occ.hue)
    rgb[SUB["occ_pleat"]] = rgb[SUB["occ_mask"]] * 0.82
    rgb[SUB["occ_loop"]] = rgb[SUB["occ_mask"]] * 0.92
    rgb[SUB["occ_hand"]] = _pick(_SKIN_TONES, occ.hue) * _lerp(0.9, 1.05, occ.shade)
    rgb[SUB["occ_finger"]] = rgb[SUB["occ_hand"]] * 0.72
    rgb[SUB["occ_scarf"]] = _hsv(occ.hue, _lerp(0.3, 0.9, occ.sat), _lerp(0.25, 0.9, occ.val))
    rgb[SUB["occ_fold"]] = rgb[SUB["occ_scarf"]] * 0.75


def _palette(genes: dict[str, Any], n: Any, occluder: Any = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Per-image colour of every sub-label, (256, 3) float32, and the second background colour."""
    skin, hair, eye, brow, mouth = (genes[k] for k in ("skin", "hair", "eyes", "brows", "mouth"))
    cloth, glasses, hat = genes["clothing"], genes["glasses"], genes["headwear"]
    pos = skin.tone * (len(_SKIN_TONES) - 1)
    i = min(int(pos), len(_SKIN_TONES) - 2)
    warm = _lerp(-7.0, 7.0, skin.hue)
    tone = _SKIN_TONES[i] + (_SKIN_TONES[i + 1] - _SKIN_TONES[i]) * (pos - i) + (warm, 0.0, -warm)

    # the skin regions 1-9 share the tone, as in real faces; their differences (blush,
    # shadows under the eyes, stubble, shine) are smooth fields, see _skin_and_light
    pink = genes["nose"].tone
    nose = np.array([1 + 0.04 * pink, 1 - 0.06 * pink, 1 - 0.08 * pink])
    ear = np.array([1.0, 0.95, 0.94])
    inner_ear = _lerp(0.65, 0.8, genes["ears"].shade)
    neck = _lerp(0.92, 0.84, genes["neck"].shade)
    factors = np.array([
        *[(1.0, 1.0, 1.0)] * 9, nose, nose * 0.84, nose * 1.08, nose * 0.3, ear, ear,
        ear * inner_ear, ear * inner_ear, (neck,) * 3, (neck * 0.72,) * 3,
        *[(0.47, 0.42, 0.4)] * 9], np.float32)
    rgb = _FIXED.copy()
    rgb[_SKIN_IDS] = factors * tone

    rgb[0] = _hsv(n.bg_hue, _lerp(0.05, 0.6, n.bg_sat), _lerp(0.25, 0.95, n.bg_val))
    rgb[[11, 12]] = (_lerp(205.0, 245.0, eye.sclera),) * 3
    rgb[[SUB["iris_r"], SUB["iris_l"]]] = _pick(_IRIS_COLOURS, eye.iris)
    rgb[[13, 14]] = _pick(_BROW_COLOURS, brow.colour)
    red = _lerp(0.25, 0.75, mouth.colour)
    lips = tone * (_lerp(0.95, 0.7, mouth.tone) * (1 - red)) + _LIP_RED * red
    rgb[18], rgb[19] = lips, lips * 1.08
    rgb[SUB["teeth"]] = _lerp(200.0, 240.0, mouth.teeth) * np.array([1.0, 0.98, 0.9])
    hair_rgb = _pick(_HAIR_COLOURS, hair.colour) * _lerp(0.85, 1.15, hair.shade)
    rgb[21], rgb[SUB["hair_back"]] = hair_rgb, hair_rgb * 0.78
    rgb[22] = _hsv(cloth.hue, _lerp(0.0, 0.8, cloth.saturation), _lerp(0.2, 0.95, cloth.value))
    rgb[SUB["collar"]] = rgb[22] * 0.7 if cloth.neckline < 0.7 else 235.0
    rgb[23] = _pick(_FRAMES, glasses.colour)
    rgb[SUB["lens"]] = _lerp(20.0, 70.0, glasses.shade) * np.array([1.0, 1.05, 1.1])
    rgb[24] = _hsv(hat.hue, _lerp(0.1, 0.9, hat.saturation), _lerp(0.25, 0.95, hat.value))
    rgb[SUB["hat_band"]], rgb[SUB["hat_brim"]] = rgb[24] * 0.6, rgb[24] * 0.85
    if MARKS in genes:
        _marks_palette(rgb, genes[MARKS])
    if occluder is not None:
        _occluder_palette(rgb, occluder)
    second_bg = _hsv(n.bg_hue2, _lerp(0.05, 0.6, n.bg_sat), _lerp(0.2, 0.95, n.bg_amount))
    return rgb, second_bg


@functools.lru_cache(maxsize=4)
def _coarse_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Output-pixel coordinates of the samples that ``cv2.resize`` stretches by 4 to ``size``."""
    centres = 4.0 * np.arange((size + 3) // 4, dtype=np.float32) + 1.5
    return np.meshgrid(centres, centres)


def _colour_matrix(n: Any) -> tuple[np.ndarray, float]:
    """Camera colour: white balance gains, saturation, brightness and contrast as x -> Mx + b."""
    gains = np.diag([_lerp(0.9, 1.1, n.gain_r), _lerp(0.92, 1.08, n.gain_g),
                     _lerp(0.9, 1.1, n.gain_b)])
    sat = _lerp(0.65, 1.25, n.saturation)
    saturate = sat * np.eye(3) + (1.0 - sat) * _LUMA
    contrast = _lerp(0.8, 1.2, n.contrast)
    matrix = contrast * _lerp(0.85, 1.12, n.brightness) * gains @ saturate
    return matrix.astype(np.float32), 128.0 * (1.0 - contrast)


class FaceFrame(NamedTuple):
    """Where the face is, in canonical coordinates, for shading and hair texture."""

    half_width: float
    centre_y: float
    chin_y: float
    crown: tuple[float, float]  # where hair strands radiate from
    curly: bool
    points: np.ndarray  # the five landmarks (turned), canonical


def _skin_and_light(size: int, genes: dict[str, Any], n: Any, matrix: np.ndarray,
                    frame: FaceFrame) -> tuple[np.ndarray, ...]:
    """Smooth per-image fields, (S, S) float32 each: skin gain offsets for R, G, B and light.

    The skin darkens towards the face's edge and carries the person's blush (cheeks), shadows
    under the eyes, stubble (chin) and shine (forehead), each a soft blob centred in its
    region. Everything here is smooth, so it is computed on a 4x coarser grid and stretched.
    """
    xx, yy = _coarse_grid(size)
    inv = cv2.invertAffineTransform(matrix)
    x = inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2]  # canonical coordinates
    y = inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]
    u = (x - _MID) / frame.half_width
    v = (y - frame.centre_y - 6.0) / (frame.chin_y - frame.centre_y)
    shade = np.clip(u * u + v * v - 0.4, 0.0, 0.8) * _lerp(0.15, 0.4, n.shade)

    def blob(cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
        return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))

    (erx, ery), (elx, ely), _, (mrx, mry), (mlx, mly) = frame.points
    blush = _lerp(0.0, 0.16, genes["cheeks"].blush) * (
        blob(0.55 * erx + 0.45 * mrx - 3.0, 0.45 * ery + 0.55 * mry, 6.5, 5.5)
        + blob(0.55 * elx + 0.45 * mlx + 3.0, 0.45 * ely + 0.55 * mly, 6.5, 5.5))
    around = genes["around_eyes"]
    bags = _lerp(0.0, 0.14, around.bags) * (blob(erx, ery + 4.5, 6.5, 2.5)
                                             + blob(elx, ely + 4.5, 6.5, 2.5))
    stubble = 0.35 * max(0.0, genes["chin"].stubble - 0.7) / 0.3 * (
        blob((mrx + mlx) / 2, (mry + mly) / 2 + 9.0, 15.0, 8.0)
        + 0.6 * blob((mrx + mlx) / 2, (mry + mly) / 2 - 4.5, 10.0, 2.5))
    shine = _lerp(0.0, 0.08, genes["forehead"].tint) * blob((erx + elx) / 2, ery - 24.0, 11.0, 6.0)
    common = shine - shade - stubble
    violet = 0.5 * around.hue
    strength = _lerp(0.0, 0.5, n.light_strength) / size
    light = (1.0 + strength * _lerp(-1.0, 1.0, n.light_x) * (xx - size / 2)
             + strength * _lerp(-1.0, 1.0, n.light_y) * (yy - size / 2))
    fields = np.dstack([common + 0.5 * blush - 0.8 * bags, common - blush - bags,
                        common - 0.9 * blush - (0.7 - 0.5 * violet) * bags, light])
    return cv2.split(cv2.resize(fields.astype(np.float32), (size, size),
                                interpolation=cv2.INTER_LINEAR))


def shade_face(sub: np.ndarray, genes: dict[str, Any], n: Any, matrix: np.ndarray,
               frame: FaceFrame, occluder: Any = None) -> np.ndarray:
    """Colour a 2x sub-label map and turn it into the (S, S, 3) uint8 photograph.

    The map is coloured through the per-image palette (camera colour already applied: it is
    linear, so it commutes with the per-pixel gains below) and downsampled with OpenCV's
    Gaussian pyramid: output pixel i is centred on map pixel 2i, where the label map is
    sampled. Then come background, hair and fabric textures, skin shading, light, grain, blur.
    """
    size = sub.shape[0] // 2
    sub1 = sub[::2, ::2]  # sub-label at each output pixel centre
    rgb, second_bg = _palette(genes, n, occluder)
    camera, offset = _colour_matrix(n)
    rgb = rgb @ camera.T + offset
    second_bg = second_bg @ camera.T + offset
    table = np.concatenate([np.clip(rgb, 0, 255).astype(np.uint8), SKIN_WEIGHT[:, None]], axis=1)
    colour = cv2.pyrDown(table.view(np.uint32).ravel()[sub].view(np.uint8).reshape(*sub.shape, 4))
    red, green, blue, w_skin = cv2.split(colour)
    img = np.array((red, green, blue), np.float32)
    # texture weights (0-255) from the class at each pixel centre, softened by one pixel
    material = MATERIAL_TABLE[sub1].view(np.uint8).reshape(size, size, 4)
    w_bg, w_hair, w_fabric, _ = cv2.split(cv2.GaussianBlur(material, (3, 3), 0))
    bank = texture_bank(size)
    oy, ox, oy2, ox2 = (v * size for v in (n.tex_y, n.tex_x, n.tex_y2, n.tex_x2))
    if n.bg_kind < 0.85:
        fields = bank.smooth if n.bg_kind < 0.55 else bank.patterns
        field = bank.window(fields[min(int(n.bg_field * len(fields)), len(fields) - 1)], oy, ox)
        img += (w_bg * field) * ((second_bg - rgb[0]) * (1 / 255))[:, None, None]

    hair, cloth, hat = genes["hair"], genes["clothing"], genes["headwear"]
    if frame.curly:
        strands = bank.window(bank.curls[min(int(hair.texture * 3), 2)], oy2, ox2)
    else:  # strands radiate from the crown: put the field's centre there
        crown = matrix @ np.array([*frame.crown, 1.0])
        strands = bank.window(bank.strands[min(int(hair.texture * 3), 2)], size - crown[1],
                              size - crown[0])
    gain = 1.0 + w_hair * ((strands - 0.5) * (_lerp(0.5, 0.9, hair.strands) / 255))
    cloth_pattern = _pattern(bank, cloth.pattern, oy2, ox)
    hat_pattern = _pattern(bank, hat.pattern, oy, ox2)
    if cloth_pattern is not None or hat_pattern is not None:
        zero = np.zeros((size, size), np.float32)
        fabric = np.where(SUB_TO_CLASS[sub1] == 24, zero if hat_pattern is None else hat_pattern,
                          zero if cloth_pattern is None else cloth_pattern)
        gain -= w_fabric * (fabric * (1 / 255))
    skin_r, skin_g, skin_b, light = _skin_and_light(size, genes, n, matrix, frame)
    blotch = bank.window(bank.smooth[5], oy2, ox2) - 0.5
    w_skin = w_skin * (1 / 255)
    gain += w_skin * (_lerp(0.04, 0.14, genes["skin"].texture) * blotch)
    gain *= light
    w_skin *= light
    for channel, skin in zip(img, (skin_r, skin_g, skin_b), strict=True):
        channel *= gain + w_skin * skin
    img += _lerp(0.0, 7.0, n.noise) * bank.window(bank.noise, oy, ox2)  # grain
    out = cv2.merge(list(np.clip(img, 0, 255).astype(np.uint8)))
    if n.blur < 0.35:
        out = cv2.GaussianBlur(out, (0, 0), _lerp(0.4, 1.1, n.sharpness))
    return out


def _pattern(bank: TextureBank, gene: float, top: float, left: float) -> np.ndarray | None:
    """A fabric pattern (darkening in [0, 0.35]) chosen by ``gene``; None for plain fabric."""
    if gene < 0.35:
        return None
    index = min(int((gene - 0.35) / 0.65 * len(bank.patterns)), len(bank.patterns) - 1)
    return bank.window(bank.patterns[index], top, left) * 0.35
