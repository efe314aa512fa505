"""Boundary F1 (parsing.parser.metrics): hand-computed label maps and a direct reference."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from parsing.core.errors import InputError
from parsing.parser.metrics import BoundaryF1, ConfusionMatrix, boundary_counts


def _square(size: int, top: int, side: int, label: int = 1) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.long)
    m[top:top + side, top:top + side] = label
    return m


def _f1(counts: torch.Tensor, c: int) -> float:
    mp, n_p, mt, n_t = counts[c].tolist()
    p, r = mp / n_p, mt / n_t
    return 2 * p * r / (p + r) if p + r else 0.0


def test_shifted_edge_is_matched_only_within_tolerance():
    # columns 0-2 class 0, 3-5 class 1; the prediction moves the edge right by one / two columns
    target = torch.zeros(6, 6, dtype=torch.long)
    target[:, 3:] = 1
    by_one, by_two = torch.zeros_like(target), torch.zeros_like(target)
    by_one[:, 4:] = 1
    by_two[:, 5:] = 1
    # class 1's boundary: column 3 (target), column 4 / 5 (predictions), 6 pixels each
    assert boundary_counts(by_one, target, 2, tolerance=0)[1].tolist() == [0, 6, 0, 6]
    assert boundary_counts(by_one, target, 2, tolerance=1)[1].tolist() == [6, 6, 6, 6]
    assert boundary_counts(by_two, target, 2, tolerance=1)[1].tolist() == [0, 6, 0, 6]
    assert boundary_counts(by_two, target, 2, tolerance=2).tolist() == [[6, 6, 6, 6]] * 2
    assert boundary_counts(target, target, 2, tolerance=0).tolist() == [[6, 6, 6, 6]] * 2


def test_square_against_larger_square_by_hand():
    # target: a 2x2 square of class 1 at rows/cols 2-3 of a 6x6 map; prediction: a 4x4 square
    # at rows/cols 1-4. Class 1: the 4 target pixels are all boundary; the prediction's boundary
    # is its 12-pixel ring. Within 1 px (Euclidean) every target pixel has a ring pixel beside
    # it (recall 1), but the ring's 4 corners are sqrt(2) from the nearest target pixel:
    # precision 8/12, F1 = 2 (2/3) 1 / (2/3 + 1) = 0.8. Within 2 px the corners match: F1 1.
    # Background: target boundary = the 8 pixels 4-adjacent to the 2x2 square, prediction
    # boundary = the 16 pixels 4-adjacent to the 4x4 square; within 1 px all 8 target pixels
    # match, and 2 of the 4 predicted pixels along each side: P = 8/16, R = 1, F1 = 2/3.
    target, pred = _square(6, 2, 2), _square(6, 1, 4)
    c1 = boundary_counts(pred, target, 2, tolerance=1)
    assert c1.tolist() == [[8, 16, 8, 8], [8, 12, 4, 4]]
    assert _f1(c1, 1) == pytest.approx(0.8)
    assert _f1(c1, 0) == pytest.approx(2 / 3)
    assert boundary_counts(pred, target, 2, tolerance=2)[1].tolist() == [12, 12, 4, 4]
    acc = BoundaryF1(2, tolerance=1, names=["background", "skin"])
    acc.update(pred, target)
    s = acc.scores()
    assert s["mean_f1"] == pytest.approx(0.8)  # foreground only
    assert s["per_class"][1]["precision"] == pytest.approx(2 / 3)
    assert s["per_class"][1]["recall"] == 1.0
    assert s["per_class"][0]["f1"] == pytest.approx(2 / 3)


def test_counts_are_summed_over_images_not_averaged():
    # image A predicted exactly (4 of 4 boundary pixels matched), image B as above (8 of 12):
    # P = (4 + 8) / (4 + 12) = 3/4, R = 1, F1 = 6/7 (the mean of the images' F1s would be 0.9)
    target = torch.stack([_square(6, 2, 2), _square(6, 2, 2)])
    pred = torch.stack([_square(6, 2, 2), _square(6, 1, 4)])
    acc = BoundaryF1(2, tolerance=1)
    acc.update(pred[:1], target[:1])
    acc.update(pred[1:], target[1:])
    assert acc.scores()["per_class"][1]["f1"] == pytest.approx(6 / 7)
    assert boundary_counts(pred, target, 2, 1).tolist() == acc.counts.tolist()


def test_ignored_pixels_absent_classes_and_missed_classes():
    target = _square(6, 2, 2)
    target[:, 0] = 255  # an ignored column: no boundary on either side of it
    pred = target.clone()
    pred[:, 0] = 2  # predictions there do not count
    pred[0, 5] = 2  # a false class-2 blob: boundary pixel predicted, none in the target
    acc = BoundaryF1(4, tolerance=1)
    acc.update(pred, target)
    s = acc.scores()
    rows = s["per_class"]
    assert rows[1]["f1"] == 1.0
    assert rows[2]["f1"] == 0.0 and rows[2]["recall"] is None and rows[2]["predicted_pixels"] == 1
    assert rows[3]["f1"] is None  # in neither map: no score, not in the mean
    assert s["mean_f1"] == pytest.approx(0.5)
    # background: the 8 pixels 4-adjacent to the square in both maps (column 0 is ignored, so
    # column 1 has no boundary of its own); the prediction adds the blob's neighbours (0,4) and
    # (1,5), each sqrt(2) from the nearest target boundary pixel ((1,3), (2,4)): unmatched
    c = boundary_counts(pred, target, 4, 1)
    assert c[0].tolist() == [8, 10, 8, 8]


def test_matches_distance_transform_reference_on_random_maps():
    rng = np.random.default_rng(0)
    k = 5
    for tol in (1, 2):
        blocks = np.kron(rng.integers(0, k, (3, 5, 5)), np.ones((1, 4, 4), dtype=np.int64))
        target = blocks[:, :20, :17]
        pred = np.where(rng.random(target.shape) < 0.1, rng.integers(0, k, target.shape), target)
        got = boundary_counts(torch.from_numpy(pred), torch.from_numpy(target), k, tol)
        want = np.zeros((k, 4), dtype=np.int64)
        for t_img, p_img in zip(target, pred, strict=True):
            for c in range(k):
                bt, bp = _reference_boundary(t_img, c), _reference_boundary(p_img, c)
                dt = ndimage.distance_transform_edt(~bt) if bt.any() else np.full(bt.shape, 1e9)
                dp = ndimage.distance_transform_edt(~bp) if bp.any() else np.full(bp.shape, 1e9)
                want[c] += [(bp & (dt <= tol)).sum(), bp.sum(), (bt & (dp <= tol)).sum(),
                            bt.sum()]
        assert got.tolist() == want.tolist()


def _reference_boundary(m: np.ndarray, c: int) -> np.ndarray:
    """Pixels of class c with a 4-neighbour (inside the image) of another class, by loops."""
    h, w = m.shape
    out = np.zeros((h, w), dtype=bool)
    for y in range(h):
        for x in range(w):
            if m[y, x] != c:
                continue
            for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and m[yy, xx] != c:
                    out[y, x] = True
    return out


def test_confusion_matrix_reports_boundary_and_errors():
    cm = ConfusionMatrix(2, boundary_tolerances=(1, 2))
    cm.update(_square(6, 1, 4)[None], _square(6, 2, 2)[None])
    s = cm.scores()
    assert [b["tolerance"] for b in s["boundary"]] == [1, 2]
    assert [b["mean_f1"] for b in s["boundary"]] == [pytest.approx(0.8), 1.0]
    assert "boundary" not in ConfusionMatrix(2).scores()
    with pytest.raises(InputError, match="differ"):
        boundary_counts(torch.zeros(2, 3), torch.zeros(3, 2), 2)
    with pytest.raises(InputError, match="predicted ids"):
        boundary_counts(torch.full((3, 3), 7), torch.zeros(3, 3), 2)
