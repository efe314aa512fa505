import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from parsing_fixtures import write_synth_layout
from PIL import Image

import parsing
import parsing.core.training as core_training
import parsing.train as train_mod
from parsing import evaluate, export, predict
from parsing.core.io import load_checkpoint, read_label_map

TINY = ["--model", "unet_r18", "--width", "4", "--batch-size", "4", "--workers", "0",
        "--device", "cpu"]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    return write_synth_layout(tmp_path_factory.mktemp("data") / "synth", 12, size=32)


def _train_args(synth_dir):
    return ["--data", f"synth:{synth_dir}", "--epochs", "2", "--val-split", "0.25",
            "--class-weights", "--edge-loss", "0.5", *TINY]


@pytest.fixture(scope="module")
def trained(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert train_mod.main([*_train_args(synth_dir), "--out", str(out)]) == 0
    return out


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_writes_the_run_folder(trained):
    ckpt = load_checkpoint(trained / "checkpoint.pt")  # weights_only=True
    assert ckpt["epoch"] == 2 and ckpt["format"] == "fserasing.parsing.train/1"
    assert ckpt["class_weights"].shape == (25,) and ckpt["data"]["samples"] == 9
    info = json.loads((trained / "model.json").read_text())
    assert info["model_name"] == "unet_r18" and info["model_kwargs"] == {"width": 4}
    assert info["label_set"] == "fse25" and info["image_size"] == 32
    config = (trained / "config.yaml").read_text()
    assert "num_epoch: 2" in config and "edge_loss: 0.5" in config
    # model.pt: the weights of the epoch with the best validation mean F1
    val = [r for r in _rows(trained) if "mean_f1" in r]
    assert len(val) == 2 and [r["step"] for r in val] == [3, 6]  # 9 images, batches of 4
    best = max(val, key=lambda r: r["mean_f1"])
    assert info["selected_by"] == "val_mean_f1" and info["val_mean_f1"] == best["mean_f1"]
    assert info["global_step"] == best["step"]
    if best["step"] == 6:
        for key, value in load_checkpoint(trained / "model.pt").items():
            assert torch.equal(value, ckpt["model"][key]), key
    train_rows = [r for r in _rows(trained) if "loss" in r]
    assert train_rows and all({"ce", "edge", "lr"} <= set(r) for r in train_rows)
    assert list((trained / "tb").glob("events.out.tfevents.*"))


def _interrupt_after_epoch_1(synth_dir, out, monkeypatch):
    """Start the CPU run of ``_train_args`` in ``out`` and stop it after epoch 1's checkpoint."""
    class Interrupted(Exception):
        pass

    real_save = core_training.atomic_save

    def save_then_stop(obj, path):
        real_save(obj, path)
        if path.name == "checkpoint.pt" and obj["epoch"] == 1:
            raise Interrupted

    monkeypatch.setattr(core_training, "atomic_save", save_then_stop)
    with pytest.raises(Interrupted):
        train_mod.main([*_train_args(synth_dir), "--out", str(out)])
    monkeypatch.setattr(core_training, "atomic_save", real_save)
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1


def test_resume_continues_exactly_with_other_workers(trained, synth_dir, tmp_path, monkeypatch):
    run = tmp_path / "resumed"
    _interrupt_after_epoch_1(synth_dir, run, monkeypatch)
    assert oct(os.stat(run / "checkpoint.pt").st_mode & 0o777) == oct(0o666 & ~_umask())
    stale = run / ".checkpoint.pt.k1ll3d_x"  # what a save killed mid-write leaves
    stale.write_bytes(b"partial")
    # the device is not a run setting: exact continuation needs the run's device again; the
    # augmentation of each sample is seeded per sample, so a loader worker changes nothing
    assert train_mod.main(["--resume", str(run), "--workers", "1", "--device", "cpu",
                           "--epochs", "5"]) == 0  # a run setting: ignored
    assert not stale.exists()
    a = load_checkpoint(trained / "checkpoint.pt")  # the same run, uninterrupted, no workers
    b = load_checkpoint(run / "checkpoint.pt")
    assert b["epoch"] == 2
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for key, value in load_checkpoint(trained / "model.pt").items():
        assert torch.equal(value, load_checkpoint(run / "model.pt")[key]), key
    def logged(folder):  # every row but the speed
        return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in _rows(folder)]

    assert logged(run) == logged(trained)
    assert "num_workers: 1" in (run / "config.yaml").read_text()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_run_begun_on_cpu_resumes_on_cuda(synth_dir, tmp_path, monkeypatch):
    _interrupt_after_epoch_1(synth_dir, tmp_path / "run", monkeypatch)
    assert train_mod.main(["--out", str(tmp_path / "run"), "--resume", "--workers", "0",
                           "--device", "cuda"]) == 0  # AMP on from here: a fresh GradScaler
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["epoch"] == 2 and ckpt["scaler"]


def test_evaluate_json_f1_agrees_with_its_confusion_matrix(trained, synth_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    rc = evaluate.main(["--checkpoint", str(trained), "--data", f"synth:{synth_dir}",
                        "--split", "val", "--workers", "0", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    assert "mean F1" in capsys.readouterr().out
    s = json.loads(out.read_text())
    cm = np.asarray(s["confusion_matrix"], dtype=np.float64)
    assert cm.sum() == s["num_pixels"] == 3 * 32 * 32 and s["num_images"] == 3
    tp = np.diag(cm)
    denom = 2 * tp + (cm.sum(0) - tp) + (cm.sum(1) - tp)
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)
    assert s["mean_f1"] == pytest.approx(np.nanmean(f1[1:]))
    assert s["pixel_accuracy"] == pytest.approx(tp.sum() / cm.sum())


def test_predict_writes_readable_label_pngs_matching_parser(trained, synth_dir, tmp_path):
    images = tmp_path / "faces"
    (images / "sub").mkdir(parents=True)
    src = sorted((synth_dir / "images").glob("*.png"))[:3]
    for i, p in enumerate(src):
        Image.open(p).convert("RGB").save(images / ("sub" if i else ".") / f"f{i}.jpg",
                                          quality=95)
    out = tmp_path / "masks"
    rc = predict.main(["--checkpoint", str(trained / "model.pt"), "--images", str(images),
                       "--out", str(out), "--overlay", "--workers", "0", "--device", "cpu",
                       "--batch-size", "2", "--sheet", str(tmp_path / "sheet.png")])
    assert rc == 0
    assert Image.open(tmp_path / "sheet.png").size[0] > 4 * 32
    masks = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert masks == ["f0.png", "sub/f1.png", "sub/f2.png"]
    assert len(list((tmp_path / "masks_overlays").rglob("*.jpg"))) == 3
    rows = list(csv.reader((out / "predictions.csv").read_text().splitlines()))
    assert rows[0] == ["image", "mask"] and len(rows) == 4
    parser = parsing.Parser.from_checkpoint(trained)
    img = np.asarray(Image.open(images / "sub" / "f2.jpg").convert("RGB"))
    x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    label_map = read_label_map(out / "sub" / "f2.png")
    assert label_map.shape == (32, 32) and label_map.dtype == np.uint8
    assert np.array_equal(label_map, parser(x)[0].numpy())


def test_parser_api_batches_resizes_and_checks_input(trained):
    parser = parsing.Parser.from_checkpoint(trained / "model.pt", device="cpu", batch_size=2)
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    out = parser(x)
    assert out.shape == (5, 32, 32) and out.dtype == torch.uint8 and out.device == x.device
    whole = parsing.Parser.from_checkpoint(trained, batch_size=64)(x)
    assert torch.equal(out, whole)
    assert parser(torch.rand(2, 3, 48, 40) * 2 - 1).shape == (2, 48, 40)  # resized to 32 and back
    with pytest.raises(parsing.InputError, match="float"):
        parser(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_a_single_file_checkpoint_of_earlier_versions_loads(trained, tmp_path):
    info = json.loads((trained / "model.json").read_text())
    keys = ("model_name", "model_kwargs", "num_classes", "label_set", "image_size")
    torch.save({"model": load_checkpoint(trained / "model.pt"), **{k: info[k] for k in keys},
                "args": {"align": False, "val_split": 0.25, "seed": 0}}, tmp_path / "best.pt")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    old = parsing.Parser.from_checkpoint(tmp_path / "best.pt")
    assert old.image_size == 32 and torch.equal(old(x), parsing.Parser.from_checkpoint(trained)(x))


def test_onnx_export_matches_pytorch(trained, tmp_path, capsys):
    onnx_path = tmp_path / "parser.onnx"
    assert export.main(["--checkpoint", str(trained), "--onnx", str(onnx_path)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert onnx_path.is_file() and report["size"] == 32
    assert report["max_abs_diff"] < 1e-3 and report["argmax_agreement"] > 0.999


def test_skip_bad_reports_and_strict_mode_names_file(tmp_path, capsys):
    root = write_synth_layout(tmp_path / "s", 6, size=32)
    (root / "images" / "000002.png").write_bytes(b"broken")
    args = ["--data", f"synth:{root}", "--epochs", "1", "--val-split", "0", *TINY]
    assert train_mod.main([*args, "--out", str(tmp_path / "strict")]) == 2
    assert "000002.png" in capsys.readouterr().err
    assert train_mod.main([*args, "--out", str(tmp_path / "skip"), "--skip-bad"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(summary["skipped"]) == 1 and "000002.png" in summary["skipped"][0]
    assert (tmp_path / "skip" / "model.pt").is_file()
    assert json.loads((tmp_path / "skip" / "model.json").read_text())["selected_by"] == \
        "last_epoch"


@pytest.mark.parametrize("cli,argv,message", [
    (train_mod, ["--data", "nope:x", "--out", "{tmp}/r"], "unknown kind"),
    (train_mod, ["--out", "{tmp}/r", "--resume"], "no checkpoint"),
    (evaluate, ["--checkpoint", "{tmp}/missing.pt", "--data", "synth:{tmp}"], "missing.pt"),
    (evaluate, ["--checkpoint", "{tmp}/junk.pt", "--data", "synth:{tmp}"], "not a loadable"),
    (predict, ["--checkpoint", "{tmp}/junk.pt", "--images", "{tmp}/none", "--out", "{tmp}/o"],
     "no such folder"),
    (export, ["--checkpoint", "{tmp}/missing.pt", "--onnx", "{tmp}/x.onnx"], "missing.pt"),
])
def test_bad_input_exits_2_with_one_line(cli, argv, message, tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    rc = cli.main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and message in err and "\n" not in err


def test_train_refuses_to_overwrite_a_run(trained, synth_dir, capsys):
    rc = train_mod.main(["--data", f"synth:{synth_dir}", "--out", str(trained), *TINY])
    assert rc == 2 and "--resume" in capsys.readouterr().err


def test_list_file_keeps_relative_paths(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/x.jpg", "y.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    (tmp_path / "list.txt").write_text(f"a/x.jpg\n# comment\n{tmp_path / 'y.png'}\n")
    paths, rels = predict.list_images(tmp_path / "list.txt")
    assert [p.name for p in paths] == ["x.jpg", "y.png"]
    assert [r.as_posix() for r in rels] == ["a/x.jpg", "y.png"]


def test_self_distillation_fine_tunes_the_teacher(trained, synth_dir, tmp_path):
    out = tmp_path / "distilled"
    rc = train_mod.main(["--data", f"synth:{synth_dir}", "--out", str(out), "--epochs", "1",
                         "--distill-from", str(trained), "--distill-alpha", "0.7",
                         "--lr", "1e-4", "--val-split", "0.25", "--batch-size", "4",
                         "--workers", "0", "--device", "cpu", "--model", "scanet"])
    assert rc == 0
    ckpt = load_checkpoint(out / "checkpoint.pt")
    info = json.loads((out / "model.json").read_text())
    assert info["model_name"] == "unet_r18" and info["model_kwargs"] == {"width": 4}
    teacher = load_checkpoint(trained / "model.pt")
    moved = [k for k, v in ckpt["model"].items() if v.is_floating_point()
             and not torch.equal(v, teacher[k])]
    assert moved  # it trained ...
    stem = "encoder.stem.0.weight"  # ... starting from the teacher's weights, not from scratch
    assert (ckpt["model"][stem] - teacher[stem]).abs().max() < 0.05


def test_predicted_masks_feed_fserasing(trained, synth_dir, tmp_path):
    from fserasing import FSErasing, MaskedImageFolder

    root = tmp_path / "faces"
    for k, p in enumerate(sorted((synth_dir / "images").glob("*.png"))[:4]):
        (root / f"id{k % 2}").mkdir(parents=True, exist_ok=True)
        (root / f"id{k % 2}" / f"{k}.png").write_bytes(p.read_bytes())
    masks = tmp_path / "masks"
    assert predict.main(["--checkpoint", str(trained), "--images", str(root),
                         "--out", str(masks), "--workers", "0", "--device", "cpu"]) == 0
    ds = MaskedImageFolder(root, masks, transform=FSErasing(p=1.0, classes="all", fill=0))
    assert len(ds) == 4
    for i in range(4):
        image, mask, label = (ds[i][k] for k in ("image", "mask", "label"))
        original = torch.from_numpy(np.array(Image.open(ds.samples[i][0]).convert("RGB")))
        changed = (image.permute(1, 2, 0) != original).any(-1)
        assert label == i // 2 and torch.equal(mask, torch.from_numpy(
            read_label_map(masks / Path(ds.samples[i][0]).relative_to(root))))
        assert not changed[mask == 0].any()  # only predicted face regions are erased


def test_corrupt_image_in_a_worker_is_one_line_and_skippable(trained, synth_dir, tmp_path,
                                                             capsys):
    images = tmp_path / "imgs"
    images.mkdir()
    for p in sorted((synth_dir / "images").glob("*.png"))[:3]:
        (images / p.name).write_bytes(p.read_bytes())
    (images / "000001.png").write_bytes(b"junk")
    argv = ["--checkpoint", str(trained), "--images", str(images), "--out",
            str(tmp_path / "out"), "--workers", "1", "--device", "cpu"]
    assert predict.main(argv) == 2  # raised in a DataLoader worker process
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "000001.png: not a readable image" in err
    assert "Traceback" not in err
    assert predict.main([*argv, "--skip-bad"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["written"] == 2 and "000001.png" in summary["skipped"][0]


@pytest.mark.slow
def test_two_process_gloo_training_writes_one_run_folder(synth_dir, tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "parsing.train", *_train_args(synth_dir), "--out", str(tmp_path / "ddp")],
        cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    summaries = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and json.loads(summaries[0])["global_step"] == 4
    ckpt = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["ranks"]) == 2
    assert parsing.Parser.from_checkpoint(tmp_path / "ddp")(torch.zeros(1, 3, 32, 32)).shape \
        == (1, 32, 32)
