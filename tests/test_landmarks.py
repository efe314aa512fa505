"""MTCNN and Face Mesh wrappers on the packaged photos (skipped without `make landmarks`)."""

import importlib.util
import sys

import numpy as np
import pytest
import torch

from parsing.core.errors import InputError, MissingDependencyError
from parsing.photos import landmarks
from parsing.photos.packaged import load_photo


@pytest.fixture(scope="module")
def mtcnn_ready():
    try:
        landmarks.load_mtcnn()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def mesh_ready():
    try:
        landmarks.load_face_mesh()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def astronaut():
    return load_photo("astronaut")


def test_missing_packages_name_the_install_target(monkeypatch):
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)
    with pytest.raises(MissingDependencyError, match="pip install --no-deps"):
        landmarks._import_mtcnn()
    monkeypatch.setitem(sys.modules, "mediapipe.python.solutions.face_mesh", None)
    with pytest.raises(ImportError, match="pip install --no-deps"):
        landmarks._import_face_mesh()


def test_bad_images_are_input_errors():
    with pytest.raises(InputError, match="uint8"):
        landmarks.to_hwc_uint8(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(InputError, match="uint8"):
        landmarks.to_hwc_uint8(torch.zeros(1, 8, 8, dtype=torch.uint8))
    with pytest.raises(InputError, match="PIL"):
        landmarks.to_hwc_uint8("face.jpg")


def test_mtcnn_finds_the_astronaut_in_arcface_order(mtcnn_ready, astronaut):
    boxes, scores, pts = landmarks.detect_faces(astronaut)
    assert boxes.shape == (1, 4) and scores.shape == (1,) and pts.shape == (1, 5, 2)
    assert scores[0] > 0.99
    x1, y1, x2, y2 = boxes[0].tolist()
    assert 150 < x1 < x2 < 300 and 40 < y1 < y2 < 200
    p = pts[0]
    assert ((p[:, 0] > x1) & (p[:, 0] < x2) & (p[:, 1] > y1) & (p[:, 1] < y2)).all()
    assert p[0, 0] < p[2, 0] < p[1, 0] and p[3, 0] < p[4, 0]  # image-left eye/mouth first
    assert p[:2, 1].max() < p[2, 1] < p[3:, 1].min()  # eyes above nose above mouth
    # Agrees with Face Mesh's five points where both are installed.
    if importlib.util.find_spec("mediapipe") is not None:
        mesh5 = landmarks.landmarks5_from_mesh(landmarks.face_mesh(astronaut))
        eye_distance = (p[1] - p[0]).norm()
        assert ((mesh5 - p).norm(dim=1) < 0.15 * eye_distance).all()


def test_mtcnn_batches_and_flips_consistently(mtcnn_ready, astronaut):
    flipped = np.ascontiguousarray(astronaut[:, ::-1])
    batch = torch.from_numpy(np.stack([astronaut, flipped])).permute(0, 3, 1, 2)
    single = landmarks.detect_faces(astronaut)
    both = landmarks.detect_faces(batch)
    assert isinstance(both, list) and len(both) == 2
    torch.testing.assert_close(both[0].landmarks5, single.landmarks5, atol=0.5, rtol=0)
    # Mirror the flipped result back: image-left/right points swap roles.
    back = both[1].landmarks5[0][[1, 0, 2, 4, 3]].clone()
    back[:, 0] = astronaut.shape[1] - 1 - back[:, 0]
    assert (back - single.landmarks5[0]).norm(dim=1).max() < 4.0
    # Different sizes in one list still work (one batched pass per size).
    mixed = landmarks.detect_faces([load_photo("grace_hopper"), astronaut])
    assert [len(f.scores) for f in mixed] == [1, 1]
    torch.testing.assert_close(mixed[1].boxes, single.boxes)


def test_mtcnn_no_face_gives_empty_tensors(mtcnn_ready):
    faces = landmarks.detect_faces(np.full((96, 96, 3), 127, np.uint8))
    assert faces.boxes.shape == (0, 4) and faces.landmarks5.shape == (0, 5, 2)


def test_requests_placeholder_does_not_leak(mtcnn_ready):
    if importlib.util.find_spec("requests") is None:
        assert "requests" not in sys.modules


def test_face_mesh_on_photos(mesh_ready, astronaut):
    mesh = landmarks.face_mesh(astronaut)
    assert mesh.shape == (478, 2) and mesh.dtype == torch.float32
    assert landmarks.face_mesh(astronaut, refine=False).shape == (468, 2)
    assert landmarks.face_mesh(np.zeros((64, 64, 3), np.uint8)) is None
    # The stored landmarks the annotation tests use are what Face Mesh gives here.
    for name in ("astronaut", "grace_hopper"):
        stored = np.load(f"tests/data/{name}_facemesh.npy")
        live = landmarks.face_mesh(load_photo(name)).numpy()
        assert np.abs(live - stored).max() < 2.0, name
    batch = landmarks.face_mesh([astronaut, np.zeros((64, 64, 3), np.uint8)])
    assert batch[1] is None and torch.allclose(batch[0], mesh)


def test_landmarks5_from_mesh_shape_and_errors():
    mesh = torch.as_tensor(np.load("tests/data/astronaut_facemesh.npy"))
    five = landmarks.landmarks5_from_mesh(mesh)
    assert five.shape == (5, 2)
    torch.testing.assert_close(five[0], mesh[[33, 133]].mean(0))
    assert landmarks.landmarks5_from_mesh(mesh[None].expand(3, -1, -1)).shape == (3, 5, 2)
    with pytest.raises(InputError, match="468"):
        landmarks.landmarks5_from_mesh(mesh[:68])


@pytest.mark.slow
def test_align_cli_detects_aligns_and_reports_no_face(mtcnn_ready, astronaut, tmp_path, capsys):
    import csv
    import json

    from PIL import Image

    from parsing.align import main
    from parsing.core.align import ARCFACE_TEMPLATE, estimate_similarity

    images = tmp_path / "photos"
    (images / "sub").mkdir(parents=True)
    Image.fromarray(astronaut).save(images / "sub" / "astronaut.png")
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(images / "blank.png")
    out = tmp_path / "out"
    assert main(["--images", str(images), "--out", str(out)]) == 0
    assert "no face: blank" in capsys.readouterr().out
    with open(out / "landmarks.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["frame_id"] for r in rows] == ["sub/astronaut"]
    written = torch.tensor([float(rows[0][f"{c}{k}"]) for k in range(1, 6) for c in "xy"])
    expected = landmarks.detect_faces(astronaut).landmarks5[0].flatten()
    torch.testing.assert_close(written, expected, atol=1e-3, rtol=0)
    crop = np.asarray(Image.open(out / "images" / "sub" / "astronaut.png"))
    assert crop.shape == (112, 112, 3)
    # Detected again in the crop, the five points are where the alignment moved them.
    src = expected.reshape(5, 2).double()
    matrix = estimate_similarity(src)
    moved = (src @ matrix[:, :2].T + matrix[:, 2]).float()
    again = landmarks.detect_faces(crop).landmarks5[0]
    assert (again - moved).norm(dim=1).max() < 3.0
    assert (moved - ARCFACE_TEMPLATE.float()).norm(dim=1).max() < 8.0
    assert json.loads((out / "align_summary.json").read_text())["no_face"] == ["blank"]
    assert main(["--images", str(tmp_path / "nope"), "--out", str(out)]) == 2
