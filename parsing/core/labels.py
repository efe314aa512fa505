"""Label sets of reference §2 and conversions between them.

Every set is a :class:`LabelSet` with ``names``, ``num_classes``, ``id(name)``, a colour
``palette``, a left/right ``flip_permutation`` and named ``groups``. "right"/"left" in FSE-25
are the subject's own sides: on a frontal face the subject's right appears on the image's
left.

Choices the published material leaves open (documented here, used everywhere):

* FaceSynthetics -> FSE-25: background and classes 2-17 (nose ... headwear) map one to one
  onto FSE-25 ids 10-24. ``skin`` has no single FSE-25 id (the landmark annotation splits it
  into ids 1-9), and ``beard`` and ``facewear`` have none either: they are treated as skin,
  i.e. the landmark regions show through them. Converting such pixels needs ``unmapped=``.
* FSE-25 -> FSE-10: ids 0-9 keep their id. Eyes go to the around-eye region of the same side;
  brows to the forehead of the same side. Nose, mouth interior and lips are absorbed by the
  region beside them: pixels on the subject's right of the part's own centre column go to the
  right cheek (nose) or right chin (mouth, lips), the rest to the left ones. Ears, neck, hair,
  clothing, glasses and headwear become background.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from parsing.core.errors import LabelError

__all__ = [
    "LabelSet",
    "LabelError",
    "FSE25",
    "FSE10",
    "FACESYNTHETICS",
    "CELEBAMASK_OFFICIAL",
    "CELEBAMASK_BISENET",
    "CELEBAMASK_FARL",
    "LABEL_SETS",
    "get_label_set",
    "convert",
]


def _palette(n: int, seed_colours: Sequence[tuple[int, int, int]]) -> np.ndarray:
    pal = np.zeros((256, 3), dtype=np.uint8)
    pal[:n] = np.asarray(seed_colours[:n], dtype=np.uint8)
    pal[255] = (255, 255, 255)  # ignore
    return pal


@dataclass(frozen=True, eq=False)
class LabelSet:
    """A named list of classes with palette, left/right pairs and region groups."""

    key: str
    names: tuple[str, ...]
    colours: tuple[tuple[int, int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...] = ()
    groups: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    ignore_index: int | None = None

    def __post_init__(self) -> None:
        if len(self.colours) != len(self.names):
            raise ValueError(f"{self.key}: {len(self.names)} names but {len(self.colours)} colours")

    def __repr__(self) -> str:
        return f"LabelSet({self.key!r}, num_classes={self.num_classes})"

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def palette(self) -> np.ndarray:
        """(256, 3) uint8 colour table; index 255 (ignore) is white."""
        return _palette(self.num_classes, self.colours)

    def id(self, name: str) -> int:
        """Class id of ``name`` (case-insensitive; published misspellings accepted)."""
        key = name.strip().lower().replace(" ", "_").replace("-", "_")
        key = self.aliases.get(key, key)
        try:
            return self.names.index(key)
        except ValueError:
            raise LabelError(
                f"{self.key} has no class {name!r}; classes: {', '.join(self.names)}"
            ) from None

    def ids(self, spec: int | str | Iterable[int | str]) -> list[int]:
        """Resolve ids, class names and group names (e.g. ``["eyes", "nose", 1]``) to sorted ids."""
        items = [spec] if isinstance(spec, (int, str)) else list(spec)
        out: set[int] = set()
        for item in items:
            if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
                if not 0 <= int(item) < self.num_classes:
                    raise LabelError(
                        f"class id {item} is outside {self.key} (0..{self.num_classes - 1})"
                    )
                out.add(int(item))
            elif isinstance(item, str) and item.lower() in self.groups:
                out.update(self.groups[item.lower()])
            elif isinstance(item, str):
                out.add(self.id(item))
            else:
                raise LabelError(f"cannot read {item!r} as a {self.key} class or group")
        return sorted(out)

    @property
    def flip_permutation(self) -> torch.Tensor:
        """(num_classes,) int64: ``perm[k]`` is the class ``k`` becomes under a horizontal flip."""
        perm = torch.arange(self.num_classes)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def flip_lut(self) -> torch.Tensor:
        """(256,) uint8 lookup table for flipping label maps; unknown ids map to themselves."""
        lut = torch.arange(256, dtype=torch.uint8)
        lut[: self.num_classes] = self.flip_permutation.to(torch.uint8)
        return lut

    def check(self, label_map: torch.Tensor | np.ndarray, what: str = "label map") -> None:
        """Raise :class:`LabelError` naming ``what`` if it holds ids outside this set."""
        t = torch.as_tensor(label_map)
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise LabelError(f"{what}: label maps must be integer, got {t.dtype}")
        if t.numel() == 0:
            return
        # the common, valid case in one reduction (two for signed ids)
        if int(t.max()) < self.num_classes and (t.dtype == torch.uint8 or int(t.min()) >= 0):
            return
        outside = (t < 0) | (t >= self.num_classes)
        if self.ignore_index is not None:
            outside &= t != self.ignore_index
        if outside.any():  # torch.unique sorts the whole map: only run it on the bad ids
            bad = torch.unique(t[outside])
            shown = ", ".join(str(v) for v in bad.tolist()[:8])
            raise LabelError(
                f"{what}: ids {{{shown}}} are outside {self.key} (0..{self.num_classes - 1})"
            )

    def colorize(self, label_map: torch.Tensor | np.ndarray) -> np.ndarray:
        """Colour-code a label map: (..., H, W) ids -> (..., H, W, 3) uint8 RGB."""
        t = np.asarray(torch.as_tensor(label_map).cpu(), dtype=np.int64)
        self.check(t)
        return self.palette[t]


_FSE25_COLOURS = (
    (0, 0, 0), (255, 170, 120), (230, 140, 90), (210, 200, 110), (180, 170, 70),
    (140, 200, 240), (90, 150, 210), (120, 110, 230), (250, 210, 200), (220, 170, 160),
    (255, 90, 40), (0, 200, 60), (0, 140, 40), (120, 60, 20), (80, 40, 10),
    (200, 80, 200), (150, 40, 150), (100, 0, 0), (220, 20, 60), (170, 0, 40),
    (255, 230, 150), (110, 70, 40), (60, 60, 160), (0, 230, 230), (240, 240, 0),
)

FSE25 = LabelSet(
    key="fse25",
    names=(
        "background", "right_cheek", "left_cheek", "right_chin", "left_chin",
        "right_forehead", "left_forehead", "middle_forehead", "around_right_eye",
        "around_left_eye", "nose", "right_eye", "left_eye", "right_brow", "left_brow",
        "right_ear", "left_ear", "mouth", "upper_lip", "lower_lip", "neck", "hair",
        "clothing", "glasses", "headwear",
    ),
    colours=_FSE25_COLOURS,
    flip_pairs=((1, 2), (3, 4), (5, 6), (8, 9), (11, 12), (13, 14), (15, 16)),
    groups={
        "cheeks": (1, 2),
        "chin": (3, 4),
        "forehead": (5, 6, 7),
        "around_eyes": (8, 9),
        "nose": (10,),
        "eyes": (11, 12),
        "brows": (13, 14),
        "ears": (15, 16),
        "mouth": (17, 18, 19),
        "lips": (18, 19),
        "neck": (20,),
        "hair": (21,),
        "clothing": (22,),
        "accessories": (23, 24),
        "skin": tuple(range(1, 10)),
        "face": tuple(range(1, 20)),
        "all": tuple(range(1, 25)),
    },
    aliases={"right_blow": "right_brow", "left_blow": "left_brow", "headware": "headwear"},
)

FSE10 = LabelSet(
    key="fse10",
    names=FSE25.names[:10],
    colours=_FSE25_COLOURS[:10],
    flip_pairs=((1, 2), (3, 4), (5, 6), (8, 9)),
    groups={k: v for k, v in FSE25.groups.items() if all(i < 10 for i in v)}
    | {"all": tuple(range(1, 10))},
    aliases=FSE25.aliases,
)

FACESYNTHETICS = LabelSet(
    key="facesynthetics",
    names=(
        "background", "skin", "nose", "right_eye", "left_eye", "right_brow", "left_brow",
        "right_ear", "left_ear", "mouth_interior", "top_lip", "bottom_lip", "neck", "hair",
        "beard", "clothing", "glasses", "headwear", "facewear",
    ),
    colours=(
        (0, 0, 0), (255, 170, 120), (255, 90, 40), (0, 200, 60), (0, 140, 40), (120, 60, 20),
        (80, 40, 10), (200, 80, 200), (150, 40, 150), (100, 0, 0), (220, 20, 60),
        (170, 0, 40), (255, 230, 150), (110, 70, 40), (90, 60, 30), (60, 60, 160),
        (0, 230, 230), (240, 240, 0), (140, 140, 140),
    ),
    flip_pairs=((3, 4), (5, 6), (7, 8)),
    aliases={"mouth": "mouth_interior", "upper_lip": "top_lip", "lower_lip": "bottom_lip"},
    ignore_index=255,
)

_CELEBA_COLOURS = {
    "background": (0, 0, 0), "skin": (255, 170, 120), "nose": (255, 90, 40),
    "eye_g": (0, 230, 230), "l_eye": (0, 140, 40), "r_eye": (0, 200, 60),
    "l_brow": (80, 40, 10), "r_brow": (120, 60, 20), "l_ear": (150, 40, 150),
    "r_ear": (200, 80, 200), "mouth": (100, 0, 0), "u_lip": (220, 20, 60),
    "l_lip": (170, 0, 40), "hair": (110, 70, 40), "hat": (240, 240, 0),
    "ear_r": (255, 0, 255), "neck_l": (0, 0, 255), "neck": (255, 230, 150),
    "cloth": (60, 60, 160),
}
_CELEBA_ALIASES = {"bg": "background", "eyeglasses": "eye_g", "earring": "ear_r",
                   "necklace": "neck_l", "cloth": "cloth", "clothing": "cloth"}


def _celeba(key: str, names: tuple[str, ...]) -> LabelSet:
    pairs = tuple(
        (names.index(f"l_{p}"), names.index(f"r_{p}")) for p in ("eye", "brow", "ear")
    )
    return LabelSet(
        key=key,
        names=names,
        colours=tuple(_CELEBA_COLOURS[n] for n in names),
        flip_pairs=pairs,
        aliases=_CELEBA_ALIASES,
    )


CELEBAMASK_OFFICIAL = _celeba("celebamask_official", (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear",
    "r_ear", "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
))
CELEBAMASK_BISENET = _celeba("celebamask_bisenet", (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear",
    "ear_r", "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
))
CELEBAMASK_FARL = _celeba("celebamask_farl", (
    "background", "neck", "skin", "cloth", "l_ear", "r_ear", "l_brow", "r_brow", "l_eye",
    "r_eye", "nose", "mouth", "l_lip", "u_lip", "hair", "eye_g", "hat", "ear_r", "neck_l",
))

LABEL_SETS: dict[str, LabelSet] = {
    s.key: s
    for s in (FSE25, FSE10, FACESYNTHETICS, CELEBAMASK_OFFICIAL, CELEBAMASK_BISENET,
              CELEBAMASK_FARL)
}


def get_label_set(name: str | LabelSet) -> LabelSet:
    """Look a label set up by key (``"fse25"``, ``"celebamask_bisenet"``, ...)."""
    if isinstance(name, LabelSet):
        return name
    key = name.lower().replace("-", "_")
    if key in LABEL_SETS:
        return LABEL_SETS[key]
    raise LabelError(f"unknown label set {name!r}; known: {', '.join(LABEL_SETS)}")


# FaceSynthetics class -> FSE-25 id; skin, beard and facewear have none (module docstring).
_FS_TO_FSE25 = {0: 0} | {fs: fse for fs, fse in zip(
    (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 17), range(10, 25), strict=True)}
_FSE25_TO_FSE10_FIXED = {i: i for i in range(10)} | {
    11: 8, 12: 9, 13: 5, 14: 6, 15: 0, 16: 0, 20: 0, 21: 0, 22: 0, 23: 0, 24: 0}
# Parts split at their own centre column: (fse25 id, id on the subject's right, on the left).
_FSE25_TO_FSE10_SPLIT = ((10, 1, 2), (17, 3, 4), (18, 3, 4), (19, 3, 4))


def _lookup_table(src: LabelSet, dst: LabelSet) -> dict[int, int]:
    if src is dst:
        return {i: i for i in range(src.num_classes)}
    if src is FACESYNTHETICS and dst is FSE25:
        return _FS_TO_FSE25
    celeba = (CELEBAMASK_OFFICIAL, CELEBAMASK_BISENET, CELEBAMASK_FARL)
    if src in celeba and dst in celeba:
        return {i: dst.names.index(n) for i, n in enumerate(src.names)}
    raise LabelError(f"no mapping is defined from {src.key} to {dst.key}")


def convert(
    label_map: torch.Tensor | np.ndarray,
    src: str | LabelSet,
    dst: str | LabelSet,
    unmapped: int | None = None,
) -> torch.Tensor | np.ndarray:
    """Map a label map (..., H, W) from one label set to another; returns the input's type.

    Defined: CelebAMask orders among themselves, FaceSynthetics -> FSE-25, FSE-25 -> FSE-10.
    Pixels whose class has no counterpart raise :class:`LabelError` unless ``unmapped``
    gives the id to write for them (e.g. 255 to ignore them in a loss).
    """
    src, dst = get_label_set(src), get_label_set(dst)
    as_numpy = isinstance(label_map, np.ndarray)
    t = torch.as_tensor(label_map)
    src.check(t, f"{src.key} label map")
    if src is FSE25 and dst is FSE10:
        out = _fse25_to_fse10(t.long())
    else:
        table = _lookup_table(src, dst)
        lut = torch.full((256,), -1, dtype=torch.long)
        for a, b in table.items():
            lut[a] = b
        if src.ignore_index is not None:
            lut[src.ignore_index] = unmapped if unmapped is not None else src.ignore_index
        out = lut[t.long()]
        missing = torch.unique(t[out < 0]) if (out < 0).any() else None
        if missing is not None:
            if unmapped is None:
                names = ", ".join(src.names[int(i)] for i in missing)
                raise LabelError(
                    f"{src.key} -> {dst.key}: classes {{{names}}} have no {dst.key} id; "
                    "pass unmapped=<id> to write them as that id"
                )
            out[out < 0] = unmapped
    out = out.to(t.dtype)
    return out.numpy() if as_numpy else out


def _fse25_to_fse10(t: torch.Tensor) -> torch.Tensor:
    lut = torch.zeros(FSE25.num_classes, dtype=torch.long)
    for a, b in _FSE25_TO_FSE10_FIXED.items():
        lut[a] = b
    out = lut[t]
    width = t.shape[-1]
    cols = torch.arange(width, dtype=torch.float32).expand_as(t)
    for part, right, left in _FSE25_TO_FSE10_SPLIT:
        sel = t == part
        count = sel.sum(dim=(-2, -1), keepdim=True).clamp(min=1)
        centre = (cols * sel).sum(dim=(-2, -1), keepdim=True) / count
        # subject's right is the image's left (smaller column)
        out = torch.where(sel, torch.where(cols < centre, right, left), out)
    return out
