"""Random parameters of a synthetic face: identity genes per region, nuisance per image.

An identity is a set of *gene groups*, each a vector of uniforms in [0, 1) that the renderer
turns into shape and colour parameters of the FSE-25 classes the group paints. A face image
draws every group twice (from its identity's stream and from its own stream) and keeps the
identity's value only for *bound* groups; everything else, and all nuisance (pose,
expression, light, camera), varies per image. Streams come from ``SeedSequence(seed,
spawn_key=...)``, so a face depends only on (seed, identity, index).
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np

from parsing.core.errors import InputError
from parsing.core.labels import FSE25

_SKIN = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 16, 20)  # skin tone also colours nose, ears, neck

# group -> (FSE-25 classes the group's genes paint, gene names)
GENE_GROUPS: dict[str, tuple[tuple[int, ...], str]] = {
    "skin": (_SKIN, "tone hue texture"),
    "cheeks": ((1, 2), "width blush mole mole_x mole_y"),
    "chin": ((3, 4), "jaw length taper stubble mole"),
    "forehead": ((5, 6, 7), "tint mark mark_x mark_y"),
    "around_eyes": ((8, 9), "bags hue"),
    "nose": ((10,), "width bridge length nostrils tip tone"),
    "eyes": ((11, 12), "width height tilt spacing iris iris_size sclera lash level"),
    "brows": ((13, 14), "thickness arch length tilt gap colour"),
    "ears": ((15, 16), "size height out shade"),
    "mouth": ((17, 18, 19), "width upper lower bow colour tone teeth"),
    "neck": ((20,), "width shade"),
    "hair": ((21,), "style colour shade volume hairline recess part fringe curl length bob "
                   "texture strands"),
    "clothing": ((22,), "hue saturation value pattern neckline depth collar height slope"),
    "glasses": ((23,), "present kind colour size thickness shade"),
    "headwear": ((24,), "present kind hue saturation value pattern height band brim"),
}
# Accessories and clothing change from photo to photo; the rest is who the person is.
DEFAULT_BOUND = frozenset(GENE_GROUPS) - {"clothing", "glasses", "headwear"}

_GENE_TYPES = {name: namedtuple(f"{name.title()}Genes", fields)
               for name, (_, fields) in GENE_GROUPS.items()}

# Distinctive marks of a bound group when identity is confined to regions (``marks``): vivid
# colours, patterns and wider shape ranges a small recognizer can learn from the region alone.
# They come from their own per-identity stream, so faces without marks keep their bytes.
MARK_GENES: dict[str, str] = {
    "eyes": "iris_hue iris_sat iris_val ring ring_hue ring_width sclera_hue sclera_tint "
            "liner_hue liner_width size shape",
    "brows": "hue sat val tip tip_hue thickness arch",
    "nose": "hue tint mark spots spot_seed stud stud_hue width length",
    "mouth": "hue sat val lower_hue two_tone upper lower width mark mark_x",
    "hair": "hue sat val streak streak_hue streak_width streak_angle",
    "around_eyes": "hue sat val height reach paint paint_hue paint_size paint_at",
}
_MARK_TYPES = {name: namedtuple(f"{name.title()}Marks", fields)
               for name, fields in MARK_GENES.items()}
MARKS = "marks"  # key of the {group: marks} dict in the genes of a face with marks
_NUISANCE_FIELDS = (
    "rotation scale shift_x shift_y yaw_a yaw_b loose_x loose_y "
    "expression smile open squint gaze_x gaze_y brow_raise "
    "light_x light_y light_strength shade gain_r gain_g gain_b saturation brightness contrast "
    "blur sharpness noise bg_kind bg_hue bg_sat bg_val bg_hue2 bg_amount bg_field "
    "hair_change hairline_delta volume_delta tex_x tex_y tex_x2 tex_y2"
)
Nuisance = namedtuple("Nuisance", _NUISANCE_FIELDS)
_N_GENES = {name: len(fields.split()) for name, (_, fields) in GENE_GROUPS.items()}
_N_ALL = sum(_N_GENES.values())


def bound_groups(identity_regions: Iterable[int | str] | None) -> frozenset[str]:
    """Gene groups that stay fixed per identity when only ``identity_regions`` carry identity.

    ``identity_regions`` holds FSE-25 class ids, class names or group names (``"eyes"``,
    ``"nose"``, ...); ``None`` gives the default (all but clothing and accessories). A group is
    bound when every class it paints is selected, so identity never leaks into other regions
    (skin tone, which also colours nose, ears and neck, is bound only if all of those are).
    """
    if identity_regions is None:
        return DEFAULT_BOUND
    classes = set(FSE25.ids(list(identity_regions)))
    if not classes or classes == {0}:
        raise InputError("--identity-regions selects no face region")
    return frozenset(g for g, (painted, _) in GENE_GROUPS.items() if set(painted) <= classes)


def _stream(seed: int, kind: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(kind, index)))


def _split(values: np.ndarray) -> dict[str, Any]:
    out, start = {}, 0
    for name, n in _N_GENES.items():
        out[name] = _GENE_TYPES[name]._make(values[start : start + n].tolist())
        start += n
    return out


def face_genes(
    seed: int, identity: int, index: int, bound: frozenset[str] = DEFAULT_BOUND,
    marks: bool = False,
) -> tuple[dict[str, Any], NamedTuple]:
    """Genes of image ``index`` (of ``identity``) and its nuisance parameters, all in [0, 1).

    With ``marks``, ``genes[MARKS]`` maps each bound group of :data:`MARK_GENES` to the
    identity's distinctive marks (the renderer then widens that group's ranges too).
    """
    own = _stream(seed, 1, index).random(_N_ALL + len(Nuisance._fields))
    genes: dict[str, Any] = _split(own[:_N_ALL])
    if bound:
        person = _split(_stream(seed, 0, identity).random(_N_ALL))
        genes |= {name: person[name] for name in bound}
    if marks:
        names = [name for name in MARK_GENES if name in bound]
        values = _stream(seed, 2, identity).random(sum(len(f.split()) for f in MARK_GENES.values()))
        out, start = {}, 0
        for name, fields in MARK_GENES.items():
            n = len(fields.split())
            if name in names:
                out[name] = _MARK_TYPES[name]._make(values[start : start + n].tolist())
            start += n
        genes[MARKS] = out
    return genes, Nuisance._make(own[_N_ALL:].tolist())


OCCLUDER_KINDS = ("sunglasses", "mask", "hand", "scarf")  # occluder mask value = index + 1
Occluder = namedtuple("Occluder", "kind hue sat val x y angle size shade pattern")


def occluder_genes(seed: int, index: int, kinds: Iterable[str], p: float) -> Occluder | None:
    """The occluder of image ``index`` (one of ``kinds`` with probability ``p``) or None.

    Drawn from its own stream, so the face under it is the one rendered without occluders.
    """
    kinds = list(kinds)
    if not kinds:
        return None
    draw = _stream(seed, 3, index).random(2 + len(Occluder._fields) - 1)
    if draw[0] >= p:
        return None
    kind = kinds[min(int(draw[1] * len(kinds)), len(kinds) - 1)]
    return Occluder(OCCLUDER_KINDS.index(kind) + 1, *draw[2:].tolist())


def parse_occluders(names: Iterable[str]) -> tuple[str, ...]:
    """Check occluder kind names (``sunglasses``, ``mask``, ``hand``, ``scarf``)."""
    out = []
    for name in names:
        if name not in OCCLUDER_KINDS:
            raise InputError(f"unknown occluder {name!r}; choose from {', '.join(OCCLUDER_KINDS)}")
        if name not in out:
            out.append(name)
    return tuple(out)
