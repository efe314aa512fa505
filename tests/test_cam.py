import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d
from pytorch_grad_cam import GradCAM as ReferenceGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from skimage.transform import resize
from torch import nn

from cam import FSCAM, RISE, GradCAM, GroupCAM, RegionStats, metrics, plot, region_attribution
from cam.base import minmax
from cam.rise import interpolation_matrix, rise_masks
from cam.targets import ClassTarget, EmbeddingNormTarget, PairTarget, SimilarityTarget
from parsing.core.errors import InputError
from parsing.core.labels import FSE25

pytestmark = pytest.mark.usefixtures("single_thread")


class TinyNet(nn.Module):
    """A small CNN with named stages (like a backbone) and an embedding or class head."""

    def __init__(self, out: int = 8, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width),
                                  nn.ReLU())
        self.layer1 = nn.Sequential(nn.Conv2d(width, width * 2, 3, stride=2, padding=1),
                                    nn.BatchNorm2d(width * 2), nn.ReLU(inplace=True))
        self.layer2 = nn.Sequential(nn.Conv2d(width * 2, width * 4, 3, stride=2, padding=1),
                                    nn.BatchNorm2d(width * 4), nn.PReLU(width * 4))
        self.head = nn.Linear(width * 4, out)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.head(x.mean(dim=(2, 3)))


def tiny(out=8, width=8, seed=0):
    torch.manual_seed(seed)
    model = TinyNet(out, width)
    for m in model.modules():  # non-trivial running statistics for eval mode
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def block_labels(batch, size=32, classes=(1, 7, 10, 11, 12, 18, 21)):
    """Label maps made of random rectangles of the given FSE-25 classes over background."""
    g = torch.Generator().manual_seed(1)
    maps = torch.zeros(batch, size, size, dtype=torch.uint8)
    for b in range(batch):
        for k in classes:
            y, x = torch.randint(0, size - 6, (2,), generator=g).tolist()
            h, w = torch.randint(3, 10, (2,), generator=g).tolist()
            maps[b, y:y + h, x:x + w] = k
    return maps


class CountingModel(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.calls, self.rows = model, 0, 0

    def forward(self, x):
        self.calls += 1
        self.rows += len(x)
        return self.model(x)


# ---------------------------------------------------------------- Grad-CAM

@pytest.mark.parametrize("layer", ["layer2", "layer1.2"])
def test_gradcam_matches_pytorch_grad_cam(layer):
    model = tiny(out=10)
    x = torch.randn(4, 3, 40, 32)
    classes = [3, 0, 9, 3]
    ref_layer = model.get_submodule(layer)
    with ReferenceGradCAM(model, [ref_layer]) as reference:
        expected = reference(x, [ClassifierOutputTarget(c) for c in classes])
    with GradCAM(model, layer) as gradcam:
        result = gradcam.explain(x, ClassTarget(classes))
    assert result.map.shape == (4, 40, 32)
    assert np.abs(result.map.numpy() - expected).max() <= 1e-4
    assert torch.allclose(minmax(result.raw, eps=0), result.map, atol=1e-5)
    assert torch.allclose(result.scores, model(x)[torch.arange(4), classes])


def test_gradcam_similarity_target_matches_pytorch_grad_cam():
    model = tiny(out=16)
    x, ref = torch.randn(3, 3, 32, 32), torch.randn(3, 16)

    def cosine(i):
        return lambda out: F.cosine_similarity(out, ref[i], dim=0)

    with ReferenceGradCAM(model, [model.layer2]) as reference:
        expected = reference(x, [cosine(i) for i in range(3)])
    with GradCAM(model, model.layer2) as gradcam:
        ours = gradcam(x, SimilarityTarget(ref))
    assert np.abs(ours.numpy() - expected).max() <= 1e-4


def test_gradcam_backward_stops_at_target_layer_and_grad_mode_is_restored():
    model = tiny()
    stem_backward = []
    model.stem.register_full_backward_hook(lambda *a: stem_backward.append(1))
    x = torch.randn(2, 3, 32, 32)
    with GradCAM(model, "layer2") as gradcam:
        maps = gradcam(x, EmbeddingNormTarget())
        assert torch.is_grad_enabled()
        with torch.no_grad():
            assert torch.equal(gradcam(x, EmbeddingNormTarget()), maps)
            assert not torch.is_grad_enabled()
    assert stem_backward == []
    assert all(p.grad is None for p in model.parameters())


def test_hooks_removed_after_with_and_inert_outside_explain():
    model = tiny()
    x = torch.randn(2, 3, 32, 32)
    before = model(x)
    with GradCAM(model, "layer2") as gradcam:
        assert len(model.layer2._forward_hooks) == 1
        with torch.no_grad():
            assert torch.equal(model(x), before.detach())  # hook does nothing outside explain
    assert len(model.layer2._forward_hooks) == 0
    with GroupCAM(model, "layer2", groups=4, blur_kernel=11):
        assert len(model.layer2._forward_hooks) == 1
    assert not any(m._forward_hooks for m in model.modules())
    with pytest.raises(InputError, match="closed"):
        gradcam(x, 0)


def test_gradcam_refuses_self_cosine_and_bad_layers():
    model = tiny()
    x = torch.randn(2, 3, 32, 32)
    with GradCAM(model, "layer2") as gradcam:
        with pytest.raises(InputError, match="zero gradient"):
            gradcam(x, SimilarityTarget())
        assert gradcam(x, SimilarityTarget(metric="dot")).shape == (2, 32, 32)
    with pytest.raises(InputError, match="layer9.*not a submodule.*stem, layer1"):
        GradCAM(model, "layer9")
    with pytest.raises(InputError, match="not a submodule"):
        GradCAM(model, nn.Conv2d(1, 1, 1))
    with pytest.raises(InputError, match=r"float tensor \(B, C, H, W\)"):
        GradCAM(model, "layer2")(torch.zeros(3, 32, 32), 0)


def test_gradcam_map_moves_to_input_device_and_per_image_targets():
    model = tiny(out=5)
    x = torch.randn(3, 3, 32, 32)
    with GradCAM(model, "layer2") as gradcam:
        listed = gradcam(x, [ClassTarget(1), 4, SimilarityTarget(torch.randn(5))])
        assert torch.allclose(listed[0], gradcam(x[:1], 1)[0], atol=1e-6)
        assert torch.allclose(listed[1], gradcam(x[1:2], 4)[0], atol=1e-6)
        with pytest.raises(InputError, match="2 targets for a batch of 3"):
            gradcam(x, [ClassTarget(1), ClassTarget(2)])


# ---------------------------------------------------------------- targets

def test_targets_are_batched_and_bind_on_the_clean_output():
    out = torch.randn(4, 6)
    assert torch.equal(ClassTarget().bind(out)(out), out.max(dim=1).values)
    probs = ClassTarget(2, softmax=True)(out)
    assert torch.allclose(probs, out.softmax(1)[:, 2])
    index = torch.tensor([3, 3, 0])
    assert torch.equal(ClassTarget([0, 1, 2, 5])(out[:3], index), out[torch.arange(3), [5, 5, 0]])
    pair = PairTarget().bind(out)
    assert torch.allclose(pair(out), F.cosine_similarity(out, out.roll(2, 0), dim=1))
    assert torch.allclose(SimilarityTarget().bind(out)(out), torch.ones(4))
    ref = torch.randn(6)
    assert torch.allclose(SimilarityTarget(ref, metric="dot")(out), out @ ref / ref.norm())
    with pytest.raises(InputError, match="odd batch"):
        PairTarget().bind(out[:3])
    with pytest.raises(InputError, match="class ids must lie in 0..5"):
        ClassTarget(6).bind(out)
    with pytest.raises(InputError, match=r"reference of shape \(5,\)"):
        SimilarityTarget(torch.randn(5)).bind(out)


# ---------------------------------------------------------------- RISE

@pytest.mark.parametrize("s,out", [(7, 128), (8, 72), (3, 17), (2, 9), (5, 5)])
def test_interpolation_matrix_equals_skimage_reflect_resize(s, out):
    grid = np.random.default_rng(s).random((s, s))
    expected = resize(grid, (out, out), order=1, mode="reflect", anti_aliasing=False)
    matrix = interpolation_matrix(s, out)
    ours = matrix @ torch.from_numpy(grid) @ matrix.T
    assert np.abs(ours.numpy() - expected).max() < 1e-12


def test_rise_masks_equal_the_reference_loop_and_are_reproducible():
    rng = np.random.default_rng(0)
    n, s, size = 6, 7, (40, 30)
    grids = (rng.random((n, s, s)) < 0.5).astype(np.float64)
    cells = [math.ceil(length / s) for length in size]
    shifts = np.stack([rng.integers(0, c, n) for c in cells], axis=1)
    expected = np.stack([  # the RISE authors' loop
        resize(g, [(s + 1) * c for c in cells], order=1, mode="reflect",
               anti_aliasing=False)[y:y + size[0], x:x + size[1]]
        for g, (y, x) in zip(grids, shifts, strict=True)])
    ours = rise_masks(torch.from_numpy(grids), torch.from_numpy(shifts), size)
    assert np.abs(ours.numpy() - expected).max() < 1e-12

    model = tiny()
    a, b = RISE(model, n_masks=50, seed=3), RISE(model, n_masks=50, seed=3)
    assert torch.equal(a.masks((32, 32)), b.masks((32, 32)))
    assert not torch.equal(a.masks((32, 32)), RISE(model, n_masks=50, seed=4).masks((32, 32)))
    assert torch.equal(a.masks((32, 32))[10:20], a.masks((32, 32), 10, 20))
    masks = RISE(model, n_masks=2000, cell=4, p1=0.3).masks((16, 16))
    assert masks.min() >= 0 and masks.max() <= 1
    assert abs(masks.mean().item() - 0.3) < 0.01


def test_rise_is_unbiased_on_a_linear_model():
    """score(x*M) = sum_p v_p M_p + c with v_p = sum_ch w_ch,p x_ch,p. Grid cells are iid
    Bernoulli(p1) and each mask pixel is a convex combination of cells (weights A), so
    E[M_p M_q] = p1^2 + p1 (1 - p1) K(p, q) with K = E_shift[sum_a A_pa A_qa], hence
    E[saliency(q)] = E[score M_q] / p1 = p1 sum_p v_p + c + (1 - p1) (K v)(q), and K is
    separable: K = E[Wh Wh^T] (x) E[Ww Ww^T] over the crop shifts."""
    size, s, p1, n = 16, 4, 0.5, 4000
    torch.manual_seed(0)
    linear = nn.Linear(3 * size * size, 1).double()
    with torch.no_grad():
        linear.weight.copy_(torch.randn_like(linear.weight) * (torch.rand_like(linear.weight) < .1))
        linear.bias.fill_(0.3)
    model = nn.Sequential(nn.Flatten(), linear)
    x = torch.rand(1, 3, size, size, dtype=torch.float64)
    rise = RISE(model, n_masks=n, cell=s, p1=p1, batch_size=500, seed=0)
    raw = rise.explain(x, ClassTarget(0)).raw[0].double()

    v = (linear.weight.view(3, size, size) * x[0]).sum(0)
    cell = math.ceil(size / s)
    matrix = interpolation_matrix(s, (s + 1) * cell)
    kernel = torch.stack([matrix[sh:sh + size] @ matrix[sh:sh + size].T
                          for sh in range(cell)]).mean(0)
    expected = p1 * v.sum() + 0.3 + (1 - p1) * kernel @ v @ kernel

    masks = rise.masks((size, size)).double()
    terms = (model((x * masks[:, None]).double())[:, 0, None, None] * masks) / p1
    assert torch.allclose(raw, terms.mean(0), atol=1e-5)  # the estimator as written
    stderr = terms.std(0) / math.sqrt(n)
    assert ((raw - expected).abs() / stderr).max() < 5
    wrong = p1 * v.sum() + 0.3 + (1 - p1) * v  # as if mask pixels were independent
    assert ((raw - wrong).abs() / stderr).max() > 10  # the test can tell the difference


def test_rise_batches_images_and_chunks_consistently():
    model = tiny()
    x = torch.randn(3, 3, 32, 32)
    target = SimilarityTarget()
    together = RISE(model, n_masks=40, batch_size=16, seed=1).explain(x, target)
    alone = RISE(model, n_masks=40, batch_size=7, seed=1).explain(x[1:2], target)
    assert torch.allclose(together.raw[1], alone.raw[0], atol=1e-5)
    assert together.map.shape == (3, 32, 32)
    assert torch.allclose(together.scores, torch.ones(3))


# ---------------------------------------------------------------- Group-CAM

def test_groupcam_matches_a_direct_per_image_implementation():
    model = tiny(out=6, width=8)
    x = torch.randn(2, 3, 32, 32)
    groups, k, sigma = 4, 11, 5.0
    result = GroupCAM(model, "layer2", groups=groups, blur_kernel=k, blur_sigma=sigma).explain(
        x, ClassTarget([1, 4], softmax=True))
    store = {}
    handle = model.layer2.register_forward_hook(lambda m, i, o: store.update(a=o))
    for b, cls in enumerate([1, 4]):
        xb = x[b:b + 1]
        prob = model(xb).softmax(1)[0, cls]
        grad = torch.autograd.grad(prob, store["a"])[0][0]
        act = store["a"][0].detach()
        weighted = grad.mean(dim=(1, 2))[:, None, None] * act
        blurred = gaussian_blur2d(xb, (k, k), (sigma, sigma), border_type="reflect")
        with torch.no_grad():
            base = model(blurred).softmax(1)[0, cls]
            total = torch.zeros(32, 32)
            for chunk in weighted.chunk(groups, dim=0):
                m = F.interpolate(chunk.sum(0)[None, None].relu(), (32, 32), mode="bilinear",
                                  align_corners=False)
                m = (m - m.min()) / (m.max() - m.min() + 1e-7)
                beta = (model(xb * m + blurred * (1 - m)).softmax(1)[0, cls] - base).relu()
                total += beta * m[0, 0]
        assert torch.allclose(result.raw[b], total, atol=1e-5)
        assert torch.allclose(result.map[b], minmax(total), atol=1e-4)
    handle.remove()


# ---------------------------------------------------------------- FS-CAM

class LooksAtOneRegion(nn.Module):
    """An embedding model that sees only the pixels of one fixed mask."""

    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask.float())
        self.net = tiny(out=16)

    def forward(self, x):
        return self.net(x * self.mask)


@pytest.fixture(scope="module")
def synth_faces():
    """Two synthetic 112x112 faces (uint8) with their FSE-25 label maps."""
    from parsing.synth import generate

    images, labels, _, _ = generate(2, 1, seed=0)
    return images, labels


def test_fscam_keep_ranks_the_region_the_model_looks_at_first(synth_faces):
    faces, face_labels = synth_faces
    labels = face_labels[:1].expand(2, -1, -1)  # one layout, two images
    x = torch.cat([faces[:1].float() / 127.5 - 1, torch.randn(1, 3, 112, 112)])
    for region in (FSE25.id("nose"), FSE25.id("left_eye")):
        model = LooksAtOneRegion(labels[0] == region)
        result = FSCAM(model).explain(x, SimilarityTarget(), labels)
        assert (result.region_scores.nan_to_num(-9).argmax(1) == region).all()
        assert torch.allclose(result.region_scores[:, region], torch.ones(2), atol=1e-5)
        removed = FSCAM(model, mode="remove").explain(x, SimilarityTarget(), labels)
        assert (removed.region_scores.nan_to_num(-9).argmax(1) == region).all()
        for b in range(2):  # the region is painted with the map's maximum
            assert result.map[b][labels[b] == region].min() == result.map[b].max()


def test_fscam_forward_passes_are_regions_present_plus_one_batched():
    labels = block_labels(4)
    labels[2][labels[2] == 11] = 0  # make the images differ in the regions they contain
    present = [len(torch.unique(m)) for m in labels]
    model = CountingModel(tiny())
    FSCAM(model, batch_size=16).explain(torch.randn(4, 3, 32, 32), SimilarityTarget(), labels)
    assert model.rows == sum(present) + 4
    assert model.calls == math.ceil(model.rows / 16)
    model.rows = model.calls = 0
    FSCAM(model, regions="face").explain(torch.randn(4, 3, 32, 32), EmbeddingNormTarget(),
                                         labels)
    assert model.rows == sum(len([k for k in torch.unique(m).tolist() if 1 <= k <= 19])
                             for m in labels) + 4


@pytest.mark.parametrize("mode", ["keep", "remove"])
def test_fscam_equals_the_reference_loop(mode):
    model = tiny(out=7)
    labels = block_labels(2)
    x = torch.randn(2, 3, 32, 32)
    result = FSCAM(model, mode=mode, batch_size=5).explain(x, ClassTarget(softmax=True), labels)
    with torch.no_grad():
        for b in range(2):
            probs = model(x[b:b + 1]).softmax(1)[0]
            cls = probs.argmax()
            expected = torch.full((25,), float("nan"))
            for k in torch.unique(labels[b]).tolist():
                region = (labels[b] == k)
                kept = region if mode == "keep" else ~region
                p = model(x[b:b + 1] * kept).softmax(1)[0, cls]
                expected[k] = p if mode == "keep" else probs[cls] - p
            torch.testing.assert_close(result.region_scores[b], expected, equal_nan=True)
            painted = expected.nan_to_num(0).relu()[labels[b].long()]
            assert torch.allclose(result.raw[b], painted)
            # scores of 0.163-0.165 leave min-max amplifying float rounding 500x: compare
            # the map with the raw map it is made from
            torch.testing.assert_close(result.map[b], minmax(result.raw[b]))
            assert torch.isclose(result.scores[b], probs[cls])


def test_fscam_uses_the_parser_and_checks_label_maps():
    labels = block_labels(2)
    calls = []

    def parser(images):
        calls.append(images.shape)
        return labels

    model = tiny()
    x = torch.randn(2, 3, 32, 32)
    out = FSCAM(model, parser=parser)(x, SimilarityTarget())
    assert calls == [(2, 3, 32, 32)] and out.shape == (2, 32, 32)
    with pytest.raises(InputError, match="needs label maps"):
        FSCAM(model)(x, SimilarityTarget())
    with pytest.raises(InputError, match=r"shape \(2, 32, 32\)"):
        FSCAM(model)(x, SimilarityTarget(), labels[:, :16])
    with pytest.raises(InputError, match="outside fse25"):
        FSCAM(model)(x, SimilarityTarget(), labels + 30)
    with pytest.raises(InputError, match="mode"):
        FSCAM(model, mode="erase")


# ---------------------------------------------------------------- region attribution

@pytest.mark.parametrize("reduce", ["sum", "mean", "share"])
def test_region_attribution_equals_a_naive_loop(reduce):
    maps = torch.randn(3, 20, 24)
    labels = torch.randint(0, 19, (3, 20, 24), dtype=torch.uint8)
    labels[1, :5] = 255  # FaceSynthetics' ignore id
    out = region_attribution(maps, labels, "facesynthetics", reduce=reduce)
    assert out.shape == (3, 19)
    for b in range(3):
        positive = maps[b].relu()[labels[b] != 255].sum()
        for k in range(19):
            region = maps[b][labels[b] == k]
            if reduce == "sum":
                expected = region.sum()
            elif reduce == "mean":
                expected = region.mean() if len(region) else torch.tensor(float("nan"))
            else:
                expected = region.relu().sum() / positive
            torch.testing.assert_close(out[b, k], expected, equal_nan=True, atol=1e-5, rtol=1e-5)
    if reduce == "share":
        assert torch.allclose(out.sum(1), torch.ones(3))


def test_region_stats_mean_std_skip_absent_regions():
    torch.manual_seed(0)
    batches = [torch.randn(n, 25) for n in (3, 1, 5)]
    for b in batches:
        b[torch.rand_like(b) < 0.3] = float("nan")
    stats = RegionStats()
    for b in batches:
        stats.update(b)
    data = torch.cat(batches).double()
    for k in range(25):
        column = data[:, k][~data[:, k].isnan()]
        assert stats.count[k] == len(column)
        if len(column) > 1:
            assert torch.isclose(stats.mean[k], column.mean())
            assert torch.isclose(stats.std[k], column.std())
    rows = stats.table()
    assert rows[0]["region"] == "background" and set(rows[0]) == {"id", "region", "count",
                                                                   "mean", "std"}


# ---------------------------------------------------------------- metrics

def _direct_curve(model, start, end, saliency, cls, step):
    pixels = saliency.numel()
    order = torch.argsort(saliency.flatten(), descending=True, stable=True)
    scores, xs = [], []
    for t in range(math.ceil(pixels / step) + 1):
        moved = min(t * step, pixels)
        take = torch.zeros(pixels, dtype=torch.bool)
        take[order[:moved]] = True
        image = torch.where(take.view(saliency.shape), end, start)
        with torch.no_grad():
            scores.append(model(image[None])[0, cls].item())
        xs.append(moved / pixels)
    return np.array(scores), np.trapezoid(scores, xs)


def test_deletion_and_insertion_auc_equal_a_direct_computation():
    model = tiny(out=5)
    x = torch.randn(2, 3, 16, 16)
    maps = torch.rand(2, 16, 16)
    maps[0, :4] = 0.5  # ties are broken by pixel order
    dele = metrics.deletion(model, x, maps, ClassTarget([1, 3]), step=30, batch_size=7)
    ins = metrics.insertion(model, x, maps, ClassTarget([1, 3]), step=30)
    blurred = gaussian_blur2d(x, (11, 11), (5.0, 5.0), border_type="reflect")
    for b, cls in enumerate([1, 3]):
        curve, auc = _direct_curve(model, x[b], torch.zeros_like(x[b]), maps[b], cls, 30)
        assert np.allclose(dele.scores[b].numpy(), curve, atol=1e-5)
        assert abs(dele.auc[b].item() - auc) < 1e-5
        curve, auc = _direct_curve(model, blurred[b], x[b], maps[b], cls, 30)
        assert abs(ins.auc[b].item() - auc) < 1e-5
    assert dele.fraction[0, 0] == 0 and dele.fraction[0, -1] == 1


def test_region_deletion_removes_regions_in_order_of_score():
    model = tiny(out=5)
    labels = block_labels(2, size=16, classes=(2, 10, 21))
    x = torch.randn(2, 3, 16, 16)
    scores = torch.full((2, 25), float("nan"))
    scores[:, [0, 2, 10, 21]] = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.8, 0.2, 0.3, 0.1]])
    curve = metrics.region_deletion(model, x, labels, scores, ClassTarget(2))
    assert curve.scores.shape == (2, 26)
    assert curve.order[0, :4].tolist() == [2, 21, 10, 0]
    assert curve.order[1, :4].tolist() == [0, 10, 2, 21]
    with torch.no_grad():
        for b in range(2):
            removed = torch.zeros(16, 16, dtype=torch.bool)
            for t, k in enumerate([None] + curve.order[b, :4].tolist()):
                if k is not None:
                    removed |= labels[b] == k
                expected = model((x[b] * ~removed)[None])[0, 2]
                assert torch.isclose(curve.scores[b, t], expected, atol=1e-6)
                assert torch.isclose(curve.fraction[b, t], removed.float().mean())
            assert torch.allclose(curve.scores[b, 4:], curve.scores[b, 4])  # flat afterwards


# ---------------------------------------------------------------- plots

def test_plots_return_figures_and_write_png(tmp_path):
    labels = block_labels(1)[0]
    image = torch.randn(3, 32, 32)
    scores = torch.full((25,), float("nan"))
    scores[[0, 10, 21]] = torch.tensor([0.1, 0.5, -0.2])
    fig = plot.region_bars(scores, FSE25, path=tmp_path / "bars.png")
    labels_drawn = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels_drawn == ["nose", "background", "hair"]
    plot.overlay(image, torch.rand(32, 32), path=tmp_path / "overlay.png")
    fig = plot.compare(image, {"a": torch.rand(32, 32), "b": torch.rand(32, 32)},
                       {"a": scores}, label_map=labels, path=tmp_path / "cmp.png")
    assert len(fig.axes) == 5
    fig = plot.compare(image, {"a": torch.rand(32, 32)}, {"a": scores}, label_map=labels,
                       marked=labels == 10)
    assert [len(ax.collections) for ax in fig.axes[:3]] == [1, 1, 1]  # outlined on each image
    assert [t.get_text() for t in fig.axes[3].get_yticklabels()] == \
        ["nose *", "background", "hair"]
    for name in ("bars", "overlay", "cmp"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------- CLI

@pytest.fixture
def cli_setup(tmp_path, monkeypatch, synth_faces):
    """A tiny backbone registered in recognition's registry, its checkpoint, faces, labels."""
    from PIL import Image

    from cam.fscam.__main__ import main
    from parsing.core.io import atomic_save, write_label_map
    from recognition.backbones import registry

    monkeypatch.setitem(registry._BACKBONES._entries, "cam_tiny",
                        lambda num_features=16: tiny(out=num_features, seed=1))
    atomic_save(tiny(out=16, seed=1).state_dict(), tmp_path / "model.pt")
    faces, labels = synth_faces
    for d in ("faces", "labels"):
        (tmp_path / d).mkdir()
    for i in range(2):
        Image.fromarray(faces[i].permute(1, 2, 0).numpy()).save(tmp_path / "faces" / f"f{i}.png")
        write_label_map(tmp_path / "labels" / f"f{i}.png", labels[i])
    common = ["--model", str(tmp_path / "model.pt"), "--network", "cam_tiny", "--rise-masks",
              "8", "--groups", "4"]  # default target layer: the last spatial one, layer2
    return tmp_path, main, common, labels


@pytest.mark.slow
def test_cli_explains_a_face_with_every_method(cli_setup, capsys):
    tmp, main, common, labels = cli_setup
    out = tmp / "out"
    code = main(["--image", str(tmp / "faces" / "f0.png"), "--aligned", "--labels",
                 str(tmp / "labels" / "f0.png"), "--method", "all", "--out", str(out),
                 "--mark", "eyes,nose", *common])
    assert code == 0
    assert "target: self-similarity" in capsys.readouterr().out
    record = json.loads((out / "f0.json").read_text())
    assert set(record["methods"]) == {"fscam", "gradcam", "rise", "groupcam"}
    assert "self-similarity" in record["target"]
    fscam = record["methods"]["fscam"]
    present = torch.unique(labels[0]).tolist()
    assert set(fscam["region_score"]) == {FSE25.names[k] for k in present}
    assert abs(sum(fscam["share"].values()) - 1) < 1e-4
    assert (out / "f0.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader((out / "regions.csv").read_text().splitlines()))
    assert {r["method"] for r in rows} == {"fscam", "gradcam", "rise", "groupcam"}


@pytest.mark.slow
def test_cli_reference_landmarks_training_checkpoint_and_folder(cli_setup, capsys):
    from PIL import Image

    from parsing.core.align import ARCFACE_TEMPLATE
    from parsing.core.io import atomic_save

    tmp, main, common, _ = cli_setup
    atomic_save({"backbone": tiny(out=16, seed=1).state_dict(), "epoch": 3},
                tmp / "train.pt")
    (tmp / "model.json").write_text('{"network": "cam_tiny", "embedding_size": 16}')
    common = ["--model", str(tmp / "train.pt"), *common[4:]]  # --network from model.json
    Image.open(tmp / "faces" / "f0.png").resize((224, 224)).save(tmp / "big.png")  # 2x size
    points = ",".join(f"{v:.3f}" for v in (ARCFACE_TEMPLATE * 2).flatten().tolist())
    code = main(["--image", str(tmp / "big.png"), "--landmarks", points,
                 "--reference", str(tmp / "faces" / "f1.png"), "--reference-landmarks", points,
                 "--labels", str(tmp / "labels" / "f0.png"), "--method", "fscam",
                 "--out", str(tmp / "one"), *common])
    assert code == 0
    assert f"cosine similarity to the embedding of {tmp / 'faces' / 'f1.png'}" in \
        capsys.readouterr().out

    code = main(["--images", str(tmp / "faces"), "--aligned", "--labels", str(tmp / "labels"),
                 "--method", "gradcam", "--out", str(tmp / "many"), *common])
    assert code == 0
    summary = list(csv.DictReader((tmp / "many" / "summary.csv").read_text().splitlines()))
    nose = next(r for r in summary if r["region"] == "nose")
    assert nose["count"] == "2" and float(nose["std"]) >= 0
    assert {p.name for p in (tmp / "many").glob("*.png")} == {"f0.png", "f1.png"}


def test_cli_bad_input_is_one_line_and_exit_2(cli_setup, capsys):
    from PIL import Image

    from parsing.core.io import atomic_save, write_label_map

    tmp, main, common, _ = cli_setup
    face, label = str(tmp / "faces" / "f0.png"), str(tmp / "labels" / "f0.png")
    (tmp / "broken.jpg").write_bytes(b"not an image")
    Image.new("RGB", (150, 150)).save(tmp / "faces" / "big.png")
    write_label_map(tmp / "hair_only.png", torch.full((112, 112), 21, dtype=torch.uint8))
    atomic_save(tiny(out=16, width=4).state_dict(), tmp / "other.pt")
    cases = [
        (["--image", str(tmp / "broken.jpg"), "--aligned", "--labels", label], "not a readable"),
        (["--image", face, "--aligned", "--labels", str(tmp / "hair_only.png")],
         "no face region found"),
        (["--image", str(tmp / "faces" / "big.png"), "--aligned", "--labels", label],
         "--aligned expects a 112x112 ArcFace crop, got 150x150"),
        (["--image", face, "--landmarks", "1,2,3", "--labels", label], "ten comma-separated"),
        (["--image", face, "--aligned"], "give --parser CKPT or --labels"),
        (["--image", face, "--aligned", "--labels", label, "--model", str(tmp / "other.pt")],
         "does not fit TinyNet: 20 wrong shape"),
        (["--image", face, "--aligned", "--labels", label, "--model", str(tmp / "nope.pt")],
         "no such checkpoint"),
    ]
    for extra, message in cases:
        code = main([*common, *extra, "--out", str(tmp / "bad")])
        err = capsys.readouterr().err.strip()
        assert code == 2, extra
        assert err.startswith("error: ") and message in err and "\n" not in err, err


def _tiny_parser_checkpoint(path):
    from parsing import create_model
    from parsing.parser.inference import save_parser

    torch.manual_seed(0)
    save_parser(path, create_model("unet_r18", num_classes=25, width=8), "unet_r18",
                {"width": 8})


@pytest.mark.slow
def test_cli_on_a_packaged_photo_with_landmarks_and_a_parser(cli_setup, capsys):
    """The astronaut (scikit-image), aligned with the five points of its stored Face Mesh,
    parsed by a (random, tiny) parser checkpoint."""
    from PIL import Image

    from parsing.photos.landmarks import landmarks5_from_mesh
    from parsing.photos.packaged import load_photo

    tmp, main, common, _ = cli_setup
    Image.fromarray(load_photo("astronaut")).save(tmp / "astronaut.png")
    _tiny_parser_checkpoint(tmp / "parser.pt")
    mesh = np.load("tests/data/astronaut_facemesh.npy")
    points = ",".join(f"{v:.2f}" for v in landmarks5_from_mesh(mesh).flatten().tolist())
    code = main(["--image", str(tmp / "astronaut.png"), "--landmarks", points, "--parser",
                 str(tmp / "parser.pt"), "--method", "fscam", "--out", str(tmp / "out"), *common])
    assert code == 0, capsys.readouterr().err
    record = json.loads((tmp / "out" / "astronaut.json").read_text())
    assert len(record["methods"]["fscam"]["region_score"]) > 5


@pytest.mark.slow
def test_cli_finds_the_face_with_mtcnn(cli_setup, capsys):
    from PIL import Image

    from parsing.core.errors import MissingDependencyError
    from parsing.photos.landmarks import load_mtcnn
    from parsing.photos.packaged import load_photo

    try:
        load_mtcnn()
    except MissingDependencyError:
        pytest.skip("MTCNN (facenet-pytorch) is not installed: make landmarks")
    tmp, main, common, _ = cli_setup
    Image.fromarray(load_photo("astronaut")).save(tmp / "astronaut.png")
    _tiny_parser_checkpoint(tmp / "parser.pt")
    code = main(["--image", str(tmp / "astronaut.png"), "--parser", str(tmp / "parser.pt"),
                 "--method", "gradcam", "--out", str(tmp / "out"), *common])
    assert code == 0, capsys.readouterr().err
    assert (tmp / "out" / "astronaut.png").exists()
    blank = np.full((96, 96, 3), 127, np.uint8)
    Image.fromarray(blank).save(tmp / "blank.png")
    code = main(["--image", str(tmp / "blank.png"), "--parser", str(tmp / "parser.pt"),
                 "--out", str(tmp / "out_blank"), *common])
    assert code == 2 and "no face found by MTCNN" in capsys.readouterr().err
