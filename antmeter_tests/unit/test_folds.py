"""Walk-forward folds: purge, embargo, ordering, with data gaps and several symbols sharing one clock."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from antmeter.learn.folds import Fold, holdout_split, walk_forward_folds

START = np.datetime64("2024-03-01T00:00", "ns")


def _minutes(times: np.ndarray) -> np.ndarray:
    return ((times - START) // np.timedelta64(1, "m")).astype(np.int64)


@st.composite
def pooled_sample_times(draw) -> np.ndarray:
    """Sample times of 1-3 symbols on a shared minute clock, each with its own random gaps, sorted."""
    n_minutes = draw(st.integers(80, 600))
    per_symbol = []
    for _ in range(draw(st.integers(1, 3))):
        keep = np.ones(n_minutes, dtype=bool)
        for _gap in range(draw(st.integers(0, 4))):
            start = draw(st.integers(0, n_minutes - 1))
            keep[start : start + draw(st.integers(1, 60))] = False
        per_symbol.append(np.flatnonzero(keep))
    minutes = np.sort(np.concatenate(per_symbol))
    assume(minutes.size >= 20)
    return START + minutes.astype("timedelta64[m]")


def _check_fold(fold: Fold, minutes: np.ndarray, window: int, max_h: int, embargo: int, after: bool) -> None:
    train_t, val_t = minutes[fold.train], minutes[fold.validation]
    assert fold.train.size >= 1 and fold.validation.size >= 1
    assert np.intersect1d(fold.train, fold.validation).size == 0
    assert np.all(np.diff(train_t) >= 0) and np.all(np.diff(val_t) >= 0), "indices ordered by time"
    gap = max(embargo, max_h)
    # the full span [t - W + 1, t + max_h] of every training sample vs. that of every validation sample:
    # no overlap, and at least `gap` whole minutes strictly between them.
    train_start, train_end = train_t - window + 1, train_t + max_h
    val_start, val_end = val_t - window + 1, val_t + max_h
    before = train_end[:, None] + gap < val_start[None, :]
    later = train_start[:, None] - gap > val_end[None, :]
    assert np.all(before | later)
    if not after:
        assert train_t.max() < val_t.min()
    # nothing was dropped that the rules allow: the training set is exactly the eligible samples
    eligible = minutes + max_h + gap < val_t.min() - window + 1
    if after:
        eligible |= minutes - window + 1 - gap > val_t.max() + max_h
    np.testing.assert_array_equal(np.sort(fold.train), np.flatnonzero(eligible))


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(
    times=pooled_sample_times(),
    n_folds=st.integers(1, 5),
    window=st.integers(1, 30),
    max_h=st.integers(0, 30),
    embargo=st.one_of(st.none(), st.integers(0, 40)),
    validation_minutes=st.one_of(st.none(), st.integers(5, 120)),
    after=st.booleans(),
)
def test_walk_forward_folds_never_leak(times, n_folds, window, max_h, embargo, validation_minutes, after):
    minutes = _minutes(times)
    try:
        folds = walk_forward_folds(
            times,
            n_folds=n_folds,
            validation_minutes=validation_minutes,
            window_minutes=window,
            max_horizon_minutes=max_h,
            embargo_minutes=embargo,
            train_after_validation=after,
        )
    except ValueError as exc:
        assert "training samples remain" in str(exc) or "holds no samples" in str(exc)
        assume(False)
    assert len(folds) == n_folds
    for k, fold in enumerate(folds):
        _check_fold(fold, minutes, window, max_h, embargo or 0, after)
        if k:
            assert minutes[folds[k - 1].validation].max() < minutes[fold.validation].min(), (
                "ordered, disjoint"
            )
    if not after:
        # expanding window: each fold's training set contains the previous one's
        for previous, current in zip(folds, folds[1:], strict=False):
            assert np.isin(previous.train, current.train).all()
    if validation_minutes is None:
        covered = np.concatenate([f.validation for f in folds])
        assert minutes[covered].max() == minutes.max(), "the newest samples are validated"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    times=pooled_sample_times(),
    window=st.integers(1, 30),
    max_h=st.integers(0, 30),
    embargo=st.one_of(st.none(), st.integers(0, 40)),
    fraction=st.floats(0.05, 0.5),
)
def test_holdout_split_never_leaks(times, window, max_h, embargo, fraction):
    minutes = _minutes(times)
    try:
        fold = holdout_split(
            times,
            fraction=fraction,
            window_minutes=window,
            max_horizon_minutes=max_h,
            embargo_minutes=embargo,
        )
    except ValueError as exc:
        assert "training samples remain" in str(exc)
        assume(False)
    _check_fold(fold, minutes, window, max_h, embargo or 0, after=False)
    assert minutes[fold.validation].max() == minutes.max()


def test_concrete_walk_forward_boundaries():
    times = START + np.arange(100).astype("timedelta64[m]")
    folds = walk_forward_folds(
        times, n_folds=2, validation_minutes=20, window_minutes=5, max_horizon_minutes=3, embargo_minutes=10
    )
    # block 0 = minutes 60..79, its span starts at 56; a training sample t needs t + 3 + 10 < 56 -> t <= 42
    assert folds[0].validation.tolist() == list(range(60, 80))
    assert folds[0].train.tolist() == list(range(0, 43))
    assert folds[1].validation.tolist() == list(range(80, 100))
    assert folds[1].train.tolist() == list(range(0, 63))
    after = walk_forward_folds(
        times,
        n_folds=2,
        validation_minutes=20,
        window_minutes=5,
        max_horizon_minutes=3,
        embargo_minutes=10,
        train_after_validation=True,
    )
    # block 0's span ends at 79 + 3 = 82; a later sample needs t - 4 - 10 > 82 -> t >= 97
    assert after[0].train.tolist() == [*range(0, 43), 97, 98, 99]


def test_embargo_is_at_least_the_horizon():
    times = START + np.arange(100).astype("timedelta64[m]")
    (short,) = walk_forward_folds(
        times, n_folds=1, validation_minutes=20, window_minutes=1, max_horizon_minutes=7, embargo_minutes=0
    )
    # span of block 80..99 starts at 80; t + 7 + 7 < 80 -> t <= 65
    assert short.train.max() == 65


def test_pooled_symbols_are_purged_by_time():
    one = START + np.arange(50).astype("timedelta64[m]")
    pooled = np.sort(np.concatenate([one, one]))
    (fold,) = walk_forward_folds(
        pooled, n_folds=1, validation_minutes=10, window_minutes=3, max_horizon_minutes=2
    )
    assert _minutes(pooled[fold.validation]).tolist() == sorted(list(range(40, 50)) * 2)
    assert _minutes(pooled[fold.train]).max() == 40 - 3 - 2 - 2
    assert fold.train.size == 2 * (40 - 3 - 2 - 2 + 1)


def test_settings_that_leave_no_training_samples_raise():
    times = START + np.arange(30).astype("timedelta64[m]")
    with pytest.raises(ValueError, match=r"fold 0: 0 training samples remain.*window_minutes=20"):
        walk_forward_folds(times, n_folds=1, validation_minutes=10, window_minutes=20, max_horizon_minutes=5)
    with pytest.raises(ValueError, match=r"fold 0: 17 training samples remain .*need at least 25"):
        walk_forward_folds(
            times,
            n_folds=2,
            validation_minutes=5,
            window_minutes=2,
            max_horizon_minutes=1,
            min_train_samples=25,
        )
    with pytest.raises(ValueError, match="holds no samples"):
        gap_times = np.concatenate([times[:10], times[:10] + np.timedelta64(60, "m")])
        walk_forward_folds(
            gap_times, n_folds=3, validation_minutes=15, window_minutes=1, max_horizon_minutes=1
        )
    with pytest.raises(ValueError, match="exactly one"):
        holdout_split(times, window_minutes=1, max_horizon_minutes=1)
    with pytest.raises(ValueError, match="n_folds"):
        walk_forward_folds(times, n_folds=0, window_minutes=1, max_horizon_minutes=1)


def test_holdout_then_walk_forward_maps_back():
    times = START + np.arange(300).astype("timedelta64[m]")
    holdout = holdout_split(times, holdout_minutes=60, window_minutes=10, max_horizon_minutes=5)
    assert _minutes(times[holdout.validation]).min() == 240
    folds = walk_forward_folds(times[holdout.train], n_folds=3, window_minutes=10, max_horizon_minutes=5)
    for fold in folds:
        train, validation = holdout.train[fold.train], holdout.train[fold.validation]
        assert _minutes(times[validation]).max() < 240 - 10 - 5
        assert _minutes(times[train]).max() + 5 + 5 < _minutes(times[validation]).min() - 10 + 1
