import io
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from parsing.core.errors import DataError, InputError
from parsing.core.recordio import MAGIC, RecordIOReader, RecordIOWriter, encode_frames, pack, unpack
from parsing.core.samples import BadSample
from recognition.data.datasets import RecordIOFaces, collate_faces, open_dataset
from recognition.data.recordio import pack_image_folder, write_recordio
from recognition.make_recordio import main

M = struct.pack("<I", MAGIC)


def _png(rng, size=112):
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return arr, buf.getvalue()


def _lrec(cflag, length):
    return struct.pack("<I", cflag << 29 | length)


def test_frames_follow_dmlc_layout():
    # whole record: magic, lrec, data, zero padding to 4 bytes
    assert encode_frames(b"abcdef") == M + _lrec(0, 6) + b"abcdef\0\0"
    # the magic word at an aligned position splits the record and is dropped
    data = b"abcd" + M + b"xyz12"
    assert encode_frames(data) == (M + _lrec(1, 4) + b"abcd" + M + _lrec(3, 5) + b"xyz12\0\0\0")
    data = M + b"1234" + M
    assert encode_frames(data) == M + _lrec(1, 0) + M + _lrec(2, 4) + b"1234" + M + _lrec(3, 0)
    # an unaligned magic is plain data
    assert encode_frames(b"a" + M) == M + _lrec(0, 5) + b"a" + M + b"\0\0\0"


def test_pack_unpack_like_mxnet():
    rec = pack(7.0, b"IMG", id=3)
    assert rec == struct.pack("<IfQQ", 0, 7.0, 3, 0) + b"IMG"
    head, payload = unpack(rec)
    assert (head.flag, head.labels, head.id, payload) == (0, (7.0,), 3, b"IMG")
    rec = pack([2, 0.5], b"IMG")
    assert rec == struct.pack("<IfQQ", 2, 0.0, 0, 0) + struct.pack("<2f", 2, 0.5) + b"IMG"
    head, payload = unpack(rec)
    assert head.flag == 2 and head.labels == (2.0, 0.5) and head.label == 2.0
    assert payload == b"IMG"
    with pytest.raises(DataError, match="announces 3 labels"):
        unpack(struct.pack("<IfQQ", 3, 0, 0, 0) + b"\0" * 8)


def test_reader_joins_split_records(tmp_path):
    records = {5: b"abcd" + M + b"xyz12", 9: M + M + b"q", 2: b"", 11: b"plain record"}
    with RecordIOWriter(tmp_path / "a.rec") as w:
        for k, r in records.items():
            w.write(k, r)
    lines = (tmp_path / "a.idx").read_text().splitlines()
    assert [int(line.split("\t")[0]) for line in lines] == [5, 9, 2, 11]
    assert int(lines[0].split("\t")[1]) == 0
    reader = RecordIOReader(tmp_path / "a.rec")
    for k, r in records.items():
        assert reader.read(k) == r


def _write_set(tmp_path, rng, counts=(3, 1, 2), multi_label=False):
    """insightface layout written by hand: images, identity records, header record 0."""
    images, labels, records = [], [], {}
    key = 0
    ranges = []
    for label, n in enumerate(counts):
        ranges.append((key + 1, key + 1 + n))
        for _ in range(n):
            key += 1
            arr, png = _png(rng)
            images.append(arr)
            labels.append(label)
            records[key] = pack([label, 0.25] if multi_label else float(label), png, id=key)
    n_img = key
    for label, (a, b) in enumerate(ranges):
        records[n_img + 1 + label] = pack([a, b], b"")
    records[0] = pack([n_img + 1, n_img + 1 + len(counts)], b"")
    with RecordIOWriter(tmp_path / "train.rec", tmp_path / "train.idx") as w:
        for k in [0, *sorted(set(records) - {0})]:
            w.write(k, records[k])
    return images, labels


@pytest.mark.parametrize("multi_label", [False, True])
def test_recordio_faces_reads_insightface_layout(tmp_path, multi_label):
    rng = np.random.default_rng(0)
    images, labels = _write_set(tmp_path, rng, multi_label=multi_label)
    ds = open_dataset(tmp_path)
    assert isinstance(ds, RecordIOFaces)
    assert len(ds) == 6 and ds.num_classes == 3
    assert ds.labels.tolist() == labels
    for i in range(len(ds)):
        s = ds[i]
        assert s["label"] == labels[i]
        assert torch.equal(s["image"], torch.from_numpy(images[i]).permute(2, 0, 1))


def test_write_recordio_round_trip_and_pack_folder(tmp_path):
    ramp = np.linspace(0, 255, 112)
    arrs = [np.stack(np.broadcast_arrays(ramp[:, None], ramp[None] * k / 4, 128), -1)
            .astype(np.uint8) for k in range(4)]
    samples = [(torch.from_numpy(a).permute(2, 0, 1), lab) for a, lab in
               zip(arrs, [0, 0, 1, 2], strict=True)]
    assert write_recordio(tmp_path / "out", samples, quality=98) == 4
    ds = RecordIOFaces(tmp_path / "out")
    assert ds.labels.tolist() == [0, 0, 1, 2] and ds.num_classes == 3
    err = (ds[2]["image"].float() - samples[2][0].float()).abs().mean()
    assert err < 2
    header = ds.reader.read_header(0)[0]
    assert header.flag == 2 and header.labels == (5.0, 8.0)
    assert ds.reader.read_header(6)[0].labels == (3.0, 4.0)
    with pytest.raises(InputError, match="grouped by label"):
        write_recordio(tmp_path / "bad", [(b"x", 0), (b"y", 2)])
    # ImageFolder -> .rec keeps the encoded bytes as they are
    for name, arr in zip(["b", "b", "a"], arrs, strict=False):
        d = tmp_path / "folder" / name
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(d / f"{len(list(d.iterdir()))}.png")
    assert pack_image_folder(tmp_path / "folder", tmp_path / "packed") == 3
    assert main(["--images", str(tmp_path / "folder"), "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "train.rec").read_bytes() == (
        tmp_path / "packed" / "train.rec").read_bytes()
    assert main(["--images", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    packed, folder = open_dataset(tmp_path / "packed"), open_dataset(tmp_path / "folder")
    assert packed.labels.tolist() == folder.labels.tolist() == [0, 1, 1]
    for i in range(3):
        assert torch.equal(packed[i]["image"], folder[i]["image"])


def test_headerless_recordio_uses_every_key(tmp_path):
    rng = np.random.default_rng(2)
    with RecordIOWriter(tmp_path / "x.rec") as w:
        for k, lab in [(10, 1), (11, 0), (12, 4)]:
            w.write(k, pack(float(lab), _png(rng, 16)[1]))
    ds = RecordIOFaces(tmp_path / "x.rec", size=16)
    assert ds.keys == ["10", "11", "12"] and ds.labels.tolist() == [1, 0, 4]
    assert ds.num_classes == 5 and ds[2]["image"].shape == (3, 16, 16)
    with pytest.raises(DataError, match="holds 5 identities"):
        RecordIOFaces(tmp_path / "x.rec", size=16, num_classes=3)


def test_header_with_an_empty_identity_range_takes_labels_from_the_images(tmp_path):
    rng = np.random.default_rng(4)
    with RecordIOWriter(tmp_path / "train.rec", tmp_path / "train.idx") as w:
        w.write(0, pack([4, 4], b""))  # images 1..3, no identity records (insightface accepts it)
        for k, lab in [(1, 2), (2, 0), (3, 2)]:
            w.write(k, pack(float(lab), _png(rng, 16)[1]))
    ds = RecordIOFaces(tmp_path, size=16)
    assert ds.keys == ["1", "2", "3"] and ds.labels.tolist() == [2, 0, 2]
    assert ds.num_classes == 3 and ds[0]["label"] == 2


def _offsets(path):
    return {int(k): int(v) for k, v in (ln.split("\t") for ln in path.read_text().splitlines())}


def test_malformed_records_name_the_record(tmp_path):
    rng = np.random.default_rng(3)
    _write_set(tmp_path, rng)
    rec, offsets = tmp_path / "train.rec", _offsets(tmp_path / "train.idx")
    data = bytearray(rec.read_bytes())
    data[offsets[2]] ^= 0xFF  # bad magic
    data[offsets[4] + 8 + 24 + 10: offsets[4] + 8 + 24 + 40] = b"\0" * 30  # broken PNG
    rec.write_bytes(bytes(data))
    ds = RecordIOFaces(tmp_path)
    with pytest.raises(DataError, match=r"train.rec record 2 \(byte \d+\): bad magic"):
        ds[1]
    with pytest.raises(DataError, match="record 4: undecodable image"):
        ds[3]
    skipping = RecordIOFaces(tmp_path, skip_bad=True)
    batch = collate_faces([skipping[i] for i in range(6)])
    assert batch["skipped"] == 2 and batch["image"].shape == (6, 3, 112, 112)
    assert batch["label"].tolist() == [0, 0, 0, 2, 2, 2]  # bad slots 1, 3 <- samples 2, 5
    assert torch.equal(batch["image"][3], batch["image"][5])
    with pytest.raises(DataError, match="all 2 samples of a batch are unreadable"):
        collate_faces([BadSample("a"), BadSample("b")])
    rec.write_bytes(bytes(data[: offsets[5] + 100]))  # truncated file
    with pytest.raises(DataError, match=r"record 7 \(byte \d+\): truncated frame header"):
        RecordIOFaces(tmp_path)
    with RecordIOWriter(tmp_path / "x.rec") as w:
        for k in range(2):
            w.write(k, pack(0.0, _png(rng, 16)[1]))
    (tmp_path / "x.rec").write_bytes((tmp_path / "x.rec").read_bytes()[:-50])
    with pytest.raises(DataError, match=r"x.rec record 1 \(byte \d+\): truncated, \d+ bytes"):
        RecordIOFaces(tmp_path / "x.rec", size=16)
    (tmp_path / "x.rec").write_bytes(b"")
    with pytest.raises(DataError, match="empty record file"):
        RecordIOFaces(tmp_path / "x.rec", size=16)


def test_label_identity_mismatch(tmp_path):
    rng = np.random.default_rng(4)
    _write_set(tmp_path, rng)
    offsets = _offsets(tmp_path / "train.idx")
    data = bytearray((tmp_path / "train.rec").read_bytes())
    struct.pack_into("<f", data, offsets[5] + 8 + 4, 0.0)  # image of identity 2 labelled 0
    struct.pack_into("<f", data, offsets[6] + 8 + 4, 1.5)
    (tmp_path / "train.rec").write_bytes(bytes(data))
    ds = RecordIOFaces(tmp_path)
    with pytest.raises(DataError, match="record 5: label 0 but its identity record says 2"):
        ds[4]
    with pytest.raises(DataError, match="record 6: label 1.5 is not an identity index"):
        ds[5]
    (tmp_path / "train.idx").write_text("0\t0\nnot a line\n")
    with pytest.raises(DataError, match=r"train.idx:2: expected 'key<TAB>offset'"):
        RecordIOFaces(tmp_path)


def test_loader_workers_share_the_reader(tmp_path):
    rng = np.random.default_rng(5)
    _, labels = _write_set(tmp_path, rng)
    ds = RecordIOFaces(tmp_path)
    ds[0]  # map the file in this process first: workers must not reuse the mapping blindly
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_faces)
    got = torch.cat([b["label"] for b in loader])
    assert got.tolist() == labels
