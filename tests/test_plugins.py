"""``--import``: modules that register a custom backbone, recorded in model.json by the trainers
and asked for by name when a model that needs one is loaded without it."""

import json
import sys
import uuid

import pytest
import torch

from parsing.core.errors import InputError, MissingDependencyError
from parsing.core.io import atomic_save
from parsing.core.registry import import_plugins
from recognition.attributes.evaluate import main as evaluate_main
from recognition.attributes.models import (
    create_attribute_model,
    load_attribute_model,
    model_info,
)
from recognition.evaluation.embedding import load_backbone
from tests.recog_helpers import TinyNet

PLUGIN_SOURCE = """
from recognition.backbones import register_backbone
from tests.recog_helpers import TinyNet


@register_backbone
def {name}(num_features=512, **kwargs):
    return TinyNet(num_features, **kwargs)
"""


@pytest.fixture
def plugin_run(tmp_path, monkeypatch):
    """A plugin module (importable, not imported) registering a backbone of the same name, and
    an attribute model and a recognizer built on that backbone (a fresh name per test: a
    registered name stays registered)."""
    plugin = f"fse_plugin_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{plugin}.py").write_text(PLUGIN_SOURCE.format(name=plugin))
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    run = tmp_path / "attr"
    run.mkdir()
    net = create_attribute_model("tiny_cnn", ["Eyeglasses"], attention="gc",
                                 network_kwargs={"num_features": 8}, image_size=32)
    info = model_info(net, plugin, {"num_features": 8}, [plugin])
    (run / "model.json").write_text(json.dumps(info))
    atomic_save(net.state_dict(), run / "model.pt")
    recognizer = tmp_path / "rec"
    recognizer.mkdir()
    atomic_save(TinyNet(8).state_dict(), recognizer / "model.pt")
    (recognizer / "model.json").write_text(json.dumps(
        {"network": plugin, "network_kwargs": {}, "embedding_size": 8, "imports": [plugin]}))
    yield plugin, run, recognizer
    sys.modules.pop(plugin, None)


def test_loading_without_the_plugin_names_the_import_to_give(plugin_run, tmp_path, capsys):
    plugin, attr, rec = plugin_run
    for load in (lambda: load_attribute_model(attr / "model.pt"),
                 lambda: load_backbone(rec / "model.pt")):
        with pytest.raises(MissingDependencyError, match=f"model.json: backbone '{plugin}' was "
                           f"registered by the run's --import {plugin}; give the same --import"):
            load()
    assert evaluate_main(["--model", str(attr / "model.pt"), "--data", "synth:/nowhere",
                          "--out", str(tmp_path / "eval")]) == 2
    assert capsys.readouterr().err.strip().endswith("give the same --import")


def test_the_same_import_loads_the_model(plugin_run):
    plugin, attr, rec = plugin_run
    model = load_attribute_model(attr / "model.pt", imports=[plugin])
    assert model.attention_name == "gc" and model.attribute_names == ["Eyeglasses"]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 1)
    backbone = load_backbone(rec / "model.pt", imports=[plugin])
    assert backbone(torch.randn(1, 3, 32, 32)).shape == (1, 8)


def test_an_unimportable_module_is_one_clear_error():
    with pytest.raises(InputError, match="--import no_such_plugin_xyz: cannot import it"):
        import_plugins(["no_such_plugin_xyz"])
