"""Backbones: insightface checkpoint layout, parameter/MAC counts, precision and layout options."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

import recognition
from parsing.core.errors import InputError
from recognition.backbones import IResNet, MobileFaceNet, TimmBackbone, register_backbone

pytestmark = pytest.mark.usefixtures("single_thread")

DEPTHS = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
    "iresnet200": (6, 26, 60, 6),
}


def _bn(prefix, channels):
    return [(f"{prefix}.weight", (channels,)), (f"{prefix}.bias", (channels,)),
            (f"{prefix}.running_mean", (channels,)), (f"{prefix}.running_var", (channels,)),
            (f"{prefix}.num_batches_tracked", ())]


def insightface_layout(depths):
    """(key, shape) of an insightface arcface_torch IResNet checkpoint (reference §5.2)."""
    keys = [("conv1.weight", (64, 3, 3, 3)), *_bn("bn1", 64), ("prelu.weight", (64,))]
    in_channels = 64
    stages = zip((64, 128, 256, 512), depths, strict=True)
    for stage, (channels, blocks) in enumerate(stages, start=1):
        for block in range(blocks):
            p = f"layer{stage}.{block}"
            cin = in_channels if block == 0 else channels
            keys += [*_bn(f"{p}.bn1", cin), (f"{p}.conv1.weight", (channels, cin, 3, 3)),
                     *_bn(f"{p}.bn2", channels), (f"{p}.prelu.weight", (channels,)),
                     (f"{p}.conv2.weight", (channels, channels, 3, 3)), *_bn(f"{p}.bn3", channels)]
            if block == 0:
                keys += [(f"{p}.downsample.0.weight", (channels, cin, 1, 1)),
                         *_bn(f"{p}.downsample.1", channels)]
        in_channels = channels
    keys += [*_bn("bn2", 512), ("fc.weight", (512, 512 * 7 * 7)), ("fc.bias", (512,)),
             *_bn("features", 512)]
    return keys


def test_first_block_and_head_keys_are_insightface_literal():
    keys = list(recognition.create_backbone("iresnet18").state_dict())
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    first_block = ([f"layer1.0.bn1.{s}" for s in bn] + ["layer1.0.conv1.weight"]
                   + [f"layer1.0.bn2.{s}" for s in bn] + ["layer1.0.prelu.weight",
                                                           "layer1.0.conv2.weight"]
                   + [f"layer1.0.bn3.{s}" for s in bn] + ["layer1.0.downsample.0.weight"]
                   + [f"layer1.0.downsample.1.{s}" for s in bn])
    stem = ["conv1.weight"] + [f"bn1.{s}" for s in bn] + ["prelu.weight"]
    head = [f"bn2.{s}" for s in bn] + ["fc.weight", "fc.bias"] + [f"features.{s}" for s in bn]
    assert keys[:len(stem)] == stem
    assert keys[len(stem):len(stem) + len(first_block)] == first_block
    assert keys[-len(head):] == head


@pytest.mark.parametrize("name", list(DEPTHS))
def test_state_dict_layout_matches_insightface(name):
    with torch.device("meta"):
        model = recognition.create_backbone(name)
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert ours == insightface_layout(DEPTHS[name])


@pytest.mark.parametrize("name, count", [
    ("iresnet18", 24_025_600), ("iresnet34", 34_139_328), ("iresnet50", 43_590_848),
    ("iresnet100", 65_156_160), ("mbf", 2_059_520),
])
def test_parameter_counts(name, count):
    with torch.device("meta"):
        model = recognition.create_backbone(name)
    # insightface's published figures include the fixed features.weight (512 values).
    assert sum(p.numel() for p in model.parameters()) == count
    if name.startswith("iresnet"):
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == count - 512
    if name == "iresnet100":
        assert model.fc.weight.numel() + model.fc.bias.numel() == 12_845_568


def test_insightface_checkpoint_loads_strictly_and_is_used():
    layout = insightface_layout(DEPTHS["iresnet18"])
    g = torch.Generator().manual_seed(1)
    checkpoint = OrderedDict()
    for key, shape in layout:
        if key.endswith("num_batches_tracked"):
            checkpoint[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            checkpoint[key] = torch.rand(shape, generator=g) + 0.5
        else:
            checkpoint[key] = torch.randn(shape, generator=g) * 0.05
    checkpoint["features.weight"] = torch.ones(512)
    model = recognition.create_backbone("iresnet18")
    model.load_state_dict(checkpoint, strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, checkpoint[key]), key
    # A state_dict missing one key, or with an extra one, must not load strictly.
    broken = OrderedDict(checkpoint)
    broken.pop("layer2.0.downsample.1.running_var")
    with pytest.raises(RuntimeError, match="downsample.1.running_var"):
        recognition.create_backbone("iresnet18").load_state_dict(broken, strict=True)


def test_features_weight_is_fixed_to_one_through_training():
    model = recognition.create_backbone("iresnet18", dropout=0.4)
    assert not model.features.weight.requires_grad
    assert model.features.eps == 1e-5 and model.bn1.eps == 1e-5
    assert model.fc_scale == 49 and model.dropout.p == 0.4
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(2, 3, 112, 112)).square().mean().backward()
    opt.step()
    assert torch.equal(model.features.weight, torch.ones(512))
    assert model.conv1.weight.grad is not None and model.layer4[1].prelu.weight.grad is not None


def test_iresnet_matches_a_hand_written_forward():
    """Recompute the documented layout with functional ops on the module's own weights."""
    torch.manual_seed(3)
    model = recognition.create_backbone("iresnet18").eval()
    for module in model.modules():  # non-trivial BN statistics so each BN matters
        if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
    x = torch.randn(2, 3, 112, 112)

    def bn(m, t):
        return nn.functional.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias,
                                        False, 0.0, 1e-5)

    def conv(m, t):
        return nn.functional.conv2d(t, m.weight, stride=m.stride, padding=m.padding)

    def prelu(m, t):
        return torch.where(t > 0, t, t * m.weight.view(1, -1, 1, 1))

    t = prelu(model.prelu, bn(model.bn1, conv(model.conv1, x)))
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        for i, b in enumerate(stage):
            out = bn(b.bn3, conv(b.conv2, prelu(b.prelu, bn(b.bn2, conv(b.conv1, bn(b.bn1, t))))))
            short = bn(b.downsample[1], conv(b.downsample[0], t)) if i == 0 else t
            assert (b.conv2.stride == (2, 2)) == (i == 0) and b.conv1.stride == (1, 1)
            t = out + short
    t = bn(model.bn2, t)
    assert t.shape == (2, 512, 7, 7)
    expected = bn(model.features, nn.functional.linear(t.flatten(1), model.fc.weight,
                                                       model.fc.bias))
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["iresnet18", "mbf"])
def test_wrong_input_size_names_112(name):
    model = recognition.create_backbone(name).eval()
    with pytest.raises(InputError, match=r"\(B, 3, 112, 112\).*got \(1, 3, 128, 128\)"):
        model(torch.randn(1, 3, 128, 128))
    with pytest.raises(InputError, match="112x112"):
        model(torch.randn(1, 1, 112, 112))


def _count_macs(model, x):
    """Multiply-accumulates of every Conv2d and Linear, from forward hooks."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] \
                * module.kernel_size[1]
            total += output[0].numel() * per_output
        else:
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model.eval()(x)
    for handle in handles:
        handle.remove()
    return total


@pytest.mark.parametrize("name, gmacs", [("iresnet18", 2.61), ("iresnet34", 4.46)])
def test_macs_match_spec(name, gmacs):
    macs = _count_macs(recognition.create_backbone(name), torch.randn(1, 3, 112, 112))
    assert macs / 1e9 == pytest.approx(gmacs, rel=0.005)


@pytest.mark.parametrize("name", ["iresnet18", "mbf", "timm:test_resnet"])
def test_channels_last_gives_the_same_embeddings(name):
    model = recognition.create_backbone(name).eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        assert first_conv.weight.is_contiguous(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    # Freshly initialised IResNets give embeddings of norm ~1e7: compare relative to the norm.
    relative = (got - reference).norm(dim=1) / reference.norm(dim=1)
    assert relative.max() < 1e-5


def test_fp16_switch_autocasts_the_body_and_keeps_the_head_float32():
    torch.manual_seed(0)
    reference = recognition.create_backbone("iresnet18").eval()
    amp = recognition.create_backbone("iresnet18", fp16=True, amp_dtype=torch.bfloat16).eval()
    amp.load_state_dict(reference.state_dict())
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = output.dtype
        return hook

    amp.layer4.register_forward_hook(record("body"))
    amp.fc.register_forward_hook(record("fc"))
    x = torch.randn(4, 3, 112, 112)
    with torch.no_grad():
        want, got = reference(x), amp(x)
    assert seen == {"body": torch.bfloat16, "fc": torch.float32}
    assert got.dtype == torch.float32
    cosine = nn.functional.cosine_similarity(got, want)
    assert cosine.min() > 0.99


def test_outer_autocast_is_not_switched_off_by_the_model():
    model = recognition.create_backbone("mbf").eval()
    seen = []
    model.layers[2].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(2, 3, 112, 112))
    assert seen == [torch.bfloat16]


def test_mbf_shapes_and_embedding_size():
    model = recognition.create_backbone("mbf", num_features=128)
    assert isinstance(model, MobileFaceNet)
    out = model(torch.randn(2, 3, 112, 112))
    assert out.shape == (2, 128) and out.dtype == torch.float32
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["test_resnet", "test_vit"])
def test_timm_backbones_embed_112_faces(name):
    model = recognition.create_backbone(f"timm:{name}")
    assert isinstance(model, TimmBackbone)
    assert not model.features.weight.requires_grad
    out = model.eval()(torch.randn(2, 3, 112, 112))
    assert out.shape == (2, 512)
    assert list(model.state_dict())[-7:] == ["fc.weight", "fc.bias", "features.weight",
                                             "features.bias", "features.running_mean",
                                             "features.running_var",
                                             "features.num_batches_tracked"]


def test_timm_unknown_model_is_a_clear_error():
    with pytest.raises(InputError, match="unknown timm model 'no_such_net'"):
        recognition.create_backbone("timm:no_such_net")


def test_registry():
    names = recognition.list_backbones()
    assert {"iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet200", "mbf"} <= set(names)
    assert recognition.list_backbones("iresnet1*") == ["iresnet100", "iresnet18"]
    with torch.device("meta"):
        alias = recognition.create_backbone("r50", num_features=256)
    assert isinstance(alias, IResNet) and len(alias.layer3) == 14 and alias.fc.out_features == 256
    with pytest.raises(InputError, match="unknown backbone 'resnet9000'.*iresnet34"):
        recognition.create_backbone("resnet9000")
    with pytest.raises(ValueError, match="already registered"):
        register_backbone(recognition.backbones.iresnet34)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16])
def test_fp16_switch_on_cuda_with_channels_last(amp_dtype):
    reference = recognition.create_backbone("iresnet18").cuda()
    # BatchNorm statistics of a batch, as after training: with the initial ones (mean 0, var 1)
    # insightface's N(0, 0.1) conv init grows activations past float16's range (65504)
    for m in reference.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    with torch.no_grad():
        reference.train()(torch.randn(64, 3, 112, 112, device="cuda"))
    reference.eval()
    amp = recognition.create_backbone("iresnet18", fp16=True, amp_dtype=amp_dtype).cuda()
    amp.load_state_dict(reference.state_dict())
    amp = amp.eval().to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 112, 112, device="cuda")
    with torch.no_grad():
        want = reference(x)
        got = amp(x.contiguous(memory_format=torch.channels_last))
    assert got.dtype == torch.float32 and got.device == x.device
    assert nn.functional.cosine_similarity(got, want).min() > 0.99
