"""Margin losses and PartialFC: closed forms, exact gradients, world-size-1 and gloo equivalence."""

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from parsing.core.errors import InputError
from recognition.losses import CombinedMarginLoss, PartialFC

pytestmark = pytest.mark.usefixtures("single_thread")

MARGINS = {
    "arcface": (1.0, 0.5, 0.0),
    "cosface": (1.0, 0.0, 0.4),
    "sphereface": (1.35, 0.0, 0.0),
    "sphereface4": (4.0, 0.0, 0.0),
    "combined": (1.0, 0.3, 0.2),
    "all_three": (1.2, 0.3, 0.1),
}


def closed_form_target(cos, m1, m2, m3):
    """s-free target from the definition, in float64 Python math."""
    theta = math.acos(cos)
    theta_max = (math.pi - m2) / m1
    if theta <= theta_max:
        return math.cos(m1 * theta + m2) - m3
    return cos - (1 + math.cos(theta_max)) - m3


def random_cosines(n, c, margins, dtype=torch.float64, seed=0):
    """Cosines away from the fallback boundary, so finite differences do not straddle it."""
    g = torch.Generator().manual_seed(seed)
    cos = torch.rand(n, c, generator=g, dtype=dtype) * 1.9 - 0.95
    m1, m2, _ = margins
    theta_max = (math.pi - m2) / m1
    if theta_max < math.pi:
        boundary = math.cos(theta_max)
        too_close = (cos - boundary).abs() < 1e-3
        cos[too_close] += 2e-3
    return cos


@pytest.mark.parametrize("name", list(MARGINS))
def test_values_match_closed_form(name):
    m1, m2, m3 = MARGINS[name]
    loss = CombinedMarginLoss(s=64.0, m1=m1, m2=m2, m3=m3)
    cos = random_cosines(6, 5, MARGINS[name])
    labels = torch.tensor([0, 4, -1, 2, 2, 1])
    original = cos.clone()
    out = loss(cos, labels)
    assert torch.equal(cos, original), "input must not be modified"
    expected = 64.0 * cos.clone()
    for i, y in enumerate(labels.tolist()):
        if y >= 0:
            expected[i, y] = 64.0 * closed_form_target(cos[i, y].item(), m1, m2, m3)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(MARGINS))
def test_gradcheck_float64(name):
    m1, m2, m3 = MARGINS[name]
    loss = CombinedMarginLoss(s=64.0, m1=m1, m2=m2, m3=m3)
    cos = random_cosines(5, 4, MARGINS[name]).requires_grad_()
    labels = torch.tensor([3, -1, 0, 1, 3])
    assert torch.autograd.gradcheck(lambda c: loss(c, labels), (cos,))


@pytest.mark.parametrize("name", list(MARGINS))
@pytest.mark.parametrize("theta", [1e-2, 1e-4, math.pi - 1e-2, math.pi - 1e-4])
def test_gradient_near_0_and_pi(name, theta):
    m1, m2, m3 = MARGINS[name]
    loss = CombinedMarginLoss(s=64.0, m1=m1, m2=m2, m3=m3)
    cos = torch.tensor([[math.cos(theta), 0.2]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0])
    # finite differences need a step far inside |cos| < 1
    assert torch.autograd.gradcheck(lambda c: loss(c, labels), (cos,), eps=1e-11, atol=1e-4)
    loss(cos, labels)[0, 0].backward()
    theta_max = (math.pi - m2) / m1
    if theta <= theta_max:  # d/dcos cos(m1*theta + m2) = m1 sin(m1 theta + m2) / sin(theta)
        expected = 64.0 * m1 * math.sin(m1 * theta + m2) / math.sin(theta)
    else:
        expected = 64.0
    assert cos.grad[0, 0].item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", list(MARGINS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_are_finite_at_exactly_plus_minus_one(name, dtype):
    loss = CombinedMarginLoss(64.0, *MARGINS[name])
    cos = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=dtype, requires_grad=True)
    out = loss(cos, torch.tensor([0, 0]))
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(cos.grad).all()


@pytest.mark.parametrize("name", list(MARGINS))
def test_target_is_continuous_and_decreasing_in_theta(name):
    loss = CombinedMarginLoss(1.0, *MARGINS[name])
    theta = torch.linspace(0, math.pi, 20001, dtype=torch.float64)
    target = loss.target_logit(theta.cos())
    steps = target.diff()
    assert (steps <= 1e-12).all(), "the target logit must never reward a larger angle"
    assert steps.abs().max() < 1e-3, "no jumps"


def test_differs_from_insightface_only_in_the_gradient():
    """insightface's ArcFace writes cos(theta + m) under no_grad: gradient s for every target."""
    loss = CombinedMarginLoss(64.0, 1.0, 0.5, 0.0)
    cos = torch.tensor([[0.3, 0.1], [0.9, -0.2]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0])
    out = loss(cos, labels)
    with torch.no_grad():
        insightface = cos.clone().acos()
        insightface[[0, 1], [0, 0]] += 0.5
        insightface = insightface.cos() * 64.0
    torch.testing.assert_close(out, insightface)
    out[:, 0].sum().backward()
    theta = cos.detach()[:, 0].acos()
    torch.testing.assert_close(cos.grad[:, 0], 64.0 * torch.sin(theta + 0.5) / torch.sin(theta))
    assert (cos.grad[:, 0] > 64.0).all()


def test_interclass_filtering_zeroes_non_target_logits_above_threshold():
    loss = CombinedMarginLoss(2.0, 1.0, 0.0, 0.0, interclass_filtering_threshold=0.4)
    cos = torch.tensor([[0.9, 0.5, 0.1], [0.6, 0.8, 0.3], [0.45, 0.2, -0.7]],
                       requires_grad=True)
    out = loss(cos, torch.tensor([0, 1, -1]))
    expected = 2.0 * torch.tensor([[0.9, 0.0, 0.1], [0.0, 0.8, 0.3], [0.0, 0.2, -0.7]])
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert cos.grad[0, 1] == 0 and cos.grad[0, 0] == 2.0


def test_margin_arguments_are_validated():
    with pytest.raises(InputError, match="m2"):
        CombinedMarginLoss(m2=4.0)
    with pytest.raises(InputError, match="m1"):
        CombinedMarginLoss(m1=0.0)
    with pytest.raises(InputError, match=r"logits \(B, C\) and labels \(B,\)"):
        CombinedMarginLoss()(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))


def _plain_loss(margin, x, weight, labels):
    return F.cross_entropy(margin(F.normalize(x) @ F.normalize(weight).T, labels), labels)


@pytest.mark.parametrize("name, threshold", [("arcface", 0.0), ("cosface", 0.0),
                                             ("all_three", 0.0), ("arcface", 0.3)])
def test_partial_fc_world_size_1_equals_plain_cross_entropy(name, threshold):
    margin = CombinedMarginLoss(64.0, *MARGINS[name], interclass_filtering_threshold=threshold)
    head = PartialFC(margin, embedding_size=16, num_classes=11)
    assert head.world_size == 1 and head.num_local == 11 and head.class_start == 0
    x = torch.randn(9, 16, requires_grad=True)
    labels = torch.randint(0, 11, (9,))
    got = head(x, labels)
    got.backward()
    x_ref = x.detach().clone().requires_grad_()
    w_ref = head.weight.detach().clone().requires_grad_()
    want = _plain_loss(margin, x_ref, w_ref, labels)
    want.backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(head.weight.grad, w_ref.grad)


def test_partial_fc_gradcheck_float64():
    head = PartialFC(CombinedMarginLoss(8.0, 1.0, 0.3, 0.1), 6, 5).double()
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    w = head.weight.detach().clone().requires_grad_()
    labels = torch.tensor([0, 4, 4, 2])

    def loss(x, w):
        return torch.func.functional_call(head, {"weight": w}, (x, labels))

    assert torch.autograd.gradcheck(loss, (x, w))


def test_sampling_keeps_every_positive_and_remaps_labels():
    head = PartialFC(CombinedMarginLoss(), 4, 100, sample_rate=0.1)
    local = torch.tensor([3, 97, -1, 3, 50, 12, -1])
    for _ in range(20):
        index, remapped = head.sample(local)
        assert index.numel() == 10 and torch.equal(index, index.sort().values)
        assert set(index.tolist()) >= {3, 97, 50, 12}
        assert torch.equal(torch.where(remapped >= 0, index[remapped.clamp(min=0)], -1), local)
    # More distinct positives than num_sample: keep them all.
    many = torch.arange(0, 100, 5)
    index, remapped = head.sample(many)
    assert torch.equal(index, many) and torch.equal(remapped, torch.arange(20))


def test_sampled_training_step_updates_only_sampled_centres():
    head = PartialFC(CombinedMarginLoss(), 8, 40, sample_rate=0.25)
    labels = torch.tensor([1, 7, 7, 33])
    loss = head(torch.randn(4, 8), labels)
    loss.backward()
    touched = head.weight.grad.abs().sum(1) > 0
    assert touched.sum() == 10 and touched[[1, 7, 33]].all()
    head.eval()  # eval scores every centre: equal to the plain loss
    x = torch.randn(4, 8)
    torch.testing.assert_close(head(x, labels),
                               _plain_loss(head.margin_loss, x, head.weight, labels))


def test_partial_fc_rejects_bad_input():
    head = PartialFC(CombinedMarginLoss(), 8, 10)
    with pytest.raises(InputError, match=r"labels must be in \[0, 10\), got \[0, 10\]"):
        head(torch.randn(2, 8), torch.tensor([0, 10]))
    with pytest.raises(InputError, match=r"embeddings \(B, 8\)"):
        head(torch.randn(2, 7), torch.tensor([0, 1]))
    with pytest.raises(InputError, match="3 labels for 2 embeddings"):
        head(torch.randn(2, 8), torch.tensor([0, 1, 2]))
    with pytest.raises(InputError, match="sample_rate"):
        PartialFC(CombinedMarginLoss(), 8, 10, sample_rate=0.0)


WORLD, BATCH, DIM, CLASSES = 2, 3, 8, 7


def _gloo_worker(rank, init_file, inputs, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    try:
        x_all, labels_all, weight_all = inputs
        head = PartialFC(CombinedMarginLoss(16.0, 1.0, 0.5, 0.0), DIM, CLASSES).double()
        start, stop = head.class_start, head.class_start + head.num_local
        with torch.no_grad():
            head.weight.copy_(weight_all[start:stop])
        x = x_all[rank * BATCH:(rank + 1) * BATCH].clone().requires_grad_()
        loss = head(x, labels_all[rank * BATCH:(rank + 1) * BATCH])
        loss.backward()
        # Sampled: 40 classes, 20 per rank, 10 scored per step; rank 1 has no positives.
        sampled = PartialFC(CombinedMarginLoss(), DIM, 40, sample_rate=0.5).double()
        sampled(x.detach(), labels_all[rank * BATCH:(rank + 1) * BATCH]).backward()
        touched = (sampled.weight.grad.abs().sum(1) > 0).nonzero().squeeze(1)
        touched += sampled.class_start
        torch.save({"loss": loss.detach(), "x_grad": x.grad, "w_grad": head.weight.grad,
                    "range": (start, stop), "touched": touched, "num_sample": sampled.num_sample},
                   f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_matches_one_process(tmp_path):
    g = torch.Generator().manual_seed(5)
    x_all = torch.randn(WORLD * BATCH, DIM, generator=g, dtype=torch.float64)
    labels_all = torch.tensor([0, 6, 3, 3, 5, 1])  # classes on both shards (4 + 3)
    weight_all = torch.randn(CLASSES, DIM, generator=g, dtype=torch.float64)
    mp.spawn(_gloo_worker, args=(str(tmp_path / "rendezvous"), (x_all, labels_all, weight_all),
                                 str(tmp_path)), nprocs=WORLD, join=True)

    head = PartialFC(CombinedMarginLoss(16.0, 1.0, 0.5, 0.0), DIM, CLASSES).double()
    with torch.no_grad():
        head.weight.copy_(weight_all)
    x = x_all.clone().requires_grad_()
    loss = head(x, labels_all)
    loss.backward()
    ranges = []
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        start, stop = result["range"]
        ranges.append((start, stop))
        torch.testing.assert_close(result["loss"], loss.detach())
        torch.testing.assert_close(result["w_grad"], head.weight.grad[start:stop])
        # world_size x the exact gradient: DDP's averaging then gives the exact one.
        torch.testing.assert_close(result["x_grad"],
                                   WORLD * x.grad[rank * BATCH:(rank + 1) * BATCH])
        assert result["num_sample"] == len(result["touched"]) == 10
        touched = set(result["touched"].tolist())
        assert touched <= set(range(20 * rank, 20 * rank + 20))
        assert set(labels_all.tolist()) <= touched or rank == 1
    assert ranges == [(0, 4), (4, 7)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_partial_fc_on_cuda_matches_cpu():
    head = PartialFC(CombinedMarginLoss(64.0, 1.0, 0.5, 0.0), 16, 50)
    x = torch.randn(8, 16)
    labels = torch.randint(0, 50, (8,))
    want = head(x, labels)
    got = head.cuda()(x.cuda(), labels.cuda())
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-4)
