"""Reference models fitted and scored on exactly the samples the neural models use.

Every baseline has ``fit(train: WindowedDataset) -> self`` and ``predict(view: WindowedDataset) ->
(proba [N, H, C], reg [N, H])``. Frequency-based probabilities use add-one (Laplace) smoothing, so no class
ever gets probability 0 and log loss stays finite.

- :class:`MajorityBaseline`: training class frequencies and the training mean return, per horizon.
- :class:`PersistenceBaseline`: "the last move continues" — conditions on the sign of the trailing
  ``h``-minute return ending at the prediction time; probabilities are the training hit rates of that rule
  (class frequencies given the sign), the return forecast is the training mean return given the sign.
- :class:`LogisticBaseline`: logistic regression (classes) and ridge regression (returns) on the features
  of each window's last row, standardized by a scaler fitted on the training samples only.
- :class:`GradientBoostingBaseline`: histogram gradient boosting on the same last-row features.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Self

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, Ridge

from antmeter.learn.datasets import FeatureScaler, WindowedDataset
from antmeter.learn.metrics import EVALUATION_COLUMNS, evaluate_predictions


def _smoothed_frequencies(labels: np.ndarray, n_classes: int, smoothing: float) -> np.ndarray:
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    return (counts + smoothing) / (counts.sum() + n_classes * smoothing)


def _require_samples(view: WindowedDataset, who: str) -> None:
    if len(view) == 0:
        raise ValueError(f"{who}: no samples to fit on")


class Baseline:
    """Common interface; subclasses implement :meth:`fit` and :meth:`predict`."""

    name = "baseline"

    def __init__(self) -> None:
        self._horizons: tuple[int, ...] | None = None
        self._n_classes = 0

    def _remember(self, train: WindowedDataset) -> None:
        _require_samples(train, self.name)
        self._horizons, self._n_classes = train.horizons, train.n_classes

    def _check_view(self, view: WindowedDataset) -> None:
        if self._horizons is None:
            raise RuntimeError(f"{self.name}: predict called before fit")
        if view.horizons != self._horizons or view.n_classes != self._n_classes:
            raise ValueError(
                f"{self.name}: fitted for horizons {self._horizons} / {self._n_classes} classes, "
                f"got {view.horizons} / {view.n_classes}"
            )

    def fit(self, train: WindowedDataset) -> Self:  # pragma: no cover - interface
        raise NotImplementedError

    def predict(self, view: WindowedDataset) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError


class MajorityBaseline(Baseline):
    """Always predicts the training class frequencies (arg-max = majority class) and mean return."""

    name = "majority"

    def __init__(self, smoothing: float = 1.0):
        super().__init__()
        self.smoothing = smoothing

    def fit(self, train: WindowedDataset) -> Self:
        self._remember(train)
        self.proba_ = np.stack(
            [
                _smoothed_frequencies(train.y_class[:, j], self._n_classes, self.smoothing)
                for j in range(len(train.horizons))
            ]
        )
        self.mean_return_ = train.y_reg.astype(np.float64).mean(axis=0)
        return self

    def predict(self, view: WindowedDataset) -> tuple[np.ndarray, np.ndarray]:
        self._check_view(view)
        n = len(view)
        return np.broadcast_to(self.proba_, (n, *self.proba_.shape)).copy(), np.tile(
            self.mean_return_, (n, 1)
        )


class PersistenceBaseline(Baseline):
    """Bets that the last ``h``-minute move repeats, with probabilities from the rule's training hit rates.

    The trailing ``h``-minute return at prediction time ``t`` is the sum of the one-minute *log* returns of
    the window's last ``h`` rows, read from feature ``return_feature`` (unscaled through the set's scaler
    when the set is scaled; needs ``h <= window``). Alternatively pass ``trailing_returns`` ``(N, H)``
    explicitly to :meth:`fit` / :meth:`predict` (any causal return ending at ``t``; only its sign is used).
    """

    name = "persistence"

    def __init__(self, return_feature: str | None = None, smoothing: float = 1.0):
        super().__init__()
        self.return_feature = return_feature
        self.smoothing = smoothing

    def trailing_returns(self, view: WindowedDataset) -> np.ndarray:
        """``(N, H)`` sums of the last ``h`` one-minute log returns of each sample's window."""
        if self.return_feature is None:
            raise ValueError("persistence: give return_feature or pass trailing_returns explicitly")
        samples = view.samples
        names = samples.schema.names
        if self.return_feature not in names:
            raise ValueError(
                f"persistence: return_feature {self.return_feature!r} is not a feature ({list(names)})"
            )
        too_long = [h for h in view.horizons if h > view.window]
        if too_long:
            raise ValueError(f"persistence: horizons {too_long} exceed the window ({view.window} rows)")
        c = names.index(self.return_feature)
        column = samples.X[:, c].astype(np.float64)
        if samples.scaler is not None:
            column = column * samples.scaler.std[c] + samples.scaler.mean[c]
        cumulative = np.concatenate(
            [[0.0], np.cumsum(np.nan_to_num(column, nan=0.0, posinf=0.0, neginf=0.0))]
        )
        ends = view.end_index + 1
        return np.stack([cumulative[ends] - cumulative[ends - h] for h in view.horizons], axis=1)

    def _signal(self, view: WindowedDataset, trailing_returns: np.ndarray | None) -> np.ndarray:
        returns = (
            self.trailing_returns(view)
            if trailing_returns is None
            else np.asarray(trailing_returns, np.float64)
        )
        if returns.shape != (len(view), len(view.horizons)):
            raise ValueError(
                f"persistence: trailing_returns must have shape {(len(view), len(view.horizons))}, got {returns.shape}"
            )
        if not np.isfinite(returns).all():
            raise ValueError("persistence: trailing returns must be finite")
        return (np.sign(returns) + 1).astype(np.int64)  # 0 down, 1 unchanged, 2 up

    def fit(self, train: WindowedDataset, trailing_returns: np.ndarray | None = None) -> Self:
        self._remember(train)
        signal = self._signal(train, trailing_returns)
        h, c = len(train.horizons), self._n_classes
        self.proba_ = np.empty((h, 3, c))
        self.mean_return_ = np.empty((h, 3))
        for j in range(h):
            overall = train.y_reg[:, j].astype(np.float64).mean()
            for s in range(3):
                chosen = signal[:, j] == s
                self.proba_[j, s] = _smoothed_frequencies(train.y_class[chosen, j], c, self.smoothing)
                self.mean_return_[j, s] = (
                    train.y_reg[chosen, j].astype(np.float64).mean() if chosen.any() else overall
                )
        return self

    def predict(
        self, view: WindowedDataset, trailing_returns: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        self._check_view(view)
        signal = self._signal(view, trailing_returns)
        columns = np.arange(signal.shape[1])
        return self.proba_[columns, signal], self.mean_return_[columns, signal]


class _LastRowBaseline(Baseline):
    """Fits one classifier per horizon and one regressor on the standardized last-row features."""

    def _classifier(self):  # pragma: no cover - interface
        raise NotImplementedError

    def _regressor(self):  # pragma: no cover - interface
        raise NotImplementedError

    def _inputs(self, view: WindowedDataset) -> np.ndarray:
        return self.scaler_.transform(view.last_rows()).astype(np.float64)

    def fit(self, train: WindowedDataset) -> Self:
        self._remember(train)
        self.scaler_ = FeatureScaler.fit(train.last_rows(), train.samples.schema)
        z = self._inputs(train)
        self.classifiers_: list = []
        for j in range(len(train.horizons)):
            y = train.y_class[:, j]
            if np.unique(y).size < 2:  # one class only: nothing to separate, fall back to frequencies
                self.classifiers_.append(_smoothed_frequencies(y, self._n_classes, 1.0))
            else:
                self.classifiers_.append(self._classifier().fit(z, y))
        self.regressors_ = [self._regressor().fit(z, train.y_reg[:, j]) for j in range(len(train.horizons))]
        return self

    def predict(self, view: WindowedDataset) -> tuple[np.ndarray, np.ndarray]:
        self._check_view(view)
        proba = np.zeros((len(view), len(view.horizons), self._n_classes))
        if len(view) == 0:
            return proba, np.zeros((0, len(view.horizons)))
        z = self._inputs(view)
        for j, model in enumerate(self.classifiers_):
            if isinstance(model, np.ndarray):
                proba[:, j, :] = model
            else:
                proba[:, j, model.classes_] = model.predict_proba(z)
        return proba, np.stack([m.predict(z) for m in self.regressors_], axis=1)


class LogisticBaseline(_LastRowBaseline):
    """Logistic regression (classes) and ridge regression (returns) on standardized last-row features."""

    name = "logistic"

    def __init__(self, C: float = 1.0, ridge_alpha: float = 1.0, max_iter: int = 1000):
        super().__init__()
        self.C, self.ridge_alpha, self.max_iter = C, ridge_alpha, max_iter

    def _classifier(self) -> LogisticRegression:
        return LogisticRegression(C=self.C, max_iter=self.max_iter)

    def _regressor(self) -> Ridge:
        return Ridge(alpha=self.ridge_alpha)


class GradientBoostingBaseline(_LastRowBaseline):
    """Histogram gradient boosting on last-row features, with a small fixed budget (no early stopping)."""

    name = "gradient_boosting"

    def __init__(
        self, max_iter: int = 60, learning_rate: float = 0.1, max_leaf_nodes: int = 15, random_state: int = 0
    ):
        super().__init__()
        self.params = {
            "max_iter": max_iter,
            "learning_rate": learning_rate,
            "max_leaf_nodes": max_leaf_nodes,
            "early_stopping": False,
            "random_state": random_state,
        }

    def _classifier(self) -> HistGradientBoostingClassifier:
        return HistGradientBoostingClassifier(**self.params)

    def _regressor(self) -> HistGradientBoostingRegressor:
        return HistGradientBoostingRegressor(**self.params)


BASELINE_NAMES = ("majority", "persistence", "logistic", "gradient_boosting")


def fit_all_baselines(
    train: WindowedDataset,
    *,
    return_feature: str | None,
    include: Iterable[str] = BASELINE_NAMES,
) -> dict[str, Baseline]:
    """Fit the named baselines on ``train``. ``persistence`` needs ``return_feature`` (a one-minute log
    return feature); with ``return_feature=None`` it is left out."""
    makers = {
        "majority": MajorityBaseline,
        "persistence": lambda: PersistenceBaseline(return_feature),
        "logistic": LogisticBaseline,
        "gradient_boosting": GradientBoostingBaseline,
    }
    chosen = list(include)
    unknown = [n for n in chosen if n not in makers]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {list(makers)}")
    if return_feature is None:
        chosen = [n for n in chosen if n != "persistence"]
    return {name: makers[name]().fit(train) for name in chosen}


def evaluate_baselines(fitted: Mapping[str, Baseline], view: WindowedDataset) -> pd.DataFrame:
    """Score fitted baselines on ``view``: tidy ``model, horizon, metric, value`` rows (see
    :func:`antmeter.learn.metrics.evaluate_predictions`)."""
    tables = []
    for name, model in fitted.items():
        proba, reg = model.predict(view)
        tables.append(evaluate_predictions(name, view.y_class, view.y_reg, proba, reg, view.horizons))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=EVALUATION_COLUMNS)
