"""The evaluation CLIs with real backbones (recognition.create_backbone) and checkpoints."""

import json

import numpy as np
import pytest
import torch

import recognition
from parsing.core.errors import InputError
from parsing.core.io import atomic_save
from recognition.evaluation.embedding import load_backbone


@pytest.fixture(scope="module")
def mbf_run(tmp_path_factory):
    """A training run's files: model.pt (backbone state_dict) and model.json."""
    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = recognition.create_backbone("mbf", num_features=64).eval()
    atomic_save(model.state_dict(), run / "model.pt")
    (run / "model.json").write_text(json.dumps({"network": "mbf", "network_kwargs": {},
                                                "embedding_size": 64}))
    atomic_save({"backbone": model.state_dict(), "step": 3}, run / "checkpoint.pt")
    return run, model


def test_load_backbone_from_run_files_and_checkpoints(mbf_run):
    run, model = mbf_run
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(load_backbone(run / "model.pt")(x), expected)
        by_name = load_backbone(run / "checkpoint.pt", "mbf", {"num_features": 64})
        torch.testing.assert_close(by_name(x), expected)
    with pytest.raises(InputError, match="give --network"):
        load_backbone(run / "elsewhere" / "model.pt")


@pytest.mark.slow
def test_eval_ijbc_and_verification_with_a_real_backbone(mbf_run, tmp_path, capsys):
    from parsing.synth import write_dataset
    from recognition import eval_ijbc, eval_verification, make_ijbc_protocol, make_verification_bin

    run, _ = mbf_run
    write_dataset(tmp_path / "loose", 4, 3, seed=5, size=160, loose=True, workers=1)
    assert make_ijbc_protocol.main(["--faces", str(tmp_path / "loose"), "--out",
                                    str(tmp_path / "ijbc")]) == 0
    assert eval_ijbc.main(["--checkpoint", str(run / "model.pt"), "--data",
                           str(tmp_path / "ijbc"), "--out", str(tmp_path / "eval"),
                           "--batch-size", "6", "--workers", "0", "--device", "cpu"]) == 0
    features = np.load(tmp_path / "eval" / "ijbc_features.npy")
    assert features.shape == (12, 64) and np.isfinite(features).all()
    write_dataset(tmp_path / "aligned", 4, 3, seed=6, workers=1)
    assert make_verification_bin.main(["--faces", str(tmp_path / "aligned"), "--out",
                                       str(tmp_path / "synth.bin"), "--pairs", "20"]) == 0
    assert eval_verification.main(["--checkpoint", str(run / "checkpoint.pt"), "--network",
                                   "mbf", "--network-kwargs", '{"num_features": 64}', "--bin",
                                   str(tmp_path / "synth.bin"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "ijbc 1:1" in out and "TAR (%)" in out and "synth" in out
