"""Walk-forward folds and a final holdout, with purging and embargo, over sample prediction times.

Every sample with prediction time ``t`` touches the candles ``[t - W + 1, t + max_h]`` (minutes): its input
window and its label window. A validation block whose samples run from ``v_first`` to ``v_last`` touches
``[v_first - W + 1, v_last + max_h]`` (its *span*). A training sample is kept only if its own span lies
entirely outside the block's span with at least ``E = max(embargo_minutes, max_horizon_minutes)`` whole
minutes strictly between the two (**purge** removes overlap, **embargo** adds the gap). The gap is enforced on
both sides of each block: before it (the boundary every expanding walk-forward fold has) and, with
``train_after_validation=True``, after it. Samples of several symbols share one clock, so purging is by time
across symbols.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

MINUTE_NS = 60_000_000_000


@dataclass(frozen=True, eq=False)
class Fold:
    """Sample indices (into the sample set, ordered by time) for training and for validation."""

    train: np.ndarray
    validation: np.ndarray


def sample_times_ns(sample_time: np.ndarray | pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Sample times as int64 nanoseconds since the epoch (UTC); naive times are taken as UTC."""
    if isinstance(sample_time, pd.Series | pd.DatetimeIndex):
        index = pd.DatetimeIndex(sample_time)
        if index.tz is not None:
            index = index.tz_convert("UTC").tz_localize(None)
        values = index.as_unit("ns").to_numpy()
    else:
        values = np.asarray(sample_time)
        if values.dtype.kind != "M":
            raise ValueError(f"sample_time must hold datetime64 values, got dtype {values.dtype}")
        values = values.astype("datetime64[ns]")
    if values.ndim != 1:
        raise ValueError(f"sample_time must be one-dimensional, got shape {values.shape}")
    if np.isnat(values).any():
        raise ValueError(f"sample_time holds NaT at position {int(np.flatnonzero(np.isnat(values))[0])}")
    return values.view(np.int64)


def _effective_embargo(window_minutes: int, max_horizon_minutes: int, embargo_minutes: int | None) -> int:
    if window_minutes < 1:
        raise ValueError(f"window_minutes must be >= 1, got {window_minutes}")
    if max_horizon_minutes < 0:
        raise ValueError(f"max_horizon_minutes must be >= 0, got {max_horizon_minutes}")
    if embargo_minutes is not None and embargo_minutes < 0:
        raise ValueError(f"embargo_minutes must be >= 0, got {embargo_minutes}")
    return max(embargo_minutes or 0, max_horizon_minutes)


def _ordered(times: np.ndarray, mask: np.ndarray) -> np.ndarray:
    order = np.argsort(times, kind="stable")
    return order[mask[order]].astype(np.int64)


def _split_around(
    times: np.ndarray,
    validation_mask: np.ndarray,
    *,
    window_minutes: int,
    max_horizon_minutes: int,
    embargo: int,
    train_after_validation: bool,
    min_train_samples: int,
    label: str,
) -> Fold:
    """Purge and embargo the training samples around one validation block."""
    val_times = times[validation_mask]
    span_start = val_times.min() - (window_minutes - 1) * MINUTE_NS
    span_end = val_times.max() + max_horizon_minutes * MINUTE_NS
    own_start = times - (window_minutes - 1) * MINUTE_NS
    own_end = times + max_horizon_minutes * MINUTE_NS
    train_mask = own_end + (embargo + 1) * MINUTE_NS <= span_start
    if train_after_validation:
        train_mask |= own_start >= span_end + (embargo + 1) * MINUTE_NS
    n_train = int(train_mask.sum())
    if n_train < max(min_train_samples, 1):
        raise ValueError(
            f"{label}: {n_train} training samples remain after purging and embargo (need at least "
            f"{max(min_train_samples, 1)}); validation times {val_times.min().view('datetime64[ns]')} .. "
            f"{val_times.max().view('datetime64[ns]')}, window_minutes={window_minutes}, "
            f"max_horizon_minutes={max_horizon_minutes}, embargo={embargo} min: use fewer/shorter validation "
            "blocks or more data"
        )
    return Fold(train=_ordered(times, train_mask), validation=_ordered(times, validation_mask))


def walk_forward_folds(
    sample_time: np.ndarray | pd.Series | pd.DatetimeIndex,
    *,
    n_folds: int,
    validation_minutes: int | None = None,
    window_minutes: int,
    max_horizon_minutes: int,
    embargo_minutes: int | None = None,
    min_train_samples: int = 1,
    train_after_validation: bool = False,
) -> list[Fold]:
    """Expanding-window walk-forward folds, oldest first, with purge and embargo (see module docstring).

    Validation blocks are consecutive and disjoint. With ``validation_minutes`` they are the last
    ``n_folds`` blocks of that many minutes ending at the newest sample (each ``(end - V, end]``); without
    it the distinct sample times are cut into ``n_folds + 1`` groups of equal count and the first group is
    training-only. Fold ``k`` trains on samples before block ``k`` (and after it too when
    ``train_after_validation``). Raises ``ValueError`` naming the fold and settings when a block is empty or
    fewer than ``min_train_samples`` training samples remain.
    """
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    embargo = _effective_embargo(window_minutes, max_horizon_minutes, embargo_minutes)
    times = sample_times_ns(sample_time)
    if times.size == 0:
        raise ValueError("walk_forward_folds needs at least one sample")
    if validation_minutes is None:
        distinct = np.unique(times)
        if distinct.size < n_folds + 1:
            raise ValueError(
                f"{distinct.size} distinct sample times cannot make n_folds={n_folds} folds plus training"
            )
        groups = np.array_split(distinct, n_folds + 1)[1:]
        blocks = [(g[0] - 1, g[-1]) for g in groups]
    else:
        if validation_minutes < 1:
            raise ValueError(f"validation_minutes must be >= 1, got {validation_minutes}")
        newest, length = times.max(), validation_minutes * MINUTE_NS
        blocks = [
            (newest - (n_folds - k) * length, newest - (n_folds - k - 1) * length) for k in range(n_folds)
        ]
    folds = []
    for k, (after, through) in enumerate(blocks):
        validation_mask = (times > after) & (times <= through)
        if not validation_mask.any():
            raise ValueError(
                f"fold {k}: validation block ({after.view('datetime64[ns]')}, {through.view('datetime64[ns]')}] "
                f"holds no samples (validation_minutes={validation_minutes}); the data has a gap there"
            )
        folds.append(
            _split_around(
                times,
                validation_mask,
                window_minutes=window_minutes,
                max_horizon_minutes=max_horizon_minutes,
                embargo=embargo,
                train_after_validation=train_after_validation,
                min_train_samples=min_train_samples,
                label=f"fold {k}",
            )
        )
    return folds


def holdout_split(
    sample_time: np.ndarray | pd.Series | pd.DatetimeIndex,
    *,
    holdout_minutes: int | None = None,
    fraction: float | None = None,
    window_minutes: int,
    max_horizon_minutes: int,
    embargo_minutes: int | None = None,
    min_train_samples: int = 1,
) -> Fold:
    """Hold out the newest block for final evaluation; ``train`` is everything before it, purged and embargoed.

    Give exactly one of ``holdout_minutes`` (samples newer than ``newest - holdout_minutes``) or ``fraction``
    (the newest ``ceil(fraction * distinct times)`` distinct sample times). Walk-forward folds on the rest
    index into ``train``: ``holdout.train[fold.train]`` maps them back to the full sample set.
    """
    if (holdout_minutes is None) == (fraction is None):
        raise ValueError("holdout_split needs exactly one of holdout_minutes or fraction")
    embargo = _effective_embargo(window_minutes, max_horizon_minutes, embargo_minutes)
    times = sample_times_ns(sample_time)
    if times.size == 0:
        raise ValueError("holdout_split needs at least one sample")
    if fraction is not None:
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
        distinct = np.unique(times)
        first_held = distinct[distinct.size - max(1, math.ceil(fraction * distinct.size))]
        validation_mask = times >= first_held
    else:
        assert holdout_minutes is not None
        if holdout_minutes < 1:
            raise ValueError(f"holdout_minutes must be >= 1, got {holdout_minutes}")
        validation_mask = times > times.max() - holdout_minutes * MINUTE_NS
    return _split_around(
        times,
        validation_mask,
        window_minutes=window_minutes,
        max_horizon_minutes=max_horizon_minutes,
        embargo=embargo,
        train_after_validation=False,
        min_train_samples=min_train_samples,
        label="holdout",
    )
