import math

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from fserasing.augment import (
    BatchAugment,
    BatchCutout,
    BatchRandomErasing,
    flip_batch,
)
from parsing.core.errors import InputError
from parsing.core.labels import FSE25
from parsing.core.pixels import normalise
from parsing.parser.transforms import RandomHorizontalFlip


def _batch(b=6, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g)
    masks = torch.randint(0, 25, (b, size, size), dtype=torch.uint8, generator=g)
    return images, masks


def test_normalise_is_insightface_input():
    images, _ = _batch()
    expected = (images.float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(normalise(images), expected)


def test_flip_batch_matches_per_sample_v2_flip():
    images, masks = _batch()
    flip = torch.tensor([True, False, True, True, False, False])
    out_images, out_masks = flip_batch(images, masks, flip, FSE25.flip_lut())
    always = RandomHorizontalFlip(p=1.0)
    for k in range(len(flip)):
        if flip[k]:
            img, mask = always(tv_tensors.Image(images[k]), tv_tensors.Mask(masks[k]))
        else:
            img, mask = images[k], masks[k]
        assert torch.equal(out_images[k], img) and torch.equal(out_masks[k], mask)


def test_masks_stay_aligned_through_flip_and_erasing():
    """Erase 'right_eye' (subject's right) with a constant; whatever is erased must be the
    pixels the flipped-and-relabelled mask calls right eye, and nothing else."""
    size, b = 32, 8
    masks = torch.zeros(b, size, size, dtype=torch.uint8)
    right, left = FSE25.id("right_eye"), FSE25.id("left_eye")
    masks[:, 10:14, 4:10] = right  # subject's right eye appears on the image's left
    masks[:, 10:14, 20:28] = left  # different width, so the two eyes are distinguishable
    images = torch.full((b, 3, size, size), 128, dtype=torch.uint8)
    aug = BatchAugment("fserasing", flip=True,
                       options={"p": 1.0, "n_erase": ["right_eye"], "fill": 7.0})
    g = torch.Generator().manual_seed(0)
    out = aug(images, masks.clone(), g)
    g = torch.Generator().manual_seed(0)
    flipped = torch.rand(b, generator=g) < 0.5
    assert 0 < int(flipped.sum()) < b
    erased = (out == 7.0).all(1)
    for k in range(b):
        # flipped: the left eye moved to the image's left and is now the right eye
        expected = (masks[k] == left).flip(-1) if flipped[k] else masks[k] == right
        assert torch.equal(erased[k], expected)
        assert int(expected.sum()) == (32 if flipped[k] else 24)


def test_batch_random_erasing_boxes_are_torchvision_boxes():
    images = torch.randn(64, 3, 40, 50)
    rec = BatchRandomErasing(p=0.7, scale=(0.05, 0.3), ratio=(0.5, 2.0), value=0.25)
    g = torch.Generator().manual_seed(1)
    top, left, height, width, apply = rec.boxes(images, g)
    out = rec(images, torch.Generator().manual_seed(1))
    for k in range(64):
        expected = TF.erase(images[k], int(top[k]), int(left[k]), int(height[k]),
                            int(width[k]), torch.tensor(0.25)) if apply[k] else images[k]
        assert torch.equal(out[k], expected)
    area = (height * width).double()[apply] / (40 * 50)
    aspect = (height / width).double()[apply]
    assert 0.3 < apply.double().mean() < 0.95
    assert area.min() > 0.04 and area.max() < 0.32
    assert aspect.min() > 0.5 * 0.8 and aspect.max() < 2.0 * 1.25
    assert ((top >= 0) & (top + height <= 40) & (left >= 0) & (left + width <= 50))[apply].all()


def test_batch_random_erasing_distribution_matches_torchvision():
    n, h, w = 3000, 30, 30
    ours = BatchRandomErasing(p=1.0, value=1e3)(torch.zeros(n, 1, h, w),
                                                torch.Generator().manual_seed(0))
    ours_frac = (ours[:, 0] == 1e3).double().mean((1, 2))
    torch.manual_seed(0)
    tv = v2.RandomErasing(p=1.0, value=1e3)
    ref_frac = torch.stack([(tv(torch.zeros(1, h, w))[0] == 1e3).double().mean()
                            for _ in range(n)])
    for q in (0.1, 0.5, 0.9):
        assert abs(float(ours_frac.quantile(q) - ref_frac.quantile(q))) < 0.02
    random_fill = BatchRandomErasing(p=1.0, value="random")(torch.zeros(4, 3, h, w))
    assert random_fill.abs().sum() > 0 and random_fill.std() > 0.1


def test_cutout_is_a_clipped_square():
    images = torch.randn(200, 3, 40, 40)
    out = BatchCutout(size=16, p=1.0)(images, torch.Generator().manual_seed(0))
    erased = (out != images).any(1)
    rows, cols = erased.any(2), erased.any(1)
    assert (erased.sum((1, 2)) <= 256).all()
    assert torch.equal(erased, rows[:, :, None] & cols[:, None, :])  # one axis-aligned box
    assert (rows.sum(1) <= 16).all() and (cols.sum(1) <= 16).all()
    assert (erased.sum((1, 2)) < 256).any()  # some squares hang over the border
    assert (out[erased[:, None].expand_as(out)] == 0).all()
    untouched = BatchCutout(size=16, p=0.0)(images)
    assert torch.equal(untouched, images)


def test_same_generator_same_batch_and_options_checked():
    images, masks = _batch()
    for aug in ("none", "fserasing", "random-erasing", "cutout"):
        a = BatchAugment(aug)(images, masks, torch.Generator().manual_seed(3))
        b = BatchAugment(aug)(images, masks, torch.Generator().manual_seed(3))
        assert a.dtype == torch.float32 and torch.equal(a, b)
        assert not math.isnan(float(a.sum()))
    with pytest.raises(InputError, match="needs masks"):
        BatchAugment("fserasing")(images)
    with pytest.raises(InputError, match="cutout options"):
        BatchAugment("cutout", options={"sizes": 3})
    with pytest.raises(InputError, match="random erasing: bad"):
        BatchRandomErasing(scale=(0.5, 0.1))
    parsed = BatchAugment("fserasing", options={"p": 1.0, "n_erase": ["nose"], "fill": 5.0},
                          parser=lambda x: torch.full(x.shape[:1] + x.shape[2:], 10,
                                                      dtype=torch.uint8))
    out = parsed(images, None, torch.Generator().manual_seed(0))
    assert FSE25.names[10] == "nose" and (out == 5.0).all()
