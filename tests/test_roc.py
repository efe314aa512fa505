"""recognition.roc against sklearn.metrics.roc_curve and insightface's nearest-FAR rule."""

import numpy as np
import pytest
import sklearn.metrics

from benchmarks.bench_ijbc import reference_tar_at_far
from parsing.errors import InputError
from recognition.roc import far_key, roc_curve, tar_at_far, verification_report


def _random_scores(rng, n, ties):
    if ties:  # few distinct values: long runs of equal scores mixing both labels
        return rng.integers(0, rng.integers(1, 12), n).astype(np.float64) / 7
    return rng.standard_normal(n)


@pytest.mark.parametrize("ties", [False, True])
def test_roc_curve_equals_sklearn(ties):
    rng = np.random.default_rng(1)
    for _ in range(300):
        n = int(rng.integers(2, 80))
        scores = _random_scores(rng, n, ties)
        labels = rng.random(n) < rng.uniform(0.05, 0.6)
        if labels.all() or not labels.any():
            continue
        ours = roc_curve(scores, labels)
        ref = sklearn.metrics.roc_curve(labels, scores)
        for a, b in zip(ours, ref, strict=True):
            np.testing.assert_array_equal(a, b)


def test_roc_curve_large_with_rounded_ties():
    rng = np.random.default_rng(2)
    scores = np.round(rng.standard_normal(200_000) * 0.1, 4)  # float32-like ties
    labels = rng.random(200_000) < 0.002
    scores[labels] += 0.15
    for a, b in zip(roc_curve(scores, labels), sklearn.metrics.roc_curve(labels, scores),
                    strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("ties", [False, True])
def test_tar_at_far_and_auc_equal_reference_rule(ties):
    rng = np.random.default_rng(3)
    for _ in range(100):
        n = int(rng.integers(10, 3000))
        scores = _random_scores(rng, n, ties)
        labels = rng.random(n) < 0.2
        if labels.all() or not labels.any():
            continue
        fars = (1e-3, 1e-2, 0.05, 0.1, 0.25, 0.5)
        report, _, _ = verification_report(scores, labels, fars)
        ref_tars, ref_auc = reference_tar_at_far(scores, labels, fars)
        assert [report["tar_at_far"][far_key(f)] for f in fars] == list(ref_tars)
        assert report["auc"] == ref_auc


def test_tar_at_far_equally_near_points_take_the_later_one():
    # FAR 0.25 and 0.75 are equally near 0.5: insightface's rule picks the flipped curve's
    # first, i.e. the larger FAR
    fpr = np.array([0.0, 0.25, 0.75, 1.0])
    tpr = np.array([0.0, 0.4, 0.9, 1.0])
    assert tar_at_far(fpr, tpr, [0.5])[0] == 0.9
    # equal FARs: the highest TAR (last in sklearn's order)
    fpr = np.array([0.0, 0.1, 0.1, 1.0])
    tpr = np.array([0.0, 0.3, 0.6, 1.0])
    assert tar_at_far(fpr, tpr, [0.1])[0] == 0.6


def test_roc_curve_rejects_bad_input():
    with pytest.raises(InputError, match="genuine"):
        roc_curve(np.zeros(4), np.zeros(4, bool))
    with pytest.raises(InputError, match="NaN"):
        roc_curve(np.array([0.1, np.nan]), np.array([True, False]))
    with pytest.raises(InputError, match="labels"):
        roc_curve(np.zeros(3), np.zeros(2, bool))
