import numpy as np
import pytest
import torch
from skimage import transform as sktf
from torchvision import tv_tensors
from torchvision.transforms import v2

from parsing.core.align import ARCFACE_TEMPLATE, align_face, estimate_similarity, landmarks5_from_68
from parsing.core.errors import InputError
from parsing.core.labels import FSE25
from parsing.parser.transforms import RandomHorizontalFlip


def _random_landmarks(rng, n):
    angle = rng.uniform(-0.6, 0.6, n)
    scale = rng.uniform(0.5, 2.5, n)
    shift = rng.uniform(-30, 80, (n, 2))
    c, s = np.cos(angle), np.sin(angle)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    pts = scale[:, None, None] * ARCFACE_TEMPLATE.numpy() @ rot.transpose(0, 2, 1) + shift[:, None]
    return pts + rng.normal(0, 1.5, pts.shape)


def test_similarity_matches_skimage():
    rng = np.random.default_rng(1)
    pts = _random_landmarks(rng, 16)
    ours = estimate_similarity(torch.from_numpy(pts)).numpy()
    for p, m in zip(pts, ours, strict=True):
        ref = sktf.SimilarityTransform.from_estimate(p, ARCFACE_TEMPLATE.numpy())
        np.testing.assert_allclose(m, ref.params[:2], atol=1e-8)
        ones = np.c_[p, np.ones(5)]
        assert np.abs(ones @ m.T - ones @ ref.params[:2].T).max() < 1e-3


def test_align_face_matches_skimage_warp():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (160, 180, 3)).astype(np.float64)
    pts = _random_landmarks(rng, 1)[0] * 0.6 + 30
    ours = align_face(torch.from_numpy(img).permute(2, 0, 1), torch.from_numpy(pts))
    tform = sktf.SimilarityTransform.from_estimate(pts, ARCFACE_TEMPLATE.numpy())
    ref = sktf.warp(img, tform.inverse, output_shape=(112, 112), order=1, mode="constant",
                    cval=0, preserve_range=True)
    diff = np.abs(ours.permute(1, 2, 0).numpy() - ref)[2:-2, 2:-2]
    inside = ref[2:-2, 2:-2].sum(-1) > 0
    assert diff[inside].max() < 1e-3 * 255


def test_align_face_types_and_batches():
    rng = np.random.default_rng(3)
    pts = torch.from_numpy(_random_landmarks(rng, 3) * 0.5 + 40)
    imgs = torch.randint(0, 256, (3, 3, 150, 150), dtype=torch.uint8)
    out = align_face(imgs, pts)
    assert out.shape == (3, 3, 112, 112) and out.dtype == torch.uint8
    assert torch.equal(out[1], align_face(imgs[1], pts[1]))
    arr = align_face(imgs[0].permute(1, 2, 0).numpy(), pts[0].numpy(), size=128)
    assert arr.shape == (128, 128, 3) and arr.dtype == np.uint8
    with pytest.raises(InputError, match="landmarks must be"):
        align_face(imgs, pts[:2])


def test_template_is_identity_alignment():
    m = estimate_similarity(ARCFACE_TEMPLATE)
    np.testing.assert_allclose(m.numpy(), np.eye(2, 3), atol=1e-10)
    p68 = torch.zeros(68, 2)
    p68[39] = torch.tensor([2.0, 0.0])
    assert landmarks5_from_68(p68)[0].tolist() == [1.0, 0.0]


def test_flip_swaps_labels_and_twice_is_identity():
    img = tv_tensors.Image(torch.rand(3, 8, 10))
    mask = tv_tensors.Mask(torch.randint(0, 25, (8, 10), dtype=torch.uint8))
    flip = RandomHorizontalFlip(p=1.0)
    fi, fm = flip(img, mask)
    assert isinstance(fm, tv_tensors.Mask) and fm.dtype == torch.uint8
    assert torch.equal(fi, img.flip(-1))
    assert torch.equal(fm, FSE25.flip_permutation[mask.flip(-1).long()].to(torch.uint8))
    ffi, ffm = flip(fi, fm)
    assert torch.equal(ffi, img) and torch.equal(ffm, mask)


def test_flipped_right_eye_is_labelled_left_eye():
    mask = torch.zeros(4, 6, dtype=torch.uint8)
    mask[1, 1] = FSE25.id("right_eye")  # image-left side
    out = RandomHorizontalFlip(p=1.0)(tv_tensors.Mask(mask))
    assert out[1, 4] == FSE25.id("left_eye") and out.sum() == FSE25.id("left_eye")


def test_flip_composes_in_v2_pipeline():
    tf = v2.Compose([RandomHorizontalFlip(p=1.0), v2.ToDtype(torch.float32, scale=True)])
    img = tv_tensors.Image(torch.randint(0, 256, (3, 4, 4), dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.full((4, 4), 1, dtype=torch.uint8))
    out_img, out_mask = tf(img, mask)
    assert out_img.dtype == torch.float32 and (out_mask == 2).all()
