"""Export any image model to ONNX and check the graph against PyTorch with onnxruntime.

Both exporters of the project (``python -m parsing.export`` for parsers,
``python -m recognition.export`` for backbones) go through these two functions: one graph
layout (float images ``(N, 3, S, S)`` normalised with mean = std = 0.5, dynamic ``N``) and
one failure rule (:class:`OnnxMismatchError`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["OnnxMismatchError", "check_onnx", "export_onnx"]


class OnnxMismatchError(RuntimeError):
    """The exported graph's outputs differ from PyTorch's beyond the tolerance."""


def export_onnx(model: nn.Module, path: str | os.PathLike, *, input_name: str = "images",
                output_name: str = "output", size: int = 112, opset: int = 17) -> Path:
    """Write ``model`` (eval mode, on CPU) as ONNX with a dynamic batch axis."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    example = torch.zeros(2, 3, size, size)
    with warnings.catch_warnings():
        # The TorchScript exporter needs no onnxscript; torch flags it as the legacy path.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=[input_name], output_names=[output_name],
                          dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})
    return path


def check_onnx(model: nn.Module, path: str | os.PathLike, *, input_name: str = "images",
               output_name: str = "output", batch_size: int = 3, size: int = 112,
               rtol: float = 1e-4, atol: float = 1e-4, seed: int = 0) -> dict:
    """Run the ONNX file with onnxruntime on random inputs and compare with ``model``.

    Passes when ``max|onnx - torch| <= atol + rtol * max|torch|`` (output scales vary with
    training); raises :class:`OnnxMismatchError` otherwise. Returns the figures, plus the
    smallest per-row cosine for (N, D) embeddings and the argmax agreement over channels for
    (N, K, H, W) logits.
    """
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path))
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, 3, size, size, generator=generator) * 2 - 1
    with torch.no_grad():
        expected = model.eval().cpu()(images).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, min(4, os.cpu_count() or 1))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (got,) = session.run([output_name], {input_name: images.numpy()})
    max_abs_diff = float(np.abs(got - expected).max())
    max_abs_reference = float(np.abs(expected).max())
    report = {"onnx": str(path), "batch_size": batch_size, "size": size,
              "max_abs_diff": max_abs_diff, "max_abs_reference": max_abs_reference,
              "tolerance": atol + rtol * max_abs_reference}
    failed = max_abs_diff > report["tolerance"]
    if expected.ndim == 2:
        cosine = (got * expected).sum(1) / (np.linalg.norm(got, axis=1)
                                            * np.linalg.norm(expected, axis=1))
        report["embedding_size"] = int(expected.shape[1])
        report["min_cosine"] = float(cosine.min())
        failed |= report["min_cosine"] < 1.0 - rtol
    elif expected.ndim == 4:
        report["argmax_agreement"] = float((got.argmax(1) == expected.argmax(1)).mean())
    if failed:
        raise OnnxMismatchError(
            f"{path}: onnxruntime differs from PyTorch by {max_abs_diff:.3g} (allowed: atol "
            f"{atol:g} + rtol {rtol:g} x max|output| {max_abs_reference:.3g})"
            + (f", min cosine {report['min_cosine']:.6f}" if "min_cosine" in report else ""))
    return report
