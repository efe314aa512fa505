import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from parsing.core.errors import InputError
from parsing.core.training import EpochSampler, PolyWarmup
from parsing.synth import write_dataset
from recognition.backbones import create_backbone
from recognition.train import main
from recognition.training.config import load_config
from recognition.training.trainer import init_class_centres

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--import", "tests.recog_helpers", "--embedding-size", "16", "--workers", "0",
        "--log-every", "1"]


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("faces"), 6, 4, seed=0, workers=1,
                         progress=False)


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _train(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "recognition.train", *args], cwd=ROOT,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def _assert_state_equal(a, b, path=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_state_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_state_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a} != {b}"


def test_config_uses_insightface_names(tmp_path, caplog):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("network: r50\nmargin_list: [1.0, 0.0, 0.4]\nloss: cosface\n"
                        "sample_rate: 0.3\nbatch_size: 64\nnum_epoch: 4\nwarmup_epoch: 1\n"
                        "dali: false\nusing_wandb: false\nrec: /data/x\n")
    cfg = load_config(cfg_file, batch_size=32, lr=None)
    assert (cfg.network, cfg.margins, cfg.sample_rate) == ("r50", (1.0, 0.0, 0.4), 0.3)
    assert cfg.batch_size == 32 and cfg.lr == 0.1 and cfg.num_epoch == 4
    assert "ignoring insightface field 'dali'" in caplog.text
    cfg_file.write_text("netwrok: r50\n")
    with pytest.raises(InputError, match="unknown config field.*netwrok"):
        load_config(cfg_file)
    with pytest.raises(InputError, match="not ArcFace"):
        load_config(loss="arcface", margin_list=[1.0, 0.0, 0.4])
    with pytest.raises(InputError, match="needs margin_list"):
        load_config(loss="combined")
    assert load_config(loss="combined", margin_list=[1.0, 0.3, 0.2]).margins == (1.0, 0.3, 0.2)
    assert load_config(loss="cosface").margins == (1.0, 0.0, 0.4)
    cfg_file.write_text("weight_decay: 5e-4\nlr: fast\n")  # YAML 1.1 reads 5e-4 as a string
    with pytest.raises(InputError, match="lr: expected a number, got 'fast'"):
        load_config(cfg_file)
    assert load_config(cfg_file, lr=0.2).weight_decay == 5e-4
    shipped = load_config(ROOT / "configs" / "ms1mv2_r34_fse.yaml")
    assert shipped.network == "r34" and shipped.aug == "fserasing" and shipped.fp16


def test_poly_schedule_matches_insightface():
    f = PolyWarmup(total_steps=100, warmup_steps=10)
    assert f(0) == 0.0 and f(5) == 0.5
    assert f(10) == 1.0 and abs(f(55) - (1 - 45 / 90) ** 2) < 1e-12 and f(100) == 0.0


def test_sample_order_is_a_function_of_seed_and_epoch(faces):
    from recognition.data.datasets import open_dataset

    ds = open_dataset(faces)
    a, b = EpochSampler(ds, 1, 0, seed=5), EpochSampler(ds, 1, 0, seed=5)
    a.set_position(3, 0)
    b.set_position(3, 10)
    order = list(a)
    assert sorted(order) == list(range(len(ds))) and list(b) == order[10:]
    a.set_position(4, 0)
    assert list(a) != order
    halves = [EpochSampler(ds, 2, r, seed=5) for r in range(2)]
    for h in halves:
        h.set_position(3, 0)
    assert sorted(list(halves[0]) + list(halves[1])) == sorted(order)


def test_class_centres_do_not_depend_on_world_size():
    def shard(start, n, total=10_000):
        w = torch.nn.Parameter(torch.zeros(n, 8))
        head = SimpleNamespace(class_start=start, num_local=n, num_classes=total,
                               embedding_size=8, weight=w)
        init_class_centres(head, seed=3)
        return w.detach()

    full = shard(0, 10_000)
    assert torch.equal(torch.cat([shard(0, 3334), shard(3334, 3333), shard(6667, 3333)]), full)
    assert abs(float(full.std()) - 0.01) < 1e-3


def test_cli_errors(tmp_path, faces, capsys):
    assert main(["--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "no such dataset" in capsys.readouterr().err
    folder = tmp_path / "folder" / "a"
    folder.mkdir(parents=True)
    assert main(["--data", str(folder.parent), "--aug", "fserasing", *TINY]) == 2
    assert "--aug fserasing needs --masks" in capsys.readouterr().err
    assert main(["--data", str(faces), "--margins", "1,2", "--loss", "combined"]) == 2
    assert "three values" in capsys.readouterr().err
    assert main(["--data", str(faces), "--network", "nope", "--batch-size", "4", *TINY]) == 2
    assert "unknown backbone 'nope'" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_exact(tmp_path, faces):
    args = ["--data", str(faces), "--network", "tiny_cnn", *TINY, "--batch-size", "4",
            "--epochs", "4", "--warmup-epochs", "1", "--aug", "fserasing", "--aug-p", "1",
            "--partial-fc", "0.5", "--deterministic", "--seed", "3", "--save-every-steps", "1",
            "--log-every", "5"]
    full = _train([*args, "--out", str(tmp_path / "full")])
    victim = _train([*args, "--out", str(tmp_path / "cut")])
    ckpt = tmp_path / "cut" / "checkpoint.pt"
    step, deadline = 0, time.time() + 120
    while step < 3 and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
        if ckpt.is_file():
            step = torch.load(ckpt, weights_only=True)["global_step"]
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = torch.load(ckpt, weights_only=True)["global_step"]
    assert 3 <= killed_at < 24
    # resume with a loader worker: where samples are decoded must not matter
    resumed = _train(["--resume", str(tmp_path / "cut"), "--workers", "1",
                      "--import", "tests.recog_helpers"])
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    assert f"resumed {ckpt} at" in err
    assert full.wait(timeout=300) == 0
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(ckpt, weights_only=True)
    assert a["global_step"] == b["global_step"] == 24
    for key in ("backbone", "ranks", "scheduler", "epoch", "step_in_epoch"):
        _assert_state_equal(a[key], b[key], key)
    _assert_state_equal(torch.load(tmp_path / "full" / "model.pt", weights_only=True),
                        torch.load(tmp_path / "cut" / "model.pt", weights_only=True))
    assert json.loads(out.strip().splitlines()[-1])["global_step"] == 24
    # the loss rows too: a resume inside a 5-step log interval averages the whole interval
    rows = [[{k: r[k] for k in ("step", "epoch", "loss", "lr", "skipped") if k in r}
             for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
            for run in (tmp_path / "full", tmp_path / "cut")]
    assert len(rows[0]) == 4 * 2  # 6 steps per epoch: logged at steps 5 and 6 of each
    assert rows[0] == rows[1]
    assert not list((tmp_path / "cut").glob(".checkpoint.pt.*"))


def test_resume_refuses_other_data_and_unconfirmed_imports(tmp_path, faces, capsys):
    data = tmp_path / "faces"
    shutil.copytree(faces, data)
    out = tmp_path / "run"
    assert main(["--data", str(data), "--network", "tiny_cnn", *TINY, "--batch-size", "8",
                 "--epochs", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    cfg = (out / "config.yaml").read_text().replace("num_epoch: 2", "num_epoch: 3")
    (out / "config.yaml").write_text(cfg)
    # a run folder names modules to import: they run code, so the user must repeat them
    assert main(["--resume", str(out)]) == 2
    assert "repeat --import tests.recog_helpers" in capsys.readouterr().err
    resume = ["--resume", str(out), "--import", "tests.recog_helpers"]
    (data / "images" / "000000.png").write_bytes((data / "images" / "000001.png").read_bytes())
    ids = (data / "identities.csv").read_text().splitlines()
    (data / "identities.csv").write_text("\n".join([ids[0], "0,5", *ids[2:]]) + "\n")
    assert main(resume) == 2  # same identities, another file list
    err = capsys.readouterr().err.strip()
    assert "trained on other data" in err and "--allow-data-change" in err and "\n" not in err
    (data / "identities.csv").write_text("\n".join([ids[0], "0,7", *ids[2:]]) + "\n")
    assert main([*resume, "--allow-data-change"]) == 2  # 7 identities: the head cannot follow
    assert "trained on 6 identities" in capsys.readouterr().err
    (data / "identities.csv").write_text("\n".join([ids[0], "0,5", *ids[2:]]) + "\n")
    assert main([*resume, "--allow-data-change"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["global_step"] == 9


def test_bad_values_are_one_line_errors(tmp_path, faces, capsys):
    base = ["--data", str(faces), "--network", "tiny_cnn", *TINY, "--out", str(tmp_path / "r")]
    for extra, message in [(["--lr", "-1"], "argument --lr: must be a positive number"),
                           (["--lr", "nan"], "argument --lr: must be a finite number"),
                           (["--device", "bogus"], "argument --device: 'bogus' is not a device"),
                           (["--batch-size", "0"], "must be a positive integer")]:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: -0.5\n")
    assert main([*base, "--config", str(cfg)]) == 2
    assert "lr must be a positive number" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*base, "--device", "cuda"]) == 2
        assert "no CUDA GPU is visible" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_two_process_gloo_matches_one_process(tmp_path, faces):
    """DDP on 2 CPU processes (gloo) = 1 process with the same global batch.

    Comparable: a BatchNorm-free backbone (BN would normalise each process's half batch),
    no random flips or erasing (their draws are per process), sample_rate 1. Sums are
    reduced in a different order, so weights agree to float rounding, not bit for bit.
    """
    common = ["--data", str(faces), "--network", "tiny_nobn", *TINY, "--epochs", "1",
              "--aug", "none", "--no-flip", "--seed", "1", "--lr", "0.5", "--device", "cpu"]
    two = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "recognition.train", *common, "--batch-size", "4", "--out",
         str(tmp_path / "two")],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert main([*common, "--batch-size", "8", "--out", str(tmp_path / "one")]) == 0
    _, err = two.communicate(timeout=300)
    assert two.returncode == 0, err[-3000:]
    a = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 3 and b["world_size"] == 2
    torch.manual_seed(1)  # the run's initial weights: training moved them far beyond tolerance
    init = create_backbone("tiny_nobn", num_features=16).state_dict()
    assert max(float((v - a["backbone"][k]).abs().max()) for k, v in init.items()) > 1e-2
    for k, v in a["backbone"].items():
        torch.testing.assert_close(b["backbone"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    centres = torch.cat([r["head"]["weight"] for r in b["ranks"]])
    torch.testing.assert_close(centres, a["ranks"][0]["head"]["weight"], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_fserasing_with_masks_from_a_parser_checkpoint(tmp_path, faces):
    from parsing.parser.inference import save_parser
    from parsing.parser.models import create_model

    model = create_model("unet_r18", num_classes=25, width=8)  # untrained: any label map will do
    save_parser(tmp_path / "parser", model, "unet_r18", {"width": 8})
    out = tmp_path / "run"
    assert main(["--data", str(faces), "--network", "tiny_cnn", *TINY, "--batch-size", "8",
                 "--epochs", "1", "--aug", "fserasing", "--aug-p", "1",
                 "--masks", f"parser:{tmp_path / 'parser'}", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["global_step"] == 3
    assert (out / "model.pt").is_file()
    assert json.loads((out / "model.json").read_text())["imports"] == ["tests.recog_helpers"]


def test_skip_bad_counts_unreadable_images(tmp_path, faces, capsys):
    data = tmp_path / "faces"
    shutil.copytree(faces, data)
    (data / "images" / "000005.png").write_bytes(b"broken")
    args = ["--data", str(data), "--network", "tiny_cnn", *TINY, "--batch-size", "8",
            "--epochs", "1", "--out", str(tmp_path / "run")]
    assert main(args) == 2
    assert "000005.png: not a readable image" in capsys.readouterr().err
    assert main([*args, "--skip-bad"]) == 2  # the failed run left its files
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--skip-bad", "--overwrite"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped"] == 1 and summary["global_step"] == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_cuda_without_an_index_and_a_cpu_run_resumed_in_float16(tmp_path, faces):
    args = ["--data", str(faces), "--network", "tiny_cnn", *TINY, "--batch-size", "8",
            "--epochs", "1", "--aug", "fserasing", "--aug-p", "1"]
    # "--device cuda" is the process's GPU (cuda:LOCAL_RANK)
    assert main([*args, "--device", "cuda", "--fp16", "--channels-last",
                 "--out", str(tmp_path / "gpu")]) == 0
    gpu = torch.load(tmp_path / "gpu" / "checkpoint.pt", weights_only=True)
    assert gpu["global_step"] == 3 and gpu["scaler"]["scale"] > 0
    # a run saved without float16 AMP has an empty GradScaler state
    assert main([*args, "--device", "cpu", "--out", str(tmp_path / "cpu")]) == 0
    assert not torch.load(tmp_path / "cpu" / "checkpoint.pt", weights_only=True)["scaler"]
    assert main(["--resume", str(tmp_path / "cpu"), "--device", "cuda", "--fp16"]) == 0


@pytest.mark.parametrize("extra", [
    ["--aug", "cutout", "--aug-options", '{"size": 20}', "--optimizer", "adamw", "--lr",
     "0.001", "--loss", "cosface"],
    ["--aug", "random-erasing", "--aug-p", "1", "--loss", "combined", "--margins", "1,0.3,0.2",
     "--partial-fc", "0.5", "--channels-last", "--fp16"],
])
def test_other_augmentations_losses_and_optimizers_train(tmp_path, faces, extra):
    out = tmp_path / "run"
    assert main(["--data", str(faces), "--network", "tiny_cnn", *TINY, "--batch-size", "8",
                 "--epochs", "1", *extra, "--out", str(out)]) == 0
    cfg = (out / "config.yaml").read_text()
    assert f"aug: {extra[1]}" in cfg
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["step"] == 3 and row["loss"] > 0
