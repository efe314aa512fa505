"""Synthetic IJB protocol writer, loose-crop alignment and the eval_ijbc CLI."""

import json

import numpy as np
import pytest
import torch

from parsing.core.align import align_face
from parsing.core.io import read_image
from recognition.eval_ijbc import main
from recognition.evaluation.ijbc import (
    LooseCrops,
    evaluate_verification,
    pad_collate,
    read_identification_protocol,
    read_protocol,
)
from recognition.evaluation.roc import verification_report
from recognition.make_ijbc_protocol import write_synthetic_protocol


def _faces(n_ids=4, per_id=4, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n_ids * per_id, 3, 8, 8, generator=g) * 255  # smooth: JPEG keeps it
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    images = images.round().to(torch.uint8)
    base = torch.tensor([[22.0, 26], [42, 26], [32, 36], [24, 46], [40, 46]])
    landmarks = base + torch.rand(n_ids * per_id, 5, 2, generator=g) * 4
    identities = torch.arange(n_ids).repeat_interleave(per_id)
    return images, landmarks, identities


@pytest.mark.parametrize("name", ["ijbc", "ijbb"])
def test_synthetic_protocol_reads_back(tmp_path, name):
    images, landmarks, identities = _faces()
    written, ident = write_synthetic_protocol(tmp_path, images, landmarks, identities, name)
    protocol = read_protocol(tmp_path)
    assert protocol.name == name and len(protocol) == len(images)
    np.testing.assert_array_equal(protocol.templates, written.templates)
    np.testing.assert_array_equal(protocol.medias, written.medias)
    np.testing.assert_array_equal(protocol.pair_labels, written.pair_labels)
    np.testing.assert_allclose(protocol.landmarks, written.landmarks, atol=5e-4)
    # every probe meets every gallery template; one genuine pair per probe template
    n_gallery = sum(len(t) for t, _ in ident.galleries.values())
    assert len(protocol.pair_labels) == n_gallery * len(ident.probe_templates)
    assert protocol.pair_labels.sum() == len(ident.probe_templates)
    # images are stored in template order with their own landmarks
    first = read_image(protocol.image_dir / protocol.image_names[0])
    assert first.shape == (64, 64, 3)
    source = int(np.flatnonzero((landmarks.numpy() == written.landmarks[0]).all((1, 2)))[0])
    assert np.abs(first.astype(int) - images[source].permute(1, 2, 0).numpy()).mean() < 3
    back = read_identification_protocol(tmp_path, name)
    assert set(back.galleries) == ({"G1", "G2"} if name == "ijbc" else {"S1", "S2"})
    np.testing.assert_array_equal(back.probe_subjects, ident.probe_subjects)


def test_synthetic_protocol_rejects_too_few_images(tmp_path):
    images, landmarks, identities = _faces(n_ids=3, per_id=1)
    with pytest.raises(Exception, match="at least 2 identities with at least 2 images"):
        write_synthetic_protocol(tmp_path, images, landmarks, identities)


def test_padded_batch_alignment_equals_one_by_one(tmp_path):
    g = torch.Generator().manual_seed(1)
    small = torch.randint(0, 256, (3, 60, 50), generator=g, dtype=torch.uint8)
    large = torch.randint(0, 256, (3, 90, 120), generator=g, dtype=torch.uint8)
    points = torch.tensor([[[15.0, 20], [35, 21], [25, 32], [17, 44], [33, 45]],
                           [[40.0, 30], [80, 32], [60, 55], [45, 75], [75, 74]]])
    batch, batch_points = pad_collate([(small, points[0]), (large, points[1])])
    aligned = align_face(batch, batch_points).int()
    # kornia normalises coordinates by the (padded) size: float rounding moves a few pixels
    # across a .5 boundary, nothing more
    for i, (image, pts) in enumerate(((small, points[0]), (large, points[1]))):
        diff = (aligned[i] - align_face(image, pts).int()).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3


def test_loose_crops_dataset(tmp_path):
    images, landmarks, identities = _faces(n_ids=2, per_id=2)
    write_synthetic_protocol(tmp_path, images, landmarks, identities)
    protocol = read_protocol(tmp_path)
    image, points = LooseCrops(protocol)[3]
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8
    torch.testing.assert_close(points, torch.from_numpy(protocol.landmarks[3]))


def test_cli_rescoring_saved_features(tmp_path, capsys):
    images, landmarks, identities = _faces(n_ids=6, per_id=5)
    data = tmp_path / "ijb"
    write_synthetic_protocol(data, images, landmarks, identities)
    protocol = read_protocol(data)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((6, 32))
    subject_of_image = identities.numpy()[
        np.argsort(np.argsort(protocol.templates, kind="stable"))]  # any fixed assignment
    features = (centres[subject_of_image] + rng.standard_normal((len(protocol), 32))
                ).astype(np.float32)
    np.save(tmp_path / "features.npy", features)
    out = tmp_path / "out"
    assert main(["--data", str(data), "--out", str(out), "--features",
                 str(tmp_path / "features.npy"), "--use-detector-score"]) == 0
    result = json.loads((out / "ijbc_verification.json").read_text())
    expected, _, _, _ = evaluate_verification(features, protocol, use_detector_score=True)
    assert result["verification"] == json.loads(json.dumps(expected))
    scores = np.load(out / "ijbc_scores.npy")
    assert scores.dtype == np.float64 and scores.shape == (len(protocol.pair_labels),)
    table, _, _ = verification_report(scores, protocol.pair_labels)
    assert table["tar_at_far"] == expected["tar_at_far"]
    assert (out / "ijbc_roc.png").stat().st_size > 0
    assert {"G1", "G2", "mean"} <= set(result["identification"])
    assert "TAR (%)" in capsys.readouterr().out


def test_cli_bad_input_exits_2(tmp_path, capsys):
    data = tmp_path / "ijb"
    data.mkdir()
    assert main(["--data", str(data), "--out", str(tmp_path / "o"), "--features",
                 "f.npy"]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "give --checkpoint" in capsys.readouterr().err
    images, landmarks, identities = _faces(n_ids=2, per_id=2)
    write_synthetic_protocol(data, images, landmarks, identities)
    np.save(tmp_path / "f.npy", np.zeros((3, 8), np.float32))
    assert main(["--data", str(data), "--out", str(data / "o"), "--features",
                 str(tmp_path / "f.npy")]) == 2
    assert "lies inside the --data input" in capsys.readouterr().err
    assert main(["--data", str(data), "--out", str(tmp_path / "o"), "--features",
                 str(tmp_path / "f.npy")]) == 2
    assert "features must be (4, D)" in capsys.readouterr().err


class _TinyEmbedder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 8, stride=8)
        self.fc = torch.nn.Linear(8 * 14 * 14, 16)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


@pytest.mark.slow
def test_cli_end_to_end_on_parsing_synth_faces(tmp_path, monkeypatch, capsys):
    from parsing.synth import write_dataset
    from recognition import make_ijbc_protocol

    write_dataset(tmp_path / "faces", 4, 4, seed=1, size=160, loose=True, workers=1)
    assert make_ijbc_protocol.main(["--faces", str(tmp_path / "faces"), "--out",
                                    str(tmp_path / "ijbc")]) == 0
    protocol = read_protocol(tmp_path / "ijbc")
    assert len(protocol) == 16 and read_image(protocol.image_dir / "1.jpg").shape[0] == 160

    model = _TinyEmbedder().eval()
    monkeypatch.setattr("recognition.eval_ijbc.load_backbone", lambda *a: model)
    out = tmp_path / "out"
    assert main(["--data", str(tmp_path / "ijbc"), "--out", str(out), "--checkpoint", "c.pt",
                 "--network", "tiny", "--batch-size", "5", "--workers", "0",
                 "--device", "cpu"]) == 0
    features = np.load(out / "ijbc_features.npy")
    # the saved features are f(x) + f(flip x) of the aligned loose crops, in file order
    from recognition.eval_ijbc import aligned_batches
    from recognition.evaluation.embedding import embed

    aligned = torch.cat(list(aligned_batches(protocol, 16, 0, torch.device("cpu"))))
    np.testing.assert_allclose(features, embed(model, aligned).numpy(), rtol=1e-5, atol=1e-5)
    result = json.loads((out / "ijbc_verification.json").read_text())
    assert result["verification"]["pairs"] == len(protocol.pair_labels)
    assert (out / "ijbc_roc.png").exists() and "1:N" in capsys.readouterr().out
