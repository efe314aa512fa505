"""Write a small IJB-C-layout protocol from synthetic faces, so the whole path runs offline:
``python -m recognition.make_ijbc_protocol --faces SYNTH_DIR --out IJB_DIR``.

``SYNTH_DIR`` is a ``parsing.synth`` data set, best written unaligned
(``python -m parsing.synth --out SYNTH_DIR --size 160 --loose ...``) so that the evaluation
has real alignment work to do. Each identity becomes a subject with one gallery template and
one or two probe templates; images within a template are grouped into media of one to three
images (stills and short "videos"); the subjects are split into galleries G1 and G2 (S1/S2
for ``--name ijbb``). Written: ``loose_crop/{n}.jpg`` and the ``meta/`` files of the public
release, with every probe compared to every gallery template in the 1:1 pair list.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np
import torch

from parsing.core.cli import ArgumentParser, cli_main
from parsing.core.paths import output_dir
from parsing.core.progress import progress_bar
from parsing.synth import SynthFaces
from recognition.evaluation.ijbc import (
    GALLERY_NAMES,
)
from recognition.evaluation.protocols import write_synthetic_protocol


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m recognition.make_ijbc_protocol",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faces", required=True, help="a parsing.synth data set folder")
    p.add_argument("--out", required=True, help="protocol folder (meta/ and loose_crop/)")
    p.add_argument("--name", choices=tuple(GALLERY_NAMES), default="ijbc")
    p.add_argument("--seed", type=int, default=0, help="media grouping and gallery split")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an --out that already holds files")
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    faces = SynthFaces(args.faces)
    output_dir(args.out, {"--faces": args.faces}, overwrite=args.overwrite)
    samples = [faces[i] for i in progress_bar(range(len(faces)), desc="read faces", unit="img")]
    images = torch.stack([s["image"] for s in samples])
    protocol, identification = write_synthetic_protocol(
        args.out, images, torch.stack([s["landmarks"] for s in samples]),
        np.asarray(faces.identities), args.name, args.seed)
    print(json.dumps({"out": str(protocol.root), "name": protocol.name,
                      "images": len(protocol), "templates": int(len(np.unique(protocol.templates))),
                      "pairs": int(len(protocol.pair_labels)),
                      "genuine": int(protocol.pair_labels.sum()),
                      "galleries": {g: len(t) for g, (t, _) in identification.galleries.items()},
                      "probes": len(identification.probe_templates)}))


if __name__ == "__main__":
    sys.exit(main())
