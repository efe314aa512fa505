"""Rasterise one synthetic face: geometry -> sub-label map -> label map, image, landmarks.

All shapes are polygons in the *canonical frame*: the 112 x 112 ArcFace crop of reference §5.1 in
pixel coordinates (pixel centres on integers). Facial features sit on a vertical cylinder and
turn with a per-image yaw angle; one similarity then maps everything into the output. Shapes
are filled with OpenCV (sub-pixel vertices) into a 2x supersampled map of sub-labels
(:mod:`parsing.synth.sublabels`), in painter's order. The label map is the class of that map
at each output pixel centre, and :func:`parsing.synth.shading.shade_face` colours the same map
for the image, so labels and pixels come from one geometry.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import cv2
import numpy as np

from parsing.core.align import ARCFACE_TEMPLATE
from parsing.synth.genes import MARKS
from parsing.synth.shading import FaceFrame, shade_face
from parsing.synth.sublabels import KEEP_UNDERNEATH, MOLE, OCCLUDER_KIND, SUB, SUB_TO_CLASS

TEMPLATE = ARCFACE_TEMPLATE.numpy()
FAR = 400.0  # "beyond any canvas" in canonical pixels
_MID = 56.0  # canonical face midline
_YAW_RADIUS = 52.0  # features sit on a cylinder of this radius for the yaw-like turn
_T = np.linspace(-1.0, 1.0, 13)  # across eyes and mouth
_ENV = 1.0 - _T * _T
_T01 = np.linspace(0.0, 1.0, 11)  # along a brow
_LIP_DEPTH = np.concatenate([2.0 + _ENV, 2.0 + _ENV[::-1]])  # the lips' middle sticks out
# how far the points the skin regions are built from stick out: brow lines, midline, eyes,
# alae, mouth corners
_KEY_DEPTH = np.array([2.0] * 22 + [0.0, 1.0, 1.0, 4.0, 4.0, 2.0, 2.0])


class Face(NamedTuple):
    """One rendered face: (S, S, 3) uint8 RGB, (S, S) uint8 FSE-25 ids, (5, 2) float32 points,
    and (S, S) uint8 occluder kinds (0: none; see ``parsing.synth.genes.OCCLUDER_KINDS``)."""

    image: np.ndarray
    label_map: np.ndarray
    landmarks: np.ndarray
    occluders: np.ndarray | None = None


def _lerp(lo: float, hi: float, t: float) -> float:
    return lo + (hi - lo) * t


@functools.lru_cache(maxsize=16)
def _arc(n: int, start: float, stop: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(start, stop, n)
    return np.cos(t), np.sin(t)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24,
             start: float = 0.0, stop: float = 2 * math.pi) -> np.ndarray:
    c, s = _arc(n, start, stop)
    out = np.empty((n, 2))
    out[:, 0] = cx + rx * c
    out[:, 1] = cy + ry * s
    return out


def _superellipse(cx: float, cy: float, rx: float, ry: float, power: float) -> np.ndarray:
    c, s = _arc(28, 0.0, 2 * math.pi)
    e = 2.0 / power
    return np.stack([cx + rx * np.sign(c) * np.abs(c) ** e, cy + ry * np.sign(s) * np.abs(s) ** e],
                    axis=1)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 2D similarity src -> dst as a (2, 3) matrix.

    The closed form of the 2D Umeyama solution; ``parsing.align.estimate_similarity`` computes
    the same matrix batched in torch, too slow to call once per face of a few milliseconds.
    """
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    norm = (s * s).sum()
    a = (s * d).sum() / norm
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / norm
    rot = np.array([[a, -b], [b, a]])
    return np.concatenate([rot, (md - rot @ ms)[:, None]], axis=1)


def _placement(angle: float, scale: float, centre: tuple[float, float],
               target: tuple[float, float]) -> np.ndarray:
    """(2, 3) similarity turning by ``angle`` and scaling about ``centre``, moved to ``target``."""
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return np.concatenate([rot, (np.asarray(target) - rot @ np.asarray(centre))[:, None]], axis=1)


def _yaw(pts: np.ndarray, angle: float, depth: float | np.ndarray = 0.0) -> np.ndarray:
    """Turn points on a vertical cylinder around the midline; ``depth`` sticks out of it."""
    u = np.minimum(np.maximum((pts[:, 0] - _MID) * (1 / _YAW_RADIUS), -0.99), 0.99)
    out = pts.copy()
    out[:, 0] = _MID + _YAW_RADIUS * np.sin(np.arcsin(u) + angle) + depth * math.sin(angle)
    return out


class _Canvas:
    """The 2x supersampled sub-label map and a queue of shapes to rasterise in order.

    Shapes are queued in canonical coordinates (turned by the yaw when given a ``depth``) and
    transformed all at once in :meth:`flush`, which keeps the per-shape cost to one OpenCV call.
    """

    def __init__(self, size: int, matrix: np.ndarray, yaw: float) -> None:
        self.matrix = 2.0 * matrix  # canvas pixel 2i is centred on output pixel i
        self.scale = 2.0 * math.sqrt(abs(np.linalg.det(matrix[:, :2])))
        self.yaw = yaw
        self.sub = np.zeros((2 * size, 2 * size), np.uint8)
        self._pts: list[np.ndarray] = []
        self._depth: list[float | np.ndarray] = []  # nan: not turned
        self._ops: list[tuple] = []

    def _queue(self, pts: Any, depth: float | np.ndarray | None) -> int:
        self._pts.append(pts if isinstance(pts, np.ndarray) else np.array(pts, np.float64))
        self._depth.append(math.nan if depth is None else
                           float(depth) if np.ndim(depth) == 0 else np.asarray(depth))
        return len(self._pts) - 1

    def fill(self, pts: Any, value: int, depth: float | np.ndarray | None = None) -> None:
        self._ops.append(("fill", self._queue(pts, depth), int(value)))

    def line(self, pts: Any, value: int, width: float, depth: float | np.ndarray | None = None,
             closed: bool = False) -> None:
        thickness = max(1, round(width * self.scale))
        self._ops.append(("line", self._queue(pts, depth), int(value), thickness, closed))

    def fill_inside(self, shape: Any, inside: int, detail: list[tuple[Any, int]],
                    depth: float | np.ndarray | None = None) -> None:
        """Fill each (polygon, value) of ``detail`` only where ``shape`` was drawn as ``inside``."""
        parts = [(self._queue(p, depth), int(v)) for p, v in detail]
        self._ops.append(("inside", self._queue(shape, depth), inside, parts))

    def partition(self, outline: Any, regions: list[tuple[Any, int]], base: int) -> None:
        """Inside ``outline`` (not turned), paint ``base`` then each (polygon, value) in order."""
        parts = [(self._queue(p, None), int(v)) for p, v in regions]
        self._ops.append(("partition", self._queue(outline, None), base, parts))

    def turn(self, pts: Any, depth: float | np.ndarray = 0.0) -> np.ndarray:
        return _yaw(np.asarray(pts, np.float64).reshape(-1, 2), self.yaw, depth)

    def value_at(self, pt: np.ndarray) -> int:
        """The sub-label drawn so far at canonical point ``pt`` (already turned)."""
        self.flush()
        x, y = np.rint(self.matrix[:, :2] @ pt + self.matrix[:, 2]).astype(int)
        n = self.sub.shape[0]
        return int(self.sub[y, x]) if 0 <= x < n and 0 <= y < n else 0

    def flush(self) -> None:
        """Rasterise every queued shape, in the order queued."""
        if not self._ops:
            return
        lengths = [len(p) for p in self._pts]
        pts = np.concatenate(self._pts)
        depth = np.repeat([d if isinstance(d, float) else 0.0 for d in self._depth], lengths)
        ends = np.cumsum(lengths)
        for i, d in enumerate(self._depth):
            if not isinstance(d, float):
                depth[ends[i] - lengths[i] : ends[i]] = d
        turned = ~np.isnan(depth)
        if turned.any():
            pts[turned] = _yaw(pts[turned], self.yaw, depth[turned])
        m16 = 16.0 * self.matrix  # OpenCV fixed point, shift=4
        fixed = np.rint(pts @ m16[:, :2].T + m16[:, 2]).astype(np.int32)
        polys = [fixed[e - n : e] for e, n in zip(ends.tolist(), lengths, strict=True)]
        for op in self._ops:
            if op[0] == "fill":
                cv2.fillPoly(self.sub, [polys[op[1]]], op[2], cv2.LINE_8, 4)
            elif op[0] == "line":
                cv2.polylines(self.sub, [polys[op[1]]], op[4], op[2], op[3], cv2.LINE_8, 4)
            else:
                self._masked(op[0], polys[op[1]], op[2], [(polys[i], v) for i, v in op[3]])
        self._pts, self._depth, self._ops = [], [], []

    def _masked(self, kind: str, shape: np.ndarray, value: int,
                parts: list[tuple[np.ndarray, int]]) -> None:
        n = self.sub.shape[0]
        (x0, y0), (x1, y1) = shape.min(0) // 16 - 1, shape.max(0) // 16 + 2
        x0, y0, x1, y1 = max(int(x0), 0), max(int(y0), 0), min(int(x1), n), min(int(y1), n)
        if x1 <= x0 or y1 <= y0:
            return
        crop = self.sub[y0:y1, x0:x1]
        origin = np.array([x0, y0], np.int32) * 16
        if kind == "inside":  # detail clipped to what was drawn as `value`
            mask = crop == value
            layer = np.zeros_like(crop)
        else:  # a partition of the outline
            mask = np.zeros_like(crop)
            cv2.fillPoly(mask, [shape - origin], 1, cv2.LINE_8, 4)
            mask = mask.view(bool)
            layer = np.full_like(crop, value)
        for poly, v in parts:
            cv2.fillPoly(layer, [poly - origin], v, cv2.LINE_8, 4)
        if kind == "inside":
            mask &= layer > 0
        np.copyto(crop, layer, where=mask)


def _eye(centre: np.ndarray, width: float, height: float, tilt: float, side: int):
    """Almond outline and upper lid of an eye; side -1: subject's right (image left).

    ``tilt`` > 0 lifts the outer corner.
    """
    along = np.array([side * math.cos(tilt), -math.sin(tilt)]) * (width / 2)  # to the outer corner
    up = np.array([along[1], -along[0]]) * (side * 2 / width)
    t = _T
    skew = 1.0 - 0.18 * t  # the upper lid peaks nearer the inner corner (t = -1)
    upper = centre + t[:, None] * along + (height * 0.62 * (1 - t * t) ** 0.8 * skew)[:, None] * up
    lower = centre + t[::-1, None] * along - (height * 0.38 * (1 - t * t))[:, None] * up
    return np.concatenate([upper, lower]), upper


def _brow(eye: np.ndarray, eye_width: float, genes: Any, lift: float, side: int,
          marks: Any = None):
    """Brow polygon and its centre line (inner end first) above ``eye``."""
    t = _T01
    inner_x = eye[0] - side * (eye_width * 0.5 - _lerp(0.5, 2.5, genes.length))
    outer_x = eye[0] + side * (eye_width * 0.5 + _lerp(2.5, 6.0, genes.length))
    arch = (_lerp(0.5, 4.0, genes.arch) if marks is None else _lerp(0.0, 6.5, marks.arch)
            ) * np.sin(np.pi * t**0.8)
    y = eye[1] - _lerp(8.5, 12.0, genes.gap) - lift - arch + _lerp(-2.0, 2.5, genes.tilt) * t
    centre = np.stack([inner_x + (outer_x - inner_x) * t, y], axis=1)
    half = np.zeros_like(centre)
    thick = (_lerp(0.9, 2.2, genes.thickness) if marks is None
             else _lerp(0.8, 3.4, marks.thickness))
    half[:, 1] = thick * (1.0 - 0.55 * t)
    return np.concatenate([centre - half, (centre + half)[::-1]]), centre


def _face_outline(a: float, top: float, fy: float, chin_y: float, jaw: float,
                  taper: float) -> np.ndarray:
    """Upper half an ellipse; lower half a superellipse (``jaw`` > 2: squarer), ``taper``ed."""
    c, s = _arc(20, math.pi, 2 * math.pi)
    upper = np.stack([_MID + a * c, fy + (fy - top) * s], axis=1)
    c, s = _arc(22, 0.0, math.pi)
    e = 2.0 / jaw
    x = np.sign(c) * np.abs(c) ** e * (1.0 - taper * s**4)
    lower = np.stack([_MID + a * x, fy + (chin_y - fy) * np.abs(s) ** e], axis=1)
    return np.concatenate([upper, lower])


def _head_arc(rx: float, ry: float, fy: float, bottom: float, wobble: float = 0.0) -> np.ndarray:
    """Top of the head from the image-left side (at height ``bottom``) over to the right."""
    start = math.asin(min(1.0, (fy - bottom) / ry)) if bottom < fy else 0.0
    t = np.linspace(math.pi - start, start, 25)
    r = 1.0 + wobble * np.sin(t * 17.0)
    pts = np.stack([_MID + rx * r * np.cos(t), fy - ry * r * np.sin(t)], axis=1)
    if bottom > fy:
        pts = np.concatenate([[[_MID - rx, bottom]], pts, [[_MID + rx, bottom]]])
    return pts


class _Hair(NamedTuple):
    bald: bool
    length: int  # 0 short, 1 to the jaw, 2 past the shoulders
    curly: bool
    fringe: float  # 0: none, else how far above the brows it stops
    covers_ears: bool
    volume: float
    hairline: float
    recess: float
    part: float


def _hair_style(hair: Any, n: Any) -> _Hair:
    """The identity's hair, with the occasional change of the day (tied back, fringe)."""
    length = 0 if hair.length < 0.45 else 1 if hair.length < 0.7 else 2
    fringe = _lerp(1.0, 7.0, (hair.fringe - 0.6) / 0.4) if hair.fringe > 0.6 else 0.0
    if n.hair_change > 0.9:
        length = 0  # tied back
    elif n.hair_change > 0.82:
        fringe = 0.0 if fringe else 4.0
    curly = hair.curl > 0.78
    return _Hair(
        bald=hair.style < 0.07,
        length=length,
        curly=curly,
        fringe=fringe,
        covers_ears=length > 0 and hair.style > 0.6,
        volume=_lerp(1.5, 7.0, hair.volume) + 5.0 * curly + _lerp(-1.5, 1.5, n.volume_delta),
        hairline=_lerp(13.0, 24.0, hair.hairline) + _lerp(-2.0, 2.0, n.hairline_delta),
        recess=_lerp(0.0, 9.0, hair.recess),
        part=_lerp(-10.0, 10.0, hair.part),
    )


def hair_style(genes: dict[str, Any], n: Any) -> _Hair:
    """The hair a face is drawn with; a bound, marked head of hair is worn the same way in
    every photo (no change of the day)."""
    if "hair" in genes.get(MARKS, {}):
        n = n._replace(hair_change=0.0, hairline_delta=0.5, volume_delta=0.5)
    return _hair_style(genes["hair"], n)


class _Geometry(NamedTuple):
    """The face frame shared by the drawing steps (canonical coordinates, before the turn)."""

    half_width: float  # of the face at its widest line
    fy: float  # height of the widest line
    top: float  # top of the skull
    chin_y: float
    outline: np.ndarray
    anchors: np.ndarray  # eyes, nose tip, mouth corners (ArcFace order)
    eye_size: tuple[float, float, float]  # width, height, tilt
    expression: tuple[float, float, float]  # mouth opening, smile, brow lift
    hair: _Hair


#: the expressions a face is drawn with (:func:`expression`)
EXPRESSIONS = ("neutral", "happiness", "surprise")


def expression(n: Any) -> tuple[int, float, float, float, float, float]:
    """The expression of a face's nuisance: its index in :data:`EXPRESSIONS`, then the mouth
    opening, smile, brow lift, eye squint factor and mouth narrowing the face is drawn with."""
    smile = open_ = lift = narrow = 0.0
    squint = _lerp(0.92, 1.05, n.squint)
    if n.expression > 0.82:  # surprise
        open_, lift = _lerp(3.0, 6.5, n.open), _lerp(1.0, 3.0, n.brow_raise)
        return 2, open_, smile, lift, 1.12, 0.5 * open_
    if n.expression > 0.35:  # smile, often showing teeth
        smile = _lerp(0.3, 1.0, n.smile)
        open_ = _lerp(1.5, 4.0, n.open) if n.open > 0.4 else 0.0
        return 1, open_, smile, lift, squint * (1.0 - 0.15 * smile), narrow
    return 0, open_, smile, lift, squint, narrow


def render_face(genes: dict[str, Any], nuisance: Any, size: int = 112, loose: bool = False,
                occluder: Any = None) -> Face:
    """Render one face from its genes and nuisance (:func:`parsing.synth.genes.face_genes`).

    The face fills the ArcFace crop (landmarks near the template, scaled by ``size / 112``);
    ``loose`` puts it smaller, turned and off-centre in the canvas instead. An ``occluder``
    (:func:`parsing.synth.genes.occluder_genes`) is drawn over the finished face; the face
    under it is the same as without it, and ``Face.occluders`` says where it is.
    """
    n = nuisance
    marks = genes.get(MARKS, {})
    cheek, chin, eye, nose, mouth = (genes[k] for k in ("cheeks", "chin", "eyes", "nose", "mouth"))
    yaw = 0.25 * (n.yaw_a + n.yaw_b - 1.0)
    _, open_, smile, lift, squint, narrow = expression(n)

    a = _lerp(36.5, 43.0, cheek.width)
    fy, chin_y = 54.0, _lerp(103.0, 112.0, chin.length)
    top = -2.0 + (43.0 - a) * 0.6
    spread, level = _lerp(-2.5, 2.5, eye.spacing), _lerp(-2.0, 2.0, eye.level)
    widen = (_lerp(-3.0, 3.0, mouth.width) if "mouth" not in marks
             else _lerp(-4.5, 4.5, marks["mouth"].width)) + 2.0 * smile - narrow
    nose_drop = (_lerp(-2.5, 2.5, nose.length) if "nose" not in marks
                 else _lerp(-4.0, 4.0, marks["nose"].length))
    eye_w, eye_h = _lerp(11.5, 15.5, eye.width), _lerp(4.2, 6.8, eye.height)
    if "eyes" in marks:
        eye_w, eye_h = _lerp(11.0, 18.0, marks["eyes"].size), _lerp(4.0, 8.5, marks["eyes"].shape)
    anchors = np.stack([TEMPLATE[0] + (-spread, level), TEMPLATE[1] + (spread, level),
                        TEMPLATE[2] + (0.0, nose_drop),
                        TEMPLATE[3] + (-widen, -2.5 * smile), TEMPLATE[4] + (widen, -2.5 * smile)])
    geo = _Geometry(
        half_width=a, fy=fy, top=top, chin_y=chin_y,
        outline=_face_outline(a, top, fy, chin_y, _lerp(2.0, 3.3, chin.jaw),
                              _lerp(0.0, 0.3, chin.taper)),
        anchors=anchors,
        eye_size=(eye_w, eye_h * squint, _lerp(-0.1, 0.16, eye.tilt)),
        expression=(open_, smile, lift),
        hair=hair_style(genes, n),
    )
    landmarks = _yaw(anchors, yaw, np.array([1.0, 1.0, 10.0, 2.0, 2.0]))

    # pose: align the turned landmarks to the template, then jitter (or place loosely)
    if loose:
        scale = _lerp(0.42, 0.75, n.scale) * size / 112
        room = (size - scale * 112) * 0.4
        target = (size / 2 + _lerp(-room, room, n.loose_x),
                  size / 2 + _lerp(-room, room, n.loose_y))
        place = _placement(_lerp(-0.45, 0.45, n.rotation), scale, (56.0, 60.0), target)
    else:
        k = size / 112
        target = (k * (56.0 + _lerp(-2.5, 2.5, n.shift_x)),
                  k * (56.0 + _lerp(-2.5, 2.5, n.shift_y)))
        place = _placement(_lerp(-0.14, 0.14, n.rotation), _lerp(0.94, 1.06, n.scale) * k,
                           (56.0, 56.0), target)
    align = _similarity(landmarks, TEMPLATE)
    matrix = place[:, :2] @ align
    matrix[:, 2] += place[:, 2]

    canvas = _Canvas(size, matrix, yaw)
    _draw_body(canvas, genes, geo)
    _draw_ears(canvas, genes["ears"], geo)
    _draw_face(canvas, genes, n, geo)
    _draw_hair(canvas, geo, marks.get("hair"))
    # accessories would hide a marked identity region: glasses the eyes, hats the hair
    if "eyes" not in marks and "around_eyes" not in marks:
        _draw_glasses(canvas, genes["glasses"], geo)
    if "hair" not in marks:
        _draw_headwear(canvas, genes["headwear"], geo)
    canvas.flush()
    under = None
    if occluder is not None:
        under = SUB_TO_CLASS[canvas.sub[::2, ::2]]
        _draw_occluder(canvas, occluder, geo)
        canvas.flush()
    frame = FaceFrame(a, fy, chin_y, (_MID + geo.hair.part * 0.5, top + 6.0), geo.hair.curly,
                      landmarks)
    image = shade_face(canvas.sub, genes, n, matrix, frame, occluder)
    sub1 = canvas.sub[::2, ::2]
    label_map = SUB_TO_CLASS[sub1]
    occluders = None
    if under is not None:
        # a pixel is occluded where an occluder was drawn within the support of its colour
        # (3x3 supersampled pixels around its centre), so thin straps and frames count too
        occluders = cv2.dilate(OCCLUDER_KIND[canvas.sub], np.ones((3, 3), np.uint8))[::2, ::2]
        keep = np.isin(OCCLUDER_KIND[sub1], KEEP_UNDERNEATH)
        label_map[keep] = under[keep]
    return Face(image, label_map, (landmarks @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32),
                occluders)


def _neckline(kind: float, depth: float, half: float, y: float) -> np.ndarray:
    """Neckline from the image-left edge of the neck to the right: round, V or turtleneck."""
    if kind < 0.4:
        return _ellipse(_MID, y, half, _lerp(3.0, 8.0, depth), 9, math.pi, 0.0)
    if kind < 0.7:
        return np.array([[_MID - half, y], [_MID, y + _lerp(8.0, 18.0, depth)], [_MID + half, y]])
    return np.array([[_MID - half, y - 7.0], [_MID + half, y - 7.0]])


def _draw_body(canvas: _Canvas, genes: dict[str, Any], geo: _Geometry) -> None:
    """Hair behind the head, the neck with the jaw's shadow, clothing."""
    hair, neck, cloth, style = genes["hair"], genes["neck"], genes["clothing"], geo.hair
    a, fy = geo.half_width, geo.fy
    if style.length and not style.bald:
        rx, ry = a + style.volume + 1.0, fy - geo.top + style.volume
        end = (geo.chin_y - _lerp(2.0, 14.0, hair.bob) if style.length == 1
               else _lerp(125.0, 170.0, hair.length))
        flare = 1.5 if style.length == 1 else 5.0
        canvas.fill(np.concatenate([_head_arc(rx, ry, fy, fy, 0.04 * style.curly), [
            [_MID + rx + flare, end - 6.0], [_MID + rx * 0.5, end], [_MID - rx * 0.5, end],
            [_MID - rx - flare, end - 6.0]]]), SUB["hair_back"])
    half_neck = a * _lerp(0.48, 0.6, neck.width)
    collar_y = _lerp(99.0, 112.0, cloth.height)
    neckline = _neckline(cloth.neckline, cloth.depth, half_neck * 1.05, collar_y)
    canvas.fill(np.concatenate([[[_MID - half_neck, fy], [_MID + half_neck, fy]], neckline[::-1]]),
                20)
    jaw = geo.outline[20:] + (0.0, _lerp(3.0, 6.0, neck.shade))
    jaw[:, 0] = np.clip(jaw[:, 0], _MID - half_neck, _MID + half_neck)
    canvas.fill(jaw, SUB["neck_shadow"])
    shoulder = a + 24.0
    drop = collar_y + _lerp(0.12, 0.4, cloth.slope) * (shoulder - half_neck)
    canvas.fill(np.concatenate([neckline, [
        [_MID + shoulder, drop], [_MID + shoulder + 22.0, drop + 30.0],
        [_MID + shoulder + 22.0, FAR], [_MID - shoulder - 22.0, FAR],
        [_MID - shoulder - 22.0, drop + 30.0], [_MID - shoulder, drop]]]), 22)
    canvas.line(neckline, SUB["collar"], _lerp(1.0, 2.5, cloth.collar))


def _draw_ears(canvas: _Canvas, ear: Any, geo: _Geometry) -> None:
    cy = (geo.anchors[0, 1] + geo.anchors[1, 1]) / 2 + _lerp(3.0, 9.0, ear.height)
    rx, ry, out = _lerp(5.0, 7.5, ear.size), _lerp(9.5, 13.0, ear.size), _lerp(0.0, 3.0, ear.out)
    c, s = _arc(20, 0.0, 2 * math.pi)
    narrow = 1.0 - 0.3 * np.maximum(s, 0.0)  # the lobe
    # turning the face shows more of one ear and hides the other
    for side, value, inner, show in ((-1, 15, SUB["ear_inner_r"], 1.0 + 2.2 * canvas.yaw),
                                     (1, 16, SUB["ear_inner_l"], 1.0 - 2.2 * canvas.yaw)):
        show = min(max(show, 0.3), 1.6)
        w, cx = rx * show, _MID + side * (geo.half_width - 2.5 + out * show)
        canvas.fill(np.stack([cx + side * w * c * narrow, cy + ry * s], axis=1), value)
        canvas.fill(_ellipse(cx + side * w * 0.3, cy - 1.0, w * 0.42, ry * 0.58, 16), inner)


def _draw_face(canvas: _Canvas, genes: dict[str, Any], n: Any, geo: _Geometry) -> None:
    """Skin regions 1-9 inside the face outline, moles, nose, mouth, eyes and brows."""
    e_r, e_l, tip, c_r, c_l = geo.anchors
    ew, eh, tilt = geo.eye_size
    open_, smile, lift = geo.expression
    nose, mouth, eye = genes["nose"], genes["mouth"], genes["eyes"]
    marks = genes.get(MARKS, {})
    eye_y = (e_r[1] + e_l[1]) / 2
    brow_r, line_r = _brow(e_r, ew, genes["brows"], lift, -1, marks.get("brows"))
    brow_l, line_l = _brow(e_l, ew, genes["brows"], lift, 1, marks.get("brows"))
    brow_lines = line_r, line_l
    nw = _lerp(7.0, 10.5, nose.width) if "nose" not in marks else _lerp(5.5, 13.0,
                                                                          marks["nose"].width)

    # the skin regions follow the turned features: turn the points they are built from at once
    alae = [[tip[0] - nw, tip[1] + 1.5], [tip[0] + nw, tip[1] + 1.5]]
    key = canvas.turn(np.concatenate([line_r, line_l, [[_MID, 0.0], e_r, e_l, *alae, c_r, c_l]]),
                      _KEY_DEPTH)
    line_r, line_l = key[:11], key[11:22]
    x_mid = key[22, 0]
    centres, alae, corners = key[23:25], key[25:27], key[27:29]
    glabella = eye_y - 4.0
    bag = _lerp(2.5, 5.0, genes["around_eyes"].bags)
    regions = [(np.array([[-FAR, -FAR], [x_mid, -FAR], [x_mid, FAR], [-FAR, FAR]]), 1)]
    for s, ala, corner, value in ((-1, alae[0], corners[0], 3), (1, alae[1], corners[1], 4)):
        regions.append((np.array([
            [x_mid, ala[1] + 1.0], [ala[0], ala[1] + 1.0], [corner[0] + s * 3.5, corner[1] + 1.5],
            [corner[0] + s * 6.0, corner[1] + 10.0], [corner[0] + s * 7.0, FAR], [x_mid, FAR]]),
            value))
    for s, centre, line, value in ((-1, centres[0], line_r, 8), (1, centres[1], line_l, 9)):
        regions.append((np.concatenate([line, [
            [s * FAR, line[-1, 1]], [s * FAR, centre[1] + 4.0],
            [centre[0] + s * (ew / 2 + 4.0), centre[1] + 4.5],
            [centre[0], centre[1] + eh * 0.4 + bag], [x_mid, centre[1] + 7.0], [x_mid, glabella]]]),
            value))
    regions += [
        (np.concatenate([[[-FAR, -FAR], [line_r[0, 0], -FAR]], line_r, [[-FAR, line_r[-1, 1]]]]),
         5),
        (np.concatenate([[[line_l[0, 0], -FAR], [FAR, -FAR], [FAR, line_l[-1, 1]]], line_l[::-1]]),
         6),
        (np.array([[line_r[0, 0], -FAR], [line_l[0, 0], -FAR], line_l[0], [x_mid + 1.5, glabella],
                   [x_mid - 1.5, glabella], line_r[0]]), 7),
    ]
    canvas.partition(geo.outline, regions, base=2)
    if (shadow := marks.get("around_eyes")) is not None:  # eye shadow over both lids, paint
        for centre, value, s, suffix in ((e_r, 8, -1, "r"), (e_l, 9, 1, "l")):
            lid = _ellipse(centre[0], centre[1] - 1.5, ew / 2 + _lerp(4.0, 8.0, shadow.reach),
                           eh / 2 + _lerp(5.0, 8.0, shadow.height), 20)
            canvas.fill_inside(lid, value, [(lid, SUB["eye_shadow_" + suffix])], 1.0)
            for paint in _eye_paint(shadow, centre, ew, eh, s):
                canvas.fill_inside(paint, value, [(paint, SUB["eye_paint_" + suffix])], 1.0)

    cheek, chin, fore = genes["cheeks"], genes["chin"], genes["forehead"]
    moles = []
    if cheek.mole > 0.55:
        ex = e_r[0] if cheek.mole_x < 0.5 else e_l[0]
        moles.append((ex + _lerp(-6.0, 6.0, (cheek.mole_x * 2) % 1.0),
                      _lerp(eye_y + 10.0, c_r[1] - 6.0, cheek.mole_y)))
    if chin.mole > 0.8:
        moles.append((_lerp(c_r[0] + 3.0, c_l[0] - 3.0, (chin.mole - 0.8) / 0.2), c_r[1] + 9.0))
    if fore.mark > 0.6:
        moles.append((_lerp(40.0, 72.0, fore.mark_x), _lerp(24.0, 36.0, fore.mark_y)))
    for p in canvas.turn(np.array(moles).reshape(-1, 2)):
        region = canvas.value_at(p)
        if 1 <= region <= 9:  # a mole belongs to the skin region it sits in
            r = _lerp(0.7, 1.2, cheek.blush)
            canvas.fill(_ellipse(p[0], p[1], r, r, 10), MOLE + region)

    # nose: one side as (half width, y, depth) from the root down to the bottom of the tip
    bw, bottom = _lerp(2.4, 4.2, nose.bridge), tip[1] + _lerp(3.0, 5.0, nose.tip)
    side = np.array([[bw, eye_y - 1.0, 3.0], [bw * 1.1, (eye_y + tip[1]) / 2, 6.0],
                     [bw * 1.5, tip[1] - 5.0, 8.0], [nw * 0.8, tip[1] - 1.5, 5.0],
                     [nw, tip[1] + 1.5, 4.0], [nw * 0.82, bottom - 0.5, 5.0],
                     [nw * 0.4, bottom + 0.3, 7.0], [0.0, bottom - 0.6, 9.0]])
    other = side[-2::-1]
    outline = np.concatenate([np.stack([tip[0] - side[:, 0], side[:, 1]], 1),
                              np.stack([tip[0] + other[:, 0], other[:, 1]], 1)])
    canvas.fill(outline, 10, np.concatenate([side[:, 2], other[:, 2]]))
    for s in (-1, 1):
        canvas.fill(_ellipse(tip[0] + s * nw * 0.78, tip[1] + 0.8, nw * 0.22, 2.4, 12),
                    SUB["nose_side"], 4.0)
    ridge = [[tip[0] - 0.7, eye_y + 3.0], [tip[0] + 0.7, eye_y + 3.0],
             [tip[0] + 2.0, tip[1] - 1.0], [tip[0], tip[1] + 1.0], [tip[0] - 2.0, tip[1] - 1.0]]
    canvas.fill(ridge, SUB["nose_ridge"], np.array([4.0, 4.0, 10.0, 10.0, 10.0]))
    for s in (-1, 1):
        canvas.fill(_ellipse(tip[0] + s * nw * 0.38, bottom - 1.3, _lerp(1.2, 2.2, nose.nostrils),
                             0.9, 12), SUB["nostril"], 6.0)
    if "nose" in marks:
        _nose_marks(canvas, marks["nose"], outline, tip, nw, bw, eye_y, bottom)

    # mouth: curves across it from the subject's right corner to the left one
    t, env = _T, _ENV
    mx = c_r[0] + (c_l[0] - c_r[0]) * (t + 1) / 2
    base = c_r[1] + (c_l[1] - c_r[1]) * (t + 1) / 2 + 1.6 * smile * env
    bow = _lerp(0.1, 0.5, mouth.bow) * np.exp(-((t / 0.2) ** 2))
    lip_top = base - _lerp(2.2, 4.5, mouth.upper) * np.sqrt(env) * (1.0 - bow)
    inner_up = base - 0.25 * open_ * env
    inner_low = base + 0.75 * open_ * env**0.8
    lip_bottom = inner_low + _lerp(2.8, 5.5, mouth.lower) * env**0.55

    def band(upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
        return np.concatenate([np.stack([mx, upper], 1), np.stack([mx[::-1], lower[::-1]], 1)])

    if open_ > 0:
        canvas.fill(band(inner_up, inner_low), 17, _LIP_DEPTH)
        tt = np.linspace(-0.8, 0.8, 9)
        teeth_top = np.interp(tt, t, inner_up)
        teeth_bottom = np.minimum(teeth_top + _lerp(1.6, 3.0, mouth.teeth),
                                  np.interp(tt, t, inner_low) - 0.4)
        tx = np.interp(tt, t, mx)
        teeth = np.concatenate([np.stack([tx, teeth_top], 1),
                                np.stack([tx[::-1], teeth_bottom[::-1]], 1)])
        canvas.fill(teeth, SUB["teeth"], 2.5)
    canvas.fill(band(lip_top, inner_up), 18, _LIP_DEPTH)
    canvas.fill(band(inner_low, lip_bottom), 19, _LIP_DEPTH)
    lip_mark = marks.get("mouth")
    if lip_mark is not None and lip_mark.mark > 0.45:  # a stud in the lower lip
        x = float(np.interp(_lerp(-0.55, 0.55, lip_mark.mark_x), t, mx))
        y = float(np.interp(_lerp(-0.55, 0.55, lip_mark.mark_x), t, (inner_low + lip_bottom) / 2))
        canvas.fill_inside(band(inner_low, lip_bottom), 19,
                           [(_ellipse(x, y, 1.3, 1.3, 10), SUB["lip_stud"])], 3.0)

    gaze = np.array([_lerp(-1.0, 1.0, n.gaze_x), _lerp(-0.2, 0.8, n.gaze_y)])
    eye_mark = marks.get("eyes")
    radius = ew * (_lerp(0.27, 0.36, eye.iris_size) if eye_mark is None
                   else _lerp(0.33, 0.45, eye.iris_size))
    lash = (_lerp(0.6, 1.2, eye.lash) if eye_mark is None
            else _lerp(0.8, 2.4, eye_mark.liner_width))
    for centre, s, sclera, suffix in ((e_r, -1, 11, "r"), (e_l, 1, 12, "l")):
        shape, upper = _eye(centre, ew, eh, tilt, s)
        canvas.fill(shape, sclera, 1.0)
        ix, iy = centre + gaze
        iris = [(_ellipse(ix, iy, radius, radius, 20), SUB["iris_" + suffix])]
        if eye_mark is not None:
            iris = _iris_pattern(eye_mark, ix, iy, radius, s, suffix)
        canvas.fill_inside(shape, sclera, [
            *iris,
            (_ellipse(ix, iy, radius * 0.45, radius * 0.45, 14), SUB["pupil_" + suffix]),
            (_ellipse(ix - radius * 0.35, iy - radius * 0.35, radius * 0.24, radius * 0.24, 8),
             SUB["glint_" + suffix])], 1.0)
        canvas.line(upper, SUB["lash_" + suffix], lash, 1.0)
    canvas.fill(brow_r, 13, 2.0)
    canvas.fill(brow_l, 14, 2.0)
    brow_mark = marks.get("brows")
    if brow_mark is not None and brow_mark.tip > 0.3:  # the outer part of the brows dyed
        for brow, line, value, s, suffix in ((brow_r, brow_lines[0], 13, -1, "r"),
                                             (brow_l, brow_lines[1], 14, 1, "l")):
            split = _lerp(line[0, 0], line[-1, 0], _lerp(0.35, 0.75, (brow_mark.tip - 0.3) / 0.7))
            y = line[:, 1].mean()
            box = [[split, y - 12.0], [split + s * 20.0, y - 12.0], [split + s * 20.0, y + 12.0],
                   [split, y + 12.0]]
            canvas.fill_inside(brow, value, [(box, SUB["brow_tip_" + suffix])], 2.0)


def _iris_pattern(m: Any, ix: float, iy: float, radius: float, side: int,
                  suffix: str) -> list[tuple[np.ndarray, int]]:
    """The iris in two colours: a dark outer ring, a bright inner ring or a sector."""
    iris, ring = SUB["iris_" + suffix], SUB["iris_ring_" + suffix]
    width = _lerp(0.2, 0.45, m.ring_width)
    if m.ring < 0.34:  # outer ring
        return [(_ellipse(ix, iy, radius, radius, 20), ring),
                (_ellipse(ix, iy, radius * (1 - width), radius * (1 - width), 20), iris)]
    if m.ring < 0.67:  # inner ring around the pupil
        inner = radius * (0.5 + width)
        return [(_ellipse(ix, iy, radius, radius, 20), iris),
                (_ellipse(ix, iy, inner, inner, 16), ring)]
    start = 2 * math.pi * m.ring_width * side  # a sector, mirrored between the eyes
    wedge = np.concatenate([[[ix, iy]], _ellipse(ix, iy, radius * 1.05, radius * 1.05, 9, start,
                                                 start + 2.2)])
    return [(_ellipse(ix, iy, radius, radius, 20), iris), (wedge, ring)]


def _eye_paint(m: Any, centre: np.ndarray, ew: float, eh: float, side: int) -> list[np.ndarray]:
    """Face paint around one eye, mirrored between the eyes (the caller clips it to the
    around-eye region): a wing from the outer corner or a band along the brow bone, and dots
    down the temple, a band under the eye or nothing more."""
    x, y = centre
    size = m.paint_size
    if m.paint < 0.5:  # a wing flicked up and out from the outer corner
        corner = np.array([x + side * ew / 2, y])
        angle, length = _lerp(0.3, 0.9, m.paint * 2), _lerp(8.0, 13.0, size)
        tip = corner + length * np.array([side * math.cos(angle), -math.sin(angle)])
        out = [np.array([[x + side * (ew / 2 - 5.0), y - eh / 2 - 2.5], tip,
                         [corner[0], y + 1.5]])]
    else:  # a band along the brow bone, under the brow
        bottom, w, thick = y - eh / 2 - _lerp(2.0, 4.0, size), ew * 0.75, _lerp(2.5, 4.0, size)
        out = [np.array([[x - w, bottom - thick], [x + w, bottom - thick], [x + w, bottom],
                         [x - w, bottom]])]
    if m.paint_at < 1 / 3:  # three dots down the temple
        r, dx = _lerp(1.5, 2.4, size), ew / 2 + _lerp(3.5, 5.5, m.paint_at * 3)
        out += [_ellipse(x + side * (dx + 0.6 * abs(k)), y + 3.6 * k, r, r, 10) for k in (-1, 0, 1)]
    elif m.paint_at < 2 / 3:  # a band under the eye
        top, w = y + eh * 0.25, ew * 0.7
        out.append(np.array([[x - w, top], [x + w, top], [x + w, top + 6.0], [x - w, top + 6.0]]))
    return out


def _nose_marks(canvas: _Canvas, m: Any, outline: np.ndarray, tip: np.ndarray, nw: float,
                bw: float, eye_y: float, bottom: float) -> None:
    """Freckles over the nose and a stud, both fixed per identity."""
    detail = []
    count = int(m.spots * 8)
    if count >= 2:
        rng = np.random.default_rng(int(m.spot_seed * 2**31))
        u, v = rng.random(count), rng.random(count)
        ys = eye_y + 8.0 + v * (bottom - eye_y - 10.0)
        half = bw * 1.4 + (nw - bw * 1.4) * v  # the nose widens downwards
        for x, y in zip(tip[0] + (2 * u - 1) * half * 0.8, ys, strict=True):
            detail.append((_ellipse(x, y, 0.9, 0.9, 8), SUB["nose_spot"]))
    if m.mark > 0.4:
        x, y = ((tip[0] - nw * 0.75, tip[1] + 0.5), (tip[0] + nw * 0.75, tip[1] + 0.5),
                (tip[0], eye_y + 9.0))[min(int(m.stud * 3), 2)]
        detail.append((_ellipse(x, y, 1.4, 1.4, 10), SUB["nose_stud"]))
    if detail:
        canvas.fill_inside(outline, 10, detail, 6.0)


def _draw_hair(canvas: _Canvas, geo: _Geometry, marks: Any = None) -> None:
    style, a = geo.hair, geo.half_width
    eye_y = (geo.anchors[0, 1] + geo.anchors[1, 1]) / 2
    if style.bald:
        for s in (-1, 1):
            canvas.fill(_superellipse(_MID + s * (a + 0.5), eye_y - 7.0, 3.0, 9.0, 3.0), 21)
        return
    rx, ry = a + style.volume, geo.fy - geo.top + style.volume
    side_y = eye_y + 24.0 if style.covers_ears else eye_y - 3.0
    outer = _head_arc(rx, ry, geo.fy, side_y, 0.045 * style.curly)
    t = _T
    if style.fringe:
        brow_top = eye_y - 14.0 - geo.expression[2]
        line_y = brow_top - style.fringe + style.part * 0.25 * t + 1.2 * np.abs(np.sin(t * 9))
    else:
        line_y = style.hairline + style.recess * t * t
    line = np.stack([_MID + style.part * 0.25 + t * (a - 5.0), line_y], axis=1)
    temple_y = max(line_y[0], line_y[-1]) + 5.0
    inner_x = a - 3.0 if style.covers_ears else a - 2.0
    inner = np.concatenate([[[_MID + inner_x, side_y], [_MID + a - 4.0, temple_y]], line[::-1],
                            [[_MID - a + 4.0, temple_y], [_MID - inner_x, side_y]]])
    hair = np.concatenate([outer, inner])
    canvas.fill(hair, 21)
    if marks is not None and marks.streak > 0.3:  # a dyed streak from the crown
        start = np.array([_MID + style.part * 0.25, geo.top + 4.0])
        angle = _lerp(-1.2, 1.2, marks.streak_angle)
        along = np.array([math.sin(angle), math.cos(angle)])
        across = np.array([along[1], -along[0]]) * _lerp(3.0, 8.0, marks.streak_width)
        end = start + 140.0 * along
        canvas.fill_inside(hair, 21, [(np.array([start - across, start + across, end + across,
                                                 end - across]), SUB["hair_streak"])])


def _draw_glasses(canvas: _Canvas, glasses: Any, geo: _Geometry) -> None:
    if glasses.present >= 0.3:
        return
    e_r, e_l = geo.anchors[:2]
    rx, ry = geo.eye_size[0] / 2 + _lerp(3.5, 5.5, glasses.size), _lerp(5.5, 8.0, glasses.size)
    width = _lerp(0.7, 1.8, glasses.thickness)
    power = _lerp(2.0, 6.0, glasses.kind)
    for centre in (e_r, e_l):
        rim = _superellipse(centre[0], centre[1] + 0.5, rx, ry, power)
        if glasses.kind < 0.25:  # sunglasses
            canvas.fill(rim, SUB["lens"], 4.0)
        canvas.line(rim, 23, width, 4.0, closed=True)
    bridge_y = min(e_r[1], e_l[1]) - 2.0
    canvas.line([[e_r[0] + rx, e_r[1] - 0.5], [_MID, bridge_y], [e_l[0] - rx, e_l[1] - 0.5]], 23,
                width, 5.0)
    starts = canvas.turn([[e_r[0] - rx, e_r[1] - 1.0], [e_l[0] + rx, e_l[1] - 1.0]], 4.0)
    for start, s in zip(starts, (-1, 1), strict=True):  # temples run to the side of the head
        canvas.line([start, [_MID + s * (geo.half_width + 1.0), start[1] - 1.0]], 23, width)


def _draw_headwear(canvas: _Canvas, hat: Any, geo: _Geometry) -> None:
    if hat.present >= 0.25:
        return
    style, a = geo.hair, geo.half_width
    vol = 0.0 if style.bald else style.volume
    rx, ry = a + vol + 2.5, geo.fy - geo.top + vol + 2.5
    rim_y = _lerp(14.0, 30.0, hat.height)
    xs = np.linspace(1.0, -1.0, 11)
    if hat.kind >= 0.8:  # a headband over the hair
        y = (style.hairline if style.fringe == 0 else rim_y) + 1.0 + 4.0 * xs * xs
        x = _MID + xs * rx * 0.97
        canvas.fill(np.concatenate([np.stack([x, y - 2.2], 1), np.stack([x, y + 2.2], 1)[::-1]]),
                    24)
        return
    crown = _head_arc(rx, ry, geo.fy, rim_y)
    edge = np.stack([_MID + xs * (crown[-1, 0] - _MID), rim_y + 3.0 * (1 - xs * xs)], 1)
    canvas.fill(np.concatenate([crown, edge]), 24)
    band = np.concatenate([edge - (0.0, _lerp(3.0, 6.0, hat.band)), edge[::-1]])
    if hat.kind < 0.3:  # beanie: a folded band
        canvas.fill(band, SUB["hat_band"])
    elif hat.kind < 0.6:  # cap: a brim towards the camera
        canvas.fill(_ellipse(_MID, rim_y + 2.0, a * 0.9, _lerp(4.0, 7.0, hat.brim), 13, 0.0,
                             math.pi), SUB["hat_brim"], 8.0)
    else:  # wide brim
        canvas.fill(band, SUB["hat_band"])
        canvas.fill(_ellipse(_MID, rim_y + 1.0, rx + _lerp(12.0, 22.0, hat.brim),
                             _lerp(3.5, 6.0, hat.band), 28), SUB["hat_brim"])


def _draw_occluder(canvas: _Canvas, occ: Any, geo: _Geometry) -> None:
    """Sunglasses (1), a surgical mask (2), a hand (3) or a scarf (4) over the finished face."""
    e_r, e_l, tip, c_r, c_l = geo.anchors
    a, chin_y = geo.half_width, geo.chin_y
    eye_y, mouth_y = (e_r[1] + e_l[1]) / 2, (c_r[1] + c_l[1]) / 2
    if occ.kind == 1:  # sunglasses: dark lenses over both eyes, frame and temples
        rx, ry = geo.eye_size[0] / 2 + _lerp(4.0, 6.5, occ.size), _lerp(6.0, 9.0, occ.size)
        power = _lerp(2.0, 5.0, occ.shade)
        for centre in (e_r, e_l):
            rim = _superellipse(centre[0], centre[1] + 0.5, rx, ry, power)
            canvas.fill(rim, SUB["occ_lens"], 4.0)
            canvas.line(rim, SUB["occ_frame"], 1.4, 4.0, closed=True)
        bridge_y = min(e_r[1], e_l[1]) - 2.0
        canvas.line([[e_r[0] + rx, e_r[1] - 0.5], [_MID, bridge_y], [e_l[0] - rx, e_l[1] - 0.5]],
                    SUB["occ_frame"], 1.6, 5.0)
        starts = canvas.turn([[e_r[0] - rx, e_r[1] - 1.0], [e_l[0] + rx, e_l[1] - 1.0]], 4.0)
        for start, s in zip(starts, (-1, 1), strict=True):
            canvas.line([start, [_MID + s * (a + 1.0), start[1] - 1.0]], SUB["occ_frame"], 1.6)
    elif occ.kind == 2:  # surgical mask from the bridge of the nose to under the chin
        w = a * _lerp(0.82, 0.95, occ.size)
        top = _lerp(eye_y + 9.0, tip[1] - 5.0, occ.y)
        t = _T
        upper = np.stack([_MID + t * w, top + 5.0 * t * t], 1)
        low_c = mouth_y + 2.0
        arc = _ellipse(_MID, low_c, w, chin_y + 4.0 - low_c, 13, 0.0, math.pi)
        shape = np.concatenate([upper, [[_MID + w, mouth_y - 1.0]], arc,
                                [[_MID - w, mouth_y - 1.0]]])
        depth = 3.0 + 3.0 * np.cos(np.clip((shape[:, 0] - _MID) / w, -1, 1) * math.pi / 2)
        canvas.fill(shape, SUB["occ_mask"], depth)
        pleats = []
        for k, y in enumerate(np.linspace(top + 7.0, mouth_y + 6.0, 3)):
            half = w * (0.8 - 0.05 * k)
            pleats.append((np.array([[_MID - half, y - 0.4], [_MID + half, y - 0.4],
                                     [_MID + half, y + 0.4], [_MID - half, y + 0.4]]),
                           SUB["occ_pleat"]))
        canvas.fill_inside(shape, SUB["occ_mask"], pleats, 5.0)
        for s in (-1, 1):  # ear loops
            ear = [_MID + s * (a + 1.0), eye_y + 7.0]
            canvas.line([[_MID + s * w, top + 5.0], ear, [_MID + s * w, mouth_y + 4.0]],
                        SUB["occ_loop"], 0.8)
    elif occ.kind == 3:  # a hand in front of the face, the forearm coming up from below
        c = np.array([_lerp(_MID - 14.0, _MID + 14.0, occ.x), _lerp(eye_y - 2.0, mouth_y + 4.0,
                                                                     occ.y)])
        angle = _lerp(-0.7, 0.7, occ.angle)
        k = _lerp(0.9, 1.15, occ.size)
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

        def place(pts: np.ndarray) -> np.ndarray:
            return (k * pts) @ rot.T + c

        palm = _superellipse(0.0, 4.0, 13.0, 12.0, 3.0)
        arm = np.array([[-9.0, 8.0], [9.0, 8.0], [14.0, 120.0], [-14.0, 120.0]])
        canvas.fill(place(arm), SUB["occ_hand"])
        canvas.fill(place(palm), SUB["occ_hand"])
        for x, length in ((-9.0, 19.0), (-3.0, 23.0), (3.0, 22.0), (9.0, 18.0)):
            finger = _superellipse(x, -4.0 - length / 2, 2.9, length / 2 + 3.0, 2.4)
            canvas.fill(place(finger), SUB["occ_hand"])
            canvas.line(place(finger), SUB["occ_finger"], 0.5, closed=True)
        thumb = _superellipse(0.0, 0.0, 3.2, 10.0, 2.4) @ np.array(
            [[math.cos(-0.9), math.sin(-0.9)], [-math.sin(-0.9), math.cos(-0.9)]]) + (16.0, 2.0)
        canvas.fill(place(thumb), SUB["occ_hand"])
        canvas.line(place(thumb), SUB["occ_finger"], 0.5, closed=True)
    else:  # scarf wrapped over the mouth and chin, down over the chest
        top = _lerp(mouth_y - 4.0, tip[1] + 2.0, occ.y)
        xs = np.linspace(-1.0, 1.0, 13)
        upper = np.stack([_MID + xs * (a + 8.0), top + 4.0 * xs * xs], 1)
        shape = np.concatenate([upper, [[_MID + a + 12.0, FAR], [_MID - a - 12.0, FAR]]])
        canvas.fill(shape, SUB["occ_scarf"])
        folds = []
        for y in np.linspace(top + 6.0, chin_y + 20.0, 4):
            wave = np.stack([_MID + xs * (a + 10.0), y + 3.0 * xs * xs + 1.5 * np.sin(xs * 6)], 1)
            folds.append((np.concatenate([wave, wave[::-1] + (0.0, 1.2)]), SUB["occ_fold"]))
        canvas.fill_inside(shape, SUB["occ_scarf"], folds)
