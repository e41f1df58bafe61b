"""Pattern classifiers: per-candle pattern labels from a centred window of engineered features.

Each candle ``t`` is one sample. Its inputs are engineered features (antmeter.features.pipeline) at
offsets ``-half_window .. +half_window`` (every ``step`` candles; candle-shape features at
``shape_offsets``) and its target is the label of the span covering it (``O`` outside spans; from
the merged human + TA-Lib spans, :mod:`antmeter.learn.pattern_dataset`). The window looks
``half_window`` candles *past* ``t``: the model labels spans of the chart after the fact (a span's
prediction is final ``half_window`` minutes after it), it is not a forecaster. Samples with any
missing input (warm-up, gaps, the newest ``half_window`` minutes) are excluded and counted.

Evaluation: the newest ``holdout_minutes`` are held out (a later period), and the rest is split into
purged walk-forward folds; purge and embargo cover the window on both sides plus the longest span.
Classifiers: RandomForest and HistGradientBoosting (scikit-learn) with balanced class weights,
exported to ONNX (skl2onnx) for serving, so nothing is unpickled.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from antmeter.learn.folds import holdout_split, walk_forward_folds
from antmeter.learn.pattern_dataset import candle_targets, dataset_statistics, merge_spans
from antmeter.learn.spans import NO_PATTERN, group_predicted_spans, span_f1

PATTERN_KINDS = ("rf", "hgb")
POSITION_FEATURES = ("log_return_5", "ema_9_rel", "ema_21_rel", "bb_pctb_20", "rsi_14")
SHAPE_FEATURES = (
    "body_size",
    "body_direction",
    "upper_wick",
    "lower_wick",
    "body_to_range",
    "gap",
    "log_return_1",
)
MODEL_FILE = "pattern_model.onnx"
CONFIG_FILE = "pattern_model.json"
_MINUTE = pd.Timedelta(minutes=1)


@dataclass(frozen=True)
class PatternModelSpec:
    """How samples are built and evaluated (see the module docstring)."""

    half_window: int = 24
    step: int = 3
    shape_offsets: tuple[int, ...] = (-2, -1, 0, 1, 2)
    merge_strategy: str = "human_priority"
    min_confidence: float = 0.5
    holdout_minutes: int = 1440
    n_folds: int = 2
    max_span_minutes: int = 40
    seed: int = 0

    def input_columns(self) -> list[str]:
        offsets = range(-self.half_window, self.half_window + 1, self.step)
        return [f"{f}@{o:+d}" for o in offsets for f in POSITION_FEATURES] + [
            f"{f}@{o:+d}" for o in self.shape_offsets for f in SHAPE_FEATURES
        ]

    def max_offset(self) -> int:
        return max(self.half_window, *(abs(o) for o in self.shape_offsets))


def window_inputs(features: pd.DataFrame, spec: PatternModelSpec) -> tuple[pd.Series, np.ndarray]:
    """``(open_times, X)`` on the full minute grid of one symbol's features; X is float32 with NaN
    where an offset falls on a missing candle or outside the data."""
    frame = features.set_index("open_time").sort_index()
    grid = pd.date_range(frame.index[0], frame.index[-1], freq="1min")
    frame = frame.reindex(grid)
    n = len(frame)
    blocks = []
    for name in spec.input_columns():
        feature, offset = name.rsplit("@", 1)
        values = frame[feature].to_numpy(dtype=np.float64)
        shift = int(offset)
        shifted = np.full(n, np.nan)
        if shift >= 0:
            shifted[: n - shift] = values[shift:]
        else:
            shifted[-shift:] = values[: n + shift]
        blocks.append(shifted)
    x = np.stack(blocks, axis=1).astype(np.float32) if blocks else np.zeros((n, 0), np.float32)
    return pd.Series(grid, name="open_time"), x


@dataclass
class PatternSamples:
    """One row per usable candle of every symbol, ordered by (time, symbol)."""

    times: pd.Series
    symbols: np.ndarray
    x: np.ndarray
    y: np.ndarray
    rule: np.ndarray  # the TA-Lib rule's label per candle (O where no TA-Lib pattern)
    columns: list[str]
    statistics: dict[str, Any]
    excluded: int

    def __len__(self) -> int:
        return len(self.y)


def build_pattern_samples(
    features: dict[str, pd.DataFrame],
    human: pd.DataFrame,
    programmatic: pd.DataFrame,
    spec: PatternModelSpec = PatternModelSpec(),
) -> PatternSamples:
    """Samples from per-symbol feature frames, human annotation spans and TA-Lib spans (frames with
    ``symbol``, ``start_time``, ``end_time``, ``label``; human ones already filtered by confidence)."""
    parts, stats_parts = [], []
    excluded = 0
    for symbol in sorted(features):
        times, x = window_inputs(features[symbol], spec)
        h = human[human["symbol"] == symbol]
        p = programmatic[programmatic["symbol"] == symbol]
        merged = merge_spans(h, p, spec.merge_strategy)
        target_spans = merged["tag"] if "tag" in merged else merged["human_tag"]
        y = candle_targets(times, target_spans)
        rule = candle_targets(times, p)
        stats_parts.append((times, h, p, y))
        ok = np.isfinite(x).all(axis=1)
        excluded += int((~ok).sum())
        parts.append(
            (
                times[ok].reset_index(drop=True),
                np.full(int(ok.sum()), symbol, dtype=object),
                x[ok],
                y[ok],
                rule[ok],
            )
        )
    if not parts or sum(len(p[3]) for p in parts) == 0:
        raise ValueError("no usable pattern samples: every candle lacks a complete feature window")
    times = pd.concat([p[0] for p in parts], ignore_index=True)
    symbols = np.concatenate([p[1] for p in parts])
    order = np.lexsort((symbols.astype(str), times.to_numpy()))
    statistics = _pooled_statistics(stats_parts)
    return PatternSamples(
        times=times.iloc[order].reset_index(drop=True),
        symbols=symbols[order],
        x=np.concatenate([p[2] for p in parts])[order],
        y=np.concatenate([p[3] for p in parts])[order],
        rule=np.concatenate([p[4] for p in parts])[order],
        columns=spec.input_columns(),
        statistics=statistics,
        excluded=excluded,
    )


def _pooled_statistics(parts: list[tuple]) -> dict[str, Any]:
    """:func:`dataset_statistics` over all symbols (span counts add up; rates over all candles)."""
    times = pd.concat([p[0] + pd.Timedelta(days=3650 * i) for i, p in enumerate(parts)], ignore_index=True)
    shift = [pd.Timedelta(days=3650 * i) for i in range(len(parts))]

    def shifted(k: int) -> pd.DataFrame:
        frames = [
            p[k].assign(start_time=p[k]["start_time"] + s, end_time=p[k]["end_time"] + s)
            for p, s in zip(parts, shift, strict=True)
        ]
        return pd.concat(frames, ignore_index=True)

    return dataset_statistics(times, shifted(1), shifted(2), np.concatenate([p[3] for p in parts]))


def save_pattern_samples(samples: PatternSamples, directory: Path) -> str:
    """Write samples as ``pattern_samples.npz`` (no object arrays, nothing pickled) + JSON; returns a
    fingerprint of the contents."""
    import hashlib

    directory.mkdir(parents=True, exist_ok=True)
    times = (
        samples.times.dt.tz_convert("UTC")
        .dt.tz_localize(None)
        .to_numpy()
        .astype("datetime64[ns]")
        .view(np.int64)
    )
    arrays = {
        "times_ns": times,
        "symbols": samples.symbols.astype(str),
        "x": samples.x,
        "y": samples.y.astype(str),
        "rule": samples.rule.astype(str),
    }
    np.savez(directory / "pattern_samples.npz", **arrays)
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    fingerprint = digest.hexdigest()[:16]
    meta = {
        "columns": samples.columns,
        "statistics": samples.statistics,
        "excluded": samples.excluded,
        "fingerprint": fingerprint,
    }
    (directory / "pattern_samples.json").write_text(json.dumps(meta, indent=1))
    return fingerprint


def load_pattern_samples(directory: Path) -> tuple[PatternSamples, str]:
    """Read what :func:`save_pattern_samples` wrote (``allow_pickle=False``); returns (samples, fingerprint)."""
    meta = json.loads((directory / "pattern_samples.json").read_text())
    with np.load(directory / "pattern_samples.npz", allow_pickle=False) as data:
        samples = PatternSamples(
            times=pd.Series(pd.to_datetime(data["times_ns"], unit="ns", utc=True)),
            symbols=data["symbols"].astype(object),
            x=data["x"],
            y=data["y"].astype(object),
            rule=data["rule"].astype(object),
            columns=meta["columns"],
            statistics=meta["statistics"],
            excluded=meta["excluded"],
        )
    return samples, meta["fingerprint"]


# -- models -------------------------------------------------------------------------------------


def make_classifier(kind: str, seed: int = 0):
    """A fresh RandomForest (``rf``) or HistGradientBoosting (``hgb``) classifier with balanced class weights."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    if kind == "rf":
        return RandomForestClassifier(
            n_estimators=80,
            min_samples_leaf=2,
            max_features="sqrt",
            class_weight="balanced_subsample",
            n_jobs=1,
            random_state=seed,
        )
    if kind == "hgb":
        return HistGradientBoostingClassifier(
            max_iter=40,
            learning_rate=0.15,
            max_leaf_nodes=31,
            class_weight="balanced",
            early_stopping=False,
            random_state=seed,
        )
    raise ValueError(f"pattern classifier kind must be one of {list(PATTERN_KINDS)}, got {kind!r}")


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, per-class precision/recall/F1/support, confusion matrix, report text."""
    from sklearn.metrics import (
        accuracy_score,
        classification_report,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "f1_weighted": float(f1_score(y_true, y_pred, labels=classes, average="weighted", zero_division=0)),
        "per_class": {
            c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": {
            "labels": classes,
            "matrix": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
        },
        "report": classification_report(y_true, y_pred, labels=classes, zero_division=0),
    }


def spans_of(
    times: pd.Series, symbols: np.ndarray, labels: np.ndarray, confidence: np.ndarray | None = None
) -> pd.DataFrame:
    """Per-candle labels of several symbols grouped into spans (see :func:`group_predicted_spans`)."""
    confidence = np.ones(len(labels)) if confidence is None else confidence
    frames = []
    for symbol in sorted(set(symbols)):
        mask = symbols == symbol
        frames.append(
            group_predicted_spans(
                times[mask].reset_index(drop=True), labels[mask], confidence[mask], symbol=symbol
            )
        )
    return pd.concat(frames, ignore_index=True)


@dataclass
class PatternCandidate:
    """A trained pattern classifier and its evaluation on the held-out period."""

    kind: str
    spec: PatternModelSpec
    model: Any
    classes: list[str]
    holdout: np.ndarray  # sample indices of the held-out period
    holdout_pred: np.ndarray
    holdout_proba: np.ndarray
    metrics: dict[str, Any]  # model scores on the holdout
    baselines: dict[str, dict[str, Any]]  # majority and talib_rule on the same rows
    folds: list[dict[str, float]]
    feature_importance: dict[str, float]
    train_samples: int
    extra: dict[str, Any] = field(default_factory=dict)


def _purge(spec: PatternModelSpec) -> dict[str, int]:
    """A sample touches candles ``[t - max_offset, t + max_offset]`` and its label the span around it."""
    return {
        "window_minutes": spec.max_offset() + 1,
        "max_horizon_minutes": spec.max_offset(),
        "embargo_minutes": spec.max_span_minutes,
    }


def train_pattern_candidate(
    samples: PatternSamples, kind: str, spec: PatternModelSpec = PatternModelSpec()
) -> PatternCandidate:
    """Walk-forward folds on the pre-holdout period, then a fit on all of it and scores on the holdout
    next to the majority class and the TA-Lib rule."""
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import f1_score

    purge = _purge(spec)
    split = holdout_split(samples.times, holdout_minutes=spec.holdout_minutes, min_train_samples=100, **purge)
    train, holdout = split.train, split.validation
    classes = [NO_PATTERN] + sorted(set(samples.y[train]) - {NO_PATTERN})
    fold_scores = []
    for i, fold in enumerate(
        walk_forward_folds(samples.times.iloc[train], n_folds=spec.n_folds, min_train_samples=100, **purge)
    ):
        rows_train, rows_val = train[fold.train], train[fold.validation]
        model = make_classifier(kind, spec.seed).fit(samples.x[rows_train], samples.y[rows_train])
        pred = model.predict(samples.x[rows_val])
        fold_scores.append(
            {
                "fold": i,
                "train_samples": len(rows_train),
                "validation_samples": len(rows_val),
                "f1_macro": float(
                    f1_score(samples.y[rows_val], pred, labels=classes, average="macro", zero_division=0)
                ),
                "accuracy": float((pred == samples.y[rows_val]).mean()),
            }
        )
    model = make_classifier(kind, spec.seed).fit(samples.x[train], samples.y[train])
    proba = model.predict_proba(samples.x[holdout])
    pred = np.asarray(model.classes_, dtype=object)[proba.argmax(axis=1)]
    y_true = samples.y[holdout]
    times, symbols = samples.times.iloc[holdout].reset_index(drop=True), samples.symbols[holdout]
    true_spans = spans_of(times, symbols, y_true)
    majority = pd.Series(samples.y[train]).mode().iloc[0]
    predictions = {
        "model": pred,
        "majority": np.full(len(holdout), majority, dtype=object),
        "talib_rule": samples.rule[holdout],
    }
    scored = {}
    for name, labels in predictions.items():
        scores = classification_scores(y_true, labels, classes)
        scores.update(span_f1(true_spans, spans_of(times, symbols, labels)))
        scored[name] = scores
    rng_rows = np.random.default_rng(spec.seed).permutation(len(holdout))[:1500]
    importance = permutation_importance(
        model,
        samples.x[holdout][rng_rows],
        y_true[rng_rows],
        scoring="f1_macro",
        n_repeats=2,
        random_state=spec.seed,
        n_jobs=1,
    ).importances_mean
    return PatternCandidate(
        kind=kind,
        spec=spec,
        model=model,
        classes=[str(c) for c in model.classes_],
        holdout=holdout,
        holdout_pred=pred,
        holdout_proba=proba,
        metrics=scored["model"],
        baselines={"majority": scored["majority"], "talib_rule": scored["talib_rule"]},
        folds=fold_scores,
        feature_importance={c: float(v) for c, v in zip(samples.columns, importance, strict=True)},
        train_samples=len(train),
    )


# -- ONNX bundle --------------------------------------------------------------------------------


def export_pattern_bundle(
    candidate: PatternCandidate, samples: PatternSamples, directory: Path
) -> dict[str, float]:
    """Write ``pattern_model.onnx`` + ``pattern_model.json`` and check ONNX parity on the holdout rows;
    returns the parity figures (max |proba difference|, label agreement)."""
    from skl2onnx import to_onnx

    directory.mkdir(parents=True, exist_ok=True)
    sample = samples.x[candidate.holdout[:1]]
    onnx_model = to_onnx(
        candidate.model,
        sample,
        options={id(candidate.model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    (directory / MODEL_FILE).write_bytes(onnx_model.SerializeToString())
    config = {
        "kind": candidate.kind,
        "classes": candidate.classes,
        "input_columns": samples.columns,
        "spec": asdict(candidate.spec),
        "interval": "1m",
    }
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    served = PatternBundle.load(directory)
    labels, proba = served.predict(samples.x[candidate.holdout])
    parity = {
        "onnx_max_abs_proba_diff": float(np.abs(proba - candidate.holdout_proba).max()),
        "onnx_label_agreement": float((labels == candidate.holdout_pred).mean()),
    }
    if parity["onnx_label_agreement"] < 0.999 or parity["onnx_max_abs_proba_diff"] > 1e-3:
        raise RuntimeError(
            f"ONNX export of the {candidate.kind} pattern classifier disagrees with scikit-learn: {parity}"
        )
    return parity


@dataclass
class PatternBundle:
    """A served pattern classifier: ONNX Runtime over ``pattern_model.onnx`` and its JSON config."""

    directory: Path
    config: dict[str, Any]
    session: Any

    @classmethod
    def load(cls, directory: str | Path) -> PatternBundle:
        import onnxruntime as ort

        directory = Path(directory)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(
            str(directory / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
        return cls(directory, json.loads((directory / CONFIG_FILE).read_text()), session)

    @property
    def spec(self) -> PatternModelSpec:
        raw = dict(self.config["spec"])
        raw["shape_offsets"] = tuple(raw["shape_offsets"])
        return PatternModelSpec(**raw)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, probabilities)`` for rows of inputs in ``input_columns`` order."""
        name = self.session.get_inputs()[0].name
        _, proba = self.session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})
        proba = np.asarray(proba, dtype=np.float64)
        return np.asarray(self.config["classes"], dtype=object)[proba.argmax(axis=1)], proba


def predict_spans(
    bundle: PatternBundle, features: pd.DataFrame, symbol: str, min_confidence: float = 0.0
) -> pd.DataFrame:
    """Predicted spans of one symbol from its engineered features (antmeter.features.pipeline): per-candle
    labels (candles whose window is incomplete get none), grouped into spans with their mean confidence,
    then spans below ``min_confidence`` dropped. Columns as :func:`group_predicted_spans` plus ``symbol``."""
    if features.empty:
        return group_predicted_spans(
            pd.Series([], dtype="datetime64[ns, UTC]"), np.array([]), np.array([]), symbol=symbol
        )
    times, x = window_inputs(features, bundle.spec)
    ok = np.isfinite(x).all(axis=1)
    labels = np.full(len(times), NO_PATTERN, dtype=object)
    confidence = np.zeros(len(times))
    if ok.any():
        predicted, proba = bundle.predict(x[ok])
        labels[ok], confidence[ok] = predicted, proba.max(axis=1)
    # candles without a prediction break spans: keep only those with one
    spans = group_predicted_spans(times[ok].reset_index(drop=True), labels[ok], confidence[ok], symbol=symbol)
    return spans[spans["confidence"] >= min_confidence].reset_index(drop=True)


def predict_spans_from_candles(
    bundle: PatternBundle, candles: pd.DataFrame, symbol: str, min_confidence: float = 0.0
) -> pd.DataFrame:
    """:func:`predict_spans` over raw candles (features computed here, without news sentiment)."""
    from antmeter.features.pipeline import FeatureConfig, compute_features

    features = compute_features(candles, FeatureConfig(include_sentiment=False))
    return predict_spans(bundle, features, symbol, min_confidence)


_CHART_COLOURS = {
    "double_top": "#d62728",
    "double_bottom": "#2ca02c",
    "head_and_shoulders": "#9467bd",
    "inverse_head_and_shoulders": "#17becf",
}


def pattern_label_catalog(classes: list[str]) -> list[dict[str, str]]:
    """Names and display colours of a classifier's labels (``O`` excluded): bullish candlestick labels
    green-ish, bearish red-ish, chart patterns their own colours."""
    out = []
    for label in classes:
        if label == NO_PATTERN:
            continue
        if label in _CHART_COLOURS:
            colour, kind = _CHART_COLOURS[label], "chart"
        else:
            colour, kind = ("#66bb6a" if label.startswith("bullish_") else "#ef5350"), "candlestick"
        out.append({"name": label, "colour": colour, "kind": kind})
    return out
