"""recognition.evaluation.roc against sklearn's roc_curve and insightface's nearest-FAR rule."""

import numpy as np
import pytest
import sklearn.metrics

from benchmarks.bench_ijbc import reference_tar_at_far
from parsing.core.errors import InputError
from recognition.evaluation.roc import (
    far_key,
    roc_curve,
    screened_verification_report,
    tar_at_far,
    verification_report,
)


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


def _screening_case(rng, n):
    """Exact scores (some with long ties), labels, and float32 approximations within error."""
    if rng.random() < 0.3:  # a handful of genuine pairs, possibly all above or below
        labels = np.zeros(n, dtype=bool)
        labels[rng.choice(n, int(rng.integers(1, 6)), replace=False)] = True
    else:
        labels = rng.random(n) < rng.choice([0.002, 0.02, 0.2])
    labels[:2] = [True, False]
    exact = rng.standard_normal(n) * 0.1 + labels * rng.choice([-1.0, 0.0, 0.2, 5.0])
    mode = rng.integers(0, 3)
    if mode == 1:
        exact = np.round(exact, 3)
    elif mode == 2:
        exact[rng.random(n) < 0.3] = exact[rng.integers(n)]
    error = float(rng.choice([1e-6, 1e-4, 1e-2]))
    approx = (exact + rng.uniform(-0.45, 0.45, n) * error).astype(np.float32)
    return exact, labels, approx, error


class _ExactScores:
    """The exact-score callback, counting how many pairs it was asked for."""

    def __init__(self, scores):
        self.scores, self.asked = scores, 0

    def __call__(self, pairs):
        self.asked += len(pairs)
        return self.scores[pairs]


def test_screened_tars_equal_exact_ones():
    rng = np.random.default_rng(4)
    fars = (1e-4, 1e-3, 1e-2, 0.1, 0.3, 0.9)
    for _ in range(150):
        n = int(rng.integers(100, 30_000))
        exact, labels, approx, error = _screening_case(rng, n)
        # max_exact=n: the bands never give up, however wide they grow
        report, fpr, tpr = screened_verification_report(approx, labels, error,
                                                        _ExactScores(exact), fars, max_exact=n)
        expected, _, _ = verification_report(exact, labels, fars)
        assert report["tar_at_far"] == expected["tar_at_far"]
        assert report["genuine"] == expected["genuine"] and report["pairs"] == n
        assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_screened_scores_few_pairs_exactly():
    rng = np.random.default_rng(7)
    n = 400_000
    labels = rng.random(n) < 0.002
    exact = rng.standard_normal(n) * 0.1 + labels * 0.3
    approx = exact.astype(np.float32)
    scorer = _ExactScores(exact)
    report, _, _ = screened_verification_report(approx, labels, 1e-7, scorer)
    expected, _, _ = verification_report(exact, labels)
    assert report["tar_at_far"] == expected["tar_at_far"]
    assert scorer.asked < 0.02 * n


def test_screened_auc_within_float32_rounding():
    rng = np.random.default_rng(5)
    exact = rng.standard_normal(200_000) * 0.1
    labels = rng.random(200_000) < 0.01
    exact[labels] += 0.25
    approx = exact.astype(np.float32)
    report, _, _ = screened_verification_report(approx, labels, 1e-7, lambda i: exact[i])
    expected, _, _ = verification_report(exact, labels)
    assert report["tar_at_far"] == expected["tar_at_far"]
    assert report["auc"] == pytest.approx(expected["auc"], abs=1e-6)


def test_screened_falls_back_to_all_exact_scores():
    rng = np.random.default_rng(6)
    exact, labels, approx, error = _screening_case(rng, 5000)
    report, fpr, tpr = screened_verification_report(approx, labels, error, lambda i: exact[i],
                                                    max_exact=0)
    expected, exp_fpr, exp_tpr = verification_report(exact, labels)
    assert report == expected
    np.testing.assert_array_equal(fpr, exp_fpr)


def test_screened_rejects_bad_input():
    exact = np.array([0.1, 0.2, 0.3])
    labels = np.array([True, False, False])
    with pytest.raises(InputError, match="float32"):
        screened_verification_report(exact, labels, 1e-6, lambda i: exact[i])
    with pytest.raises(InputError, match="NaN"):
        screened_verification_report(np.array([0.1, np.nan, 0.3], np.float32), labels, 1e-6,
                                     lambda i: exact[i])
    with pytest.raises(InputError, match="genuine"):
        screened_verification_report(exact.astype(np.float32), labels & False, 1e-6,
                                     lambda i: exact[i])
