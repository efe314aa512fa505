import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

import parsing
from parsing.core.errors import InputError
from parsing.parser.losses import ParsingLoss, class_weights, distillation_loss, edge_targets
from parsing.parser.metrics import ConfusionMatrix, confusion_matrix, parsing_scores
from parsing.parser.models import ChannelAttention, ParserOutput, PositionAttention, fuse_batchnorm


@pytest.mark.parametrize("name", ["unet_r18", "scanet"])
@pytest.mark.parametrize("size", [(112, 112), (37, 53), (16, 16)])
def test_model_keeps_input_size(name, size):
    model = parsing.create_model(name, num_classes=7, width=4).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 7, *size)


def test_default_unet_r18_is_resnet18_shaped():
    model = parsing.create_model("unet_r18")
    enc = model.encoder
    assert enc.channels == (64, 64, 128, 256, 512)
    assert enc.stem[0].stride == (1, 1) and enc.stem[0].kernel_size == (3, 3)
    assert [len(s) for s in enc.stages] == [2, 2, 2, 2]
    feats = enc(torch.randn(1, 3, 112, 112))
    assert [f.shape[-1] for f in feats] == [112, 56, 28, 14, 7]
    assert isinstance(model.decoder.blocks[0].up, torch.nn.ConvTranspose2d)


def test_timm_encoder_and_registry_errors():
    model = parsing.create_model("unet_timm:resnet10t", num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 48, 40)).shape == (1, 5, 48, 40)
    with pytest.raises(InputError, match="unknown model"):
        parsing.create_model("unet_r1000")
    with pytest.raises(InputError, match="timm encoder"):
        parsing.create_model("unet_timm:not_a_timm_model")


def test_scanet_train_output_and_gradients():
    model = parsing.create_model("scanet", num_classes=5, width=4).train()
    out = model(torch.randn(2, 3, 32, 32))
    assert isinstance(out, ParserOutput) and out.edges.shape == (2, 1, 32, 32)
    loss, parts = ParsingLoss(edge_weight=1.0)(out, torch.randint(0, 5, (2, 32, 32)))
    loss.backward()
    assert set(parts) == {"ce", "edge"}
    assert model.attention.position[1].gamma.grad is not None
    assert model.edge_head.weight.grad.abs().sum() > 0


def test_attention_modules_match_naive_formulas():
    torch.manual_seed(1)
    x = torch.randn(2, 16, 5, 6)
    pam = PositionAttention(16)
    cam = ChannelAttention()
    with torch.no_grad():
        pam.gamma.fill_(0.7)
        cam.gamma.fill_(0.3)
        q = pam.query(x).flatten(2)  # (B, C', N)
        k = pam.key(x).flatten(2)
        v = pam.value(x).flatten(2)
        attn = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # (B, N, N), DANet: no scaling
        ref = x + 0.7 * (v @ attn.transpose(1, 2)).view_as(x)
        torch.testing.assert_close(pam(x), ref, atol=1e-5, rtol=1e-5)
        f = x.flatten(2)
        energy = f @ f.transpose(1, 2)
        a = torch.softmax(energy.max(-1, keepdim=True).values - energy, dim=-1)
        torch.testing.assert_close(cam(x), x + 0.3 * (a @ f).view_as(x), atol=1e-5, rtol=1e-5)


def test_edge_targets_match_naive_loop():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (2, 9, 11), generator=g)
    labels[0, 2:4, 2:5] = 255
    edges = edge_targets(labels)
    ref = torch.zeros_like(edges)
    for b in range(2):
        for y in range(9):
            for x in range(11):
                if labels[b, y, x] == 255:
                    continue
                for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < 9 and 0 <= xx < 11 and labels[b, yy, xx] != 255 \
                            and labels[b, yy, xx] != labels[b, y, x]:
                        ref[b, y, x] = True
    assert torch.equal(edges, ref)


def test_class_weights_and_weighted_ce_match_torch():
    counts = torch.tensor([1000, 100, 10, 0])
    w = class_weights(counts, "median_frequency")
    freq = counts / counts.sum()
    assert w[3] == 0 and torch.isclose((w * freq).sum(), torch.tensor(1.0))
    assert torch.allclose(w[:3] / w[0], torch.tensor([1.0, 10.0, 100.0]))
    w2 = class_weights(counts, "inverse_sqrt")
    assert torch.allclose(w2[1] / w2[0], torch.tensor(10 ** 0.5))
    logits = torch.randn(2, 4, 6, 7)
    target = torch.randint(0, 4, (2, 6, 7))
    target[0, 0] = 255
    loss, _ = ParsingLoss(w2)(logits, target)
    torch.testing.assert_close(loss, F.cross_entropy(logits, target, weight=w2, ignore_index=255))
    plain, _ = ParsingLoss()(logits, target)
    torch.testing.assert_close(plain, F.cross_entropy(logits, target, ignore_index=255))
    with pytest.raises(InputError, match="unknown class-weight"):
        class_weights(counts, "log")


def test_edge_focused_ce_and_distillation():
    logits = torch.randn(1, 3, 8, 8)
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[:, :, 4:] = 1
    total, parts = ParsingLoss(edge_weight=2.0)(logits, target)
    edge_pix = edge_targets(target)
    ce = F.cross_entropy(logits, target, reduction="none")
    assert edge_pix.sum() == 16
    torch.testing.assert_close(parts["edge"], ce[edge_pix].mean())
    torch.testing.assert_close(total, ce.mean() + 2.0 * ce[edge_pix].mean())
    assert distillation_loss(logits, logits.clone()).abs() < 1e-6
    other = torch.randn(1, 3, 8, 8)
    p, q = F.softmax(other / 2, 1), F.log_softmax(logits / 2, 1)
    ref = 4 * (p * (p.log() - q)).sum(1).mean()
    torch.testing.assert_close(distillation_loss(logits, other, temperature=2.0), ref)


def test_confusion_matrix_scores_match_direct_and_sklearn():
    g = torch.Generator().manual_seed(3)
    k = 6
    target = torch.randint(0, k, (3, 20, 20), generator=g)
    pred = torch.where(torch.rand(3, 20, 20, generator=g) < 0.7, target,
                       torch.randint(0, k, (3, 20, 20), generator=g))
    target[0, :2] = 255
    pred[target == 5] = 1  # class 5 never predicted
    target[target == 4] = 3  # class 4 never a target, sometimes predicted
    acc = ConfusionMatrix(k)
    for i in range(3):
        acc.update(pred[i], target[i])
    cm = confusion_matrix(pred, target, k)
    assert torch.equal(acc.matrix, cm)
    keep = target != 255
    t, p = target[keep].numpy(), pred[keep].numpy()
    ref = np.zeros((k, k), dtype=np.int64)
    np.add.at(ref, (t, p), 1)
    assert np.array_equal(cm.numpy(), ref)
    s = parsing_scores(cm)
    for c in range(k):
        tp, fp, fn = ref[c, c], ref[:, c].sum() - ref[c, c], ref[c].sum() - ref[c, c]
        assert s["per_class"][c]["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert s["per_class"][c]["iou"] == pytest.approx(tp / (tp + fp + fn))
    fg = list(range(1, k))
    assert s["mean_f1"] == pytest.approx(f1_score(t, p, labels=fg, average="macro"))
    assert s["pixel_accuracy"] == pytest.approx((t == p).mean())
    assert s["miou"] == pytest.approx(np.mean([s["per_class"][c]["iou"] for c in range(k)]))


def test_scores_leave_out_absent_classes():
    cm = torch.zeros(4, 4, dtype=torch.int64)
    cm[0, 0], cm[1, 1], cm[1, 2] = 50, 8, 2  # class 3 nowhere
    s = parsing_scores(cm, ["bg", "a", "b", "c"])
    assert s["per_class"][3]["f1"] is None and s["mean_f1_classes"] == ["a", "b"]
    assert s["mean_f1"] == pytest.approx((16 / 18 + 0.0) / 2)
    with pytest.raises(InputError, match="predicted ids"):
        confusion_matrix(torch.tensor([4]), torch.tensor([0]), 4)


@pytest.mark.parametrize("name", ["unet_r18", "scanet"])
def test_fuse_batchnorm_keeps_outputs(name):
    model = parsing.create_model(name, num_classes=5, width=4)
    for m in model.modules():  # non-trivial statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        ref = model(x)
        fused = fuse_batchnorm(model)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
        torch.testing.assert_close(fused(x), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["smp_unet_r18", "smp_unet:mobilenet_v2"])
def test_smp_unets_in_registry_keep_size_and_fuse(name):
    model = parsing.create_model(name, num_classes=5)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        ref = model(x)
        assert ref.shape == (1, 5, 40, 56)
        torch.testing.assert_close(fuse_batchnorm(model)(x), ref, atol=1e-4, rtol=1e-4)
    with pytest.raises(InputError, match="smp_unet:not_an_encoder"):
        parsing.create_model("smp_unet:not_an_encoder")
