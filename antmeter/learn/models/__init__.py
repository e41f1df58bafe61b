"""Sequence models behind one multi-task interface, their loss and their presets.

Every model maps ``x [B, W, F]`` (float32 windows) to ``(logits [B, H, C], regression [B, H])``: class
logits per horizon and a standardized return forecast per horizon. Build one with :func:`build_model`;
the returned module carries its :class:`ModelSpec` as ``model.spec`` so it can be saved and rebuilt from
code (see ``antmeter.learn.lightning_loop.save_weights`` / ``load_weights``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml
from torch import nn

from antmeter.learn.models import lstm, patchtst, transformer
from antmeter.learn.models.layers import LinearHighway
from antmeter.learn.models.losses import LOSS_DEFAULTS, MultiTaskLoss
from antmeter.learn.models.patchtst import PatchTSTForecaster

MODEL_TYPES = ("lstm", "transformer", "patchtst")
PRESETS_FILE = "presets.yaml"
DEFAULT_PRESET = "laptop"
_DEFAULTS: dict[str, dict[str, Any]] = {
    "lstm": lstm.DEFAULTS,
    "transformer": transformer.DEFAULTS,
    "patchtst": patchtst.DEFAULTS,
}
# Params every model type takes, handled around the model (see build_model_from_spec).
_COMMON_DEFAULTS: dict[str, Any] = {"linear_highway": False}

__all__ = [
    "DEFAULT_PRESET",
    "LOSS_DEFAULTS",
    "MODEL_TYPES",
    "ModelSpec",
    "MultiTaskLoss",
    "PatchTSTForecaster",
    "build_model",
    "build_model_from_spec",
    "load_preset",
    "load_search_space",
    "preset_names",
]

TUNABLE_SECTIONS = ("model", "training", "loss")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model from code: type, input shape, outputs and resolved params."""

    model_type: str
    n_features: int
    window: int
    horizons: tuple[int, ...]
    n_classes: int
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (see :meth:`from_dict`)."""
        return {
            "model_type": self.model_type,
            "n_features": self.n_features,
            "window": self.window,
            "horizons": list(self.horizons),
            "n_classes": self.n_classes,
            "params": copy.deepcopy(self.params),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Parse :meth:`to_dict` output, naming a missing field."""
        missing = [
            k for k in ("model_type", "n_features", "window", "horizons", "n_classes") if k not in data
        ]
        if missing:
            raise ValueError(f"model spec lacks field(s) {missing}")
        return cls(
            model_type=str(data["model_type"]),
            n_features=int(data["n_features"]),
            window=int(data["window"]),
            horizons=tuple(int(h) for h in data["horizons"]),
            n_classes=int(data["n_classes"]),
            params=dict(data.get("params") or {}),
        )


def _resolve_params(model_type: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    if model_type not in _DEFAULTS:
        raise ValueError(f"unknown model_type {model_type!r}; expected one of {list(MODEL_TYPES)}")
    given = dict(params or {})
    defaults = {**_DEFAULTS[model_type], **_COMMON_DEFAULTS}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {model_type} param(s) {unknown}; expected some of {sorted(defaults)}")
    return {**copy.deepcopy(defaults), **given}


def build_model(
    model_type: str,
    *,
    n_features: int,
    window: int,
    horizons: Sequence[int],
    n_classes: int,
    params: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build an untrained ``"lstm"`` / ``"transformer"`` / ``"patchtst"`` model.

    ``forward(x [B, window, n_features])`` returns ``(logits [B, H, n_classes], regression [B, H])`` with
    ``H = len(horizons)``. ``params`` override the model's full-size defaults; an unknown key is an error.
    """
    spec = ModelSpec(
        model_type=model_type,
        n_features=int(n_features),
        window=int(window),
        horizons=tuple(int(h) for h in horizons),
        n_classes=int(n_classes),
        params=_resolve_params(model_type, params),
    )
    return build_model_from_spec(spec)


def build_model_from_spec(spec: ModelSpec) -> nn.Module:
    """Build the module a :class:`ModelSpec` describes and attach the spec as ``model.spec``."""
    params = _resolve_params(spec.model_type, spec.params)
    for name, value, minimum in (
        ("n_features", spec.n_features, 1),
        ("window", spec.window, 1),
        ("n_classes", spec.n_classes, 2),
    ):
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if not spec.horizons:
        raise ValueError("horizons must not be empty")
    n_horizons = len(spec.horizons)
    model = _build_body(spec, {k: v for k, v in params.items() if k not in _COMMON_DEFAULTS})
    if params["linear_highway"]:
        model = LinearHighway(model, spec.n_features, n_horizons, spec.n_classes)
    model.spec = ModelSpec(
        spec.model_type, spec.n_features, spec.window, spec.horizons, spec.n_classes, params
    )
    return model


def _build_body(spec: ModelSpec, params: dict[str, Any]) -> nn.Module:
    n_horizons = len(spec.horizons)
    if spec.model_type == "lstm":
        model: nn.Module = lstm.StackedLSTM(
            n_features=spec.n_features, n_horizons=n_horizons, n_classes=spec.n_classes, **params
        )
    elif spec.model_type == "transformer":
        model = transformer.TransformerModel(
            n_features=spec.n_features,
            window=spec.window,
            n_horizons=n_horizons,
            n_classes=spec.n_classes,
            **params,
        )
    else:
        model = patchtst.PatchTSTModel(
            n_features=spec.n_features,
            window=spec.window,
            n_horizons=n_horizons,
            n_classes=spec.n_classes,
            **params,
        )
    return model


def _read_presets() -> dict[str, Any]:
    text = resources.files("antmeter.learn.models").joinpath(PRESETS_FILE).read_text(encoding="utf-8")
    presets = yaml.safe_load(text)
    if not isinstance(presets, dict):
        raise ValueError(f"{PRESETS_FILE} must map preset names to settings")
    return presets


def preset_names() -> list[str]:
    """The preset names defined in ``presets.yaml`` (``laptop``, ``full``)."""
    return list(_read_presets())


def load_preset(
    name: str = DEFAULT_PRESET, model_type: str = "lstm", overrides: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Settings of preset ``name`` for ``model_type`` as ``{"model", "loss", "training", "dataset"}``.

    ``model`` is the ``params`` mapping for :func:`build_model` (validated here), ``loss`` the
    :class:`MultiTaskLoss` settings, ``training`` keyword arguments for ``train_model`` and ``dataset`` the
    ``DatasetSpec`` settings. A model's own ``training``/``loss`` block overrides the preset-wide values.
    ``overrides`` (e.g. tuned hyperparameters) maps ``"section.name"`` keys (sections ``model``,
    ``training``, ``loss``) to values that replace the preset's.
    """
    presets = _read_presets()
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; presets.yaml defines {sorted(presets)}")
    preset = presets[name]
    models = preset.get("models") or {}
    if model_type not in models:
        raise ValueError(f"preset {name!r} has no settings for model_type {model_type!r}")
    model_params = dict(models[model_type])
    training = {**(preset.get("training") or {}), **model_params.pop("training", {})}
    loss = {**(preset.get("loss") or {}), **model_params.pop("loss", {})}
    sections = {"model": model_params, "training": training, "loss": loss}
    for key, value in (overrides or {}).items():
        section, _, param = str(key).partition(".")
        if section not in TUNABLE_SECTIONS or not param:
            raise ValueError(f"override {key!r}: expected 'section.name' with section in {TUNABLE_SECTIONS}")
        sections[section][param] = value
    _resolve_params(model_type, model_params)
    MultiTaskLoss.from_config(1, loss)
    return {
        "model": model_params,
        "loss": loss,
        "training": training,
        "dataset": dict(preset.get("dataset") or {}),
    }


def load_search_space(name: str = DEFAULT_PRESET, model_type: str = "lstm") -> dict[str, dict[str, Any]]:
    """The hyperparameter search space of preset ``name`` for ``model_type``: the preset's
    ``search_space.all`` entries plus ``search_space.<model_type>``, each ``"section.name"`` mapped to
    ``{type: float|int, low, high, log?}`` or ``{type: categorical, choices: [...]}`` (empty when the
    preset defines none)."""
    load_preset(name, model_type)  # validates the preset and the model type
    space = _read_presets()[name].get("search_space") or {}
    merged = {**(space.get("all") or {}), **(space.get(model_type) or {})}
    for key, spec in merged.items():
        section, _, param = str(key).partition(".")
        kind = spec.get("type") if isinstance(spec, dict) else None
        if section not in TUNABLE_SECTIONS or not param:
            raise ValueError(f"{PRESETS_FILE} {name}.search_space: key {key!r} must be 'section.name'")
        if kind in ("float", "int"):
            if not spec.get("low", 0) < spec.get("high", 0):
                raise ValueError(f"{PRESETS_FILE} {name}.search_space.{key}: needs low < high, got {spec}")
        elif kind == "categorical":
            if not spec.get("choices"):
                raise ValueError(f"{PRESETS_FILE} {name}.search_space.{key}: needs a non-empty choices list")
        else:
            raise ValueError(
                f"{PRESETS_FILE} {name}.search_space.{key}: type must be float, int or categorical, got {kind!r}"
            )
    return merged
