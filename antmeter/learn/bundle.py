"""A model bundle as it is served: ONNX Runtime (INT8, fp32 fallback) + the training-time scalers.

A bundle directory holds ``model.safetensors`` + ``model_config.json`` (weights and spec),
``model.onnx`` and ``model.int8.onnx``, ``scaler.npz`` + ``feature_schema.json`` (input
normalization, fit on training rows only) and ``serving.json`` (horizons, task, training window).
Nothing in it is unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from antmeter.learn.datasets import FeatureScaler, FeatureSchema, SampleSet

SERVING_FILE = "serving.json"
ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model.int8.onnx"


@dataclass
class ServingModel:
    """Loaded bundle: call :meth:`predict_windows` with *unscaled* feature windows."""

    directory: Path
    config: dict[str, Any]
    scaler: FeatureScaler
    precision: str
    _predictor: Any
    _target_mean: np.ndarray
    _target_std: np.ndarray

    @classmethod
    def load(cls, directory: str | Path, prefer_int8: bool = True) -> ServingModel:
        """Load a bundle; uses the INT8 model when present and asked for, else fp32."""
        from antmeter.learn.onnx import OnnxPredictor

        directory = Path(directory)
        config = json.loads((directory / SERVING_FILE).read_text())
        scaler = FeatureScaler.load(directory)
        int8 = directory / ONNX_INT8
        path, precision = (int8, "int8") if prefer_int8 and int8.exists() else (directory / ONNX_FP32, "fp32")
        target = config.get("target_scaler") or {
            "mean": [0.0] * len(config["horizons"]),
            "std": [1.0] * len(config["horizons"]),
        }
        return cls(
            directory,
            config,
            scaler,
            precision,
            OnnxPredictor(path, per_window=precision == "int8"),
            np.asarray(target["mean"], dtype=np.float32),
            np.asarray(target["std"], dtype=np.float32),
        )

    @property
    def schema(self) -> FeatureSchema:
        return self.scaler.schema

    @property
    def horizons(self) -> list[int]:
        return list(self.config["horizons"])

    @property
    def window(self) -> int:
        return int(self.config["window"])

    @property
    def interval(self) -> str:
        """The candle interval it was trained on (bundles from before intervals were recorded: 1m)."""
        return str(self.config.get("interval", "1m"))

    def __post_init__(self) -> None:
        self._window_shape = (self.window, len(self.schema))

    def predict_windows(self, windows: np.ndarray, batch_size: int = 2048) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities [N,H,C] and forward-return forecasts [N,H] (raw log-return units)."""
        if windows.ndim != 3 or windows.shape[1:] != self._window_shape:
            raise ValueError(
                f"model {self.directory.name} expects windows of shape (N, {self.window}, {len(self.schema)}), "
                f"got {windows.shape}"
            )
        # (an INT8 predictor scores each window on its own: see OnnxPredictor)
        if len(windows) <= batch_size:  # one call (every live tick): no slicing, no concatenation
            return self._predict_batch(windows)
        probas, regs = zip(
            *(self._predict_batch(windows[a : a + batch_size]) for a in range(0, len(windows), batch_size)),
            strict=True,
        )
        return np.concatenate(probas), np.concatenate(regs)

    def _predict_batch(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        proba, reg = self._predictor.predict(self.scaler.transform(windows))
        reg = reg * self._target_std
        reg += self._target_mean
        return proba, reg

    def predict_samples(self, samples: SampleSet, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predict the given samples of an *unscaled* sample set, checking the feature schema first."""
        if samples.scaler is not None:
            raise ValueError("pass the unscaled SampleSet; the bundle applies its own scaler")
        self.schema.verify(list(samples.schema.names), ignore=())
        windows, *_ = samples.view(indices).batch()
        return self.predict_windows(windows)
