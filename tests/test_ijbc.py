"""recognition.evaluation.ijbc against the straightforward reference (insightface, sklearn)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.bench_ijbc import (
    reference_tar_table,
    reference_template_features,
    synthetic_ijbc,
)
from parsing.core.errors import DataError, InputError
from recognition.evaluation import ijbc
from recognition.evaluation.ijbc import (
    IdentificationProtocol,
    IJBProtocol,
    evaluate_verification,
    identification_report,
    pair_scores,
    read_identification_protocol,
    read_protocol,
    read_template_pairs,
    template_features,
    template_rows,
    write_meta,
)
from recognition.evaluation.roc import FARS, far_key


def _small_structure(rng, n_images=300, n_templates=25):
    templates = rng.choice(np.arange(1, 1000), n_templates, replace=False)[
        rng.integers(0, n_templates, n_images)]
    medias = rng.integers(0, 40, n_images)  # media ids shared across templates
    return templates, medias


@pytest.mark.parametrize("use_norm_score", [False, True])
@pytest.mark.parametrize("detector", [False, True])
def test_template_features_equal_per_template_loop(use_norm_score, detector):
    rng = np.random.default_rng(4)
    templates, medias = _small_structure(rng)
    feats = rng.standard_normal((len(templates), 16)).astype(np.float32)
    faceness = rng.uniform(0.1, 1.0, len(templates)).astype(np.float32)
    face = faceness if detector else None
    unique, ours = template_features(torch.from_numpy(feats), templates, medias, face,
                                     use_norm_score=use_norm_score, chunk_size=37)
    ref_unique, ref = reference_template_features(feats, templates, medias, face,
                                                  use_norm_score=use_norm_score)
    np.testing.assert_array_equal(unique, ref_unique)
    assert ours.dtype == torch.float64
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-13)


def test_template_features_zero_template_stays_zero():
    templates = np.array([1, 1, 2])
    medias = np.array([5, 6, 7])
    feats = np.array([[1.0, 2.0], [-1.0, -2.0], [3.0, 4.0]])
    _, out = template_features(feats, templates, medias, use_norm_score=True)
    np.testing.assert_array_equal(out.numpy(), [[0.0, 0.0], [0.6, 0.8]])


@pytest.mark.parametrize("layout", ["grouped", "shuffled", "sparse", "swapped"])
def test_pair_scores_equal_direct_dot_products(layout):
    rng = np.random.default_rng(5)
    feats = torch.from_numpy(rng.standard_normal((60, 8)))
    n = 3000
    if layout == "sparse":
        rows1, rows2 = rng.integers(0, 60, n), rng.integers(0, 60, n)
        kwargs = {"min_density": 2.0}  # forces the gathered path
    else:
        rows1, rows2 = np.sort(rng.integers(0, 12, n)), rng.integers(12, 60, n)
        if layout == "shuffled":
            perm = rng.permutation(n)
            rows1, rows2 = rows1[perm], rows2[perm]
        if layout == "swapped":  # more distinct templates on the first side
            rows1, rows2 = rows2, rows1
        kwargs = {"block_bytes": 8 * 48 * 5}  # 5 first-side rows per block
    scores = pair_scores(feats, rows1, rows2, **kwargs)
    assert scores.dtype == np.float64
    direct = (feats[rows1] * feats[rows2]).sum(1).numpy()
    np.testing.assert_allclose(scores, direct, rtol=0, atol=1e-12)


def test_template_rows_lookup_and_search_paths():
    unique = np.array([3, 10, 11, 500])
    np.testing.assert_array_equal(template_rows(unique, np.array([[500, 3], [10, 11]]), "x"),
                                  [[3, 0], [1, 2]])
    huge = unique + (1 << 40)
    np.testing.assert_array_equal(template_rows(huge, huge[[2, 0]], "x"), [2, 0])
    for bad in (np.array([3, 4]), np.array([3, -1]), np.array([3, 10**6])):
        with pytest.raises(DataError, match="pairs.txt: template"):
            template_rows(unique, bad, "pairs.txt")
    with pytest.raises(DataError, match="template 7"):
        template_rows(huge, np.array([7]), "pairs.txt")


def test_template_rows_of_pairs_are_column_contiguous_and_check_every_id():
    rng = np.random.default_rng(8)
    unique = np.sort(rng.choice(np.arange(0, 5000), 300, replace=False))
    unique[0] = 0  # template 0 exists: negative ids are clipped onto it and must still raise
    pairs = unique[rng.integers(0, 300, (1000, 2))]
    rows = template_rows(unique, pairs, "x")
    np.testing.assert_array_equal(rows, np.searchsorted(unique, pairs))
    assert rows[:, 0].flags.c_contiguous and rows[:, 1].flags.c_contiguous
    for bad in (-1, -(1 << 40), 5001, 1 << 40):
        broken = pairs.copy()
        broken[700, 1] = bad
        with pytest.raises(DataError, match=f"template {bad} has no images .*1 such"):
            template_rows(unique, broken, "x")


@pytest.mark.parametrize(("use_norm_score", "use_detector_score"), [(True, True),
                                                                     (False, False)])
def test_evaluate_verification_matches_reference(tmp_path, use_norm_score, use_detector_score):
    data = synthetic_ijbc(scale=0.02, seed=6)
    n = len(data["templates"])
    protocol = IJBProtocol(tmp_path, "ijbc", np.array([f"{i}.jpg" for i in range(n)]),
                           data["templates"], data["medias"], np.zeros((n, 5, 2), np.float32),
                           data["faceness"], data["pairs"], data["labels"])
    report, (fpr, tpr), (_, tfeats), rows = evaluate_verification(
        data["features"], protocol, use_detector_score=use_detector_score,
        use_norm_score=use_norm_score)
    ref_scores, ref_tars, ref_auc = reference_tar_table(
        data["features"], data["templates"], data["medias"], data["faceness"], data["pairs"],
        data["labels"], use_norm_score=use_norm_score, use_detector_score=use_detector_score)
    scores = pair_scores(tfeats, rows[:, 0], rows[:, 1])
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-12)
    assert [report["tar_at_far"][far_key(f)] for f in FARS] == list(ref_tars)
    # the AUC and curve place impostors by their float32 scores (error < 1e-7 here)
    assert report["auc"] == pytest.approx(ref_auc, abs=1e-6)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert report["genuine"] == int(data["labels"].sum())


# ----------------------------------------------------------------------------- readers
def _protocol(root: Path, rng, name="ijbc") -> tuple[IJBProtocol, IdentificationProtocol]:
    n_subjects, n_probes = 6, 10
    gallery_ids = np.arange(100, 100 + n_subjects)
    probe_ids = np.arange(200, 200 + n_probes)
    probe_subjects = rng.integers(0, n_subjects, n_probes)
    templates = np.concatenate([np.repeat(gallery_ids, 2), np.repeat(probe_ids, 3)])
    n = len(templates)
    medias = np.arange(n) // 2
    names = np.array([f"{i + 1}.jpg" for i in range(n)])
    landmarks = rng.uniform(10, 90, (n, 5, 2)).astype(np.float32)
    faceness = rng.uniform(0.5, 1, n).astype(np.float32)
    pairs = np.array([[g, p] for g in gallery_ids for p in probe_ids])
    labels = np.array([probe_subjects[p - 200] == g - 100 for g, p in pairs])
    protocol = IJBProtocol(root, name, names, templates, medias, landmarks, faceness, pairs,
                           labels)
    gallery_names = ("G1", "G2") if name == "ijbc" else ("S1", "S2")
    ident = IdentificationProtocol(
        {gallery_names[0]: (gallery_ids[:3], np.arange(3)),
         gallery_names[1]: (gallery_ids[3:], np.arange(3, 6))},
        probe_ids, probe_subjects)
    return protocol, ident


@pytest.mark.parametrize("name", ["ijbc", "ijbb"])
def test_write_then_read_protocol_round_trip(tmp_path, name):
    protocol, ident = _protocol(tmp_path, np.random.default_rng(7), name)
    write_meta(protocol, ident)
    back = read_protocol(tmp_path)
    assert back.name == name
    np.testing.assert_array_equal(back.image_names, protocol.image_names)
    np.testing.assert_array_equal(back.templates, protocol.templates)
    np.testing.assert_array_equal(back.medias, protocol.medias)
    np.testing.assert_allclose(back.landmarks, protocol.landmarks, atol=5e-4)
    np.testing.assert_allclose(back.faceness, protocol.faceness, atol=5e-4)
    np.testing.assert_array_equal(back.pair_templates, protocol.pair_templates)
    np.testing.assert_array_equal(back.pair_labels, protocol.pair_labels)
    assert back.image_dir == tmp_path / "loose_crop"
    ident_back = read_identification_protocol(tmp_path, name)
    np.testing.assert_array_equal(ident_back.probe_templates, ident.probe_templates)
    np.testing.assert_array_equal(ident_back.probe_subjects, ident.probe_subjects)
    for g, (t, s) in ident.galleries.items():
        np.testing.assert_array_equal(ident_back.galleries[g][0], t)
        np.testing.assert_array_equal(ident_back.galleries[g][1], s)


def test_identification_protocol_absent_is_none(tmp_path):
    protocol, _ = _protocol(tmp_path, np.random.default_rng(8))
    write_meta(protocol)
    assert read_identification_protocol(tmp_path, "ijbc") is None


def _corrupt(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[lineno - 1] = text
    path.write_text("".join(lines))


@pytest.mark.parametrize(("file", "line", "text", "match"), [
    ("face_tid_mid.txt", 3, "3.jpg 100\n", "face_tid_mid.txt, line 3: expected"),
    ("face_tid_mid.txt", 2, "2.jpg 100 x\n", "face_tid_mid.txt, line 2: expected"),
    ("name_5pts_score.txt", 4, "4.jpg 1 2 3\n", "name_5pts_score.txt, line 4: expected"),
    ("name_5pts_score.txt", 1, "9.jpg" + " 1.0" * 11 + "\n", "entry 1: image '9.jpg'"),
    ("template_pair_label.txt", 5, "100 200\n", "template_pair_label.txt, line 5: expected"),
    ("template_pair_label.txt", 2, "100 200 2\n", "template_pair_label.txt, line 2: expected"),
    ("template_pair_label.txt", 7, "100 2x0 1\n", "template_pair_label.txt, line 7: expected"),
    ("template_pair_label.txt", 1, "100 999 1\n", "template 999 has no images"),
])
def test_malformed_meta_names_file_and_line(tmp_path, file, line, text, match):
    protocol, _ = _protocol(tmp_path, np.random.default_rng(9))
    write_meta(protocol)
    _corrupt(tmp_path / "meta" / f"ijbc_{file}", line, text)
    with pytest.raises(DataError, match=match):
        read_protocol(tmp_path, "ijbc")


def test_missing_meta_and_bad_name(tmp_path):
    with pytest.raises(DataError, match="no meta/ijbc_face_tid_mid.txt"):
        read_protocol(tmp_path)
    with pytest.raises(InputError, match="protocol name"):
        read_protocol(tmp_path, "lfw")
    protocol, _ = _protocol(tmp_path, np.random.default_rng(10))
    write_meta(protocol)
    (tmp_path / "meta" / "ijbc_template_pair_label.txt").unlink()
    with pytest.raises(DataError, match="template_pair_label.txt: no such file"):
        read_protocol(tmp_path)
    with pytest.raises(DataError, match="no such file"):
        read_template_pairs(tmp_path / "nothing.txt")


def test_bad_identification_csv(tmp_path):
    protocol, ident = _protocol(tmp_path, np.random.default_rng(11))
    write_meta(protocol, ident)
    probe = tmp_path / "meta" / "ijbc_1N_probe_mixed.csv"
    _corrupt(probe, 1, "TEMPLATE,SUBJECT,FILENAME\n")
    with pytest.raises(DataError, match="line 1: header must name TEMPLATE_ID"):
        read_identification_protocol(tmp_path, "ijbc")
    write_meta(protocol, ident)
    _corrupt(probe, 3, "200,x,1.jpg\n")
    with pytest.raises(DataError, match="probe_mixed.csv, line 3"):
        read_identification_protocol(tmp_path, "ijbc")
    write_meta(protocol, ident)
    _corrupt(probe, 3, "200,99,1.jpg\n")
    with pytest.raises(DataError, match="more than one SUBJECT_ID"):
        read_identification_protocol(tmp_path, "ijbc")


# ------------------------------------------------------------------------ identification
def _reference_open_set(probe, gallery, probe_ids, gallery_ids, fpirs):
    """Per-probe loop of insightface's ijb_evals.evaluation_1N."""
    similarity = probe @ gallery.T
    top = {1: 0, 5: 0, 10: 0}
    pos, neg, nonmated = [], [], []
    for i, pid in enumerate(probe_ids):
        if pid in gallery_ids:
            mate = int(np.flatnonzero(gallery_ids == pid)[0])
            others = np.delete(similarity[i], mate)
            rank = 1 + int((others >= similarity[i, mate]).sum())
            for k in top:
                top[k] += rank <= k
            pos.append(similarity[i, mate])
            neg.append(others.max())
        else:
            nonmated.append(similarity[i].max())
    pos, neg = np.array(pos), np.array(neg)
    nonmated = np.sort(nonmated)[::-1]
    tpir = []
    for f in fpirs:
        threshold = nonmated[max(int(len(nonmated) * f) - 1, 0)]
        tpir.append(np.logical_and(pos > neg, pos > threshold).sum() / len(pos))
    return top, len(pos), tpir


@pytest.mark.parametrize("probes_per_block", [7, None])
def test_identification_report_equals_per_probe_loop(monkeypatch, probes_per_block):
    if probes_per_block is not None:  # 20 gallery templates of float64 per probe row
        monkeypatch.setattr(ijbc._search, "__defaults__", (8 * 20 * probes_per_block,))
    rng = np.random.default_rng(12)
    n_subjects, n_probes, dim = 40, 300, 16
    centres = rng.standard_normal((n_subjects, dim))
    probe_subjects = rng.integers(0, n_subjects, n_probes)
    probe = centres[probe_subjects] + 1.2 * rng.standard_normal((n_probes, dim))
    gallery = centres + 0.8 * rng.standard_normal((n_subjects, dim))
    feats = np.concatenate([gallery, probe])
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    unique = np.arange(n_subjects + n_probes) * 3 + 1
    split = rng.permutation(n_subjects)
    g1, g2 = np.sort(split[:20]), np.sort(split[20:])
    ident = IdentificationProtocol({"G1": (unique[g1], g1 + 1000), "G2": (unique[g2], g2 + 1000)},
                                   unique[n_subjects:], probe_subjects + 1000)
    fpirs = (0.01, 0.1, 0.3)
    report = identification_report(unique, torch.from_numpy(feats), ident, fpirs=fpirs)
    total = {1: 0, 5: 0, 10: 0}
    for name, g in (("G1", g1), ("G2", g2)):
        top, n_mated, tpir = _reference_open_set(feats[n_subjects:], feats[g],
                                                 probe_subjects + 1000, g + 1000, fpirs)
        assert report[name]["mated_probes"] == n_mated
        for k in total:
            assert report[name][f"top{k}"] == top[k] / n_mated
            total[k] += top[k]
        assert [report[name]["tpir_at_fpir"][far_key(f)] for f in fpirs] == tpir
    for k in total:
        assert report["mean"][f"top{k}"] == total[k] / n_probes
