"""Write a verification ``.bin`` (LFW format) from synthetic faces, so that
``recognition.eval_verification`` runs offline: ``python -m recognition.make_verification_bin
--faces SYNTH_DIR --out synth.bin --pairs 600``.

``SYNTH_DIR`` is a ``parsing.synth`` data set of aligned 112x112 faces. Pairs are sampled
with half of them genuine (``recognition.evaluation.verification.sample_pairs``); each face
is stored JPEG-encoded, as in insightface's ``lfw.bin``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence

import numpy as np
from PIL import Image

from parsing.core.cli import ArgumentParser, cli_main, positive_int
from parsing.core.paths import output_file
from parsing.core.progress import progress_bar
from parsing.synth import SynthFaces
from recognition.evaluation.verification import sample_pairs, write_bin


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m recognition.make_verification_bin",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faces", required=True, help="a parsing.synth data set folder")
    p.add_argument("--out", required=True, help="the .bin file to write")
    p.add_argument("--pairs", type=positive_int, default=600,
                   help="pairs (half genuine), default 600")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    faces = SynthFaces(args.faces)
    first, second, issame = sample_pairs(np.asarray(faces.identities), args.pairs, args.seed)
    output_file(args.out, {"--faces": args.faces}, overwrite=args.overwrite)
    encoded = {}
    for i in progress_bar(np.unique(np.concatenate([first, second])), desc="encode", unit="img"):
        buffer = io.BytesIO()
        Image.fromarray(faces.load_image(int(i)).permute(1, 2, 0).numpy()).save(
            buffer, format="JPEG", quality=95)
        encoded[int(i)] = buffer.getvalue()
    images = [encoded[int(i)] for pair in zip(first, second, strict=True) for i in pair]
    write_bin(args.out, images, issame)
    print(json.dumps({"out": args.out, "pairs": len(issame), "genuine": int(issame.sum())}))


if __name__ == "__main__":
    sys.exit(main())
