"""Export a backbone to ONNX and check it against PyTorch with onnxruntime.

    python -m recognition.export --checkpoint backbone.pth --network iresnet34 --onnx r34.onnx

The checkpoint is an insightface ``backbone.pth`` (plain state_dict) or a training checkpoint
holding one under ``"backbone"``. The ONNX graph takes ``data`` (N, 3, 112, 112) float32
normalised with mean = std = 0.5 (dynamic N) and returns ``embedding`` (N, num_features).
A JSON report (max abs diff, ...) is printed and written beside the .onnx file.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from parsing.core.cli import ArgumentParser, cli_main, positive_float, positive_int
from parsing.core.errors import InputError
from parsing.core.onnx import OnnxMismatchError, check_onnx, export_onnx
from parsing.core.paths import output_file
from recognition.backbones import create_backbone

logger = logging.getLogger(__name__)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m recognition.export", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="insightface backbone.pth or a training checkpoint")
    parser.add_argument("--network", required=True,
                        help="backbone name: iresnet18/34/50/100/200, mbf, timm:<name>, r50...")
    parser.add_argument("--onnx", required=True, help="output .onnx path")
    parser.add_argument("--opset", type=positive_int, default=17, help="ONNX opset version")
    parser.add_argument("--num-features", type=positive_int, default=512, help="embedding size")
    parser.add_argument("--check-batch", type=positive_int, default=3,
                        help="batch size of the onnxruntime check (differs from the export's 2 "
                             "to exercise the dynamic axis)")
    parser.add_argument("--rtol", type=positive_float, default=1e-4, help="relative tolerance")
    parser.add_argument("--atol", type=positive_float, default=1e-4, help="absolute tolerance")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --onnx")
    args = parser.parse_args(argv)
    if args.opset < 11:
        raise InputError(f"--opset must be >= 11, got {args.opset}")
    return args


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    for path in (args.onnx, Path(args.onnx).with_suffix(".json")):
        output_file(path, {"--checkpoint": args.checkpoint}, overwrite=args.overwrite,
                    flag="--onnx")
    model = create_backbone(args.network, checkpoint_path=args.checkpoint,
                            num_features=args.num_features)
    path = export_onnx(model, args.onnx, input_name="data", output_name="embedding",
                       opset=args.opset)
    logger.info("wrote %s; checking it with onnxruntime", path)
    try:
        report = check_onnx(model, path, input_name="data", output_name="embedding",
                            batch_size=args.check_batch, rtol=args.rtol, atol=args.atol)
    except OnnxMismatchError as exc:
        raise InputError(str(exc)) from None
    report.update(network=args.network, checkpoint=str(args.checkpoint), opset=args.opset)
    Path(path).with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    raise SystemExit(main())
