"""benchmarks.study_parsing: occlusion measures on known predictions, and a tiny end-to-end run."""

import json

import pytest
import torch

from benchmarks import study_parsing
from parsing.core.labels import get_label_set
from parsing.parser.data import SynthParsing, eval_transform
from parsing.synth import write_dataset


class _Replay:
    """A stand-in parser returning ``fn(true labels)`` for the samples of ``ds`` in order."""

    def __init__(self, ds, fn):
        self.label_set, self.device = get_label_set("fse25"), torch.device("cpu")
        self.ds, self.fn, self.next = ds, fn, 0

    def __call__(self, images):
        maps = [self.ds[i]["mask"] for i in range(self.next, self.next + len(images))]
        self.next += len(images)
        return self.fn(torch.stack(maps)).to(torch.uint8)


@pytest.fixture(scope="module")
def occluded(tmp_path_factory):
    root = write_dataset(tmp_path_factory.mktemp("occ") / "faces", 2, 4, seed=3, workers=1,
                         progress=False, occluders=study_parsing.OCCLUDERS, occluder_p=1.0)
    return SynthParsing(root, transform=eval_transform())


def test_oracle_labels_every_occluder_pixel_as_its_true_class(occluded):
    s = study_parsing.occlusion_scores(_Replay(occluded, lambda t: t), occluded)
    assert s["occluded_visible_f1"] == 1.0
    seen = [k for k, v in s["occluders"].items() if v["pixels"]]
    assert seen  # 8 faces, one occluder each
    for kind in seen:
        v = s["occluders"][kind]
        assert (v["as_true_class"], v["as_background"], v["as_other"], v["mean_f1"]) == \
            (1.0, 0.0, 0.0, 1.0)


def test_background_everywhere_counts_occluder_pixels_as_background(occluded):
    s = study_parsing.occlusion_scores(_Replay(occluded, torch.zeros_like), occluded)
    for kind, v in s["occluders"].items():
        if not v["pixels"]:
            continue
        occ = torch.stack([occluded.faces.occluder_mask(i) for i in range(len(occluded))])
        labels = torch.stack([occluded[i]["mask"] for i in range(len(occluded))])
        under = labels[occ == study_parsing.OCCLUDERS.index(kind) + 1]
        assert v["as_true_class"] == pytest.approx(float((under == 0).float().mean()))
        assert v["as_background"] == pytest.approx(float((under != 0).float().mean()))
        assert v["as_other"] == 0.0


@pytest.mark.slow
def test_tiny_study_end_to_end(tmp_path):
    out = tmp_path / "study"
    argv = ["--out", str(out), "--identities", "2", "--images-per-identity", "3",
            "--test-identities", "2", "--epochs", "1", "--batch-size", "3", "--seeds", "1",
            "--arms", "unet_r18_w16,+sd,smp_unet_r18", "--repeats", "1", "--jobs", "1",
            "--no-photos"]
    assert study_parsing.main(argv) == 0
    report = json.loads((out / "study.json").read_text())
    assert list(report["arms"]) == ["unet_r18_w16", "+sd", "smp_unet_r18"]
    assert report["teacher"] == "unet_r18_w16"
    ev = report["arms"]["smp_unet_r18"]["seeds"]["0"]["eval"]
    assert 0 <= ev["boundary_f1_1px"] <= ev["boundary_f1_2px"] <= 1
    assert report["arms"]["+sd"]["cost"] == report["arms"]["unet_r18_w16"]["cost"]
    assert "arm" in report["recommended"]  # which one depends on timing
    assert (out / "study.png").stat().st_size > 0 and "| `+sd` |" in (out / "study.md").read_text()
    assert study_parsing.main([*argv, "--arms", "nope"]) == 2
