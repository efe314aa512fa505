"""Synthetic faces: determinism, label coverage and placement, landmarks, identity, I/O."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.transform import SimilarityTransform
from torchvision.transforms import v2

from parsing.core.align import ARCFACE_TEMPLATE, align_face
from parsing.core.errors import DataError, InputError
from parsing.core.labels import FSE25
from parsing.core.viz import contact_sheet
from parsing.synth import SynthFaces, bound_groups, generate, write_dataset
from parsing.synth.__main__ import main
from parsing.synth.genes import DEFAULT_BOUND, face_genes

TEMPLATE = ARCFACE_TEMPLATE.numpy()
# classes coloured by the skin tone: only subtle shading tells them apart
SKIN_TONED = (*range(1, 11), 15, 16, 20)


@pytest.fixture(scope="module")
def faces():
    return generate(24, 4, seed=11)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_generate_shapes_dtypes_and_identities(faces):
    images, labels, landmarks, ids = faces
    assert images.shape == (96, 3, 112, 112) and images.dtype == torch.uint8
    assert labels.shape == (96, 112, 112) and labels.dtype == torch.uint8
    assert landmarks.shape == (96, 5, 2) and landmarks.dtype == torch.float32
    assert ids.tolist() == [i // 4 for i in range(96)]
    FSE25.check(labels)


def test_same_seed_same_bytes_for_any_worker_count(tmp_path):
    one = write_dataset(tmp_path / "one", 3, 4, seed=5, workers=1, progress=False)
    two = write_dataset(tmp_path / "two", 3, 4, seed=5, workers=2, progress=False)
    other = write_dataset(tmp_path / "other", 3, 4, seed=6, workers=1, progress=False)
    files = _files(one)
    assert len(files) == 2 * 12 + 3 + 3  # images, label maps, 3 CSV files, 3 attribute lists
    assert files == _files(two)
    assert files["images/000000.png"] != _files(other)["images/000000.png"]


def test_every_class_appears(faces):
    _, labels, _, _ = faces
    counts = torch.bincount(labels.flatten().long(), minlength=25)
    assert (counts > 0).all(), [FSE25.names[i] for i in torch.nonzero(counts == 0).flatten()]
    per_image = torch.stack([torch.bincount(m.flatten().long(), minlength=25) > 0 for m in labels])
    # the face and its parts are in (almost) every image; accessories in some
    assert per_image[:, [1, 2, 3, 4, 7, 10, 11, 12, 18, 19, 21]].float().mean() > 0.9
    assert 0.1 < per_image[:, 23].float().mean() < 0.6
    assert 0.05 < per_image[:, 24].float().mean() < 0.6


def test_skin_regions_sit_on_the_subjects_side(faces):
    """Subject's right is image left on these frontal faces, for every left/right pair."""
    _, labels, _, _ = faces
    cols = torch.arange(112, dtype=torch.float32)
    checked = 0
    for m in labels:
        centre = {}
        for k in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16):
            sel = m == k
            if sel.sum() >= 4:
                centre[k] = float((sel.float() * cols).sum() / sel.sum())
        for right, left in ((1, 2), (3, 4), (5, 6), (8, 9), (11, 12), (13, 14), (15, 16)):
            if right in centre and left in centre:
                assert centre[right] < centre[left], FSE25.names[right]
                checked += 1
        if {5, 6, 7} <= centre.keys():
            assert centre[5] < centre[7] < centre[6]
    assert checked > 400


def test_skin_regions_are_stacked_like_a_face(faces):
    _, labels, landmarks, _ = faces
    rows = torch.arange(112, dtype=torch.float32)[:, None]
    for m, pts in zip(labels, landmarks, strict=True):
        mean_y = {k: float((rows * (m == k)).sum() / (m == k).sum()) for k in (1, 3, 5, 8)
                  if (m == k).sum() >= 4}
        if len(mean_y) == 4:
            assert mean_y[5] < mean_y[8] < mean_y[1] < mean_y[3]
        eye_y = float(pts[:2, 1].mean())
        if 8 in mean_y:
            assert abs(mean_y[8] - eye_y) < 8  # around the eyes is around the eyes


def test_masks_agree_with_pixels(faces):
    """Inside each region the colour is that region's; label edges are colour edges."""
    images, labels, _, _ = faces
    images, labels = images[:32].float(), labels[:32].clone()
    for k in SKIN_TONED:  # skin-toned regions differ only subtly: count them as one
        labels[labels == k] = 1
    lab = labels.numpy()
    interior = torch.from_numpy(ndimage.maximum_filter(lab, size=(1, 5, 5))
                                == ndimage.minimum_filter(lab, size=(1, 5, 5)))
    # mean colour of every (image, class) over interior pixels
    index = (torch.arange(len(lab))[:, None, None] * 25 + labels.long())[interior]
    pixels = images.permute(0, 2, 3, 1)[interior]
    count = torch.bincount(index, minlength=25 * len(lab)).float()
    sums = torch.stack([torch.bincount(index, pixels[:, c], minlength=25 * len(lab))
                        for c in range(3)], 1)
    means = (sums / count.clamp(min=1)[:, None]).view(len(lab), 25, 3)
    valid = (count >= 30).view(len(lab), 25)
    image_of = index // 25
    dist = torch.cdist(pixels[:, None], means[image_of]).squeeze(1)
    dist[~valid[image_of]] = float("inf")
    keep = valid.flatten()[index]
    accuracy = (dist.argmin(1) == index % 25)[keep].float().mean()
    assert accuracy > 0.85, accuracy

    grey = images.mean(1).numpy()
    grad = np.hypot(ndimage.sobel(grey, 1), ndimage.sobel(grey, 2))
    edge = np.zeros_like(lab, dtype=bool)
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[:, :, :-1] |= lab[:, :, :-1] != lab[:, :, 1:]
    far = ndimage.binary_erosion(~edge, iterations=2, structure=np.ones((1, 3, 3)))
    assert grad[edge].mean() > 2.5 * grad[far].mean()


def test_labels_shifted_by_two_pixels_fit_worse(faces):
    """The colour edges sit exactly on the label edges, not next to them."""
    images, labels, _, _ = faces
    grey = images.float().mean(1).numpy()
    grad = np.hypot(ndimage.sobel(grey, 1), ndimage.sobel(grey, 2))
    lab = labels.numpy()

    def edge_energy(shift: int) -> float:
        moved = np.roll(lab, shift, axis=2)
        edge = (moved[:, :, :-1] != moved[:, :, 1:])[:, 4:-4, 4:-4]
        return float(grad[:, 4:-4, 4:-5][edge].mean())

    assert edge_energy(0) > 1.3 * max(edge_energy(2), edge_energy(-2))


def test_landmarks_are_on_the_arcface_template(faces):
    _, labels, landmarks, _ = faces
    for pts in landmarks.numpy():
        tform = SimilarityTransform.from_estimate(pts, TEMPLATE)
        assert abs(tform.rotation) < 0.2 and 0.85 < tform.scale < 1.15
        # what remains is pose (yaw) and expression, as with real faces
        assert np.sqrt(((tform(pts) - TEMPLATE) ** 2).sum(1).mean()) < 4.0
        assert np.abs(pts - TEMPLATE).max() < 12.0
    eyes = labels[torch.arange(len(labels))[:, None], landmarks[:, :2, 1].round().long(),
                  landmarks[:, :2, 0].round().long()]
    assert ((eyes == torch.tensor([11, 12])) | (eyes == 23)).float().mean() > 0.95
    nose = labels[torch.arange(len(labels)), landmarks[:, 2, 1].round().long(),
                  landmarks[:, 2, 0].round().long()]
    assert (nose == 10).float().mean() > 0.95


@pytest.mark.parametrize("size", [64, 224])
def test_size_scales_the_aligned_layout(size):
    _, labels, landmarks, _ = generate(2, 2, seed=1, size=size)
    assert labels.shape[1:] == (size, size)
    assert np.abs(landmarks.numpy() - TEMPLATE * size / 112).max() < 12.0 * size / 112


def test_loose_crops_align_back_to_the_template():
    images, labels, landmarks, _ = generate(3, 3, seed=4, size=200, loose=True)
    assert images.shape == (9, 3, 200, 200)
    scales = []
    for m, pts in zip(labels, landmarks.numpy(), strict=True):
        assert (pts >= 0).all() and (pts < 200).all()
        tform = SimilarityTransform.from_estimate(pts, TEMPLATE)
        scales.append(tform.scale)
        eye_r = np.rint(pts[0]).astype(int)
        assert m[eye_r[1], eye_r[0]] in (11, 23)
    assert min(scales) > 0.65  # the faces are smaller than in the aligned crop
    aligned = align_face(labels[:, None].float(), landmarks, size=112)[:, 0].round().long()
    at_template = aligned[:, TEMPLATE[2, 1].round().astype(int), TEMPLATE[2, 0].round().astype(int)]
    assert (at_template == 10).all()  # the nose tip comes back onto the template's nose


def test_identity_regions_bind_only_those_genes():
    assert bound_groups(None) == DEFAULT_BOUND
    assert bound_groups(["eyes", "nose"]) == {"eyes", "nose"}
    assert bound_groups(["face", "ears", "neck"]) >= {"skin", "cheeks", "mouth", "ears"}
    with pytest.raises(InputError):
        bound_groups(["eyebrows"])
    bound = bound_groups(["eyes"])
    a, _ = face_genes(3, identity=7, index=0, bound=bound)
    b, _ = face_genes(3, identity=7, index=1, bound=bound)
    assert a["eyes"] == b["eyes"] and a["hair"] != b["hair"] and a["skin"] != b["skin"]


def _icc(values: np.ndarray, ids: np.ndarray) -> float:
    """Share of the variance of (N, D) values explained by identity."""
    means = np.stack([values[ids == i].mean(0) for i in np.unique(ids)])
    return float(means.var(0).sum() / values.var(0).sum())


def _region_colour(images: torch.Tensor, labels: torch.Tensor, classes) -> np.ndarray:
    """(N, 3) mean colour of the pixels labelled with one of ``classes``."""
    sel = torch.isin(labels, torch.tensor(classes))[:, None]
    return ((images.float() * sel).sum((2, 3)) / sel.sum((2, 3)).clamp(min=1)).numpy()


def test_identity_regions_make_the_rest_vary_independently_of_identity():
    regions = {"skin": list(range(1, 10)), "hair": [21], "lips": [18, 19], "eyes": [11, 12]}
    for bound in (None, ["hair"]):
        images, labels, _, ids = generate(10, 4, seed=3, identity_regions=bound)
        icc = {name: _icc(_region_colour(images, labels, classes), ids.numpy())
               for name, classes in regions.items()}
        if bound is None:  # everything is the person's
            assert min(icc["skin"], icc["hair"], icc["lips"]) > 0.7 and icc["eyes"] > 0.45, icc
        else:  # only the hair is; 4 images per identity give 0.25 for pure chance
            assert icc["hair"] > 0.8, icc
            assert max(icc["skin"], icc["lips"], icc["eyes"]) < 0.45, icc


def test_reader_round_trip_and_transform(tmp_path):
    root = write_dataset(tmp_path / "ds", 2, 3, seed=8, workers=1, progress=False)
    images, labels, landmarks, ids = generate(2, 3, seed=8)
    ds = SynthFaces(root)
    assert len(ds) == 6 and ds.identities == ids.tolist()
    for i in range(6):
        assert set(ds[i]) == {"image", "mask", "landmarks", "identity"}
        image, label_map, points, identity = ds[i].values()
        assert torch.equal(image, images[i]) and torch.equal(label_map, labels[i])
        assert torch.allclose(points, landmarks[i], atol=1e-3) and identity == ids[i]
    flipped = SynthFaces(root, transform=v2.RandomHorizontalFlip(p=1.0))
    image, label_map, points, _ = flipped[0].values()
    assert torch.equal(image, images[0].flip(-1)) and torch.equal(label_map, labels[0].flip(-1))
    assert torch.allclose(points[:, 0], 111 - landmarks[0, :, 0], atol=1e-3)
    with open(root / "anno_list.csv") as f:
        assert next(csv.reader(f)) == ["frame_id", "with_25"]


def test_reader_names_missing_and_corrupt_files(tmp_path):
    root = write_dataset(tmp_path / "ds", 1, 2, seed=0, workers=1, progress=False)
    (root / "images" / "000001.png").unlink()
    (root / "labels_25" / "000000_seg.png").write_bytes(b"not a png")
    ds = SynthFaces(root)
    with pytest.raises(DataError, match="000001.png"):
        ds[1]
    with pytest.raises(DataError, match="000000_seg.png"):
        ds[0]
    (root / "landmarks.csv").write_text("frame_id,x1\n0,1\n")
    with pytest.raises(DataError, match="landmarks.csv"):
        SynthFaces(root)
    with pytest.raises(DataError, match="no such"):
        SynthFaces(tmp_path / "missing")


@pytest.mark.parametrize("args", [
    ["--identities", "0", "--images-per-identity", "2"],
    ["--identities", "2", "--images-per-identity", "2", "--size", "32"],
    ["--identities", "2", "--images-per-identity", "2", "--identity-regions", "eyes,fins"],
    ["--identities", "2", "--images-per-identity", "2", "--workers", "0"],
])
def test_bad_arguments_exit_2(tmp_path, capsys, args):
    assert main(["--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1


def test_unwritable_output_folder_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["--out", str(blocker / "ds"), "--identities", "1",
                 "--images-per-identity", "1"]) == 2
    assert "cannot write to output folder" in capsys.readouterr().err


def test_cli_writes_data_set_and_contact_sheet(tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    assert main(["--out", str(tmp_path / "ds"), "--identities", "3", "--images-per-identity",
                 "2", "--seed", "2", "--workers", "1", "--sheet", str(sheet)]) == 0
    assert '"images": 6' in capsys.readouterr().out
    assert len(SynthFaces(tmp_path / "ds")) == 6
    assert sheet.stat().st_size > 1000


def test_contact_sheet_puts_each_mask_beside_its_face(faces):
    images, labels, _, _ = faces
    sheet = contact_sheet(images[:6], labels[:6], nrow=3, with_legend=False)
    assert sheet.shape == (2 + 2 * 114, 2 + 6 * 114, 3)
    assert np.array_equal(sheet[2:114, 2:114], images[0].permute(1, 2, 0).numpy())
    assert np.array_equal(sheet[2:114, 116:228], FSE25.colorize(labels[0]))
    with_legend = contact_sheet(images[:2], labels[:2], nrow=2)
    assert with_legend.shape[1] == 2 + 4 * 114 and with_legend.shape[0] > 2 + 114
    faces_only = contact_sheet(images[:4].float() / 255, nrow=4)
    assert faces_only.shape == (116, 2 + 4 * 114, 3)
