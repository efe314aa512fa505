"""Every command against bad input: missing, empty and corrupt files, out-of-range and
nonsense values, outputs on top of inputs. Each must exit 2 with one ``error:`` line naming
the flag or file, and leave every input byte for byte as it was."""

import hashlib
import importlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from parsing.core.io import atomic_save, write_label_map, write_model
from parsing.parser.models import create_model
from parsing.synth import write_dataset
from recognition.backbones import create_backbone

MODULES = {  # python -m NAME -> the module whose main(argv) it runs
    "parsing.synth": "parsing.synth.__main__", "parsing.photos": "parsing.photos.__main__",
    "fserasing": "fserasing.demo", "cam.fscam": "cam.fscam.__main__",
    "cam.attributes": "cam.attributes.__main__",
}

CASES = [
    # parsing.synth
    ("parsing.synth", "--out {in}/synth --identities 1 --images-per-identity 1", "--out"),
    ("parsing.synth", "--out {out}/s --identities 0 --images-per-identity 1", "--identities"),
    ("parsing.synth", "--out {out}/s --identities x --images-per-identity 1", "--identities"),
    # parsing.train
    ("parsing.train", "--data synth:{in}/missing --out {out}/r", "--data"),
    ("parsing.train", "--data synth:{in}/synth --out {out}/r --batch-size 0", "--batch-size"),
    ("parsing.train", "--data synth:{in}/synth --out {out}/r --batch-size -2", "--batch-size"),
    ("parsing.train", "--data synth:{in}/synth --out {out}/r --lr nan", "--lr"),
    ("parsing.train", "--data synth:{in}/synth --out {out}/r --lr -1", "--lr"),
    ("parsing.train", "--data synth:{in}/synth --out {out}/r --epochs 0", "--epochs"),
    ("parsing.train", "--data synth:{in}/synth --out {out}/r --width 0", "--width"),
    ("parsing.train", "--data synth:{in}/synth --out {out}/r --size 7", "--size"),
    ("parsing.train", "--data synth:{in}/synth --out {out}/r --edge-loss -1", "--edge-loss"),
    ("parsing.train", "--data synth:{in}/synth --out {out}/r --distill-alpha 5",
     "--distill-alpha"),
    ("parsing.train", "--data synth:{in}/synth --out {out}/r --device bogus", "--device"),
    ("parsing.train", "--data synth:{in}/synth --out {out}/r --device cuda:7", "--device"),
    ("parsing.train", "--data synth:{in}/synth --out {out}/r --model smp_unet_r18 --width 16",
     "--model"),
    ("parsing.train", "--data synth:{in}/synth --out {in}/synth/run", "--out"),
    ("parsing.train", "--data synth:{in}/synth --out {out}/r --distill-from {in}/junk.pt",
     "junk.pt"),
    ("parsing.train", "--data synth:{in}/labels200 --out {out}/r --workers 0 --device cpu",
     "000000_seg.png"),
    ("parsing.train", "--data folder:{in}/folder_collide --out {out}/r", "face"),
    # parsing.evaluate
    ("parsing.evaluate", "--checkpoint {in}/junk.pt --data synth:{in}/synth --out {out}/e.json",
     "junk.pt"),
    ("parsing.evaluate", "--checkpoint {in}/parser.pt --data synth:{in}/synth "
     "--out {in}/parser.pt", "--out"),
    ("parsing.evaluate", "--checkpoint {in}/parser.pt --data synth:{in}/labels200 "
     "--out {out}/e.json --workers 0 --device cpu", "000000_seg.png"),
    ("parsing.evaluate", "--checkpoint {in}/parser.pt --data synth:{in}/synth --val-split 2",
     "--val-split"),
    # parsing.predict
    ("parsing.predict", "--checkpoint {in}/parser.pt --images {in}/synth/images "
     "--out {in}/synth/images", "--out"),
    ("parsing.predict", "--checkpoint {in}/parser.pt --images {in}/synth/images "
     "--out {in}/synth/images/masks", "--out"),
    ("parsing.predict", "--checkpoint {in}/parser.pt --images {in}/collide --out {out}/m",
     "face"),
    ("parsing.predict", "--checkpoint {in}/parser.pt --images {in}/empty --out {out}/m",
     "--images"),
    ("parsing.predict", "--checkpoint {in}/parser.pt --images {in}/synth/images --out {out}/m "
     "--batch-size 0", "--batch-size"),
    ("parsing.predict", "--checkpoint {in}/junk.pt --images {in}/synth/images --out {out}/m",
     "junk.pt"),
    ("parsing.predict", "--checkpoint {in}/parser.pt --images {in}/synth/images "
     "--out {in}/filled", "--out"),
    # parsing.export: parser checkpoints whose metadata do not fit
    ("parsing.export", "--checkpoint {in}/parser.pt --onnx {in}/parser.pt", "--onnx"),
    ("parsing.export", "--checkpoint {in}/kwargs_list.pt --onnx {out}/p.onnx", "kwargs_list.pt"),
    ("parsing.export", "--checkpoint {in}/kwargs_unknown.pt --onnx {out}/p.onnx",
     "kwargs_unknown.pt"),
    ("parsing.export", "--checkpoint {in}/wrong_classes.pt --onnx {out}/p.onnx",
     "wrong_classes.pt"),
    ("parsing.export", "--checkpoint {in}/wrong_width.pt --onnx {out}/p.onnx", "wrong_width.pt"),
    ("parsing.export", "--checkpoint {in}/tensor.pt --onnx {out}/p.onnx", "tensor.pt"),
    ("parsing.export", "--checkpoint {in}/int.pt --onnx {out}/p.onnx", "int.pt"),
    ("parsing.export", "--checkpoint {in}/parser.pt --onnx {out}/p.onnx --size 0", "--size"),
    # parsing.align
    ("parsing.align", "--images {in}/synth --out {in}/synth", "--out"),
    ("parsing.align", "--images {in}/synth/images --out {in}/synth "
     "--landmarks {in}/synth/landmarks.csv", "--out"),
    ("parsing.align", "--images {in}/synth/images --out {out}/a --size 0", "--size"),
    ("parsing.align", "--images {in}/synth/images --out {out}/a "
     "--landmarks {in}/nan_landmarks.csv", "nan_landmarks.csv"),
    ("parsing.align", "--images {in}/collide --out {out}/a --landmarks {in}/synth/landmarks.csv",
     "face"),
    # parsing.annotate
    ("parsing.annotate", "--images {in}/empty --out {out}/an", "--images"),
    ("parsing.annotate", "--images {in}/synth/images --out {in}/synth/images", "--out"),
    ("parsing.annotate", "--images {in}/synth/images --out {in}/synth", "labels_25"),
    ("parsing.annotate", "--images {in}/synth/images --out {out}/an --limit 0", "--limit"),
    # parsing.edit
    ("parsing.edit", "--image {in}/photo.png --labels {in}/photo_labels.png --out {out}/x.xyz",
     "--out"),
    ("parsing.edit", "--image {in}/photo.png --labels {in}/photo_labels.png "
     "--out {in}/photo.png", "--out"),
    ("parsing.edit", "--image {in}/photo.png --labels {in}/photo_labels.png --out {out}/e.png "
     "--strength 2", "--strength"),
    ("parsing.edit", "--image {in}/missing.png --labels {in}/photo_labels.png "
     "--out {out}/e.png", "missing.png"),
    ("parsing.edit", "--image {in}/photo.png --labels {in}/junk.pt --out {out}/e.png",
     "junk.pt"),
    # parsing.photos
    ("parsing.photos", "--out {in}/photos", "astronaut.png"),
    ("parsing.photos", "--out {in}/photo.png", "--out"),
    # fserasing
    ("fserasing", "--data {in}/synth --sheet {in}/synth/images/000000.png", "--sheet"),
    ("fserasing", "--data {in}/empty --sheet {out}/s.png", "empty"),
    ("fserasing", "--data {in}/synth --sheet {out}/s.png --faces 0", "--faces"),
    ("fserasing", "--data {in}/synth --sheet {out}/s.png --n-erase 3 1", "--n-erase"),
    ("fserasing", "--images {in}/collide --masks {in}/empty --sheet {out}/s.png", "face"),
    # recognition.train
    ("recognition.train", "--data {in}/synth --out {out}/r --lr -1", "--lr"),
    ("recognition.train", "--data {in}/synth --out {out}/r --device bogus", "--device"),
    ("recognition.train", "--data {in}/synth --out {out}/r --device cuda:7", "--device"),
    ("recognition.train", "--data {in}/synth --out {in}/synth", "--out"),
    ("recognition.train", "--data {in}/synth --out {out}/r --network-kwargs nope",
     "--network-kwargs"),
    ("recognition.train", "--data {in}/synth --out {out}/r --network mbf --workers 0 "
     "--batch-size 4 --network-kwargs {blocks0}", "blocks"),
    ("recognition.train", "--data {in}/synth --out {out}/r --partial-fc 2", "--partial-fc"),
    ("recognition.train", "--resume {in}/empty", "--resume"),
    # recognition.attributes.train / evaluate, cam.attributes
    ("recognition.attributes.train", "--data synth:{in}/missing --out {out}/r", "missing"),
    ("recognition.attributes.train", "--data {in}/synth --out {out}/r", "--data"),
    ("recognition.attributes.train", "--data synth:{in}/synth --out {in}/synth/run", "--out"),
    ("recognition.attributes.train", "--data synth:{in}/synth --out {out}/r "
     "--attention-kwargs nope", "--attention-kwargs"),
    ("recognition.attributes.train", "--data synth:{in}/synth --out {out}/r --image-size 0",
     "--image-size"),
    ("recognition.attributes.train", "--data synth:{in}/synth --out {out}/r --aug fserasing "
     "--masks {in}/empty --workers 0", "empty"),
    ("recognition.attributes.evaluate", "--model {in}/model.pt --data synth:{in}/synth "
     "--out {out}/e", "model.json"),
    ("recognition.attributes.evaluate", "--model {in}/model.pt --data synth:{in}/synth "
     "--out {in}/synth", "--out"),
    ("cam.attributes", "--model {in}/model.pt --data synth:{in}/synth --out {out}/x",
     "model.json"),
    ("cam.attributes", "--model {in}/model.pt --data celeba:{in}/synth --out {out}/x", "--masks"),
    # recognition.export
    ("recognition.export", "--checkpoint {in}/junk.pt --network mbf --onnx {out}/r.onnx",
     "junk.pt"),
    ("recognition.export", "--checkpoint {in}/model.pt --network mbf --onnx {in}/model.pt",
     "--onnx"),
    ("recognition.export", "--checkpoint {in}/model.pt --network mbf --onnx {out}/r.onnx "
     "--bogus-flag", "--bogus-flag"),
    # recognition.eval_ijbc
    ("recognition.eval_ijbc", "--data {in}/empty --out {out}/i --features {in}/junk.pt",
     "empty"),
    ("recognition.eval_ijbc", "--data {in}/ijbc --out {in}/ijbc/o --features {in}/junk.pt",
     "--out"),
    ("recognition.eval_ijbc", "--data {in}/ijbc --out {out}/i --features {in}/junk.pt",
     "junk.pt"),
    ("recognition.eval_ijbc", "--data {in}/ijbc --out {out}/i --features {in}/junk.pt "
     "--batch-size 0", "--batch-size"),
    ("recognition.eval_ijbc", "--data {in}/ijbc_probe_in_gallery --out {out}/i "
     "--features {in}/junk.pt", "1N_probe_mixed.csv"),
    ("recognition.eval_ijbc", "--data {in}/ijbc_nan --out {out}/i --features {in}/junk.pt",
     "name_5pts_score.txt"),
    # recognition.eval_verification
    ("recognition.eval_verification", "--checkpoint {in}/model.pt --bin {in}/junk.pt "
     "--out {out}/v", "junk.pt"),
    ("recognition.eval_verification", "--checkpoint {in}/model.pt --bin {in}/missing.bin "
     "--out {out}/v", "missing.bin"),
    ("recognition.eval_verification", "--checkpoint {in}/model.pt --bin {in}/junk.pt "
     "--out {in}/junk.pt", "--out"),
    # recognition.eval_occlusion
    ("recognition.eval_occlusion", "--checkpoint {in}/model.pt --data {in}/synth --out {out}/o "
     "--pairs 100000", "--pairs"),
    ("recognition.eval_occlusion", "--checkpoint {in}/model.pt --data {in}/synth --out {out}/o "
     "--batch-size 0", "--batch-size"),
    ("recognition.eval_occlusion", "--checkpoint {in}/model.pt --data {in}/synth "
     "--out {in}/synth/o --pairs 20", "--out"),
    ("recognition.eval_occlusion", "--checkpoint {in}/model.pt --data {in}/synth --out {out}/o "
     "--groups eyes,elbows --pairs 20", "elbows"),
    # recognition.make_ijbc_protocol / make_verification_bin / make_recordio
    ("recognition.make_ijbc_protocol", "--faces {in}/empty --out {out}/p", "empty"),
    ("recognition.make_ijbc_protocol", "--faces {in}/synth --out {in}/synth", "--out"),
    ("recognition.make_verification_bin", "--faces {in}/synth --out {out}/v.bin "
     "--pairs 10000000", "--pairs"),
    ("recognition.make_verification_bin", "--faces {in}/synth --out {in}/synth/landmarks.csv "
     "--pairs 20", "--out"),
    ("recognition.make_verification_bin", "--faces {in}/synth --out {out}/v.bin --pairs 0",
     "--pairs"),
    ("recognition.make_recordio", "--images {in}/empty --out {out}/rec", "empty"),
    ("recognition.make_recordio", "--images {in}/ids --out {in}/ids", "--out"),
    # cam.fscam
    ("cam.fscam", "--images {in}/synth/images --aligned --labels {in}/synth/labels_25 "
     "--model {in}/model.pt --out {in}/synth/images/x", "--out"),
    ("cam.fscam", "--image {in}/photo.png --aligned --labels {in}/photo_labels.png "
     "--model {in}/model.pt --out {out}/c --rise-masks 0", "--rise-masks"),
    ("cam.fscam", "--image {in}/photo.png --aligned --labels {in}/photo_labels.png "
     "--model {in}/model.pt --out {out}/c --device cuda:7", "--device"),
    ("cam.fscam", "--images {in}/collide --aligned --labels {in}/empty --model {in}/model.pt "
     "--out {out}/c", "face"),
    ("cam.fscam", "--image {in}/photo.png --aligned --labels {in}/photo_labels.png "
     "--model {in}/junk.pt --network mbf --out {out}/c", "junk.pt"),
]


def _parser_checkpoint(path, **changes):
    """``path`` (weights) and the JSON beside it, as parsing.train writes them, with
    ``changes`` to the JSON."""
    info = {"model_name": "unet_r18", "model_kwargs": {"width": 4}, "num_classes": 25,
            "label_set": "fse25", "image_size": 112}
    write_model(path, create_model("unet_r18", num_classes=25, width=4).state_dict(),
                {**info, **changes})


def _ijbc(root: Path, faces: Path) -> None:
    from recognition import make_ijbc_protocol

    assert make_ijbc_protocol.main(["--faces", str(faces), "--out", str(root)]) == 0


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("in")
    synth = write_dataset(root / "synth", 4, 3, seed=0, workers=1, progress=False)
    labels200 = write_dataset(root / "labels200", 2, 2, seed=1, workers=1, progress=False)
    bad = np.zeros((112, 112), np.uint8)
    bad[:10, :10] = 200
    write_label_map(labels200 / "labels_25" / "000000_seg.png", bad)
    (root / "empty").mkdir()
    (root / "collide").mkdir()
    face = Image.open(synth / "images" / "000000.png")
    face.save(root / "collide" / "face.png")
    face.save(root / "collide" / "face.jpg")
    (root / "folder_collide" / "images").mkdir(parents=True)
    face.save(root / "folder_collide" / "images" / "face.png")
    face.save(root / "folder_collide" / "images" / "face.jpg")
    face.save(root / "photo.png")
    write_label_map(root / "photo_labels.png",
                    np.array(Image.open(synth / "labels_25" / "000000_seg.png")))
    (root / "filled").mkdir()
    (root / "filled" / "notes.txt").write_text("someone's files")
    (root / "photos").mkdir()
    face.save(root / "photos" / "astronaut.png")
    (root / "ids" / "a").mkdir(parents=True)
    face.save(root / "ids" / "a" / "0.png")
    (root / "junk.pt").write_bytes(b"not a checkpoint")
    _parser_checkpoint(root / "parser.pt")
    _parser_checkpoint(root / "kwargs_list.pt", model_kwargs=["width", 4])
    _parser_checkpoint(root / "kwargs_unknown.pt", model_kwargs={"width": 4, "depth": 3})
    _parser_checkpoint(root / "wrong_classes.pt", num_classes=19)
    _parser_checkpoint(root / "wrong_width.pt", model_kwargs={"width": 8})
    atomic_save(torch.zeros(3), root / "tensor.pt")
    atomic_save(7, root / "int.pt")
    atomic_save(create_backbone("mbf", num_features=16).state_dict(), root / "model.pt")
    (root / "model.json").write_text(json.dumps({"network": "mbf", "embedding_size": 16}))
    rows = [line.split(",") for line in (synth / "landmarks.csv").read_text().splitlines()]
    rows[1][3] = "nan"
    (root / "nan_landmarks.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    for name in ("ijbc", "ijbc_probe_in_gallery", "ijbc_nan"):
        _ijbc(root / name, synth)
    meta = root / "ijbc_probe_in_gallery" / "meta"
    gallery = (meta / "ijbc_1N_gallery_G1.csv").read_text().splitlines()
    with open(meta / "ijbc_1N_probe_mixed.csv", "a") as f:
        f.write(gallery[1] + "\n")
    points = root / "ijbc_nan" / "meta" / "ijbc_name_5pts_score.txt"
    lines = points.read_text().splitlines()
    lines[0] = " ".join([lines[0].split()[0], "nan", *lines[0].split()[2:]])
    points.write_text("\n".join(lines) + "\n")
    return root


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command,argv,named", CASES,
                         ids=[f"{c[0]}:{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_exit_2_and_inputs_untouched(command, argv, named, inputs,
                                                          tmp_path, capsys):
    main = importlib.import_module(MODULES.get(command, command)).main
    before = _hashes(inputs)
    args = [a.format(**{"in": inputs, "out": tmp_path, "blocks0": '{"blocks":[0,0,0,0]}'})
            for a in argv.split()]
    rc = main(args)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2, err[-2000:]
    assert len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert named in errors[0], errors[0]
    assert _hashes(inputs) == before, "an input file changed"


class _Payload:
    def __reduce__(self):  # loading would call print: code from the file
        return (print, ("ran code from a checkpoint",))


def _library_cases():
    from cam import GradCAM
    from fserasing import BatchFSErasing, MaskedImageFolder
    from parsing.core.io import load_checkpoint
    from recognition.losses import CombinedMarginLoss, PartialFC

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())

    def pickled_object(tmp):
        torch.save({"weights": _Payload()}, tmp / "obj.pt")
        return load_checkpoint(tmp / "obj.pt")

    def mask_fn_none(tmp):
        (tmp / "faces" / "a").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp / "faces" / "a" / "0.png")
        return MaskedImageFolder(tmp / "faces", masks=lambda path: None)[0]

    return [
        (lambda tmp: BatchFSErasing(p=1.0)(torch.zeros(0, 3, 8, 8),
                                           torch.zeros(0, 8, 8, dtype=torch.uint8)),
         "empty batch"),
        (mask_fn_none, "returned NoneType"),
        (lambda tmp: CombinedMarginLoss()(torch.zeros(2, 3), torch.tensor([0, 3])),
         "labels must be in [-1, 3)"),
        (lambda tmp: PartialFC(CombinedMarginLoss(), 4, 3)(torch.randn(2, 4),
                                                           torch.tensor([0.0, 1.5])),
         "labels must be integer"),
        (lambda tmp: GradCAM(net, ""), "target_layer is empty"),
        (lambda tmp: create_backbone("mbf", bogus=1), "bogus"),
        (pickled_object, "could run code"),
    ]


@pytest.mark.parametrize("case", range(7))
def test_library_misuse_raises_input_errors_naming_the_argument(case, tmp_path):
    from parsing.core.errors import InputError

    call, message = _library_cases()[case]
    with pytest.raises(InputError, match=re.escape(message)):
        call(tmp_path)


def test_similarity_target_broadcasts_a_one_row_reference():
    from cam.targets import SimilarityTarget

    outputs, reference = torch.randn(3, 8), torch.randn(1, 8)  # what backbone(image) returns
    scores = SimilarityTarget(reference).bind(outputs)(outputs)
    torch.testing.assert_close(scores, torch.nn.functional.cosine_similarity(
        outputs, reference.expand(3, 8), dim=1))
