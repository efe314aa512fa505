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
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from parsing.cli import cli_main
from parsing.errors import InputError
from recognition.backbones import create_backbone

__all__ = ["OnnxMismatchError", "check_onnx", "export_onnx"]

logger = logging.getLogger(__name__)

INPUT_SIZE = 112


class OnnxMismatchError(RuntimeError):
    """The exported graph's outputs differ from PyTorch's beyond the tolerance."""


def export_onnx(model: nn.Module, path: str | os.PathLike, opset: int = 17,
                input_size: int = INPUT_SIZE) -> Path:
    """Write ``model`` (in eval mode, on CPU) as ONNX with a dynamic batch axis."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    example = torch.zeros(2, 3, input_size, input_size)
    with warnings.catch_warnings():
        # The TorchScript exporter needs no onnxscript; torch flags it as the legacy path.
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed",
                                category=DeprecationWarning)
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=["data"], output_names=["embedding"],
                          dynamic_axes={"data": {0: "batch"}, "embedding": {0: "batch"}})
    return path


def check_onnx(model: nn.Module, path: str | os.PathLike, batch_size: int = 3,
               rtol: float = 1e-4, atol: float = 1e-4, seed: int = 0,
               input_size: int = INPUT_SIZE) -> dict:
    """Run the ONNX file with onnxruntime on random inputs and compare with ``model``.

    Passes when ``max|onnx - torch| <= atol + rtol * max|torch|`` (embedding scales vary
    with training) and every embedding pair has cosine similarity >= ``1 - rtol``. Raises
    :class:`OnnxMismatchError` otherwise; returns the figures.
    """
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path))
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, 3, input_size, input_size, generator=generator) * 2 - 1
    with torch.no_grad():
        expected = model.eval().cpu()(images).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, min(4, os.cpu_count() or 1))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (got,) = session.run(["embedding"], {"data": images.numpy()})
    max_abs_diff = float(np.abs(got - expected).max())
    max_abs_reference = float(np.abs(expected).max())
    cosine = (got * expected).sum(1) / (np.linalg.norm(got, axis=1)
                                        * np.linalg.norm(expected, axis=1))
    report = {
        "onnx": str(path),
        "batch_size": batch_size,
        "embedding_size": int(expected.shape[1]),
        "max_abs_diff": max_abs_diff,
        "max_abs_reference": max_abs_reference,
        "min_cosine": float(cosine.min()),
        "tolerance": atol + rtol * max_abs_reference,
    }
    if max_abs_diff > report["tolerance"] or report["min_cosine"] < 1.0 - rtol:
        raise OnnxMismatchError(
            f"{path}: onnxruntime differs from PyTorch by {max_abs_diff:.3g} (allowed: atol "
            f"{atol:g} + rtol {rtol:g} x max|output| {max_abs_reference:.3g}), min cosine "
            f"{report['min_cosine']:.6f}")
    return report


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m recognition.export", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="insightface backbone.pth or a training checkpoint")
    parser.add_argument("--network", required=True,
                        help="backbone name: iresnet18/34/50/100/200, mbf, timm:<name>, r50...")
    parser.add_argument("--onnx", required=True, help="output .onnx path")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    parser.add_argument("--num-features", type=int, default=512, help="embedding size")
    parser.add_argument("--check-batch", type=int, default=3,
                        help="batch size of the onnxruntime check (differs from the export's 2 "
                             "to exercise the dynamic axis)")
    parser.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance")
    parser.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance")
    args = parser.parse_args(argv)
    if args.check_batch < 1:
        raise InputError(f"--check-batch must be >= 1, got {args.check_batch}")
    if args.opset < 11:
        raise InputError(f"--opset must be >= 11, got {args.opset}")
    return args


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    model = create_backbone(args.network, checkpoint_path=args.checkpoint,
                            num_features=args.num_features)
    path = export_onnx(model, args.onnx, opset=args.opset)
    logger.info("wrote %s; checking it with onnxruntime", path)
    try:
        report = check_onnx(model, path, batch_size=args.check_batch, rtol=args.rtol,
                            atol=args.atol)
    except OnnxMismatchError as exc:
        raise SystemExit(f"error: {exc}") from None
    report.update(network=args.network, checkpoint=str(args.checkpoint), opset=args.opset)
    Path(path).with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    raise SystemExit(main())
