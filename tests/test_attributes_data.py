"""Readers of CelebA, RAF-DB and AffectNet on small files in their exact published formats,
and the synthetic set's exact attribute labels."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from parsing.core.errors import DataError, InputError
from parsing.core.io import write_image, write_label_map
from parsing.synth import write_dataset
from parsing.synth.attributes import ATTRIBUTES, face_attributes
from parsing.synth.dataset import render_index
from parsing.synth.genes import DEFAULT_BOUND, bound_groups, face_genes
from recognition.attributes.data import open_attribute_dataset
from recognition.data.datasets import collate_faces, decode_face

CELEBA_NAMES = [
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young"
]


def _image(path: Path, width: int, height: int, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    write_image(path, rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _celeba(root: Path, rows: list[tuple[str, list[int]]], parts: dict[str, int],
            extra_line: str | None = None) -> Path:
    (root / "Anno").mkdir(parents=True)
    (root / "Eval").mkdir()
    lines = [str(len(rows) + (extra_line is not None)), " ".join(CELEBA_NAMES) + " "]
    lines += [f"{name} " + " ".join(f"{v:2d}" for v in values) for name, values in rows]
    if extra_line is not None:
        lines.append(extra_line)
    (root / "Anno" / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "Eval" / "list_eval_partition.txt").write_text(
        "".join(f"{name} {p}\n" for name, p in parts.items()))
    for i, (name, _) in enumerate(rows):
        _image(root / "Img" / "img_align_celeba" / name, 178, 218, i)
    return root


def _values(seed: int) -> list[int]:
    return (np.random.default_rng(seed).integers(0, 2, 40) * 2 - 1).tolist()


def test_celeba_reads_published_layout(tmp_path):
    rows = [(f"{i:06d}.jpg", _values(i)) for i in range(1, 6)]
    parts = dict(zip([n for n, _ in rows], [0, 0, 1, 2, 0], strict=True))
    root = _celeba(tmp_path / "celeba", rows, parts)
    train = open_attribute_dataset(f"celeba:{root}", "train", size=32)
    assert train.keys == ["000001.jpg", "000002.jpg", "000005.jpg"]
    assert train.attribute_names == CELEBA_NAMES
    sample = train[1]
    assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.uint8
    assert sample["attributes"].tolist() == [(v + 1) / 2 for v in rows[1][1]]
    assert "expression" not in sample
    assert len(open_attribute_dataset(f"celeba:{root}", "test", size=32)) == 1
    assert len(open_attribute_dataset(f"celeba:{root}", "all", size=32)) == 5


@pytest.mark.parametrize("line, problem", [
    ("000009.jpg " + " ".join(["1"] * 39), "39 values, expected 40"),
    ("000009.jpg " + " ".join(["1"] * 39 + ["0"]), "values must be -1 or 1"),
])
def test_celeba_bad_row_names_file_and_line(tmp_path, line, problem):
    rows = [(f"{i:06d}.jpg", _values(i)) for i in range(1, 3)]
    parts = {n: 0 for n, _ in rows} | {"000009.jpg": 0}
    root = _celeba(tmp_path / "celeba", rows, parts, extra_line=line)
    with pytest.raises(DataError, match=r"list_attr_celeba.txt, line 5: " + problem):
        open_attribute_dataset(f"celeba:{root}")
    ds = open_attribute_dataset(f"celeba:{root}", skip_bad=True)
    assert ds.bad_rows == 1 and len(ds) == 2


def test_celeba_count_line_and_missing_image(tmp_path):
    rows = [(f"{i:06d}.jpg", _values(i)) for i in range(1, 4)]
    root = _celeba(tmp_path / "celeba", rows, {n: 0 for n, _ in rows})
    path = root / "Anno" / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(["7", *lines[1:]]) + "\n")
    with pytest.raises(DataError, match="line 1: says 7 images, the file lists 3"):
        open_attribute_dataset(f"celeba:{root}")
    path.write_text("\n".join(lines) + "\n")
    (root / "Img" / "img_align_celeba" / "000002.jpg").unlink()
    ds = open_attribute_dataset(f"celeba:{root}")
    with pytest.raises(DataError, match="000002.jpg: unreadable image"):
        ds[1]
    ds = open_attribute_dataset(f"celeba:{root}", skip_bad=True)
    batch = collate_faces([ds[i] for i in range(3)])
    assert batch["skipped"] == 1 and batch["attributes"].shape == (3, 40)


def _rafdb(root: Path, lines: list[str]) -> Path:
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    for i, line in enumerate(lines):
        name = line.split()[0].removesuffix(".jpg")
        _image(root / "Image" / "aligned" / f"{name}_aligned.jpg", 100, 100, i)
    return root


def test_rafdb_basic(tmp_path):
    root = _rafdb(tmp_path / "basic", ["train_00001.jpg 5", "train_00002.jpg 1",
                                       "test_0001.jpg 7"])
    train = open_attribute_dataset(f"rafdb:{root}", "train", size=112)
    assert train.keys == ["train_00001_aligned.jpg", "train_00002_aligned.jpg"]
    assert train.expressions.tolist() == [4, 0]  # 1-based labels
    assert train.expression_names[4] == "sadness" and train.expression_names[0] == "surprise"
    sample = train[0]
    assert sample["image"].shape == (3, 112, 112) and sample["expression"] == 4
    assert open_attribute_dataset(f"rafdb:{root}", "test").expressions.tolist() == [6]
    with pytest.raises(InputError, match="no validation split"):
        open_attribute_dataset(f"rafdb:{root}", "val")


def test_rafdb_unknown_expression(tmp_path):
    root = _rafdb(tmp_path / "basic", ["train_00001.jpg 5", "train_00002.jpg 8"])
    with pytest.raises(DataError, match=r"list_patition_label.txt, line 2: expression '8' is "
                                        "not 1-7"):
        open_attribute_dataset(f"rafdb:{root}")
    ds = open_attribute_dataset(f"rafdb:{root}", skip_bad=True)
    assert ds.bad_rows == 1 and len(ds) == 1


AFFECTNET_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,"
                    "facial_landmarks,expression,valence,arousal")


def _affectnet(root: Path, rows: list[str]) -> Path:
    root.mkdir(parents=True)
    (root / "training.csv").write_text("\n".join([AFFECTNET_HEADER, *rows]) + "\n")
    (root / "validation.csv").write_text(AFFECTNET_HEADER + "\n" + rows[0] + "\n")
    for i, row in enumerate(rows):
        _image(root / "Manually_Annotated_Images" / row.split(",")[0], 200, 160, i)
    return root


def test_affectnet_crops_faces_and_skips_non_face(tmp_path):
    lm = "1.0;2.0;3.0;4.0"
    rows = [f"689/a.jpg,40,20,100,120,{lm},3,0.1,0.2",
            f"689/b.jpg,0,0,160,160,{lm},9,-2,-2",
            f"12/c.JPG,10,10,50,50,{lm},7,0.3,0.1"]
    root = _affectnet(tmp_path / "affectnet", rows)
    ds = open_attribute_dataset(f"affectnet:{root}", "train", size=64)
    assert ds.keys == ["689/a.jpg", "12/c.JPG"] and ds.non_face == 1
    assert ds.expressions.tolist() == [3, 7] and ds.expression_names[7] == "contempt"
    image = ds[0]["image"]
    assert image.shape == (3, 64, 64)
    # the 100x120 box is cut to its centred 100x100 square: the same pixels, resized
    full = decode_face((root / "Manually_Annotated_Images/689/a.jpg").read_bytes(), "a", None)
    expected = TF.resized_crop(full, 30, 40, 100, 100, [64, 64], antialias=True)
    assert torch.equal(image, expected)
    assert len(open_attribute_dataset(f"affectnet:{root}", "val", size=64)) == 1


def test_affectnet_bad_rows(tmp_path):
    lm = "1.0;2.0"
    root = _affectnet(tmp_path / "affectnet", [f"1/a.jpg,0,0,50,50,{lm},1,0,0",
                                                f"1/b.jpg,0,0,50,50,{lm},12,0,0",
                                                f"1/c.jpg,zero,0,50,50,{lm},1,0,0"])
    with pytest.raises(DataError, match=r"training.csv, line 3: expression 12 is not 0-10"):
        open_attribute_dataset(f"affectnet:{root}")
    ds = open_attribute_dataset(f"affectnet:{root}", skip_bad=True)
    assert ds.bad_rows == 2 and ds.keys == ["1/a.jpg"]


def test_unknown_kind_and_bad_spec(tmp_path):
    with pytest.raises(InputError, match="unknown attribute data set 'celebb'"):
        open_attribute_dataset(f"celebb:{tmp_path}")
    with pytest.raises(InputError, match="expected KIND:PATH"):
        open_attribute_dataset(str(tmp_path))


def test_synth_labels_match_what_is_drawn():
    """Eyeglasses, hats and open mouths are exactly the faces whose label maps have glasses
    (23), headwear (24) and mouth interior (17), with and without marked regions."""
    for bound, marks in ((DEFAULT_BOUND, False), (bound_groups(["eyes", "hair"]), True)):
        for i in range(40):
            genes, nuisance = face_genes(11, i // 4, i, bound, marks)
            attrs, expression = face_attributes(genes, nuisance)
            present = set(np.unique(render_index(11, i, 4, bound=bound, marks=marks)
                                    .label_map).tolist())
            assert attrs["Eyeglasses"] == (23 in present)
            assert attrs["Wearing_Hat"] == (24 in present)
            assert attrs["Mouth_Slightly_Open"] == (17 in present)
            assert attrs["Smiling"] == (expression == 1)
            if marks:
                assert not attrs["Eyeglasses"] and not attrs["Wearing_Hat"]


def test_synth_set_reads_as_celeba(tmp_path):
    root = write_dataset(tmp_path / "synth", 5, 2, seed=3, size=64, workers=1, progress=False,
                         occluders=["sunglasses"], occluder_p=1.0)
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    assert lines[0] == "10" and lines[1].split() == list(ATTRIBUTES)
    ds = open_attribute_dataset(f"synth:{root}", "all", masks="labels", size=64)
    assert len(ds) == 10 and ds.expression_names == ["neutral", "happiness", "surprise"]
    # a sunglasses occluder makes every face Eyeglasses
    assert ds.attributes[:, ATTRIBUTES.index("Eyeglasses")].all()
    sample = ds[0]
    assert sample["mask"].shape == (64, 64) and sample["image"].shape == (3, 64, 64)
    splits = [len(open_attribute_dataset(f"synth:{root}", s, size=64))
              for s in ("train", "val", "test")]
    assert splits == [6, 2, 2]  # identity-disjoint 60/20/20
    write_label_map(root / "labels_25" / "000000_seg.png", np.full((64, 64), 40, np.uint8))
    with pytest.raises(DataError, match="000000_seg.png"):
        open_attribute_dataset(f"synth:{root}", "all", masks="labels", size=64)[0]
