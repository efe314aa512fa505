"""Attribute models: attention blocks against reference formulas, heads and shapes on any
backbone, save/load, and the metrics against scikit-learn."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, confusion_matrix
from torchvision.ops import SqueezeExcitation

import tests.recog_helpers  # noqa: F401 - registers tiny_cnn
from parsing.core.errors import InputError
from parsing.core.io import atomic_save
from recognition.attributes.metrics import AttributeMeter, ExpressionMeter
from recognition.attributes.models import (
    create_attention,
    create_attribute_model,
    feature_layer,
    list_attentions,
    load_attribute_model,
    model_info,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_se_block_equals_torchvision_squeeze_excitation():
    block = create_attention("se", 32, reduction=4)
    ref = SqueezeExcitation(32, 8)
    ref.fc1.load_state_dict(block.transform[0].state_dict())
    ref.fc2.load_state_dict(block.transform[3].state_dict())
    x = torch.randn(3, 32, 7, 7)
    torch.testing.assert_close(block(x), ref(x))


def test_gc_block_equals_the_gcnet_formula():
    block = create_attention("gc", 16, reduction=2)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_()
    x = torch.randn(2, 16, 5, 6)
    out = torch.empty_like(x)
    # GCNet, channel_mul: x * sigmoid(W2 ReLU(LN(W1 sum_j softmax_j(Wk x_j) x_j)))
    for b in range(2):
        flat = x[b].reshape(16, -1)
        key = block.key.weight.view(1, 16) @ flat + block.key.bias.view(1, 1)
        context = flat @ torch.softmax(key[0], dim=0)
        hidden = block.transform[0].weight.view(8, 16) @ context + block.transform[0].bias
        norm = block.transform[1]
        hidden = (hidden - hidden.mean()) / torch.sqrt(hidden.var(unbiased=False) + norm.eps)
        hidden = torch.relu(hidden * norm.weight.view(8) + norm.bias.view(8))
        weight = torch.sigmoid(block.transform[3].weight.view(16, 8) @ hidden +
                               block.transform[3].bias)
        out[b] = x[b] * weight[:, None, None]
    torch.testing.assert_close(block(x), out)
    assert list_attentions() == ["gc", "se"]


@pytest.mark.parametrize("network, kwargs, layer", [
    ("tiny_cnn", {"num_features": 16}, "act"),
    ("mbf", {"blocks": [1, 1, 1, 1], "scale": 1, "num_features": 32}, "conv_sep"),
    ("iresnet18", {"num_features": 32}, "bn2"),
])
def test_heads_and_attention_on_backbones(network, kwargs, layer):
    plain = create_attribute_model(network, ["a", "b", "c"], ["x", "y"], None, kwargs)
    net = create_attribute_model(network, ["a", "b", "c"], ["x", "y"], "gc", kwargs)
    assert feature_layer(net.backbone)[0] == layer == net.attention_layer
    x = torch.randn(2, 3, 112, 112)
    out = net(x)
    assert out.shape == (2, 5)
    attributes, expressions = net.split(out)
    assert attributes.shape == (2, 3) and expressions.shape == (2, 2)
    # the block runs inside the backbone: the backbone's own keys are unchanged
    assert set(plain.state_dict()) < set(net.state_dict())
    assert {k for k in net.state_dict() if k.startswith("attention.")}
    captured = []
    net.attention.register_forward_hook(lambda m, i, o: captured.append(o.shape))
    net(x)
    assert len(captured) == 1 and captured[0][0] == 2


def test_attention_is_the_identity_when_its_weights_are_one():
    net = create_attribute_model("tiny_cnn", ["a"], (), "se", {"num_features": 8}).eval()
    plain = create_attribute_model("tiny_cnn", ["a"], (), None, {"num_features": 8}).eval()
    plain.load_state_dict({k: v for k, v in net.state_dict().items()
                           if not k.startswith("attention.")})
    x = torch.randn(4, 3, 112, 112)
    with torch.no_grad():
        assert not torch.allclose(net(x), plain(x))
        net.attention.transform[3].weight.zero_()
        net.attention.transform[3].bias.fill_(30.0)  # sigmoid(30) = 1 in float32
        torch.testing.assert_close(net(x), plain(x))


def test_bad_arguments():
    with pytest.raises(InputError, match="unknown channel attention 'cbam'"):
        create_attribute_model("tiny_cnn", ["a"], attention="cbam")
    with pytest.raises(InputError, match="needs attributes, expressions or both"):
        create_attribute_model("tiny_cnn")
    with pytest.raises(InputError, match="attention layer 'fc9'"):
        create_attribute_model("tiny_cnn", ["a"], attention="gc", attention_layer="fc9")


def test_save_and_load(tmp_path):
    net = create_attribute_model("tiny_cnn", ["a", "b"], ["x", "y", "z"], "gc",
                                 {"num_features": 8}, attention_kwargs={"reduction": 2})
    atomic_save(net.state_dict(), tmp_path / "model.pt")
    (tmp_path / "model.json").write_text(json.dumps(model_info(net, "tiny_cnn",
                                                               {"num_features": 8})))
    loaded = load_attribute_model(tmp_path / "model.pt")
    x = torch.randn(2, 3, 112, 112)
    net.eval()
    torch.testing.assert_close(loaded(x), net(x))
    assert loaded.expression_names == ["x", "y", "z"] and loaded.attention_name == "gc"


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, (50, 4))
    truth[:, 3] = 1  # no negatives: its balanced accuracy is undefined
    logits = rng.normal(size=(50, 4))
    meter = AttributeMeter(list("abcd"))
    meter.update(torch.tensor(logits[:20]), torch.tensor(truth[:20]))
    meter.update(torch.tensor(logits[20:]), torch.tensor(truth[20:]))
    result = meter.result()
    for k in range(3):
        row = result["attributes"][k]
        assert row["accuracy"] == pytest.approx(((logits[:, k] > 0) == truth[:, k]).mean())
        assert row["balanced_accuracy"] == pytest.approx(
            balanced_accuracy_score(truth[:, k], logits[:, k] > 0))
    assert np.isnan(result["attributes"][3]["balanced_accuracy"])
    assert result["mean_balanced_accuracy"] == pytest.approx(
        np.mean([r["balanced_accuracy"] for r in result["attributes"][:3]]))

    labels = rng.integers(0, 3, 40)
    scores = rng.normal(size=(40, 4))  # class 3 never true
    expr = ExpressionMeter(["n", "h", "s", "x"])
    expr.update(torch.tensor(scores), torch.tensor(labels))
    out = expr.result()
    pred = scores.argmax(1)
    assert out["confusion"] == confusion_matrix(labels, pred, labels=range(4)).tolist()
    assert out["accuracy"] == pytest.approx((pred == labels).mean())
    recalls = [((pred == c) & (labels == c)).sum() / (labels == c).sum() for c in range(3)]
    assert out["mean_class_accuracy"] == pytest.approx(np.mean(recalls))
