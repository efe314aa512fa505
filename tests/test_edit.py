import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from skimage import color as skcolor

from parsing.core.align import ARCFACE_TEMPLATE
from parsing.core.errors import InputError
from parsing.core.io import write_label_map
from parsing.edit import main
from parsing.photos.annotate import landmark_regions
from parsing.photos.edit import parse_photo, recolor, region_mask
from parsing.photos.landmarks import landmarks5_from_mesh
from parsing.photos.packaged import load_photo


@pytest.fixture(scope="module")
def hopper():
    img = load_photo("grace_hopper")
    mesh = np.load("tests/data/grace_hopper_facemesh.npy")
    return img, landmark_regions(mesh, img.shape[:2]), mesh


def _reference(rgb, labels, ids, target, strength, sigma):
    """skimage Lab + scipy Gaussian, one image at a time."""
    mask = np.isin(labels, ids).astype(np.float64)
    alpha = strength * ndimage.gaussian_filter(mask, sigma, mode="nearest", truncate=3.0)
    lab = skcolor.rgb2lab(rgb)
    t = skcolor.rgb2lab(np.asarray(target, np.float64).reshape(1, 1, 3) / 255.0)[0, 0]
    lab[..., 1:] = lab[..., 1:] * (1 - alpha[..., None]) + t[1:] * alpha[..., None]
    out = np.clip(skcolor.lab2rgb(lab), 0, 1)
    return np.where(alpha[..., None] > 0, out, rgb)


def test_matches_a_skimage_reference_on_random_inputs():
    g = torch.Generator().manual_seed(3)
    images = torch.rand(3, 3, 24, 32, generator=g)
    labels = torch.randint(0, 25, (3, 24, 32), generator=g, dtype=torch.int64)
    labels[:, :, :8] = 0
    ours = recolor(images, labels, ("lips", 21), (40, 160, 90), strength=0.7, feather=2.0)
    for i in range(3):
        ref = _reference(images[i].permute(1, 2, 0).double().numpy(), labels[i].numpy(),
                         [18, 19, 21], (40, 160, 90), 0.7, 2.0)
        np.testing.assert_allclose(ours[i].permute(1, 2, 0).numpy(), ref, atol=3e-3)


def test_outside_unchanged_lightness_kept_hue_moves(hopper):
    img, labels, _ = hopper
    target = "#a03020"
    out = recolor(img, labels, "lips", target, strength=0.8, feather=1.5)
    assert out.dtype == np.uint8 and out.shape == img.shape
    lips = np.isin(labels, [18, 19])
    reach = ndimage.binary_dilation(lips, iterations=int(np.ceil(3 * 1.5)) + 1)
    assert np.array_equal(out[~reach], img[~reach])  # bit for bit outside the feather
    assert (out[lips] != img[lips]).any(-1).mean() > 0.9
    lab_in, lab_out = skcolor.rgb2lab(img[lips][None]), skcolor.rgb2lab(out[lips][None])
    assert np.median(np.abs(lab_out[..., 0] - lab_in[..., 0])) < 0.7  # lightness kept
    t = skcolor.rgb2lab(np.array([[[160, 48, 32]]], np.float64) / 255)[0, 0, 1:]

    def angle(ab):
        cos = (ab @ t) / (np.linalg.norm(ab, axis=-1) * np.linalg.norm(t) + 1e-9)
        return np.arccos(np.clip(cos, -1, 1))

    before, after = angle(lab_in[0, :, 1:]), angle(lab_out[0, :, 1:])
    assert after.mean() < 0.5 * before.mean()  # hue moved toward the target


def test_types_batches_and_identity():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 20, 20), generator=g, dtype=torch.uint8)
    labels = torch.zeros(2, 20, 20, dtype=torch.uint8)
    labels[0, 5:12, 5:12] = 21
    labels[1, 2:6, 10:18] = 21
    batch = recolor(images, labels, "hair", "red")
    assert batch.dtype == torch.uint8 and batch.shape == images.shape
    for i in range(2):
        assert torch.equal(batch[i], recolor(images[i], labels[i], "hair", "red"))
    assert torch.equal(recolor(images, labels, "hair", "red", strength=0.0), images)
    floats = images.float() / 255
    out = recolor(floats, labels, "hair", "red")
    assert out.dtype == torch.float32 and (out - batch.float() / 255).abs().max() < 1 / 255 + 1e-6
    pil = Image.fromarray(images[0].permute(1, 2, 0).numpy())
    as_pil = recolor(pil, labels[0].numpy(), "hair", "red")
    assert isinstance(as_pil, Image.Image)
    assert np.array_equal(np.asarray(as_pil), batch[0].permute(1, 2, 0).numpy())
    hard = region_mask(labels, "hair", feather=0)
    assert set(hard.unique().tolist()) == {0.0, 1.0}


def test_bad_arguments_raise_input_errors():
    img = torch.zeros(3, 8, 8)
    labels = torch.zeros(8, 8, dtype=torch.uint8)
    with pytest.raises(InputError, match="color"):
        recolor(img, labels, "lips", "#zzzzzz")
    with pytest.raises(InputError, match="strength"):
        recolor(img, labels, "lips", strength=1.5)
    with pytest.raises(InputError, match="does not match"):
        recolor(img, labels[:4], "lips")
    with pytest.raises(InputError, match="class"):
        recolor(img, labels, "beak")


def test_parse_photo_warps_aligned_labels_back(hopper):
    img, _, mesh = hopper
    five = landmarks5_from_mesh(torch.as_tensor(mesh))

    def fake_parser(x):  # labels a 5x5 square on the template's image-left eye
        assert x.shape == (1, 3, 112, 112) and x.abs().max() <= 1.0 + 1e-5
        out = torch.zeros(1, 112, 112, dtype=torch.uint8)
        cx, cy = ARCFACE_TEMPLATE[0].round().int().tolist()
        out[0, cy - 2: cy + 3, cx - 2: cx + 3] = 11
        return out

    labels = parse_photo(img, fake_parser, five)
    assert labels.shape == img.shape[:2] and set(np.unique(labels)) == {0, 11}
    ys, xs = np.nonzero(labels == 11)
    assert np.hypot(xs.mean() - five[0, 0].item(), ys.mean() - five[0, 1].item()) < 3.0


def test_cli_with_a_label_map(hopper, tmp_path, capsys):
    img, labels, _ = hopper
    Image.fromarray(img).save(tmp_path / "photo.png")
    write_label_map(tmp_path / "labels.png", labels)
    out = tmp_path / "edited.png"
    assert main(["--image", str(tmp_path / "photo.png"), "--labels", str(tmp_path / "labels.png"),
                 "--regions", "lips", "--color", "#a03020", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["pixels_changed"] >= report["region_pixels"] > 0
    edited = np.asarray(Image.open(out))
    assert np.array_equal(edited, recolor(img, labels, "lips", "#a03020"))
    args = ["--image", str(tmp_path / "photo.png"), "--labels", str(tmp_path / "labels.png"),
            "--out", str(out)]
    assert main([*args, "--regions", "hair"]) == 2
    assert "not in the label map" in capsys.readouterr().err
    assert main([*args, "--color", "nocolour"]) == 2
