"""Pieces of the studies and the demo report that need no training."""

import csv
import json

import pytest
import torch

from benchmarks import demo_report, studies
from benchmarks.studies import config_hash, shuffled_identities
from benchmarks.study_explanations import (
    identity_classes,
    randomise_top_down,
    reinitialise,
)
from parsing.core.errors import InputError
from parsing.core.labels import FSE25
from recognition.backbones import create_backbone


def test_identity_classes_are_the_bound_regions():
    assert identity_classes(["eyes"]) == FSE25.ids("eyes")
    assert identity_classes(["nose", "mouth"]) == FSE25.ids(["nose", "mouth"])
    assert identity_classes(["hair"]) == [FSE25.id("hair")]


def test_cascade_goes_top_down_and_reinitialises_weights():
    model = create_backbone("mbf", blocks=[1, 2, 3, 1], scale=1, num_features=32)
    blocks = randomise_top_down(model)
    assert blocks[0] is model.features and blocks[-1] is model.layers[0]
    before = [p.clone() for p in blocks[0].parameters()]
    untouched = [p.clone() for p in blocks[1].parameters()]
    reinitialise(blocks[0], 0)
    assert any(not torch.equal(a, b) for a, b in zip(before, blocks[0].parameters(),
                                                     strict=True))
    assert all(torch.equal(a, b) for a, b in zip(untouched, blocks[1].parameters(), strict=True))


def test_shuffled_identities_permute_labels_and_keep_class_sizes(tmp_path):
    from parsing.synth import SynthFaces, write_dataset
    data = write_dataset(tmp_path / "faces", 3, 4, seed=0, workers=1, progress=False)
    shuffled = shuffled_identities(data, tmp_path / "cache", seed=1)
    original, permuted = SynthFaces(data).identities, SynthFaces(shuffled).identities
    assert sorted(original) == sorted(permuted) and list(original) != list(permuted)
    assert (shuffled / "images").resolve() == (data / "images").resolve()
    assert shuffled_identities(data, tmp_path / "cache", seed=1) == shuffled  # cached
    with open(data / "identities.csv") as f:
        assert list(csv.reader(f))[1] == ["0", "0"]  # the source is untouched


def test_config_hash_is_order_independent():
    assert config_hash({"a": 1, "b": [2]}) == config_hash({"b": [2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_demo_report_tables_links_and_missing_outputs(tmp_path, capsys):
    demo = tmp_path / "demo"
    (demo / "parser").mkdir(parents=True)
    (demo / "parser" / "eval.json").write_text(json.dumps({
        "mean_f1": 0.9, "miou": 0.8, "pixel_accuracy": 0.95,
        "per_class": [{"name": "nose", "f1": 0.7}, {"name": "hair", "f1": 0.99}]}))
    (demo / "occlusion").mkdir()
    (demo / "occlusion" / "occlusion.json").write_text(json.dumps({"table": {
        "none": {"erased_area": 0.0, "accuracy": 0.95, "tar_at_far": {"1e-02": 0.8}},
        "eyes": {"erased_area": 0.01, "accuracy": 0.55, "tar_at_far": {"1e-02": 0.1}}}}))
    (demo / "fserasing_sheet.png").write_bytes(b"png")
    assert demo_report.main(["--demo", str(demo), "--identity-regions", "eyes"]) == 0
    text = (demo / "report.md").read_text()
    assert "| 90.0 | 80.0 | 95.0 | nose 70.0, hair 99.0 |" in text
    assert "| eyes | 1.0 | 55.0 | 10.0 |" in text
    assert "[FSErasing: the same regions erased under every fill mode](fserasing_sheet.png)" \
        in text
    assert "- `ijbc_eval/ijbc_verification.json`" in text and "**eyes**" in text
    assert json.loads(capsys.readouterr().out)["report"] == str(demo / "report.md")
    assert demo_report.main(["--demo", str(tmp_path / "nowhere")]) == 2


@pytest.mark.parametrize("module", ["study_explanations", "study_augmentation", "study_parsing",
                                    "study_attributes"])
def test_study_commands_refuse_bad_options(module, capsys):
    import importlib
    main = importlib.import_module(f"benchmarks.{module}").main
    assert main(["--seeds", "0", "--out", "unused"]) == 2
    assert "error: --seeds must be >= 1" in capsys.readouterr().err


def test_cached_synthetic_set_is_not_reused_across_generator_code(tmp_path, monkeypatch):
    first = studies.synth_set(tmp_path, 2, 1, 0)
    assert json.loads((first / "spec.json").read_text())["generator"] == \
        studies.generator_version()
    assert studies.synth_set(tmp_path, 2, 1, 0) == first
    monkeypatch.setattr(studies, "generator_version", lambda: "other code")
    assert studies.synth_set(tmp_path, 2, 1, 0) != first


def _attribute_runs(data):
    from recognition.attributes.training import AttributeConfig, AttributeTrainer

    return [dict(config_class=AttributeConfig, trainer_class=AttributeTrainer,
                 command="recognition.attributes.train", rec=f"synth:{data}", network="tiny_cnn",
                 imports=["tests.recog_helpers"], embedding_size=8, batch_size=4, lr=0.05,
                 num_epoch=1, image_size=112, aug=aug, seed=seed, num_workers=0,
                 frequent=1000, verbose=10**9)
            for seed, aug in ((0, "none"), (1, "fserasing"))]


@pytest.mark.usefixtures("single_thread")
def test_models_trained_two_at_a_time_equal_those_trained_one_at_a_time(tmp_path):
    data = studies.synth_set(tmp_path, 6, 4, 0)
    parallel = studies.train_recognizers(tmp_path / "parallel", _attribute_runs(data), jobs=2)
    serial = studies.train_recognizers(tmp_path / "serial", _attribute_runs(data), jobs=1)
    assert [p.name for p, _ in parallel] == [p.name for p, _ in serial]  # same config hashes
    for (a, _), (b, _) in zip(parallel, serial, strict=True):
        wa = torch.load(a / "model.pt", weights_only=True)
        wb = torch.load(b / "model.pt", weights_only=True)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert parallel[0][0].name != parallel[1][0].name
    with pytest.raises(InputError, match="--jobs must be >= 1"):
        studies.train_recognizers(tmp_path, [], jobs=0)


@pytest.mark.usefixtures("single_thread")
def test_attribute_study_end_to_end_on_a_tiny_model(tmp_path, capsys):
    import tests.recog_helpers  # noqa: F401 - registers tiny_cnn in this process
    from benchmarks.study_attributes import EXPLAINED, EXPLANATIONS, main

    out = tmp_path / "study"
    assert main(["--out", str(out), "--seeds", "2", "--identities", "10", "--per-identity", "4",
                 "--epochs", "1", "--network", "tiny_cnn", "--batch-size", "4",
                 "--explain", "8"]) == 0
    summary = json.loads((out / "study.json").read_text())
    assert summary["data"]["test_faces"] == 8 and summary["seeds"] == 2
    assert set(summary["fserasing_minus_none"]) == {"mean_accuracy", "mean_balanced_accuracy",
                                                    "expression_accuracy"}
    for arm in ("none", "fserasing"):
        assert set(summary["arms"][arm]["hit_rate"]) == set(EXPLANATIONS)
    chance = summary["chance_hit_rate"]
    assert set(chance) == set(EXPLAINED)
    assert all(0 < v < 1 for v in chance.values() if v == v)
    assert "random region (chance)" in capsys.readouterr().out
    assert {p.name for p in out.glob("heatmap_*.png")} == {f"heatmap_{e}.png"
                                                          for e in EXPLANATIONS}
