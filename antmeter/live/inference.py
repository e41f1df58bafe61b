"""Live inference: the same feature code as training, windows cut by time, ONNX Runtime scoring."""

from __future__ import annotations

import numpy as np
import pandas as pd

from antmeter.learn.bundle import ServingModel
from antmeter.learn.datasets import FeatureSchemaError
from antmeter.market.candles import interval_timedelta


def require_same_schema(model: ServingModel, columns: list[str], label: str) -> None:
    """Refuse to serve ``model`` when the configured features give other model columns than it was
    trained on; the error names the model and every missing, extra or reordered column."""
    try:
        model.schema.verify(list(columns), ignore=())
    except FeatureSchemaError as exc:
        raise FeatureSchemaError(
            f"{label} was trained on another feature schema than the configured features "
            f"(settings.features) produce, so it is not served: {exc}. Retrain it (training_job) or "
            f"restore the feature settings it was trained with."
        ) from None


def inference_windows(
    features: pd.DataFrame,
    columns: list[str],
    window: int,
    after: pd.Timestamp | None,
    interval: str = "1m",
) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Prediction times ``t > after`` whose ``window`` rows end at ``t``, are consecutive candles of
    ``interval`` and finite, and the (unscaled) windows ``[N, window, F]`` for them."""
    missing = [c for c in columns if c not in features.columns]
    if missing:
        raise ValueError(f"the model's feature schema needs column(s) {missing[:10]} that the features lack")
    frame = features.sort_values("open_time").reset_index(drop=True)
    values = frame[columns].to_numpy(dtype=np.float32)
    times = pd.DatetimeIndex(frame["open_time"])
    if len(frame) < window:
        return times[:0], np.empty((0, window, len(columns)), dtype=np.float32)
    ns = times.as_unit("ns").asi8
    bad_rows = np.r_[0, np.cumsum(~np.isfinite(values).all(axis=1))]  # bad_rows[i] = bad rows before i
    step = interval_timedelta(interval).value
    breaks = np.r_[0, np.cumsum(np.r_[True, np.diff(ns) != step])]  # breaks[i] = breaks before i
    ends = np.arange(window - 1, len(frame))
    # valid: no bad row in [e-W+1, e] and no time break between consecutive rows of the window
    ok = (bad_rows[ends + 1] - bad_rows[ends + 1 - window] == 0) & (
        breaks[ends + 1] - breaks[ends + 2 - window] == 0
    )
    if after is not None:
        ok &= ns[ends] > after.value
    ends = ends[ok]
    view = np.lib.stride_tricks.sliding_window_view(values, (window, len(columns)))[:, 0]
    return times[ends], np.ascontiguousarray(view[ends - window + 1])


def predict_symbol(
    model: ServingModel,
    features: pd.DataFrame,
    symbol: str,
    model_name: str,
    model_version: str,
    after: pd.Timestamp | None,
    created_at: pd.Timestamp,
) -> pd.DataFrame:
    """Prediction rows (the store's ``predictions`` table) for every new window of one symbol."""
    names = list(model.schema.names)
    times, windows = inference_windows(features, names, model.window, after, model.interval)
    if len(times) == 0:
        return pd.DataFrame()
    proba, regression = model.predict_windows(windows)
    frames = []
    binary = proba.shape[-1] == 2
    for h_index, horizon in enumerate(model.horizons):
        p = proba[:, h_index]
        frames.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "prediction_time": times,
                    "horizon_min": horizon,
                    "model_name": model_name,
                    "model_version": str(model_version),
                    "prob_down": p[:, 0],
                    "prob_flat": np.nan if binary else p[:, 1],
                    "prob_up": p[:, -1],
                    "predicted_class": p.argmax(axis=1).astype("int64"),
                    "confidence": p.max(axis=1),
                    "predicted_return": regression[:, h_index].astype("float64"),
                    "created_at": created_at,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
