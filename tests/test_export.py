"""Checkpoint loading and ONNX export checked with onnxruntime."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import recognition
from parsing.core.errors import DataError
from parsing.core.io import atomic_save
from parsing.core.onnx import OnnxMismatchError, check_onnx, export_onnx
from recognition.export import main

pytestmark = pytest.mark.usefixtures("single_thread")


def calibrated(name, seed=0):
    """A backbone whose BN running statistics come from one batch: sensible eval outputs."""
    torch.manual_seed(seed)
    model = recognition.create_backbone(name)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average: after one batch, its statistics
    with torch.no_grad():
        model.train()(torch.randn(4, 3, 112, 112))
    return model.eval()


@pytest.mark.parametrize("key", ["backbone", "state_dict_backbone", None])
def test_create_backbone_loads_plain_and_training_checkpoints(tmp_path, key):
    source = calibrated("mbf")
    state = source.state_dict()
    if key is None:  # a DDP-wrapped plain state_dict
        checkpoint = {f"module.{k}": v for k, v in state.items()}
    else:
        checkpoint = {key: state, "epoch": 3, "optimizer": {"state": {}}}
    atomic_save(checkpoint, tmp_path / "ckpt.pt")
    loaded = recognition.create_backbone("mbf", checkpoint_path=tmp_path / "ckpt.pt").eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x))


def test_checkpoint_errors_name_the_file_and_keys(tmp_path):
    atomic_save({"epoch": 1, "optimizer": {"lr": 0.1}}, tmp_path / "no_backbone.pt")
    with pytest.raises(DataError, match=r"no_backbone.pt: no backbone weights.*epoch, optimizer"):
        recognition.create_backbone("mbf", checkpoint_path=tmp_path / "no_backbone.pt")
    atomic_save(recognition.create_backbone("mbf").state_dict(), tmp_path / "mbf.pth")
    with pytest.raises(DataError, match=r"mbf.pth: does not fit IResNet: 187 missing: conv1"):
        recognition.create_backbone("iresnet18", checkpoint_path=tmp_path / "mbf.pth")
    with pytest.raises(DataError, match=r"wrong shape: features.layers.2.weight \(512, 512\)"):
        recognition.create_backbone("mbf", num_features=128, checkpoint_path=tmp_path / "mbf.pth")
    with pytest.raises(DataError, match="missing.pt: no such checkpoint"):
        recognition.create_backbone("mbf", checkpoint_path=tmp_path / "missing.pt")


def test_export_cli_on_a_training_checkpoint(tmp_path, capsys):
    model = calibrated("mbf")
    atomic_save({"backbone": model.state_dict(), "step": 10}, tmp_path / "run" / "checkpoint.pt")
    onnx_path = tmp_path / "out" / "mbf.onnx"
    code = main(["--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--network", "mbf",
                 "--onnx", str(onnx_path), "--opset", "17"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "out" / "mbf.json").read_text())
    assert printed["max_abs_diff"] < 1e-3 and printed["min_cosine"] > 0.9999
    assert printed["max_abs_reference"] > 0.1  # a real comparison, not of near-zero outputs
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "data"
    for batch in (1, 5):  # dynamic batch axis
        x = torch.randn(batch, 3, 112, 112)
        (got,) = session.run(None, {"data": x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-3, atol=1e-4)


@pytest.mark.slow  # writes a 96 MB graph
def test_export_iresnet18_plain_state_dict(tmp_path):
    model = calibrated("iresnet18")
    path = export_onnx(model, tmp_path / "r18.onnx")
    report = check_onnx(model, path, batch_size=2)
    assert report["embedding_size"] == 512 and report["min_cosine"] > 0.9999
    assert report["max_abs_diff"] <= report["tolerance"]


def test_mismatch_is_reported(tmp_path):
    model = calibrated("mbf")
    path = export_onnx(model, tmp_path / "mbf.onnx")
    with torch.no_grad():
        model.conv_sep.layers[0].weight.mul_(1.5)
    with pytest.raises(OnnxMismatchError, match="onnxruntime differs from PyTorch"):
        check_onnx(model, path)


def test_export_cli_bad_input_exits_2(tmp_path, capsys):
    code = main(["--checkpoint", str(tmp_path / "nope.pth"), "--network", "mbf",
                 "--onnx", str(tmp_path / "x.onnx")])
    assert code == 2
    assert "nope.pth: no such checkpoint" in capsys.readouterr().err
    code = main(["--checkpoint", str(tmp_path / "nope.pth"), "--network", "resnet9000",
                 "--onnx", str(tmp_path / "x.onnx")])
    assert code == 2
    assert "unknown backbone 'resnet9000'" in capsys.readouterr().err
