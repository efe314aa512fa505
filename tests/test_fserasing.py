"""FSErasing: properties of the batched core, the v2 transform, and the mask-backed dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from fserasing import (
    FILL_MODES,
    BatchFSErasing,
    FSErasing,
    MaskedImageFolder,
    RegionEraser,
    erase_batch,
)
from parsing.core.errors import DataError, InputError, LabelError
from parsing.core.io import write_label_map
from parsing.core.labels import FSE25
from parsing.parser.transforms import RandomHorizontalFlip

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FILLS = [*FILL_MODES, 0.25, (-1.0, 0.0, 1.0)]


@st.composite
def batches(draw, max_b: int = 3, channels=(1, 3)):
    """Tiny random image batches with masks holding a random subset of FSE-25 classes."""
    b = draw(st.integers(1, max_b))
    c = draw(st.sampled_from(channels))
    h, w = draw(st.integers(2, 9)), draw(st.integers(2, 9))
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.uint8]))
    classes = draw(st.lists(st.integers(0, 24), min_size=1, max_size=6, unique=True))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    if dtype == torch.uint8:
        images = torch.randint(0, 256, (b, c, h, w), generator=g, dtype=torch.uint8)
    else:
        images = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    pick = torch.randint(len(classes), (b, h, w), generator=g)
    mask_dtype = draw(st.sampled_from([torch.uint8, torch.int64]))
    masks = torch.tensor(classes)[pick].to(mask_dtype)
    return images, masks


def erase_options():
    return st.fixed_dictionaries({
        "p": st.sampled_from([0.5, 1.0]),
        "n_erase": st.sampled_from([1, 3, (0, 2), (1, 19), ["eyes", "nose"], [0, 21]]),
        "fill": st.sampled_from(FILLS),
        "present_only": st.booleans(),
    })


def _fits(images: torch.Tensor, fill) -> None:
    """A per-channel constant needs as many channels as it has values."""
    assume(not isinstance(fill, tuple) or images.shape[1] == len(fill))


def _pixels_of(classes: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B, K) bool classes -> (B, 1, H, W) bool pixels belonging to one of them."""
    return classes.gather(1, masks.long().flatten(1)).view(masks.shape)[:, None]


# -- the batched core --------------------------------------------------------------------


@FAST
@given(batch=batches(), options=erase_options(), seed=st.integers(0, 2**31 - 1))
def test_only_erased_regions_change(batch, options, seed):
    images, masks = batch
    _fits(images, options["fill"])
    g = torch.Generator().manual_seed(seed)
    out, erased = erase_batch(images, masks, generator=g, return_erased=True, **options)
    outside = ~_pixels_of(erased, masks).expand_as(images)
    assert torch.equal(out[outside], images[outside])
    present = torch.zeros(masks.shape[0], 25, dtype=torch.bool)
    present.scatter_(1, masks.long().flatten(1), True)
    assert not (erased & ~present).any(), "a class absent from the image was reported erased"
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.device == images.device


@FAST
@given(batch=batches(), options=erase_options(), seed=st.integers(0, 2**31 - 1))
def test_region_is_exactly_the_selected_classes(batch, options, seed):
    images, masks = batch
    _fits(images, options["fill"])
    eraser = RegionEraser(**options)
    _, erasure = eraser(images, masks, torch.Generator().manual_seed(seed))
    assert torch.equal(erasure.region[:, None], _pixels_of(erasure.selected, masks))
    lo_hi = options["n_erase"]
    if isinstance(lo_hi, int | tuple) and not options["present_only"]:
        lo, hi = (lo_hi, lo_hi) if isinstance(lo_hi, int) else lo_hi
        n = erasure.selected.sum(1)
        assert ((n == 0) | ((n >= lo) & (n <= hi))).all()
        assert not erasure.selected[:, 20:].any() and not erasure.selected[:, 0].any()


@FAST
@given(batch=batches(), fill=st.sampled_from(FILLS))
def test_p_zero_is_identity(batch, fill):
    images, masks = batch
    _fits(images, fill)
    out, erased = erase_batch(images, masks, p=0.0, n_erase=3, fill=fill, return_erased=True)
    assert torch.equal(out, images) and not erased.any()


@FAST
@given(batch=batches(), fill=st.sampled_from(FILLS), seed=st.integers(0, 2**31 - 1))
def test_absent_classes_erase_nothing(batch, fill, seed):
    images, masks = batch
    _fits(images, fill)
    absent = sorted(set(range(1, 25)) - set(masks.unique().tolist()))[:4]
    if not absent:
        return
    g = torch.Generator().manual_seed(seed)
    out = erase_batch(images, masks, p=1.0, n_erase=absent, fill=fill, generator=g)
    assert torch.equal(out, images)


@FAST
@given(batch=batches(), options=erase_options(), seed=st.integers(0, 2**31 - 1))
def test_same_seed_same_output(batch, options, seed):
    images, masks = batch
    _fits(images, options["fill"])
    a = erase_batch(images, masks, generator=torch.Generator().manual_seed(seed), **options)
    b = erase_batch(images, masks, generator=torch.Generator().manual_seed(seed), **options)
    assert torch.equal(a, b)


@FAST
@given(batch=batches(), options=erase_options(), seed=st.integers(0, 2**31 - 1))
def test_per_sample_apply_equals_batched_for_the_same_draws(batch, options, seed):
    images, masks = batch
    _fits(images, options["fill"])
    eraser = RegionEraser(**options)
    batched, erasure = eraser(images, masks, torch.Generator().manual_seed(seed))
    for i in range(len(erasure)):
        single = eraser.apply(images[i : i + 1], masks[i : i + 1], erasure[i])
        if options["fill"] == "blur":  # CPU convolutions round differently by batch size
            atol = 0 if images.dtype.is_floating_point else 1
            torch.testing.assert_close(single[0], batched[i], rtol=1e-5, atol=atol or 1e-6)
        else:
            assert torch.equal(single[0], batched[i])


@FAST
@given(batch=batches(max_b=1), options=erase_options(), seed=st.integers(0, 2**31 - 1))
def test_transform_equals_erase_batch_of_one(batch, options, seed):
    images, masks = batch
    _fits(images, options["fill"])
    t = FSErasing(generator=torch.Generator().manual_seed(seed), return_erased=True, **options)
    (image, mask), erased = t(tv_tensors.Image(images[0]), tv_tensors.Mask(masks[0]))
    ref, ref_erased = erase_batch(images, masks, generator=torch.Generator().manual_seed(seed),
                                  return_erased=True, **options)
    assert torch.equal(image.as_subclass(torch.Tensor), ref[0])
    assert torch.equal(erased, ref_erased[0]) and erased.shape == (25,)
    assert torch.equal(mask.as_subclass(torch.Tensor), masks[0])


@pytest.mark.parametrize("fill", ["random", "random_1", "random_mix", "shuffle", 0.0])
def test_module_form_matches_erase_batch(fill):
    images, masks = _faces(4, 16)
    module = BatchFSErasing(p=0.7, n_erase=(1, 3), fill=fill,
                            generator=torch.Generator().manual_seed(3))
    ref = erase_batch(images, masks, p=0.7, n_erase=(1, 3), fill=fill,
                      generator=torch.Generator().manual_seed(3))
    assert torch.equal(module(images, masks), ref)
    assert "p=0.7" in repr(module)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fill", FILLS)
def test_device_dtype_and_batch_shape_kept(device, fill):
    images, masks = _faces(3, 12)
    for x in (images.to(device), (images * 60 + 128).clamp(0, 255).to(torch.uint8).to(device),
              images.half().to(device)):
        g = torch.Generator(device=device).manual_seed(0)
        out = erase_batch(x, masks.to(device), p=1.0, n_erase=2, fill=fill, generator=g)
        assert out.device == x.device and out.dtype == x.dtype and out.shape == x.shape
        g = torch.Generator(device=device).manual_seed(0)
        strided = x.contiguous(memory_format=torch.channels_last)
        same = erase_batch(strided, masks.to(device), p=1.0, n_erase=2, fill=fill, generator=g)
        torch.testing.assert_close(same, out)  # means may sum in another order


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_region_mean_of_half_precision_images_is_summed_in_float32(device, dtype):
    # regions of thousands of pixels: half-precision sums (CUDA's atomics) drift and
    # half-precision counts stop at 2048 (bfloat16: 256)
    images, masks = _faces(2, 112)
    images, masks = images.to(device), masks.to(device)
    kw = {"p": 1.0, "n_erase": 3, "classes": [1, 2, 3, 21], "fill": "region_mean"}
    got = erase_batch(images.to(dtype), masks, **kw,
                      generator=torch.Generator(device=device).manual_seed(0))
    want = erase_batch(images.to(dtype).float(), masks, **kw,
                       generator=torch.Generator(device=device).manual_seed(0))
    assert got.dtype == dtype and (got != images.to(dtype)).any()
    torch.testing.assert_close(got, want.to(dtype))


# -- fills against a per-sample reference loop -------------------------------------------


def _reference_fill(images, masks, classes, fill):
    """Per-sample, per-class loop of the reference algorithm for the deterministic fills."""
    out = images.clone().double()
    for b in range(images.shape[0]):
        original = images[b].double()
        for c in classes:
            where = masks[b] == c
            if not where.any():
                continue
            if fill == "mean":
                value = original.mean(dim=(1, 2))
            elif fill == "region_mean":
                value = original[:, where].mean(dim=1)
            elif fill == "blur":
                value = TF.gaussian_blur(images[b : b + 1].double(), [5, 5], [16 / 28] * 2)[0]
                value = value[:, where]
            else:
                value = torch.as_tensor(fill, dtype=torch.float64).expand(images.shape[1])
            out[b][:, where] = value[:, None] if value.ndim == 1 else value
    return out


@pytest.mark.parametrize("fill", ["mean", "region_mean", "blur", 0.5, (-1.0, 0.0, 1.0)])
def test_deterministic_fills_match_reference_loop(fill):
    images, masks = _faces(5, 16, seed=4)
    classes = [1, 10, 11, 12, 21]
    out = erase_batch(images.double(), masks, p=1.0, n_erase=classes, fill=fill)
    ref = _reference_fill(images, masks, classes, fill)
    torch.testing.assert_close(out, ref)
    u8 = (images * 60 + 128).clamp(0, 255).round().to(torch.uint8)
    out8 = erase_batch(u8, masks, p=1.0, n_erase=classes, fill=fill)
    ref8 = _reference_fill(u8, masks, classes, fill)
    if fill in ("mean", "region_mean", "blur"):
        assert (out8.double() - ref8).abs().max() <= 1  # rounding to uint8 only
    else:  # constants are clamped into 0..255 for uint8
        assert torch.equal(out8, ref8.clamp(0, 255).round().to(torch.uint8))


def _reference_random_fill(images, masks, erasure, fill):
    """The random fills written out from the draws: every region pixel, in (b, h, w) order,
    takes its class's colour (random_1, random_mix) and then every noise pixel its noise row
    (random, random_mix), both mapped through mean = std = 0.5 for uint8 images."""
    def convert(z):
        if images.dtype.is_floating_point:
            return z.to(images.dtype)
        return (z * 127.5 + 127.5).round().clamp(0, 255).to(images.dtype)

    out = images.clone().permute(0, 2, 3, 1)  # (B, H, W, C): boolean indexing by pixel
    if fill in ("random_1", "random_mix"):
        image = torch.arange(len(masks))[:, None, None].expand_as(masks)
        colours = convert(erasure.colours)[image, masks.long()]
        out[erasure.region] = colours[erasure.region]
    if fill in ("random", "random_mix"):
        out[erasure.noise_region] = convert(erasure.noise)
    return out.permute(0, 3, 1, 2)


@pytest.mark.parametrize("fill", ["random", "random_1", "random_mix"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.uint8])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_random_fills_equal_a_pixel_by_pixel_reference_for_the_same_draws(fill, dtype, layout):
    images, masks = _faces(6, 24, seed=5)
    images = (images * 60 + 128).clamp(0, 255).to(dtype) if dtype == torch.uint8 else \
        images.to(dtype)
    if layout == "channels_last":
        images = images.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":  # W-major: neither layout; copies keep these strides
        images = images.transpose(2, 3).contiguous().transpose(2, 3)
    for mask_dtype in (torch.uint8, torch.int64):
        eraser = RegionEraser(p=0.8, n_erase=(1, 4), fill=fill)
        out, erasure = eraser(images, masks.to(mask_dtype), torch.Generator().manual_seed(3))
        assert erasure.region.any()
        assert torch.equal(out, _reference_random_fill(images, masks, erasure, fill))


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_inplace_erases_the_given_batch_with_the_same_result(fill, dtype):
    images, masks = _faces(4, 20, seed=6)
    images = (images * 60 + 128).clamp(0, 255).to(dtype) if dtype == torch.uint8 else images
    options = {"p": 1.0, "n_erase": (1, 4), "fill": fill}
    want = erase_batch(images, masks, generator=torch.Generator().manual_seed(7), **options)
    batch = images.clone()
    got = erase_batch(batch, masks, generator=torch.Generator().manual_seed(7), inplace=True,
                      **options)
    assert got.data_ptr() == batch.data_ptr() and not torch.equal(got, images)
    assert torch.equal(got, want)
    module = BatchFSErasing(generator=torch.Generator().manual_seed(7), inplace=True, **options)
    assert torch.equal(module(images.clone(), masks), want)


@pytest.mark.parametrize("inplace", [False, True])
def test_every_fill_runs_under_deterministic_algorithms(inplace):
    images, masks = _faces(3, 16, seed=8)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for fill in FILLS:
            out = erase_batch(images.clone(), masks, p=1.0, n_erase=3, fill=fill,
                              generator=torch.Generator().manual_seed(0), inplace=inplace)
            assert out.shape == images.shape
    finally:
        torch.use_deterministic_algorithms(previous)


def test_random_fills_have_the_documented_statistics():
    images, masks = _faces(64, 32)
    g = torch.Generator().manual_seed(0)
    out, erasure = RegionEraser(p=1.0, n_erase=["skin"], fill="random")(images, masks, g)
    values = out.permute(1, 0, 2, 3)[:, erasure.region]
    assert values.numel() > 10_000
    assert abs(values.mean()) < 0.03 and abs(values.std() - 1) < 0.03
    u8 = torch.zeros_like(images, dtype=torch.uint8)
    out8, erasure = RegionEraser(p=1.0, n_erase=["skin"], fill="random")(u8, masks, g)
    values = out8.permute(1, 0, 2, 3)[:, erasure.region].double()
    # N(0, 1) through mean = std = 0.5: 127.5 + 127.5 z, a sixth of it clamped at each end
    assert abs(values.mean() - 127.5) < 2
    assert abs((values == 0).double().mean() - 0.1587) < 0.01
    assert abs((values == 255).double().mean() - 0.1587) < 0.01


def test_random_1_is_one_colour_per_region_and_random_mix_mixes():
    images, masks = _faces(32, 16)
    g = torch.Generator().manual_seed(1)
    eraser = RegionEraser(p=1.0, n_erase=["cheeks", "nose", "hair"], fill="random_1")
    out, _ = eraser(images, masks, g)
    mix, mix_erasure = RegionEraser(p=1.0, n_erase=["cheeks", "nose", "hair"],
                                    fill="random_mix")(images, masks, g)
    constant, per_pixel = 0, 0
    for b in range(32):
        for c in (1, 2, 10, 21):
            where = masks[b] == c
            if where.sum() < 2:
                continue
            assert (out[b][:, where] == out[b][:, where][:, :1]).all()
            spread = mix[b][:, where].std(dim=1).max()
            constant += int(spread == 0)
            per_pixel += int(spread > 0.3)
            assert spread == 0 or spread > 0.3
    assert constant > 10 and per_pixel > 10, (constant, per_pixel)


def test_shuffle_permutes_pixels_within_each_region():
    images, masks = _faces(8, 16)
    out, erasure = RegionEraser(p=1.0, n_erase=["skin", "hair"], fill="shuffle")(
        images, masks, torch.Generator().manual_seed(2))
    moved = 0
    for b in range(8):
        for c in masks[b].unique().tolist():
            where = masks[b] == c
            before, after = images[b][:, where], out[b][:, where]
            key = lambda px: sorted(map(tuple, px.T.tolist()))  # noqa: E731
            assert key(before) == key(after), f"region {c} lost or gained pixel values"
            moved += int(not torch.equal(before, after))
    assert moved > 8


def test_choice_law_matches_torch_multinomial_without_replacement():
    """Weighted draws without replacement: same marginals as the reference's multinomial."""
    b, weights = 20_000, [4.0, 1.0, 1.0, 2.0, 0.0, 1.0]
    classes = [1, 5, 10, 11, 17, 21]
    masks = torch.tensor(classes)[torch.arange(6).repeat(2)].view(1, 2, 6).expand(b, 2, 6)
    eraser = RegionEraser(p=1.0, n_erase=2, classes=classes, class_weights=weights)
    erasure = eraser.draw(masks.to(torch.uint8), 3, torch.Generator().manual_seed(0))
    ours = erasure.selected[:, classes].double().mean(0)
    g = torch.Generator().manual_seed(1)
    picks = torch.tensor(weights).expand(b, -1).multinomial(2, replacement=False, generator=g)
    ref = torch.zeros(b, 6).scatter_(1, picks, 1.0).mean(0).double()
    torch.testing.assert_close(ours, ref, atol=0.015, rtol=0)
    assert ours[4] == 0


def test_n_erase_range_includes_both_ends_and_p_is_respected():
    masks = torch.arange(1, 20, dtype=torch.uint8).view(1, 1, 19).expand(4000, 1, 19)
    eraser = RegionEraser(p=0.3, n_erase=(1, 3))
    n = eraser.draw(masks, 3, torch.Generator().manual_seed(0)).selected.sum(1)
    counts = torch.bincount(n, minlength=4).double() / 4000
    torch.testing.assert_close(counts, torch.tensor([0.7, 0.1, 0.1, 0.1]).double(), atol=0.03,
                               rtol=0)


def test_class_weights_by_name():
    masks = torch.arange(1, 20, dtype=torch.uint8).view(1, 1, 19).expand(2000, 1, 19)
    eraser = RegionEraser(p=1.0, n_erase=2, class_weights={"eyes": 0.0, "nose": 50.0})
    selected = eraser.draw(masks, 3, torch.Generator().manual_seed(0)).selected
    assert not selected[:, 11:13].any() and selected[:, 10].float().mean() > 0.9
    assert (selected.sum(1) == 2).all()
    with pytest.raises(InputError, match="'hair', which is not a candidate"):
        RegionEraser(class_weights={"hair": 2.0})
    groups = RegionEraser(p=1.0, classes=["eyes", "mouth"], group_units=True,
                          class_weights={"mouth": 0.0})
    selected = groups.draw(masks, 3, torch.Generator().manual_seed(0)).selected
    assert selected[:, [11, 12]].all() and not selected[:, 17:20].any()


def test_group_units_erase_groups_whole_and_present_only_skips_absent():
    images, masks = _faces(16, 16)
    eraser = RegionEraser(p=1.0, n_erase=1, classes=["eyes", "cheeks"], group_units=True)
    selected = eraser.draw(masks, 3, torch.Generator().manual_seed(0)).selected
    assert torch.equal(selected[:, 11], selected[:, 12]) and torch.equal(selected[:, 1],
                                                                          selected[:, 2])
    assert (selected.sum(1) == 2).all()
    only_hair = torch.full_like(masks, 21)
    eraser = RegionEraser(p=1.0, n_erase=1, classes="all", present_only=True)
    _, erasure = eraser(images, only_hair, torch.Generator().manual_seed(0))
    assert erasure.region.all()


def test_ignore_id_pixels_are_never_erased():
    masks = torch.tensor([[[1, 255], [2, 255]]], dtype=torch.uint8)
    images = torch.zeros(1, 3, 2, 2)
    out = erase_batch(images, masks, p=1.0, n_erase=["skin", "nose"], fill=1.0,
                      label_set="facesynthetics")
    assert torch.equal(out[0, :, :, 1], images[0, :, :, 1]) and (out[0, :, :, 0] == 1).all()


# -- bad input ---------------------------------------------------------------------------


def test_bad_masks_and_options_raise_clear_errors():
    images, masks = _faces(2, 8)
    with pytest.raises(LabelError, match=r"ids \{25\} are outside fse25"):
        erase_batch(images, torch.full_like(masks, 25))
    with pytest.raises(InputError, match=r"mask size \(8, 7\) differs from image size \(8, 8\)"):
        erase_batch(images, masks[..., :7])
    with pytest.raises(InputError, match=r"masks must be \(B, H, W\)"):
        erase_batch(images, masks[0])
    with pytest.raises(InputError, match=r"images must be \(B, C, H, W\)"):
        erase_batch(images[0], masks)
    with pytest.raises(InputError, match="integer"):
        erase_batch(images, masks.float())
    with pytest.raises(InputError, match="2 masks for 1 images"):
        erase_batch(images[:1], masks)
    with pytest.raises(InputError, match="unknown fill 'noise'"):
        FSErasing(fill="noise")
    with pytest.raises(InputError, match="only 19 candidate classes"):
        FSErasing(n_erase=(1, 20))
    with pytest.raises(InputError, match="p must be in"):
        FSErasing(p=1.5)
    with pytest.raises(LabelError, match="no class 'snout'"):
        FSErasing(classes=["snout"])
    with pytest.raises(InputError, match="class_weights has 2 values for 19"):
        FSErasing(class_weights=[1.0, 2.0])
    with pytest.raises(InputError, match="2 values but the images have 3 channels"):
        erase_batch(images, masks, p=1.0, n_erase=["skin"], fill=(0.0, 1.0))
    with pytest.raises(InputError, match="generator is on cpu"):
        RegionEraser().draw(masks.to("meta"), 3, torch.Generator())
    t = FSErasing(p=1.0)
    with pytest.raises(LabelError, match="outside fse25"):
        t(tv_tensors.Image(images[0]), tv_tensors.Mask(torch.full_like(masks[0], 30)))
    with pytest.raises(InputError, match="differs from image size"):
        t(tv_tensors.Image(images[0]), tv_tensors.Mask(masks[0, :4]))
    with pytest.raises(InputError, match="exactly one tv_tensors.Mask"):
        t(tv_tensors.Image(images[0]), masks[0])
    with pytest.raises(InputError, match="'image' and 'mask'"):
        t({"img": images[0], "mask": masks[0]})


# -- the v2 transform --------------------------------------------------------------------


@pytest.mark.parametrize("fill", FILLS)
def test_transform_in_compose_after_a_label_swapping_flip_stays_aligned(fill):
    images, masks = _faces(1, 24, seed=5)
    pipeline = v2.Compose([
        RandomHorizontalFlip(p=1.0),
        FSErasing(p=1.0, n_erase=["right_eye", "nose"], fill=fill,
                  generator=torch.Generator().manual_seed(0), return_erased=True),
    ])
    (image, mask), erased = pipeline(tv_tensors.Image(images[0]), tv_tensors.Mask(masks[0]))
    flipped_mask = masks[0].flip(-1)
    flipped_image = images[0].flip(-1)
    assert isinstance(image, tv_tensors.Image) and isinstance(mask, tv_tensors.Mask)
    assert torch.equal(mask.as_subclass(torch.Tensor), FSE25.flip_lut()[flipped_mask.long()])
    # the subject's right eye of the flipped face is the mirrored left eye of the original
    inside = (flipped_mask == FSE25.id("left_eye")) | (flipped_mask == FSE25.id("nose"))
    assert inside.sum() > 4
    assert torch.equal(image[:, ~inside], flipped_image[:, ~inside])
    assert erased.nonzero().flatten().tolist() == [10, 11]
    if fill not in ("shuffle", "blur"):
        assert not torch.equal(image[:, inside], flipped_image[:, inside])


def test_transform_round_trips_pil_ndarray_dict_and_batches():
    images, masks = _faces(2, 16)
    u8 = (images * 60 + 128).clamp(0, 255).to(torch.uint8)
    t = FSErasing(p=1.0, n_erase=["skin"], fill=0.0, generator=torch.Generator().manual_seed(0))
    ref = erase_batch(u8[:1], masks[:1], p=1.0, n_erase=["skin"], fill=0.0)[0]

    pil = PIL.Image.fromarray(u8[0].permute(1, 2, 0).numpy())
    out, mask = t(pil, tv_tensors.Mask(masks[0]))
    assert isinstance(out, PIL.Image.Image) and out.mode == "RGB" and out.size == pil.size
    assert torch.equal(torch.from_numpy(np.array(out)).permute(2, 0, 1), ref)

    arr = u8[0].permute(1, 2, 0).numpy()
    sample = {"landmarks": np.zeros((5, 2)), "image": arr, "mask": masks[0].numpy(),
              "identity": 7}
    out = t(sample)
    assert set(out) == set(sample) and out["identity"] == 7 and out["mask"] is sample["mask"]
    assert isinstance(out["image"], np.ndarray) and out["image"].shape == arr.shape
    assert np.array_equal(out["image"], ref.permute(1, 2, 0).numpy())
    grey = t({"image": arr[..., 0], "mask": PIL.Image.fromarray(masks[0].numpy())})
    assert grey["image"].shape == arr.shape[:2]
    for fill in FILL_MODES:  # (H, W, C) arrays arrive as channels-last strided tensors
        noisy = FSErasing(p=1.0, n_erase=["skin"], fill=fill)({"image": arr, "mask": masks[0]})
        assert noisy["image"].shape == arr.shape and noisy["image"].dtype == arr.dtype

    out, mask, label = t(u8[0], tv_tensors.Mask(masks[0][None]), 3)
    assert type(out) is torch.Tensor and torch.equal(out, ref) and label == 3

    batch_out, batch_mask = t(tv_tensors.Image(u8), tv_tensors.Mask(masks))
    assert isinstance(batch_out, tv_tensors.Image) and batch_out.shape == u8.shape
    outside = masks[:, None].expand_as(u8) > 9
    assert torch.equal(batch_out[outside], u8[outside])


# -- mask sources and MaskedImageFolder --------------------------------------------------


def _write_folder(root, images, masks):
    paths = []
    for i, (img, _) in enumerate(zip(images, masks, strict=True)):
        rel = f"person_{i % 2}/{i:03d}.jpg" if i % 2 else f"person_{i % 2}/{i:03d}.png"
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(img.permute(1, 2, 0).numpy()).save(root / "images" / rel,
                                                               quality=100)
        paths.append(rel)
    return paths


def test_masked_image_folder_pairs_masks_by_relative_path(tmp_path):
    images, masks = _faces(4, 16)
    u8 = (images * 60 + 128).clamp(0, 255).to(torch.uint8)
    rels = _write_folder(tmp_path, u8, masks)
    for rel, m in zip(rels, masks, strict=True):
        target = tmp_path / "masks" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        write_label_map(target.with_suffix(".png"), m)
    ds = MaskedImageFolder(tmp_path / "images", tmp_path / "masks")
    assert ds.classes == ["person_0", "person_1"] and len(ds) == 4
    order = [rels.index(str(Path(p).relative_to(tmp_path / "images"))) for p, _ in ds.samples]
    for i, j in enumerate(order):
        image, mask, label = (ds[i][k] for k in ("image", "mask", "label"))
        assert isinstance(image, tv_tensors.Image) and isinstance(mask, tv_tensors.Mask)
        assert torch.equal(mask.as_subclass(torch.Tensor), masks[j]) and label == j % 2
        assert image.shape == (3, 16, 16) and image.dtype == torch.uint8

    stacked = masks[order]
    torch.save(stacked, tmp_path / "masks.pt")
    np.save(tmp_path / "masks.npy", stacked.numpy())
    tf = v2.Compose([v2.RandomHorizontalFlip(p=1.0), FSErasing(p=1.0, fill=0.0)])
    for source in (tmp_path / "masks.pt", str(tmp_path / "masks.npy"), stacked,
                   lambda path: masks[rels.index(path.split("images/")[1])].numpy()):
        ds = MaskedImageFolder(tmp_path / "images", source, transform=tf)
        mask = ds[1]["mask"]
        assert torch.equal(mask.as_subclass(torch.Tensor), stacked[1].flip(-1))


def test_masked_image_folder_fails_clearly(tmp_path):
    images, masks = _faces(3, 16)
    u8 = (images * 60 + 128).clamp(0, 255).to(torch.uint8)
    rels = _write_folder(tmp_path, u8, masks)
    (tmp_path / "masks").mkdir()
    for rel in rels[1:]:
        target = (tmp_path / "masks" / rel).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_label_map(target, torch.zeros(16, 16, dtype=torch.uint8))
    missing = (tmp_path / "masks" / rels[0]).with_suffix(".png")
    with pytest.raises(DataError, match=rf"1 of 3 images have no mask \(e\.g\. {missing}\)"):
        MaskedImageFolder(tmp_path / "images", tmp_path / "masks")
    write_label_map(missing, torch.zeros(12, 16, dtype=torch.uint8))
    ds = MaskedImageFolder(tmp_path / "images", tmp_path / "masks")
    index = [s for s, _ in ds.samples].index(str(tmp_path / "images" / rels[0]))
    with pytest.raises(DataError, match=rf"{missing}: mask is 12x16 but image .* is 16x16"):
        ds[index]
    write_label_map(missing, torch.full((16, 16), 40, dtype=torch.uint8))
    with pytest.raises(LabelError, match=rf"{missing}: ids \{{40\}} are outside fse25"):
        ds[index]
    with pytest.raises(DataError, match="2 masks for 3 images"):
        MaskedImageFolder(tmp_path / "images", masks[:2])
    torch.save({"masks": masks}, tmp_path / "bad.pt")
    with pytest.raises(DataError, match="bad.pt: expected one"):
        MaskedImageFolder(tmp_path / "images", tmp_path / "bad.pt")
    with pytest.raises(DataError, match="no such mask folder or mask file"):
        MaskedImageFolder(tmp_path / "images", tmp_path / "nowhere")


# -- helpers -----------------------------------------------------------------------------


def _faces(b: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Face-like label maps (concentric regions and blobs of many FSE-25 classes) + images."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size),
                            indexing="ij")
    shift = torch.rand(b, 2, 1, 1, generator=g) * 0.3 - 0.15
    x, y = xx - shift[:, 0], yy - shift[:, 1]
    r = (x**2 + (y * 0.8) ** 2).sqrt()
    masks = torch.full((b, size, size), 21, dtype=torch.uint8)  # hair
    skin = 1 + (x > 0).to(torch.uint8) + 2 * (y > 0.2) + 4 * (y < -0.35)  # cheeks/chin/forehead
    masks = torch.where(r < 0.8, skin.to(torch.uint8), masks)
    masks[(r < 0.8) & (y < -0.35) & (x.abs() < 0.15)] = 7
    masks[((x + 0.35) ** 2 + (y + 0.1) ** 2) < 0.02] = 11
    masks[((x - 0.35) ** 2 + (y + 0.1) ** 2) < 0.02] = 12
    masks[(x.abs() < 0.1) & (y > -0.1) & (y < 0.25)] = 10
    masks[(x.abs() < 0.3) & ((y - 0.45).abs() < 0.06)] = 18
    masks[r > 0.95] = 0
    images = torch.randn(b, 3, size, size, generator=g)
    return images, masks


def test_demo_sheet_cli(tmp_path, capsys):
    from fserasing.demo import main

    images, masks = _faces(2, 32)
    u8 = (images * 40 + 128).clamp(0, 255).to(torch.uint8)
    (tmp_path / "synth" / "images").mkdir(parents=True)
    (tmp_path / "synth" / "labels_25").mkdir()
    for i in range(2):
        PIL.Image.fromarray(u8[i].permute(1, 2, 0).numpy()).save(
            tmp_path / "synth" / "images" / f"{i:06d}.png")
        write_label_map(tmp_path / "synth" / "labels_25" / f"{i:06d}_seg.png", masks[i])
    sheet = tmp_path / "out" / "sheet.png"
    assert main(["--data", str(tmp_path / "synth"), "--sheet", str(sheet)]) == 0
    record = json.loads(sheet.with_suffix(".json").read_text())
    assert sheet.stat().st_size > 0 and record["fills"] == list(FILL_MODES)
    assert len(record["faces"]) == 2 and all(1 <= len(f["erased"]) <= 3 for f in record["faces"])
    assert main(["--data", str(tmp_path / "none"), "--sheet", str(sheet)]) == 2
    assert "no such image folder" in capsys.readouterr().err
