"""Export a trained parser to ONNX and check it against onnxruntime.

    python -m parsing.export --checkpoint runs/parser --onnx runs/parser/parser.onnx

The graph maps float images (N, 3, S, S), normalised with mean = std = 0.5, to logits
(N, K, S, S); the batch dimension is dynamic, S is the training size (or ``--size``). The
check runs both on random images and prints the largest absolute logit difference and the
share of pixels whose argmax agrees, as JSON.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from parsing.core.cli import ArgumentParser, cli_main, positive_int
from parsing.core.errors import InputError
from parsing.core.io import model_files
from parsing.core.onnx import OnnxMismatchError, check_onnx, export_onnx
from parsing.core.paths import output_file
from parsing.parser.inference import model_from_checkpoint


def build_arg_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m parsing.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="a parsing.train run folder or its model.pt")
    p.add_argument("--onnx", type=Path, required=True, help="output .onnx file")
    p.add_argument("--size", type=positive_int, default=None,
                   help="input size S (default: the training size, else 112)")
    p.add_argument("--opset", type=positive_int, default=17)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --onnx")
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = build_arg_parser().parse_args(argv)
    output_file(args.onnx, {"--checkpoint": model_files(args.checkpoint)}, overwrite=args.overwrite,
                flag="--onnx")
    model, info = model_from_checkpoint(args.checkpoint)
    size = args.size or info.get("image_size") or 112
    if size < 16:
        raise InputError(f"--size {size}: the parser needs at least 16 x 16 inputs")
    export_onnx(model, args.onnx, input_name="images", output_name="logits", size=size,
                opset=args.opset)
    try:
        report = check_onnx(model, args.onnx, input_name="images", output_name="logits",
                            batch_size=4, size=size, rtol=1e-3, atol=1e-3)
    except OnnxMismatchError as exc:
        raise InputError(str(exc)) from None
    print(json.dumps(report))


if __name__ == "__main__":
    raise SystemExit(main())
