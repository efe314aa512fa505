"""Mask stores: exact round trip, key checks, sharded (gloo torchrun) and resumed prediction,
training on a store."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import parsing.parser.prediction as prediction
from fserasing import MaskedImageFolder, MaskStoreSource, open_mask_source
from parsing import predict
from parsing.core.errors import DataError, InputError
from parsing.core.maskstore import MaskStore, MaskStoreWriter, decode_mask, encode_mask
from parsing.core.pixels import normalise
from parsing.core.recordio import read_index
from parsing.parser.inference import Parser, save_parser
from parsing.parser.models import create_model
from parsing.synth import generate
from recognition.data.datasets import RecordIOFaces
from recognition.data.recordio import write_recordio
from recognition.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def parser_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("unet_r18", num_classes=25, width=4)  # untrained: varied label maps
    return save_parser(tmp_path_factory.mktemp("parser"), model, "unet_r18", {"width": 4})


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    """A train.rec of 24 synthetic 112x112 faces (6 identities) and their true label maps."""
    images, maps, _, ids = generate(6, 4, seed=0)
    out = tmp_path_factory.mktemp("rec")
    write_recordio(out, zip(images, ids.tolist(), strict=True))
    return out, maps


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An ImageFolder of 36 tiny faces in 3 identities (some names sort differently by path)."""
    root = tmp_path_factory.mktemp("folder") / "faces"
    rng = np.random.default_rng(0)
    for i in range(36):
        path = root / ["a", "a-b", "b"][i % 3] / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
    return root


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    return env


def _parse_all(parser_ckpt, images):
    batch = torch.stack([torch.as_tensor(np.array(i)).permute(2, 0, 1) for i in images])
    return Parser.from_checkpoint(parser_ckpt)(normalise(batch))


def test_round_trip_is_exact_for_both_keyings(tmp_path):
    rng = np.random.default_rng(1)
    masks = [rng.integers(0, 25, shape, dtype=np.uint8) for shape in
             [(112, 112), (7, 3), (1, 1), (112, 112), (64, 80)]]
    masks[3][:] = 7  # one constant map
    with MaskStoreWriter(tmp_path / "int" / "masks.rec") as w:
        for key, m in zip([1, 2, 5, 9, 10], masks, strict=True):
            w.write(key, m)
    names = ["x/ä.png", "a/b c.jpg", "0", "z/y.bmp", "a/b/c.png"]
    with MaskStoreWriter(tmp_path / "named.rec") as w:
        for key, (name, m) in enumerate(zip(names, masks, strict=True)):
            w.write(key, torch.from_numpy(m), name)
    by_int, by_name = MaskStore(tmp_path / "int"), MaskStore(tmp_path / "named.rec")
    assert by_int.keys == ["1", "2", "5", "9", "10"] and not by_int.named
    assert by_name.keys == names and by_name.named
    for key, name, m in zip(by_int.keys, names, masks, strict=True):
        assert by_int[key].dtype == np.uint8 and np.array_equal(by_int[key], m)
        assert np.array_equal(by_name[name], m)
    with pytest.raises(DataError, match="no mask for image '3'"):
        by_int["3"]
    with pytest.raises(DataError, match="corrupt mask data"):
        decode_mask(encode_mask(masks[0])[:-5], "rec 1")


def test_key_checks_name_the_missing_or_extra_image(rec, tmp_path):
    root, maps = rec
    with MaskStoreWriter(tmp_path / "short.rec") as w:  # no mask for image key 7
        for key in range(1, 25):
            if key != 7:
                w.write(key, maps[key - 1])
    with pytest.raises(DataError, match=r"short.rec: no mask for image '7' .*1 of 24"):
        RecordIOFaces(root, masks=tmp_path / "short.rec")
    with MaskStoreWriter(tmp_path / "long.rec") as w:  # key 25 is no image of train.rec
        for key in range(1, 26):
            w.write(key, maps[(key - 1) % 24])
    with pytest.raises(DataError, match=r"long.rec: mask '25' has no image"):
        RecordIOFaces(root, masks=tmp_path / "long.rec")
    with MaskStoreWriter(tmp_path / "good" / "masks.rec") as w:
        for key in range(1, 25):
            w.write(key, maps[key - 1])
    ds = RecordIOFaces(root, masks=tmp_path / "good")  # a folder holding masks.rec
    assert isinstance(ds.mask_source, MaskStoreSource)
    assert all(torch.equal(ds[i]["mask"], maps[i]) for i in range(24))


def test_store_predicted_from_a_rec_equals_the_parser(rec, parser_ckpt, tmp_path, capsys):
    root, _ = rec
    store = root / "masks.rec"
    argv = ["--checkpoint", str(parser_ckpt), "--images", str(root), "--store", str(store),
            "--shard-size", "10", "--workers", "0", "--device", "cpu", "--batch-size", "8"]
    assert predict.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["masks"] == 24 and summary["shards"] == 3 and summary["faces_per_s"] > 0
    assert not store.with_name("masks.rec.parts").exists()
    assert predict.main(argv) == 2  # never written over
    assert "already exists" in capsys.readouterr().err
    ds = RecordIOFaces(root, masks=store)
    expected = _parse_all(parser_ckpt, [ds[i]["image"].permute(1, 2, 0).numpy()
                                        for i in range(24)])
    assert torch.equal(torch.stack([ds[i]["mask"] for i in range(24)]), expected)
    store.unlink()
    store.with_suffix(".idx").unlink()


@pytest.mark.slow
def test_two_process_gloo_prediction_has_every_key_once(folder, parser_ckpt, tmp_path):
    common = ["-m", "parsing.predict", "--checkpoint", str(parser_ckpt), "--images",
              str(folder), "--shard-size", "5", "--workers", "0", "--device", "cpu"]
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         *common, "--store", str(tmp_path / "two" / "masks.rec")],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    summary = json.loads(two.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["masks"] == 36 and summary["shards"] == 8
    index = read_index(tmp_path / "two" / "masks.idx")
    assert list(index) == list(range(36))  # each key once, in image order
    store = MaskStore(tmp_path / "two")
    rels = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*.png"))]
    assert store.keys == rels  # the images' order (parsing.core.io.list_images)
    expected = _parse_all(parser_ckpt, [np.asarray(Image.open(folder / r)) for r in rels])
    for name, mask in zip(rels, expected, strict=True):
        assert np.array_equal(store[name], mask.numpy())
    ds = MaskedImageFolder(folder, tmp_path / "two" / "masks.rec")
    image, mask, label = (ds[5][k] for k in ("image", "mask", "label"))
    assert torch.equal(mask, torch.from_numpy(store[Path(ds.samples[5][0]).relative_to(
        folder).as_posix()])) and image.shape == (3, 24, 24)


def test_killed_prediction_resumes_without_redoing_finished_shards(folder, parser_ckpt,
                                                                    tmp_path, monkeypatch):
    kwargs = {"batch_size": 4, "workers": 0, "device": "cpu", "shard_size": 5}
    commit = prediction._Shards.commit
    committed = []

    def commit_then_die(self, s, *args):
        commit(self, s, *args)
        committed.append(s)
        if len(committed) == 3:
            raise KeyboardInterrupt  # killed while shard 3 is half written

    monkeypatch.setattr(prediction._Shards, "commit", commit_then_die)
    with pytest.raises(KeyboardInterrupt):
        prediction.predict_store(parser_ckpt, folder, tmp_path / "cut.rec", **kwargs)
    parts = tmp_path / "cut.rec.parts"
    done = {p.name: p.stat().st_mtime_ns for p in parts.glob("shard-*")}
    assert len(done) == 9 and committed == [0, 1, 2]

    def commit_untouched(self, s, *args):
        assert {n: (parts / n).stat().st_mtime_ns for n in done} == done
        committed.append(s)
        commit(self, s, *args)

    monkeypatch.setattr(prediction._Shards, "commit", commit_untouched)
    summary = prediction.predict_store(parser_ckpt, folder, tmp_path / "cut.rec", **kwargs)
    assert committed == [0, 1, 2, 3, 4, 5, 6, 7]  # shards 0-2 not redone
    monkeypatch.setattr(prediction._Shards, "commit", commit)
    assert summary["shards_already_done"] == 3 and summary["faces_predicted"] == 36 - 15
    whole = prediction.predict_store(parser_ckpt, folder, tmp_path / "whole.rec",
                                     **{**kwargs, "shard_size": 36})
    assert whole["faces_predicted"] == 36
    cut, ref = MaskStore(tmp_path / "cut.rec"), MaskStore(tmp_path / "whole.rec")
    assert cut.keys == ref.keys and all(np.array_equal(cut[k], ref[k]) for k in ref.keys)
    with pytest.raises(InputError, match="other inputs"):  # a stale prediction is not mixed in
        (tmp_path / "x.rec.parts").mkdir()
        (tmp_path / "x.rec.parts" / "manifest.json").write_text('{"n_images": 3}')
        prediction.predict_store(parser_ckpt, folder, tmp_path / "x.rec", **kwargs)


def test_recognition_trains_on_a_predicted_store(rec, parser_ckpt, tmp_path, capsys):
    root, _ = rec
    store = tmp_path / "masks.rec"
    assert predict.main(["--checkpoint", str(parser_ckpt), "--images", str(root / "train.rec"),
                         "--store", str(store), "--workers", "0", "--device", "cpu"]) == 0
    args = ["--data", str(root), "--masks", str(store), "--aug", "fserasing", "--aug-p", "1",
            "--network", "tiny_cnn", "--import", "tests.recog_helpers", "--embedding-size",
            "16", "--workers", "1", "--batch-size", "8", "--epochs", "1", "--device", "cpu"]
    assert train_main([*args, "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["global_step"] == 3
    assert isinstance(open_mask_source(store), MaskStoreSource)
    capsys.readouterr()
    with MaskStoreWriter(tmp_path / "other.rec") as w:  # a store for another data set
        for key in range(1, 26):
            w.write(key, np.zeros((112, 112), np.uint8))
    assert train_main([*args, "--masks", str(tmp_path / "other.rec"),
                       "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'other.rec'}: mask '25' has no image in {root} (1 masks "
                   "without an image; a store made for other data?)"]


@pytest.mark.parametrize("extra, message", [
    ([], "give one of --out (label PNGs) and --store"),
    (["--store", "{tmp}/m.rec", "--out", "{tmp}/o"], "give one of --out"),
    (["--store", "{tmp}/m.rec", "--sheet", "{tmp}/s.png"], "--overlay and --sheet need --out"),
    (["--store", "{tmp}/m.rec", "--shard-size", "0"], "--shard-size: must be a positive integer"),
    (["--store", "{images}/m.rec"], "lies inside the --images input"),
])
def test_predict_store_flags(extra, message, folder, parser_ckpt, tmp_path, capsys):
    argv = ["--checkpoint", str(parser_ckpt), "--images", str(folder),
            *[a.format(tmp=tmp_path, images=folder) for a in extra]]
    assert predict.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
