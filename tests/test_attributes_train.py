"""Training attribute models with the shared trainer, then evaluating and explaining them:
synthetic attributes and files in the CelebA, RAF-DB and AffectNet formats."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tests.recog_helpers  # noqa: F401 - registers tiny_cnn
from cam.attributes.__main__ import main as explain_main
from parsing.core.errors import InputError
from parsing.core.io import write_label_map
from parsing.synth import write_dataset
from recognition.attributes.evaluate import main as evaluate_main
from recognition.attributes.train import main as train_main
from recognition.attributes.training import AttributeConfig, AttributeTrainer
from recognition.training.config import load_config
from tests.test_attributes_data import _affectnet, _celeba, _rafdb, _values

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--import", "tests.recog_helpers", "--embedding-size", "16", "--workers", "0",
        "--log-every", "1", "--batch-size", "4", "--lr", "0.05"]

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("synth"), 10, 4, seed=0, workers=1,
                         progress=False)


def test_train_evaluate_explain_on_synthetic_attributes(tmp_path, synth, capsys):
    run = tmp_path / "run"
    assert train_main(["--data", f"synth:{synth}", "--network", "tiny_cnn", *TINY,
                       "--attention", "gc", "--aug", "fserasing", "--aug-p", "1",
                       "--epochs", "2", "--out", str(run)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["global_step"] == 12  # 24 training faces (6 identities), batches of 4
    assert {"attribute_loss", "expression_loss", "mean_accuracy",
            "expression_accuracy"} <= set(summary)
    info = json.loads((run / "model.json").read_text())
    assert info["attention"] == "gc" and info["attention_layer"] == "act"
    assert info["expression_names"] == ["neutral", "happiness", "surprise"]
    assert info["imports"] == ["tests.recog_helpers"]  # what loading tiny_cnn needs
    assert (run / "tb").is_dir() and (run / "config.yaml").is_file()

    assert evaluate_main(["--model", str(run / "model.pt"), "--data", f"synth:{synth}",
                          "--import", "tests.recog_helpers", "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["images"] == 8 and len(metrics["attributes"]) == 11
    assert len(metrics["expression"]["confusion"]) == 3
    assert (tmp_path / "eval" / "attributes.png").is_file()
    assert (tmp_path / "eval" / "confusion.png").is_file()

    capsys.readouterr()
    assert explain_main(["--model", str(run / "model.pt"), "--data", f"synth:{synth}",
                         "--outputs", "Eyeglasses,Wearing_Hat,Smiling,happiness",
                         "--out", str(tmp_path / "explain")]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    result = json.loads((tmp_path / "explain" / "regions.json").read_text())
    for method in ("fscam", "gradcam"):
        rows = {r["output"]: r for r in result["methods"][method]}
        assert set(rows) == {"Eyeglasses", "Wearing_Hat", "Smiling", "expression:happiness"}
        assert rows["Eyeglasses"]["true_regions"] == ["around_right_eye", "around_left_eye",
                                                      "right_eye", "left_eye", "glasses"]
        for name, row in rows.items():
            if row["faces"]:
                assert 0 <= row["hit_rate"] <= 1 if row["true_regions"] else True
                assert printed["hit_rate"][method].get(name) == row["hit_rate"]
        assert (tmp_path / "explain" / f"heatmap_{method}.png").is_file()


class _Killed(Exception):
    pass


class _KilledAfter(AttributeTrainer):
    """Dies right after its third checkpoint, as a run killed mid-training."""

    def save_checkpoint(self) -> None:
        super().save_checkpoint()
        if self.global_step == 3:
            raise _Killed


def test_resume_is_bit_exact(tmp_path, synth):
    fields = dict(rec=f"synth:{synth}", network="tiny_cnn", network_kwargs={},
                  embedding_size=16, attention="se", aug="fserasing", batch_size=4, lr=0.05,
                  num_epoch=2, num_workers=0, deterministic=True, save_every_steps=1,
                  frequent=2, seed=4)
    full = AttributeTrainer(load_config(None, AttributeConfig, output=str(tmp_path / "full"),
                                        **fields))
    full.train()
    cut = tmp_path / "cut"
    with pytest.raises(_Killed):
        _KilledAfter(load_config(None, AttributeConfig, output=str(cut), **fields)).train()
    resumed = AttributeTrainer(load_config(cut / "config.yaml", AttributeConfig),
                               resume_from=cut)
    assert resumed.global_step == 3
    resumed.train()
    a, b = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (tmp_path / "full", cut))
    assert a["global_step"] == b["global_step"] == 12
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    rows = [(d / "metrics.jsonl").read_text().splitlines() for d in (tmp_path / "full", cut)]
    strip = [[{k: v for k, v in json.loads(r).items() if k != "samples_per_s"} for r in run]
             for run in rows]
    assert strip[0] == strip[1]


def test_two_process_gloo_matches_one_process(tmp_path, synth):
    """DDP on 2 CPU processes = 1 process with the same global batch (BN-free backbone, no
    random flips or erasing; weights agree to float rounding)."""
    common = ["--data", f"synth:{synth}", "--network", "tiny_nobn", *TINY[:-4], "--epochs", "1",
              "--attention", "gc", "--aug", "none", "--no-flip", "--seed", "1", "--lr", "0.5",
              "--device", "cpu"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    two = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "recognition.attributes.train", *common, "--batch-size", "4", "--out",
         str(tmp_path / "two")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert train_main([*common, "--batch-size", "8", "--out", str(tmp_path / "one")]) == 0
    _, err = two.communicate(timeout=300)
    assert two.returncode == 0, err[-3000:]
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in ("one", "two"))
    assert a["global_step"] == b["global_step"] == 3 and b["world_size"] == 2
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)


def _mask_folder(root: Path, keys: list[str], size: tuple[int, int]) -> Path:
    """FSE-25 label PNGs named like the images (a face in the middle, eyes, a mouth)."""
    for key in keys:
        label = np.zeros(size, np.uint8)
        h, w = size
        label[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
        label[h // 3, w // 3: w // 2] = 11
        label[2 * h // 3, w // 3: 2 * w // 3] = 18
        path = root / Path(key).with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_label_map(path, label)
    return root


def test_published_formats_train_evaluate_and_explain(tmp_path, capsys):
    rows = [(f"{i:06d}.jpg", _values(i)) for i in range(1, 11)]
    celeba = _celeba(tmp_path / "celeba", rows, {n: int(i >= 8) * 2 for i, (n, _) in
                                                 enumerate(rows)})
    masks = _mask_folder(tmp_path / "celeba_masks", [n for n, _ in rows], (218, 178))
    rafdb = _rafdb(tmp_path / "rafdb", [f"train_{i:05d}.jpg {i % 7 + 1}" for i in range(8)]
                   + ["test_0001.jpg 4", "test_0002.jpg 7"])
    lm = "1.0;2.0"
    affectnet = _affectnet(tmp_path / "affectnet", [f"{i}/f.jpg,10,5,150,150,{lm},{i % 11},0,0"
                                                    for i in range(12)])
    for kind, root, extra in (("celeba", celeba, ["--aug", "fserasing", "--masks", str(masks)]),
                              ("rafdb", rafdb, ["--aug", "cutout"]),
                              ("affectnet", affectnet, ["--aug", "random-erasing"])):
        run = tmp_path / f"run_{kind}"
        assert train_main(["--data", f"{kind}:{root}", "--network", "tiny_cnn", *TINY,
                           "--epochs", "1", "--out", str(run), *extra]) == 0, kind
        assert evaluate_main(["--model", str(run / "model.pt"), "--data", f"{kind}:{root}",
                              "--split", "test", "--out", str(tmp_path / f"eval_{kind}")]) == 0
        capsys.readouterr()
    metrics = json.loads((tmp_path / "eval_celeba" / "metrics.json").read_text())
    assert metrics["images"] == 2 and len(metrics["attributes"]) == 40
    assert json.loads((tmp_path / "eval_rafdb" / "metrics.json").read_text())["images"] == 2
    affect = json.loads((tmp_path / "eval_affectnet" / "metrics.json").read_text())
    assert affect["images"] == 1 and len(affect["expression"]["confusion"]) == 8  # 8-10 out
    assert explain_main(["--model", str(tmp_path / "run_celeba" / "model.pt"), "--data",
                         f"celeba:{celeba}", "--masks", str(masks), "--outputs", "Smiling",
                         "--method", "fscam", "--out", str(tmp_path / "explain")]) == 0


def test_bad_input_is_one_line(tmp_path, synth, capsys):
    (tmp_path / "empty").mkdir()
    cases = [
        (["--data", str(synth)], "expected KIND:PATH"),
        (["--data", f"celeba:{tmp_path / 'empty'}"], "no list_attr_celeba.txt"),
        (["--data", f"synth:{synth}", "--attention", "cbam"], "invalid choice"),
        (["--data", f"synth:{synth}", "--attention-kwargs", "[1]"], "expected a JSON object"),
    ]
    for args, message in cases:
        assert train_main([*args, "--network", "tiny_cnn", *TINY, "--out",
                           str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err and err.count("\n") == 1, err


def test_none_flags_unset_what_the_config_file_set(tmp_path):
    from recognition.attributes.train import build_arg_parser
    from recognition.train import config_from_args

    config = tmp_path / "attr.yaml"
    config.write_text("attention: gc\nval_split: test\n")
    args = build_arg_parser().parse_args(["--config", str(config)])
    assert config_from_args(args, AttributeConfig)[0].attention == "gc"
    args = build_arg_parser().parse_args(["--config", str(config), "--attention", "none",
                                          "--val-split", "none"])
    cfg = config_from_args(args, AttributeConfig)[0]
    assert cfg.attention is None and cfg.val_split is None
    assert load_config(config, AttributeConfig).val_split == "test"


def test_explaining_with_a_parser_equals_explaining_with_its_label_maps(tmp_path, synth):
    """``cam.attributes --parser P`` explains on P's label maps: the same table as ``--masks``
    with a folder of those maps."""
    from parsing import Parser
    from parsing.core.io import atomic_save
    from parsing.core.pixels import normalise
    from parsing.parser.inference import save_parser
    from parsing.parser.models import create_model
    from recognition.attributes.data import open_attribute_dataset
    from recognition.attributes.models import create_attribute_model, model_info

    torch.manual_seed(0)
    save_parser(tmp_path / "parser", create_model("unet_r18", num_classes=25, width=8),
                "unet_r18", {"width": 8})  # untrained: any label maps will do
    net = create_attribute_model("tiny_cnn", ["Bangs", "Eyeglasses"],
                                 ["neutral", "happiness", "surprise"], "gc", {"num_features": 8})
    (tmp_path / "attr").mkdir()
    atomic_save(net.state_dict(), tmp_path / "attr" / "model.pt")
    (tmp_path / "attr" / "model.json").write_text(json.dumps(
        model_info(net, "tiny_cnn", {"num_features": 8}, ["tests.recog_helpers"])))
    dataset = open_attribute_dataset(f"synth:{synth}", "test")
    predicted = Parser.from_checkpoint(tmp_path / "parser")(
        normalise(torch.stack([dataset[i]["image"] for i in range(len(dataset))])))
    for i in range(len(dataset)):
        write_label_map(tmp_path / "maps" / Path(dataset.image_path(i)).relative_to(
            dataset.root).with_suffix(".png"), predicted[i].numpy())
    tables = []
    for regions in (["--parser", str(tmp_path / "parser")], ["--masks", str(tmp_path / "maps")]):
        out = tmp_path / f"explain{len(tables)}"
        assert explain_main(["--model", str(tmp_path / "attr" / "model.pt"), "--data",
                             f"synth:{synth}", *regions, "--gradcam-reduce", "mean",
                             "--out", str(out)]) == 0
        saved = json.loads((out / "regions.json").read_text())
        assert saved["gradcam_reduce"] == "mean"
        tables.append(saved["methods"])
    assert tables[0] == tables[1]
    assert {r["output"] for r in tables[0]["fscam"]} == {
        "Bangs", "Eyeglasses", "expression:neutral", "expression:happiness",
        "expression:surprise"}


def test_gradcam_per_region_is_a_share_or_a_mean():
    """A map equal to its own label ids: the mean over region k is k; the share is k x area_k
    over the total."""
    from types import SimpleNamespace

    from cam.attributes import region_scores

    labels = torch.tensor([[[0, 1, 1, 1], [0, 2, 2, 3], [3, 3, 3, 3], [3, 3, 3, 3]]])
    explainer = SimpleNamespace(explain=lambda images, target: SimpleNamespace(
        raw=labels.float()))
    images = torch.zeros(1, 3, 4, 4)
    mean = region_scores("gradcam", explainer, images, labels, 0, "mean")[0]
    share = region_scores("gradcam", explainer, images, labels, 0)[0]
    torch.testing.assert_close(mean[:4], torch.tensor([0.0, 1.0, 2.0, 3.0]))
    torch.testing.assert_close(share[:4], torch.tensor([0.0, 3.0, 4.0, 27.0]) / 34.0)
    assert mean[4:].isnan().all() and share[4:].isnan().all()  # absent regions
    with pytest.raises(InputError, match="gradcam_reduce must be 'share' or 'mean'"):
        region_scores("gradcam", explainer, images, labels, 0, "max")


def test_attribute_configs_have_no_recognizer_fields(tmp_path):
    fields = set(AttributeConfig().to_dict())
    assert not fields & {"margin_list", "loss", "sample_rate", "num_classes", "val_targets",
                         "interclass_filtering_threshold"}
    assert {"attention", "val_split", "aug", "network", "lr"} <= fields
    config = tmp_path / "attr.yaml"
    config.write_text("margin_list: [1.0, 0.5, 0.0]\n")
    with pytest.raises(InputError, match="unknown config field.*margin_list"):
        load_config(config, AttributeConfig)
