"""Export a trained parser to ONNX and check it against onnxruntime.

    python -m parsing.export --checkpoint runs/parser/best.pt --onnx runs/parser/parser.onnx

The graph maps float images (N, 3, S, S), normalised with mean = std = 0.5, to logits
(N, K, S, S); the batch dimension is dynamic, S is the training size (or ``--size``). The
check runs both on random images and prints the largest absolute logit difference and the
share of pixels whose argmax agrees, as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from parsing.cli import cli_main
from parsing.errors import InputError
from parsing.inference import model_from_checkpoint

__all__ = ["export_onnx", "check_onnx"]


def export_onnx(model: nn.Module, path: str | os.PathLike, size: int = 112,
                opset: int = 17) -> Path:
    """Write ``model`` (eval mode, on CPU) as ONNX with a dynamic batch dimension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    dummy = torch.zeros(2, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(model, (dummy,), str(path), input_names=["images"],
                          output_names=["logits"], opset_version=opset, dynamo=False,
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    return path


def check_onnx(model: nn.Module, path: str | os.PathLike, batch: int = 4, size: int = 112,
               seed: int = 0) -> dict[str, float]:
    """Compare onnxruntime with PyTorch on random images: max |diff| and argmax agreement."""
    import onnxruntime as ort

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    with torch.inference_mode():
        ref = model.eval().cpu()(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"images": x.numpy()})[0]
    return {"max_abs_diff": float(np.abs(got - ref).max()),
            "argmax_agreement": float((got.argmax(1) == ref.argmax(1)).mean())}


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m parsing.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a parsing.train checkpoint (.pt)")
    p.add_argument("--onnx", type=Path, required=True, help="output .onnx file")
    p.add_argument("--size", type=int, default=None,
                   help="input size S (default: the checkpoint's training size, else 112)")
    p.add_argument("--opset", type=int, default=17)
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = build_arg_parser().parse_args(argv)
    model, ckpt = model_from_checkpoint(args.checkpoint)
    size = args.size or ckpt.get("image_size") or 112
    if size < 16:
        raise InputError(f"--size {size}: the parser needs at least 16 x 16 inputs")
    export_onnx(model, args.onnx, size, args.opset)
    report = {"onnx": str(args.onnx), "size": size, **check_onnx(model, args.onnx, size=size)}
    print(json.dumps(report))


if __name__ == "__main__":
    raise SystemExit(main())
