"""Landmark-based FSE-25 annotation on the packaged photos.

Geometry tests use the Face Mesh landmarks of the two photos stored in tests/data (made
with ``parsing.photos.landmarks.face_mesh``; test_landmarks checks they still match), so they run
without MediaPipe; the end-to-end ones skip without it.
"""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.draw import polygon as draw_polygon

from parsing import annotate as annotate_cli
from parsing.core.errors import InputError, MissingDependencyError
from parsing.core.io import read_label_map, write_label_map
from parsing.core.labels import CELEBAMASK_BISENET, FACESYNTHETICS, FSE25, convert
from parsing.photos import annotate as A
from parsing.photos.landmarks import load_face_mesh
from parsing.photos.packaged import PHOTOS, load_photo

OVAL_RIGHT = (10, 109, 67, 103, 54, 21, 162, 127, 234, 93, 132, 58, 172, 136, 150, 149, 176,
              148, 152)


def _mesh(name):
    return np.load(f"tests/data/{name}_facemesh.npy")


@pytest.fixture(scope="module")
def mesh_ready():
    try:
        load_face_mesh()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))


def _centroid(label_map, name):
    ys, xs = np.nonzero(label_map == FSE25.id(name))
    assert len(ys), f"{name} is empty"
    return xs.mean(), ys.mean()


def test_index_tables_are_consistent():
    assert all(A.MIRROR[A.MIRROR[i]] == i for i in A.MIRROR)
    for name, poly in A.SKIN_POLYGONS.items():
        assert all(0 <= i < 468 for i in poly), name
        if name.startswith("right"):
            mirrored = {A.MIRROR[i] for i in poly}
            assert mirrored == set(A.SKIN_POLYGONS[name.replace("right", "left")])
    assert set(A.SKIN_POLYGONS) == {FSE25.names[i] for i in FSE25.groups["skin"]}
    assert {A.MIRROR[i] for i in A.PART_CONTOURS["right_eye"]} == set(A.PART_CONTOURS["left_eye"])


def test_contours_follow_mediapipe_connection_sets(mesh_ready):
    from mediapipe.python.solutions import face_mesh_connections as c

    def edges(cycle):
        return {frozenset(e) for e in zip(cycle, cycle[1:] + cycle[:1], strict=True)}

    ring = A.PART_CONTOURS
    assert edges(ring["right_eye"]) == {frozenset(e) for e in c.FACEMESH_RIGHT_EYE}
    assert edges(ring["left_eye"]) == {frozenset(e) for e in c.FACEMESH_LEFT_EYE}
    lips = {frozenset(e) for e in c.FACEMESH_LIPS}
    assert edges(ring["mouth"]) <= lips
    assert (edges(ring["upper_lip"]) | edges(ring["lower_lip"])) - lips == {
        frozenset((61, 78)), frozenset((291, 308))}  # the corners that close each lip
    for side, theirs in (("right_brow", c.FACEMESH_RIGHT_EYEBROW),
                         ("left_brow", c.FACEMESH_LEFT_EYEBROW)):
        assert {frozenset(e) for e in theirs} <= edges(ring[side])
    oval = {frozenset(e) for e in c.FACEMESH_FACE_OVAL}
    full_oval = list(OVAL_RIGHT) + [A.MIRROR[i] for i in OVAL_RIGHT[-2:0:-1]]
    assert edges(full_oval) == oval
    # The nose outline runs along FACEMESH_NOSE's lower loop under the tip.
    shared = {frozenset(e) for e in c.FACEMESH_NOSE} & edges(ring["nose"])
    assert shared == {frozenset(e) for e in ((64, 98), (98, 97), (97, 2), (2, 326), (326, 327),
                                             (327, 294))}


@pytest.mark.parametrize("name", PHOTOS)
def test_regions_are_where_a_face_has_them(name):
    img = load_photo(name)
    labels = A.landmark_regions(_mesh(name), img.shape[:2])
    c = {n: _centroid(labels, n) for n in FSE25.names[1:20] if n not in ("right_ear", "left_ear")}
    y = {n: v[1] for n, v in c.items()}
    x = {n: v[0] for n, v in c.items()}
    for side in ("right", "left"):
        assert y[f"{side}_forehead"] < y[f"{side}_brow"] < y[f"{side}_eye"] < y[f"{side}_cheek"]
        assert y[f"{side}_cheek"] < y[f"{side}_chin"]
        assert y[f"around_{side}_eye"] < y[f"{side}_cheek"]
    assert y["middle_forehead"] < y["nose"] < y["upper_lip"] < y["mouth"] < y["lower_lip"]
    # Frontal photos: the subject's right is on the image's left.
    for part in ("forehead", "brow", "eye", "cheek", "chin"):
        assert x[f"right_{part}"] < x[f"left_{part}"], part
    assert x["right_forehead"] < x["middle_forehead"] < x["left_forehead"]
    assert x["right_eye"] < x["nose"] < x["left_eye"]


@pytest.mark.parametrize("name", PHOTOS)
def test_skin_polygons_tile_the_face_oval(name):
    img = load_photo(name)
    mesh = _mesh(name)
    skin = A.landmark_regions(mesh, img.shape[:2], parts=False)
    full_oval = list(OVAL_RIGHT) + [A.MIRROR[i] for i in OVAL_RIGHT[-2:0:-1]]
    rr, cc = draw_polygon(mesh[full_oval, 1], mesh[full_oval, 0], shape=img.shape[:2])
    oval = np.zeros(img.shape[:2], bool)
    oval[rr, cc] = True
    assert set(np.unique(skin)) == set(range(10))
    holes = oval & (skin == 0)
    outside = ~oval & (skin > 0)
    assert holes.sum() <= 0.002 * oval.sum() and outside.sum() <= 0.01 * oval.sum()


def _flip_labels(label_map):
    return FSE25.flip_lut().numpy()[label_map[:, ::-1]]


@pytest.mark.parametrize("name", PHOTOS)
def test_annotation_is_consistent_with_a_flip(mesh_ready, name):
    img = load_photo(name)
    ours = A.annotate(img)
    of_flipped = A.annotate(np.ascontiguousarray(img[:, ::-1]))
    expected = _flip_labels(ours)
    face = (expected > 0) | (of_flipped > 0)
    assert (expected == of_flipped)[face].mean() > 0.85
    for cls in (1, 2, 3, 4, 7, 8, 9, 10, 18):  # the large regions
        inter = ((expected == cls) & (of_flipped == cls)).sum()
        union = ((expected == cls) | (of_flipped == cls)).sum()
        assert inter / union > 0.7, FSE25.names[cls]


def test_annotate_types_batches_and_no_face(mesh_ready):
    img = load_photo("astronaut")
    single = A.annotate(img)
    assert single.dtype == np.uint8 and single.shape == img.shape[:2]
    tensor = torch.from_numpy(img).permute(2, 0, 1)
    batch = A.annotate(torch.stack([tensor, torch.zeros_like(tensor)]))
    assert isinstance(batch, list) and batch[1] is None
    assert torch.equal(batch[0], torch.from_numpy(single))
    given = A.annotate(img, landmarks=_mesh("astronaut"))
    assert (given == single).mean() > 0.98
    assert A.annotate(Image.fromarray(img)).shape == img.shape[:2]


def _facesynthetics_base(name):
    """A FaceSynthetics-style map of a photo: the landmark parts, skin, and hair above it."""
    img = load_photo(name)
    fse = A.landmark_regions(_mesh(name), img.shape[:2])
    fs = np.zeros_like(fse)
    fs[(fse >= 1) & (fse <= 9)] = FACESYNTHETICS.id("skin")
    for fse_id, fs_name in ((10, "nose"), (11, "right_eye"), (12, "left_eye"),
                            (13, "right_brow"), (14, "left_brow"), (17, "mouth_interior"),
                            (18, "top_lip"), (19, "bottom_lip")):
        fs[fse == fse_id] = FACESYNTHETICS.id(fs_name)
    ys, xs = np.nonzero(fse)
    top = ys.min()
    # skin the landmarks do not reach (upper forehead), then hair, then a beard patch
    fs[top - 12: top, xs.min() + 20: xs.max() - 20] = FACESYNTHETICS.id("skin")
    fs[top - 30: top - 12, xs.min(): xs.max()] = FACESYNTHETICS.id("hair")
    chin_y, chin_x = _centroid(fse, "right_chin")[::-1]
    fs[int(chin_y) - 2: int(chin_y) + 3, int(chin_x) - 2: int(chin_x) + 3] = FACESYNTHETICS.id(
        "beard")
    return img, fse, fs, top


def test_base_classes_are_painted_over_landmark_skin():
    img, fse, fs, top = _facesynthetics_base("grace_hopper")
    out = A.annotate(img, base=fs, base_labels="facesynthetics", landmarks=_mesh("grace_hopper"))
    skin_only = A.landmark_regions(_mesh("grace_hopper"), img.shape[:2], parts=False)
    inside = (fse >= 1) & (fse <= 9)
    assert np.array_equal(out[inside], skin_only[inside])  # base skin: the landmark split
    parts = fse >= 10
    assert np.array_equal(out[parts], fse[parts])  # nose ... lips from the base
    assert (out[top - 30: top - 12][fs[top - 30: top - 12] == 13] == 21).all()  # hair
    forehead = out[top - 12: top][fs[top - 12: top] == 1]
    assert set(np.unique(forehead)) <= {5, 6, 7} and len(np.unique(forehead)) == 3
    assert (out[fs == 0] == 0).all()  # the base decides what is background
    assert (out[fs == FACESYNTHETICS.id("beard")] == 3).all()  # beard shows the skin region


def test_fse25_base_resplits_skin_and_keeps_parts():
    img, fse, _, _ = _facesynthetics_base("astronaut")
    mesh = _mesh("astronaut")
    scrambled = np.where((fse >= 1) & (fse <= 9), 7, fse).astype(np.uint8)  # skin all "7"
    out = A.annotate(img, base=scrambled, base_labels="fse25", landmarks=mesh)
    assert np.array_equal(out, fse)
    # A base of another size is resized with nearest neighbour.
    small = scrambled[::2, ::2]
    out_small = A.annotate(img, base=small, base_labels="fse25", landmarks=mesh)
    upsampled = small.repeat(2, axis=0).repeat(2, axis=1)
    assert np.array_equal(out_small, A.annotate(img, upsampled, "fse25", landmarks=mesh))


def test_celebamask_sides_come_from_the_landmarks():
    img = load_photo("astronaut")
    fse = A.landmark_regions(_mesh("astronaut"), img.shape[:2])
    celeba = np.zeros_like(fse)
    bis = CELEBAMASK_BISENET
    celeba[(fse >= 1) & (fse <= 9)] = bis.id("skin")
    # Label both eyes "l_eye" and both brows "r_brow": the sides must still come out right.
    celeba[(fse == 11) | (fse == 12)] = bis.id("l_eye")
    celeba[(fse == 13) | (fse == 14)] = bis.id("r_brow")
    celeba[fse == 10] = bis.id("nose")
    out = A.annotate(img, base=celeba, base_labels="celebamask_bisenet",
                     landmarks=_mesh("astronaut"))
    for cls in (10, 11, 12, 13, 14):
        assert ((out == cls) == (fse == cls)).mean() > 0.999, FSE25.names[cls]


def test_bad_base_and_landmarks_raise_input_errors():
    img = load_photo("astronaut")
    with pytest.raises(InputError, match="facesynthetics"):
        A.annotate(img, base=np.full(img.shape[:2], 40, np.uint8), landmarks=_mesh("astronaut"))
    with pytest.raises(InputError, match="468"):
        A.annotate(img, landmarks=_mesh("astronaut")[:68])
    with pytest.raises(InputError, match="base"):
        A.annotate(img, base=np.zeros((2, 4, 4), np.uint8), landmarks=_mesh("astronaut"))


def test_fse10_output_is_the_documented_conversion():
    img = load_photo("grace_hopper")
    fse25 = A.landmark_regions(_mesh("grace_hopper"), img.shape[:2])
    fse10 = convert(fse25, FSE25, "fse10")
    assert set(np.unique(fse10)) == set(range(10))
    # eyes sit in the around-eye regions, lips in the chin regions
    assert (fse10[fse25 == 11] == 8).all() and (fse10[fse25 == 12] == 9).all()
    assert set(np.unique(fse10[fse25 == 18])) == {3, 4}


@pytest.mark.slow
def test_cli_writes_the_published_layout(mesh_ready, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(load_photo("grace_hopper")).save(images / "000001.png")
    Image.fromarray(np.zeros((80, 80, 3), np.uint8)).save(images / "000002.png")
    _, _, fs, _ = _facesynthetics_base("grace_hopper")
    write_label_map(images / "000001_seg.png", fs)  # FaceSynthetics keeps them side by side
    write_label_map(images / "000002_seg.png", np.zeros((80, 80), np.uint8))
    out = tmp_path / "out"
    rc = annotate_cli.main(["--images", str(images), "--out", str(out), "--base-seg", str(images),
                 "--sheet", str(out / "sheet.png")])
    assert rc == 0
    with open(out / "anno_list.csv") as f:
        assert list(csv.reader(f)) == [["frame_id", "with_25"], ["000001", "1"], ["000002", "0"]]
    labels = read_label_map(out / "labels_25" / "000001_seg.png")
    assert (labels[fs == 13] == 21).all()
    assert np.array_equal(read_label_map(out / "labels_10" / "000001_seg.png"),
                          convert(labels, FSE25, "fse10"))
    assert not (out / "labels_25" / "000002_seg.png").exists()
    summary = json.loads((out / "annotate_summary.json").read_text())
    assert summary["failures"] == ["000002"] and summary["detection_rate"] == 0.5
    assert (out / "sheet.png").stat().st_size > 0


def test_cli_bad_input_exits_2(tmp_path, capsys):
    assert annotate_cli.main(["--images", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "--images" in capsys.readouterr().err
    (tmp_path / "a.png").write_bytes(b"not a png")
    assert annotate_cli.main(["--images", str(tmp_path), "--out", str(tmp_path / "o"),
                   "--base-labels", "nope"]) == 2


def test_base_skin_takes_a_nearest_region_on_random_maps():
    rng = np.random.default_rng(0)
    for _ in range(5):
        regions = np.zeros((30, 40), np.uint8)
        for cls in range(1, 10):
            r, c = rng.integers(5, 25), rng.integers(5, 35)
            regions[r: r + rng.integers(1, 4), c: c + rng.integers(1, 4)] = cls
        base = np.where(rng.random((30, 40)) < 0.6, A._SKIN, rng.integers(0, 25, (30, 40)))
        base[:3] = 0  # keep an empty band: the bounding box must not matter
        out = A._merge(regions, base.astype(np.uint8))
        ry, rx = np.nonzero(regions)
        for y, x in zip(*np.nonzero(base == A._SKIN), strict=True):
            d = np.hypot(ry - y, rx - x)
            chosen = d[regions[ry, rx] == out[y, x]]
            assert chosen.size and np.isclose(chosen.min(), d.min())
        assert np.array_equal(out[base != A._SKIN], base[base != A._SKIN])
