"""Verification .bin loading (restricted unpickler), decoding and 10-fold accuracy."""

import io
import json
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from parsing.core.errors import DataError, InputError
from recognition.evaluation.embedding import embed, embed_batches, image_batches
from recognition.evaluation.verification import (
    THRESHOLDS,
    decode_images,
    load_bin,
    sample_pairs,
    verification_accuracy,
    write_bin,
)


class _Py2Pickler(pickle._Pickler):
    """Writes what Python 2's pickle (protocol 2) wrote for insightface's .bin files: bytes as
    py2 ``str`` (BINSTRING opcodes) and numpy under its old module path ``numpy.core``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "")
        if module.startswith("numpy._core"):
            name = name or obj.__qualname__
            module = module.replace("numpy._core", "numpy.core")
            self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)

    dispatch[type(len)] = save_global


def py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def _encoded_faces(n, size=112, fmt="JPEG", seed=0):
    rng = np.random.default_rng(seed)
    blobs = []
    for _ in range(n):
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format=fmt)
        blobs.append(buf.getvalue())
    return blobs


@pytest.mark.parametrize("issame_kind", ["list", "array"])
def test_load_python2_bin(tmp_path, issame_kind):
    blobs = _encoded_faces(6)
    issame = [True, False, True]
    obj = (blobs, issame if issame_kind == "list" else np.array(issame))
    data = py2_pickle(obj)
    assert b"numpy.core.multiarray\n_reconstruct" in data or issame_kind == "list"
    assert b"_codecs" not in data  # py2 str opcodes, not Python 3's bytes encoding
    path = tmp_path / "lfw.bin"
    path.write_bytes(data)
    images, labels = load_bin(path)
    assert images == blobs
    np.testing.assert_array_equal(labels, issame)
    assert labels.dtype == np.bool_


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_load_python3_bin(tmp_path, protocol):
    blobs = _encoded_faces(4, fmt="PNG")
    path = tmp_path / "cfp_fp.bin"
    for issame in ([True, False], np.array([False, True]),
                   [np.bool_(True), np.bool_(False)]):
        path.write_bytes(pickle.dumps((blobs, issame), protocol=protocol))
        images, labels = load_bin(path)
        assert images == blobs
        np.testing.assert_array_equal(labels, np.asarray(issame, dtype=bool))


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Evals:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w')",)


@pytest.mark.parametrize("payload", [_RunsCode, _Evals])
def test_bin_that_runs_code_is_refused_and_does_not_run(tmp_path, payload):
    marker = tmp_path / "marker"
    path = tmp_path / "agedb_30.bin"
    blobs = _encoded_faces(2)
    path.write_bytes(pickle.dumps(([blobs[0], payload(marker)], [True]), protocol=2))
    with pytest.raises(DataError, match=r"agedb_30\.bin: .*refused global "
                                        r"(posix\.system|__builtin__\.eval)"):
        load_bin(path)
    assert not marker.exists()
    # the same payload through plain pickle would have run it: the test is not vacuous
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_bin_with_other_array_types_or_shapes_is_refused(tmp_path):
    path = tmp_path / "x.bin"
    blobs = _encoded_faces(2)
    path.write_bytes(pickle.dumps((blobs, np.array([1], dtype=np.int64))))
    with pytest.raises(DataError, match="only boolean arrays"):
        load_bin(path)
    path.write_bytes(pickle.dumps((blobs, [True, False])))
    with pytest.raises(DataError, match="2 images for 2 pairs"):
        load_bin(path)
    path.write_bytes(pickle.dumps(([1, 2], [True])))
    with pytest.raises(DataError, match="list of encoded images"):
        load_bin(path)
    path.write_bytes(pickle.dumps((blobs, "yes")))
    with pytest.raises(DataError, match="list of booleans"):
        load_bin(path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="not a verification .bin"):
        load_bin(path)
    with pytest.raises(DataError, match="no such verification file"):
        load_bin(tmp_path / "missing.bin")


def test_decode_images_resizes_and_names_bad_images():
    blobs = _encoded_faces(2, fmt="PNG") + _encoded_faces(1, size=150, fmt="PNG")
    images = decode_images(blobs, progress=False)
    assert images.shape == (3, 3, 112, 112) and images.dtype == torch.uint8
    np.testing.assert_array_equal(images[0].permute(1, 2, 0).numpy(),
                                  np.asarray(Image.open(io.BytesIO(blobs[0]))))
    with pytest.raises(DataError, match="lfw.bin: image 1 is not a readable image"):
        decode_images([blobs[0], b"garbage"], source="lfw.bin", progress=False)


def _reference_accuracy(embeddings, issame, n_folds=10):
    """insightface calculate_roc: per fold, per threshold loops."""
    dist = np.sum(np.square(embeddings[0::2] - embeddings[1::2]), 1)
    folds = np.array_split(np.arange(len(issame)), n_folds)
    accuracy, best_thresholds = [], []
    for test in folds:
        train = np.setdiff1d(np.arange(len(issame)), test)
        acc_train = [np.mean((dist[train] < t) == issame[train]) for t in THRESHOLDS]
        best = int(np.argmax(acc_train))
        best_thresholds.append(THRESHOLDS[best])
        accuracy.append(np.mean((dist[test] < THRESHOLDS[best]) == issame[test]))
    return np.mean(accuracy), np.std(accuracy), best_thresholds, accuracy


@pytest.mark.parametrize("quantised", [False, True])
def test_accuracy_equals_per_fold_loops(quantised):
    rng = np.random.default_rng(1)
    for n_pairs in (20, 203, 600):
        issame = rng.random(n_pairs) < 0.5
        emb = rng.standard_normal((2 * n_pairs, 8))
        emb[1::2][issame] = emb[0::2][issame] + 0.8 * rng.standard_normal((issame.sum(), 8))
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        if quantised:  # distances landing exactly on thresholds: ties everywhere
            emb = np.round(emb, 1)
        result = verification_accuracy(emb, issame)
        mean, std, thresholds, folds = _reference_accuracy(emb, issame)
        assert result["accuracy"] == pytest.approx(mean, abs=1e-15)
        assert result["std"] == pytest.approx(std, abs=1e-15)
        assert result["best_threshold"] == thresholds
        np.testing.assert_array_equal(result["fold_accuracy"], folds)
        assert result["pairs"] == n_pairs


def test_accuracy_rejects_bad_shapes():
    with pytest.raises(InputError, match="2N, D"):
        verification_accuracy(np.zeros((5, 4)), np.zeros(3, bool))
    with pytest.raises(InputError, match="folds"):
        verification_accuracy(np.zeros((8, 4)), np.zeros(4, bool))


class _TinyEmbedder(torch.nn.Module):
    """Not flip-invariant, so a missing or wrong flip shows."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=4)
        self.fc = torch.nn.Linear(4 * 28 * 28, 16)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


def test_embed_is_f_of_x_plus_f_of_flipped_x():
    model = _TinyEmbedder().eval()
    images = torch.randint(0, 256, (5, 3, 112, 112), dtype=torch.uint8)
    x = (images.float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        expected = model(x) + model(torch.flip(x, dims=[3]))
        torch.testing.assert_close(embed(model, images), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(embed(model, images, flip=False), model(x))
    batched = embed_batches(model, image_batches(images, 2), total=5)
    torch.testing.assert_close(batched, expected, rtol=1e-5, atol=1e-5)


def test_eval_verification_cli(tmp_path, monkeypatch, capsys):
    from recognition import eval_verification

    blobs = _encoded_faces(40, fmt="PNG", seed=3)
    issame = [bool(i % 2) for i in range(20)]
    path = tmp_path / "lfw.bin"
    path.write_bytes(py2_pickle((blobs, issame)))
    model = _TinyEmbedder().eval()
    monkeypatch.setattr(eval_verification, "load_backbone", lambda *a: model)
    out = tmp_path / "out"
    assert eval_verification.main(["--checkpoint", "c.pt", "--network", "tiny", "--bin",
                                   str(path), "--batch-size", "7", "--out", str(out),
                                   "--device", "cpu"]) == 0
    images = decode_images(blobs, progress=False)
    emb = torch.nn.functional.normalize(embed(model, images).double(), dim=1)
    expected = verification_accuracy(emb, np.array(issame))
    result = json.loads((out / "verification.json").read_text())["sets"]["lfw"]
    assert result["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert result["best_threshold"] == expected["best_threshold"]
    assert (out / "verification.csv").read_text().startswith("set,pairs,accuracy,std")
    assert "lfw" in capsys.readouterr().out
    bad = tmp_path / "bad.bin"
    bad.write_bytes(pickle.dumps(([_RunsCode(tmp_path / "m")], [True])))
    assert eval_verification.main(["--checkpoint", "c.pt", "--network", "tiny", "--bin",
                                   str(bad), "--device", "cpu"]) == 2
    assert "refused global" in capsys.readouterr().err and not (tmp_path / "m").exists()


def test_write_bin_round_trip(tmp_path):
    blobs = _encoded_faces(4)
    write_bin(tmp_path / "x.bin", blobs, np.array([True, False]))
    images, issame = load_bin(tmp_path / "x.bin")
    assert images == blobs and issame.tolist() == [True, False]
    with pytest.raises(InputError, match="4 images for 3 pairs"):
        write_bin(tmp_path / "y.bin", blobs, [True] * 3)


def test_sample_pairs_half_genuine_distinct_images():
    identities = np.repeat(np.arange(7), 5)
    first, second, issame = sample_pairs(identities, 101, seed=3)
    assert len(first) == len(second) == len(issame) == 101
    assert issame.sum() == 50
    np.testing.assert_array_equal(identities[first] == identities[second], issame)
    assert (first != second).all()
    again = sample_pairs(identities, 101, seed=3)
    for a, b in zip((first, second, issame), again, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match="two identities"):
        sample_pairs(np.arange(5), 10)
    # more pairs than distinct ones exist would repeat pairs
    with pytest.raises(InputError, match="--pairs 142: 35 images make only 70 genuine"):
        sample_pairs(identities, 142)


@pytest.mark.slow
def test_make_verification_bin_from_parsing_synth(tmp_path):
    from parsing.synth import write_dataset
    from recognition import make_verification_bin

    write_dataset(tmp_path / "faces", 4, 3, seed=4, workers=1)
    out = tmp_path / "synth.bin"
    assert make_verification_bin.main(["--faces", str(tmp_path / "faces"), "--out", str(out),
                                       "--pairs", "24"]) == 0
    images, issame = load_bin(out)
    assert len(images) == 48 and issame.sum() == 12
    assert decode_images(images, progress=False).shape == (48, 3, 112, 112)


class _HugeObjectArray:
    def __reduce__(self):
        return np.array([True]).__reduce__()[0], (np.ndarray, (10**12,), "O")


def test_bin_cannot_allocate_arbitrary_arrays(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(py2_pickle((_encoded_faces(2), _HugeObjectArray())))
    with pytest.raises(DataError, match=r"x\.bin: .*_reconstruct"):
        load_bin(path)
