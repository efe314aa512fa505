"""Facial attributes and the expression of synthetic faces, known exactly from their genes.

Each label is what the renderer draws, decided by the same functions
(:func:`parsing.synth.render.expression`, :func:`parsing.synth.render.hair_style`), so it is
exact by construction. The attributes keep CelebA's names (reference §6):

- ``Eyeglasses``: glasses drawn, or a sunglasses occluder (glasses are never drawn over
  marked eyes or around-eye regions, see ``--identity-regions``);
- ``Wearing_Hat``: headwear drawn (beanie, cap, wide brim or headband; never over marked hair);
- ``Smiling``: the smile expression; ``Mouth_Slightly_Open``: the mouth is drawn open (a
  smile showing teeth, or surprise). A mask, hand or scarf occluder does not change them;
- ``Bald``; ``Bangs``: a fringe; ``Wavy_Hair``: curly hair (never with ``Bald``);
- ``Black_Hair``, ``Brown_Hair``, ``Blond_Hair``, ``Gray_Hair``: the hair palette entry
  (:data:`HAIR_COLOUR_NAMES`); none for the auburn entry, for vivid marked hair and when bald.

The expression is one of :data:`parsing.synth.render.EXPRESSIONS` (neutral, happiness,
surprise). :func:`write_attribute_lists` writes them in CelebA's layout beside the images::

    list_attr_celeba.txt      count line, attribute names, "000000.png -1  1 ..." rows
    list_eval_partition.txt   "000000.png 0" (0 train, 1 val, 2 test; by identity)
    list_expression.txt       count line, expression names, "000000.png 1" rows (0-based)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parsing.synth.genes import MARKS, face_genes, occluder_genes
from parsing.synth.render import EXPRESSIONS, expression, hair_style
from parsing.synth.shading import _HAIR_COLOURS

__all__ = ["ATTRIBUTES", "EXPRESSIONS", "HAIR_COLOUR_NAMES", "face_attributes", "partition",
           "write_attribute_lists"]

#: the attributes the generator knows, in CelebA's order
ATTRIBUTES = ("Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Eyeglasses",
              "Gray_Hair", "Mouth_Slightly_Open", "Smiling", "Wavy_Hair", "Wearing_Hat")
#: CelebA's hair-colour attribute of each entry of the renderer's hair palette (None: auburn)
HAIR_COLOUR_NAMES = ("Black_Hair", "Black_Hair", "Brown_Hair", "Brown_Hair", "Blond_Hair",
                     "Blond_Hair", None, "Gray_Hair", "Gray_Hair")
if len(HAIR_COLOUR_NAMES) != len(_HAIR_COLOURS):  # pragma: no cover - a renderer change
    raise ImportError("parsing.synth.attributes: the hair palette changed; update "
                      "HAIR_COLOUR_NAMES")
_SUNGLASSES = 1  # occluder kind (genes.OCCLUDER_KINDS index + 1)
#: data-set split of an identity: 0 train, 1 val, 2 test (60/20/20 by identity modulo 5)
_SPLIT_OF_IDENTITY = (0, 0, 0, 1, 2)


def face_attributes(genes: dict[str, Any], nuisance: Any, occluder: Any = None
                    ) -> tuple[dict[str, bool], int]:
    """The attributes (name -> present) and expression index of a face drawn from ``genes``
    and ``nuisance`` (:func:`parsing.synth.genes.face_genes`) with ``occluder``."""
    marks = genes.get(MARKS, {})
    kind, open_, smile, *_ = expression(nuisance)
    hair = hair_style(genes, nuisance)
    colour = None
    if not hair.bald and "hair" not in marks:
        colour = HAIR_COLOUR_NAMES[min(int(genes["hair"].colour * len(_HAIR_COLOURS)),
                                       len(_HAIR_COLOURS) - 1)]
    glasses = ("eyes" not in marks and "around_eyes" not in marks
               and genes["glasses"].present < 0.3)
    values = {
        "Bald": hair.bald,
        "Bangs": not hair.bald and hair.fringe > 0,
        "Eyeglasses": glasses or (occluder is not None and occluder.kind == _SUNGLASSES),
        "Mouth_Slightly_Open": open_ > 0,
        "Smiling": smile > 0,
        "Wavy_Hair": not hair.bald and hair.curly,
        "Wearing_Hat": "hair" not in marks and genes["headwear"].present < 0.25,
    }
    for name in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"):
        values[name] = colour == name
    return {name: bool(values[name]) for name in ATTRIBUTES}, kind


def partition(identity: int) -> int:
    """The split of an identity's images: 0 train, 1 val, 2 test (60/20/20, identity-disjoint)."""
    return _SPLIT_OF_IDENTITY[identity % len(_SPLIT_OF_IDENTITY)]


def write_attribute_lists(out: str | Path, seed: int, count: int, images_per_identity: int,
                          bound: frozenset[str], marks: bool, occluders: Sequence[str] = (),
                          occluder_p: float = 0.5) -> None:
    """Write the CelebA-layout lists (module docstring) of the ``count`` images of a data set
    rendered with these arguments (:func:`parsing.synth.dataset.write_dataset`'s)."""
    out = Path(out)
    files = [f"{i:06d}.png" for i in range(count)]
    rows, expressions = np.empty((count, len(ATTRIBUTES)), np.int8), np.empty(count, np.int64)
    for i in range(count):
        genes, nuisance = face_genes(seed, i // images_per_identity, i, bound, marks)
        occluder = occluder_genes(seed, i, occluders, occluder_p)
        attrs, expressions[i] = face_attributes(genes, nuisance, occluder)
        rows[i] = [1 if attrs[name] else -1 for name in ATTRIBUTES]
    with open(out / "list_attr_celeba.txt", "w") as f:
        f.write(f"{count}\n{' '.join(ATTRIBUTES)}\n")
        f.writelines(f"{name} {' '.join(f'{v:2d}' for v in row)}\n"
                     for name, row in zip(files, rows, strict=True))
    with open(out / "list_eval_partition.txt", "w") as f:
        f.writelines(f"{name} {partition(i // images_per_identity)}\n"
                     for i, name in enumerate(files))
    with open(out / "list_expression.txt", "w") as f:
        f.write(f"{count}\n{' '.join(EXPRESSIONS)}\n")
        f.writelines(f"{name} {e}\n" for name, e in zip(files, expressions.tolist(), strict=True))
