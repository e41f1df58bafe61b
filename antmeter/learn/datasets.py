"""Windowed samples for sequence models: one feature matrix, index-based windows, train-only scaling.

A *sample* ends at row ``t`` of a symbol's frame (its prediction time is the open time of row ``t``; by the
candle time convention it is usable once that candle has closed). Its input is the window of rows
``[t - W + 1, t]`` and its targets are the labels keyed ``t`` (``up_{h}``/``direction3_{h}`` and
``fwd_return_{h}`` for every horizon). Row ``t`` is a sample only if the whole window holds finite
features, covers consecutive candles (no time gap), and every horizon's labels exist.

All symbols' feature rows are stored once, concatenated, in one contiguous ``float32`` matrix ``X``;
samples are just end-row indices into it, so overlapping windows never exist as copies in memory.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from antmeter.market.candles import interval_timedelta

TASKS = {"binary": ("up", 2), "three_class": ("direction3", 3)}
"""Task name -> (label column prefix, number of classes)."""

EXCLUSION_REASONS = ("warmup", "gap", "nan_features", "unlabeled", "stride")
"""Why a row is not a sample, in the order they are checked (each excluded row counts once, first match):
``warmup`` fewer than ``window`` rows of this symbol end at the row; ``gap`` the window spans missing
candles; ``nan_features`` some feature in the window is NaN/inf; ``unlabeled`` some horizon's class or
return label is missing; ``stride`` a valid row skipped because its minute is not a multiple of ``stride``."""

SCALER_FILE = "scaler.npz"
SCHEMA_FILE = "feature_schema.json"


@dataclass(frozen=True)
class DatasetSpec:
    """How samples are cut: window length, stride and horizons (all in candles of ``interval``) and the
    target task."""

    window: int = 60
    stride: int = 1
    horizons: tuple[int, ...] = (5, 10, 30)
    task: str = "binary"
    interval: str = "1m"

    def __post_init__(self) -> None:
        object.__setattr__(self, "horizons", tuple(int(h) for h in self.horizons))
        if int(self.window) < 1:
            raise ValueError(f"DatasetSpec.window must be >= 1, got {self.window}")
        if int(self.stride) < 1:
            raise ValueError(f"DatasetSpec.stride must be >= 1, got {self.stride}")
        if not self.horizons or any(h < 1 for h in self.horizons):
            raise ValueError(f"DatasetSpec.horizons must be non-empty positive minutes, got {self.horizons}")
        if len(set(self.horizons)) != len(self.horizons):
            raise ValueError(f"DatasetSpec.horizons has duplicates: {self.horizons}")
        if self.task not in TASKS:
            raise ValueError(f"DatasetSpec.task must be one of {sorted(TASKS)}, got {self.task!r}")
        interval_timedelta(self.interval)

    @property
    def n_classes(self) -> int:
        """2 for ``binary`` (down/up), 3 for ``three_class`` (down/flat/up)."""
        return TASKS[self.task][1]

    @property
    def max_horizon(self) -> int:
        """The longest horizon in candles."""
        return max(self.horizons)

    @property
    def window_minutes(self) -> int:
        """The window's span on the clock: what purging must cover behind a validation block."""
        return self._minutes(self.window)

    @property
    def max_horizon_minutes(self) -> int:
        """The longest horizon on the clock: what purging and embargo must cover ahead of a sample."""
        return self._minutes(self.max_horizon)

    def _minutes(self, candles: int) -> int:
        return int(candles * interval_timedelta(self.interval) / pd.Timedelta(minutes=1))

    def class_columns(self) -> list[str]:
        """Label columns holding the class targets, one per horizon."""
        prefix = TASKS[self.task][0]
        return [f"{prefix}_{h}" for h in self.horizons]

    def return_columns(self) -> list[str]:
        """Label columns holding the forward-return (regression) targets, one per horizon."""
        return [f"fwd_return_{h}" for h in self.horizons]


class FeatureSchemaError(ValueError):
    """Feature columns that do not match the schema a model or scaler was built with."""


@dataclass(frozen=True)
class FeatureSchema:
    """The ordered feature columns (and their source dtypes) a model and its scaler expect."""

    names: tuple[str, ...]
    dtypes: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "dtypes", tuple(str(d) for d in self.dtypes))
        if len(self.names) != len(self.dtypes):
            raise FeatureSchemaError(f"schema has {len(self.names)} names but {len(self.dtypes)} dtypes")
        duplicated = sorted({n for n in self.names if self.names.count(n) > 1})
        if duplicated:
            raise FeatureSchemaError(f"schema has duplicate feature names: {duplicated}")

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, columns: Sequence[str]) -> FeatureSchema:
        """The schema of ``columns`` (in that order) as they are typed in ``frame``."""
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise FeatureSchemaError(f"feature column(s) missing from frame: {missing}")
        return cls(tuple(columns), tuple(str(frame[c].dtype) for c in columns))

    def __len__(self) -> int:
        return len(self.names)

    def verify(
        self,
        frame_or_columns: pd.DataFrame | Mapping[str, Any] | Sequence[str],
        *,
        ignore: Iterable[str] = ("open_time",),
    ) -> None:
        """Raise :class:`FeatureSchemaError` unless the columns equal this schema, in order and type.

        Accepts a frame (names and dtypes checked), a mapping name -> dtype, or a sequence of names (names
        and order only). Columns in ``ignore`` (default ``open_time``) are skipped. The message names every
        missing, extra, reordered and mistyped column.
        """
        if isinstance(frame_or_columns, pd.DataFrame):
            found: dict[str, str] | None = {
                str(c): str(frame_or_columns[c].dtype) for c in frame_or_columns.columns
            }
            names = [str(c) for c in frame_or_columns.columns]
        elif isinstance(frame_or_columns, Mapping):
            found = {str(k): str(v) for k, v in frame_or_columns.items()}
            names = list(found)
        else:
            names = [str(c) for c in frame_or_columns]
            found = None
        skip = set(ignore)
        names = [n for n in names if n not in skip]
        problems = []
        missing = [n for n in self.names if n not in names]
        extra = [n for n in names if n not in self.names]
        if missing:
            problems.append(f"missing {missing}")
        if extra:
            problems.append(f"extra {extra}")
        if not missing and not extra and names != list(self.names):
            moved = [
                f"{n!r} at position {names.index(n)} (expected {i})"
                for i, n in enumerate(self.names)
                if names[i] != n
            ]
            problems.append("reordered: " + ", ".join(moved))
        if found is not None:
            mistyped = [
                f"{n!r} is {found[n]} (expected {d})"
                for n, d in zip(self.names, self.dtypes, strict=True)
                if n in found and found[n] != d
            ]
            if mistyped:
                problems.append("mistyped: " + ", ".join(mistyped))
        if problems:
            raise FeatureSchemaError("feature columns do not match the schema: " + "; ".join(problems))

    def to_json(self) -> str:
        """The schema as a JSON document ``{"names": [...], "dtypes": [...]}``."""
        return json.dumps({"names": list(self.names), "dtypes": list(self.dtypes)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> FeatureSchema:
        """Parse :meth:`to_json` output, naming the field that is missing or malformed."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FeatureSchemaError(f"feature schema is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise FeatureSchemaError("feature schema JSON must be an object with 'names' and 'dtypes'")
        for key in ("names", "dtypes"):
            if not isinstance(doc.get(key), list) or not all(isinstance(v, str) for v in doc[key]):
                raise FeatureSchemaError(f"feature schema JSON field {key!r} must be a list of strings")
        return cls(tuple(doc["names"]), tuple(doc["dtypes"]))


@dataclass(eq=False)
class FeatureScaler:
    """Per-feature standardization ``(x - mean) / std`` fitted on training rows only.

    Constant features (std below 1e-12) get std 1 so they map to 0 instead of dividing by zero.
    """

    mean: np.ndarray
    std: np.ndarray
    schema: FeatureSchema

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float64)
        self.std = np.asarray(self.std, dtype=np.float64)
        n = len(self.schema)
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values.shape != (n,):
                raise ValueError(f"scaler {name} has shape {values.shape}, schema has {n} features")
            if not np.isfinite(values).all():
                bad = self.schema.names[int(np.flatnonzero(~np.isfinite(values))[0])]
                raise ValueError(f"scaler {name} is not finite for feature {bad!r}")
        if (self.std <= 0).any():
            i = int(np.flatnonzero(self.std <= 0)[0])
            raise ValueError(
                f"scaler std must be positive, feature {self.schema.names[i]!r} has {self.std[i]}"
            )
        # float32 copies for transform (computed once: the serving path transforms one window per call)
        self._mean32, self._std32 = self.mean.astype(np.float32), self.std.astype(np.float32)

    @classmethod
    def fit(cls, x: np.ndarray, schema: FeatureSchema) -> FeatureScaler:
        """Fit on the training rows ``x`` (rows x features, all finite)."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != len(schema):
            raise ValueError(f"scaler fit expects (rows, {len(schema)}) features, got shape {x.shape}")
        if x.shape[0] == 0:
            raise ValueError("scaler fit needs at least one training row")
        finite = np.isfinite(x).all(axis=0)
        if not finite.all():
            raise ValueError(
                f"scaler fit rows hold NaN/inf in feature {schema.names[int(np.flatnonzero(~finite)[0])]!r}"
            )
        mean = x.mean(axis=0, dtype=np.float64)
        std = x.std(axis=0, dtype=np.float64)
        std[std < 1e-12] = 1.0
        return cls(mean, std, schema)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """A new ``float32`` array ``(x - mean) / std``; the last axis must be the schema's features."""
        x = np.asarray(x)
        if x.shape[-1:] != (len(self.schema),):
            raise ValueError(
                f"scaler expects {len(self.schema)} features on the last axis, got shape {x.shape}"
            )
        out = np.subtract(x, self._mean32, dtype=np.float32)
        out /= self._std32
        return out

    def inverse_transform(self, x: np.ndarray) -> np.ndarray:
        """Undo :meth:`transform` (``float64`` result)."""
        return np.asarray(x, dtype=np.float64) * self.std + self.mean

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``scaler.npz`` (plain arrays, no pickle) and ``feature_schema.json`` into ``directory``.

        Both files are written to temporary names first and renamed, so a failure leaves no half-written file.
        """
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        staged: list[tuple[str, Path]] = []
        try:
            with tempfile.NamedTemporaryFile(dir=target, suffix=".npz", delete=False) as fh:
                staged.append((fh.name, target / SCALER_FILE))
                np.savez(fh, mean=self.mean, std=self.std)
            with tempfile.NamedTemporaryFile(
                "w", dir=target, suffix=".json", delete=False, encoding="utf-8"
            ) as fh:
                staged.append((fh.name, target / SCHEMA_FILE))
                fh.write(self.schema.to_json())
            for tmp, final in staged:
                os.replace(tmp, final)
        finally:
            for tmp, _ in staged:
                if os.path.exists(tmp):
                    os.unlink(tmp)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> FeatureScaler:
        """Read what :meth:`save` wrote (``np.load(..., allow_pickle=False)``)."""
        source = Path(directory)
        schema = FeatureSchema.from_json((source / SCHEMA_FILE).read_text(encoding="utf-8"))
        with np.load(source / SCALER_FILE, allow_pickle=False) as arrays:
            missing = {"mean", "std"} - set(arrays.files)
            if missing:
                raise ValueError(f"{source / SCALER_FILE} lacks array(s) {sorted(missing)}")
            return cls(arrays["mean"], arrays["std"], schema)


@dataclass(frozen=True, eq=False)
class SampleSet:
    """All samples of one or more symbols: a shared feature matrix plus per-sample indices and targets.

    Samples are ordered by ``(sample_time, symbol_id)``. ``sample_time`` is ``datetime64[ns]`` holding UTC
    instants (numpy has no time zone). ``end_index[i]`` is the row of ``X`` where sample ``i``'s window ends.
    ``excluded`` counts rows that are not samples by reason (see :data:`EXCLUSION_REASONS`).
    ``scaler`` is set on sets returned by :meth:`scaled`.
    """

    X: np.ndarray
    end_index: np.ndarray
    y_class: np.ndarray
    y_reg: np.ndarray
    sample_time: np.ndarray
    symbol_id: np.ndarray
    symbols: tuple[str, ...]
    schema: FeatureSchema
    spec: DatasetSpec
    excluded: Mapping[str, int] = field(default_factory=dict)
    excluded_by_symbol: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    scaler: FeatureScaler | None = None

    def __len__(self) -> int:
        return int(self.end_index.shape[0])

    @property
    def window(self) -> int:
        return self.spec.window

    @property
    def horizons(self) -> tuple[int, ...]:
        return self.spec.horizons

    def _indices(self, indices: np.ndarray | Sequence[int] | None) -> np.ndarray:
        if indices is None:
            return np.arange(len(self), dtype=np.int64)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"sample indices must lie in [0, {len(self)}), got [{idx.min()}, {idx.max()}]")
        return idx

    def window_rows(self, indices: np.ndarray | Sequence[int] | None = None) -> np.ndarray:
        """Sorted rows of ``X`` covered by the windows of the given samples (all samples when None)."""
        ends = self.end_index[self._indices(indices)]
        cover = np.zeros(self.X.shape[0] + 1, dtype=np.int64)
        np.add.at(cover, ends - self.window + 1, 1)
        np.add.at(cover, ends + 1, -1)
        return np.flatnonzero(np.cumsum(cover[:-1]) > 0)

    def fit_scaler(self, train_indices: np.ndarray | Sequence[int]) -> FeatureScaler:
        """Fit a :class:`FeatureScaler` on exactly the rows covered by the training samples' windows."""
        if self.scaler is not None:
            raise ValueError("this SampleSet is already scaled; fit the scaler on the unscaled set")
        rows = self.window_rows(train_indices)
        if rows.size == 0:
            raise ValueError("no training samples given to fit the scaler on")
        return FeatureScaler.fit(self.X[rows], self.schema)

    def scaled(self, scaler: FeatureScaler) -> SampleSet:
        """A set sharing every array but ``X``, which is replaced by one new scaled matrix."""
        if self.scaler is not None:
            raise ValueError("this SampleSet is already scaled; scale the unscaled set instead")
        if scaler.schema.names != self.schema.names:
            scaler.schema.verify(list(self.schema.names), ignore=())
        return SampleSet(
            X=np.ascontiguousarray(scaler.transform(self.X)),
            end_index=self.end_index,
            y_class=self.y_class,
            y_reg=self.y_reg,
            sample_time=self.sample_time,
            symbol_id=self.symbol_id,
            symbols=self.symbols,
            schema=self.schema,
            spec=self.spec,
            excluded=self.excluded,
            excluded_by_symbol=self.excluded_by_symbol,
            scaler=scaler,
        )

    def view(self, indices: np.ndarray | Sequence[int] | None = None) -> WindowedDataset:
        """A :class:`WindowedDataset` over the given samples (all when None)."""
        return WindowedDataset(self, indices)

    def metadata(self) -> dict[str, Any]:
        """Counts worth recording next to the data: samples, rows, symbols and exclusions by reason."""
        return {
            "samples": len(self),
            "rows": int(self.X.shape[0]),
            "features": len(self.schema),
            "symbols": list(self.symbols),
            "samples_by_symbol": {
                s: int(n)
                for s, n in zip(
                    self.symbols, np.bincount(self.symbol_id, minlength=len(self.symbols)), strict=True
                )
            },
            "excluded": dict(self.excluded),
            "excluded_by_symbol": {s: dict(c) for s, c in self.excluded_by_symbol.items()},
            "window": self.spec.window,
            "stride": self.spec.stride,
            "horizons": list(self.spec.horizons),
            "task": self.spec.task,
        }


class WindowedDataset(Dataset):
    """Samples of a :class:`SampleSet` (optionally a subset) as sliding windows over the shared matrix.

    ``dataset[i]`` is ``(x, y_class, y_reg, symbol_id)``: ``x`` a ``[window, features]`` float32 tensor that
    is a *view* of the shared matrix (no copy), ``y_class`` ``[H]`` int64, ``y_reg`` ``[H]`` float32 and
    ``symbol_id`` an int64 scalar tensor. :meth:`batch` gathers many windows at once for numpy/ONNX use.
    """

    def __init__(self, samples: SampleSet, indices: np.ndarray | Sequence[int] | None = None):
        self.samples = samples
        self.indices = samples._indices(indices)
        self.window = samples.spec.window
        self.end_index = samples.end_index[self.indices]
        self.y_class = samples.y_class[self.indices]
        self.y_reg = samples.y_reg[self.indices]
        self.symbol_id = samples.symbol_id[self.indices]
        self.sample_time = samples.sample_time[self.indices]
        self._x = torch.from_numpy(samples.X)
        self._y_class = torch.from_numpy(self.y_class)
        self._y_reg = torch.from_numpy(self.y_reg)
        self._symbol_id = torch.from_numpy(self.symbol_id)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        end = int(self.end_index[i])
        return self._x[end - self.window + 1 : end + 1], self._y_class[i], self._y_reg[i], self._symbol_id[i]

    @property
    def horizons(self) -> tuple[int, ...]:
        return self.samples.spec.horizons

    @property
    def n_classes(self) -> int:
        return self.samples.spec.n_classes

    def windows(self) -> np.ndarray:
        """Every length-``window`` slice of the matrix as a read-only strided view ``(R - W + 1, W, F)``.

        Entry ``e - W + 1`` is the window ending at row ``e``. Nothing is copied.
        """
        if self.samples.X.shape[0] < self.window:  # too few rows for any window (and so no samples)
            return np.empty((0, self.window, self.samples.X.shape[1]), dtype=self.samples.X.dtype)
        view = np.lib.stride_tricks.sliding_window_view(self.samples.X, self.window, axis=0)
        return view.transpose(0, 2, 1)

    def _positions(self, positions: np.ndarray | Sequence[int] | None) -> np.ndarray:
        if positions is None:
            return np.arange(len(self), dtype=np.int64)
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        if pos.size and (pos.min() < 0 or pos.max() >= len(self)):
            raise IndexError(f"positions must lie in [0, {len(self)}), got [{pos.min()}, {pos.max()}]")
        return pos

    def batch(
        self, positions: np.ndarray | Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Gather ``(x [B, W, F] float32, y_class [B, H], y_reg [B, H], symbol_id [B])`` for the given
        positions of this dataset (all when None); ``x`` is one new array built from the strided view."""
        pos = self._positions(positions)
        x = self.windows()[self.end_index[pos] - self.window + 1]
        return x, self.y_class[pos], self.y_reg[pos], self.symbol_id[pos]

    def last_rows(self, positions: np.ndarray | Sequence[int] | None = None) -> np.ndarray:
        """The features at each sample's prediction time (the window's last row), ``[B, F]``."""
        return self.samples.X[self.end_index[self._positions(positions)]]


def _exclusion_reasons(
    times_ns: np.ndarray,
    feature_ok: np.ndarray,
    labels_ok: np.ndarray,
    window: int,
    stride: int,
    step_ns: int,
) -> np.ndarray:
    """Per row: -1 when the row is a sample, else the index in :data:`EXCLUSION_REASONS` of why not."""
    n = times_ns.shape[0]
    reason = np.full(n, -1, dtype=np.int64)
    positions = np.arange(n)
    has_history = positions >= window - 1
    start = np.clip(positions - window + 1, 0, None)
    contiguous = np.zeros(n, dtype=bool)
    contiguous[has_history] = (times_ns[has_history] - times_ns[start[has_history]]) == (window - 1) * step_ns
    bad_cumulative = np.concatenate([[0], np.cumsum(~feature_ok)])
    window_clean = (bad_cumulative[positions + 1] - bad_cumulative[start]) == 0
    on_stride = (times_ns // step_ns) % stride == 0
    checks = [has_history, contiguous, window_clean, labels_ok, on_stride]
    for code in range(len(checks) - 1, -1, -1):  # last assignment wins: earliest failing check
        reason[~checks[code]] = code
    return reason


def _times_ns(frame: pd.DataFrame, symbol: str) -> np.ndarray:
    if "open_time" not in frame.columns:
        raise ValueError(f"symbol {symbol!r}: frame has no 'open_time' column")
    times = frame["open_time"]
    if not isinstance(times.dtype, pd.DatetimeTZDtype):
        raise ValueError(f"symbol {symbol!r}: 'open_time' must be timezone-aware UTC, got {times.dtype}")
    ns = pd.DatetimeIndex(times).tz_convert("UTC").as_unit("ns").asi8
    if ns.size > 1:
        steps = np.diff(ns)
        if (steps <= 0).any():
            i = int(np.flatnonzero(steps <= 0)[0]) + 1
            raise ValueError(
                f"symbol {symbol!r}: row {i}, field 'open_time': times must be strictly increasing "
                f"({times.iloc[i - 1]} then {times.iloc[i]})"
            )
    return ns


def build_samples(
    frames: Mapping[str, pd.DataFrame],
    feature_cols: Sequence[str],
    spec: DatasetSpec,
) -> SampleSet:
    """Cut windowed samples from per-symbol frames (features and labels joined on ``open_time``).

    A row ``t`` becomes a sample if ``[t - W + 1, t]`` are consecutive candles (no time gap) with finite
    features and all horizons' class and return labels at ``t`` exist; with ``stride > 1`` only rows whose
    minute (since the epoch) is a multiple of ``stride`` are kept, so pooled symbols share sample times.
    Rows of all symbols are concatenated into one float32 matrix; samples are ordered by time, then symbol.
    """
    if not frames:
        raise ValueError("build_samples needs at least one symbol frame")
    feature_cols = list(feature_cols)
    if not feature_cols:
        raise ValueError("build_samples needs at least one feature column")
    class_cols, return_cols = spec.class_columns(), spec.return_columns()
    symbols = tuple(frames)
    first = frames[symbols[0]]
    missing = [c for c in feature_cols if c not in first.columns]
    if missing:
        raise ValueError(f"symbol {symbols[0]!r}: missing feature column(s) {missing}")
    schema = FeatureSchema.from_frame(first, feature_cols)
    step_ns = int(interval_timedelta(spec.interval).value)
    n_classes = spec.n_classes
    n_rows_total = sum(len(f) for f in frames.values())
    X = np.empty((n_rows_total, len(feature_cols)), dtype=np.float32)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("end", "y_class", "y_reg", "time", "symbol")}
    excluded_by_symbol: dict[str, dict[str, int]] = {}
    offset = 0
    for symbol_id, symbol in enumerate(symbols):
        frame = frames[symbol]
        missing = [c for c in [*feature_cols, *class_cols, *return_cols] if c not in frame.columns]
        if missing:
            raise ValueError(f"symbol {symbol!r}: missing column(s) {missing}")
        try:
            schema.verify(frame[feature_cols], ignore=())
        except FeatureSchemaError as exc:
            raise FeatureSchemaError(f"symbol {symbol!r}: {exc}") from None
        times = _times_ns(frame, symbol)
        n = times.shape[0]
        try:
            features = frame[feature_cols].to_numpy(dtype=np.float32, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"symbol {symbol!r}: feature columns must be numeric ({exc})") from None
        X[offset : offset + n] = features
        classes = frame[class_cols].to_numpy(dtype=np.float64, na_value=np.nan)
        returns = frame[return_cols].to_numpy(dtype=np.float64, na_value=np.nan)
        labels_ok = np.isfinite(classes).all(axis=1) & np.isfinite(returns).all(axis=1)
        reason = _exclusion_reasons(
            times, np.isfinite(features).all(axis=1), labels_ok, spec.window, spec.stride, step_ns
        )
        keep = np.flatnonzero(reason < 0)
        kept_classes = classes[keep]
        invalid = (kept_classes != np.round(kept_classes)) | (kept_classes < 0) | (kept_classes >= n_classes)
        if invalid.any():
            r, c = (int(v[0]) for v in np.nonzero(invalid))
            raise ValueError(
                f"symbol {symbol!r}: row {int(keep[r])}, field {class_cols[c]!r}: class label "
                f"{kept_classes[r, c]!r} is not an integer in [0, {n_classes})"
            )
        counts = np.bincount(reason[reason >= 0], minlength=len(EXCLUSION_REASONS))
        excluded_by_symbol[symbol] = {name: int(c) for name, c in zip(EXCLUSION_REASONS, counts, strict=True)}
        parts["end"].append(keep + offset)
        parts["y_class"].append(kept_classes.astype(np.int64))
        parts["y_reg"].append(returns[keep].astype(np.float32))
        parts["time"].append(times[keep])
        parts["symbol"].append(np.full(keep.shape[0], symbol_id, dtype=np.int64))
        offset += n
    time_ns = np.concatenate(parts["time"]).astype(np.int64)
    symbol_id = np.concatenate(parts["symbol"])
    order = np.lexsort((symbol_id, time_ns))
    h = len(spec.horizons)
    return SampleSet(
        X=X,
        end_index=np.concatenate(parts["end"]).astype(np.int64)[order],
        y_class=np.concatenate(parts["y_class"]).reshape(-1, h)[order],
        y_reg=np.concatenate(parts["y_reg"]).reshape(-1, h)[order],
        sample_time=time_ns[order].view("datetime64[ns]"),
        symbol_id=symbol_id[order],
        symbols=symbols,
        schema=schema,
        spec=spec,
        excluded={name: sum(c[name] for c in excluded_by_symbol.values()) for name in EXCLUSION_REASONS},
        excluded_by_symbol=excluded_by_symbol,
    )


SAMPLES_FILE = "samples.npz"
SAMPLES_META_FILE = "samples.json"


def save_samples(samples: SampleSet, directory: str | os.PathLike[str]) -> Path:
    """Write an *unscaled* sample set as ``samples.npz`` (plain arrays) + ``samples.json``, atomically."""
    if samples.scaler is not None:
        raise ValueError("save the unscaled SampleSet; scalers are fit per fold")
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    meta = {
        "symbols": list(samples.symbols),
        "schema": json.loads(samples.schema.to_json()),
        "spec": {
            "window": samples.spec.window,
            "stride": samples.spec.stride,
            "horizons": list(samples.spec.horizons),
            "task": samples.spec.task,
            "interval": samples.spec.interval,
        },
        "excluded": dict(samples.excluded),
        "excluded_by_symbol": {k: dict(v) for k, v in samples.excluded_by_symbol.items()},
    }
    with tempfile.NamedTemporaryFile(dir=target, suffix=".npz", delete=False) as fh:
        np.savez(
            fh,
            X=samples.X,
            end_index=samples.end_index,
            y_class=samples.y_class,
            y_reg=samples.y_reg,
            sample_time=samples.sample_time.astype("datetime64[ns]").view("int64"),
            symbol_id=samples.symbol_id,
        )
    os.replace(fh.name, target / SAMPLES_FILE)
    with tempfile.NamedTemporaryFile("w", dir=target, suffix=".json", delete=False, encoding="utf-8") as fh:
        json.dump(meta, fh)
    os.replace(fh.name, target / SAMPLES_META_FILE)
    return target


def load_samples(directory: str | os.PathLike[str]) -> SampleSet:
    """Read a sample set written by :func:`save_samples` (``allow_pickle=False``)."""
    source = Path(directory)
    meta = json.loads((source / SAMPLES_META_FILE).read_text(encoding="utf-8"))
    with np.load(source / SAMPLES_FILE, allow_pickle=False) as arrays:
        data = {k: arrays[k] for k in arrays.files}
    schema = FeatureSchema(tuple(meta["schema"]["names"]), tuple(meta["schema"]["dtypes"]))
    spec = meta["spec"]
    return SampleSet(
        X=np.ascontiguousarray(data["X"]),
        end_index=data["end_index"],
        y_class=data["y_class"],
        y_reg=data["y_reg"],
        sample_time=data["sample_time"].view("datetime64[ns]"),
        symbol_id=data["symbol_id"],
        symbols=tuple(meta["symbols"]),
        schema=schema,
        spec=DatasetSpec(
            window=spec["window"],
            stride=spec["stride"],
            horizons=tuple(spec["horizons"]),
            task=spec["task"],
            interval=spec.get("interval", "1m"),  # sets saved before intervals were recorded: minutes
        ),
        excluded=meta["excluded"],
        excluded_by_symbol=meta["excluded_by_symbol"],
    )
