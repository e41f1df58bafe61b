"""MLflow model registry helpers: versions hold files (safetensors, JSON, ONNX, npz), never pickles.

The ``champion`` alias marks the serving version of each registered model; it is moved only by
the promotion gate (:mod:`antmeter.registry.promotion`). :class:`ChampionCache` serves each champion
from the registry by alias, cached by version.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from antmeter.learn.bundle import SERVING_FILE, ServingModel

CHAMPION = "champion"


def register_bundle(client, name: str, run_id: str, bundle_dir: Path, tags: dict[str, str] | None = None):
    """Upload ``bundle_dir`` as the run's ``model`` artifacts and register it as a new version."""
    from mlflow.exceptions import MlflowException

    client.log_artifacts(run_id, str(bundle_dir), artifact_path="model")
    try:
        client.create_registered_model(
            name, description=f"Antmeter {name}: weights, config, ONNX fp32 + INT8"
        )
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code) and "already exists" not in str(exc):
            raise
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    return client.create_model_version(name, source=source, run_id=run_id, tags=tags or {})


def champion(client, name: str):
    """The version behind the ``champion`` alias, or None when the model has no champion yet."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def download_version(version, destination: Path | None = None) -> Path:
    """Download a version's bundle directory; returns its local path."""
    import mlflow

    target = destination or Path(tempfile.mkdtemp(prefix=f"antmeter-{version.name}-v{version.version}-"))
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(target)))


def record_gate(client, name: str, version: str, promoted: bool, reason: str) -> None:
    """Tag the version with the gate's verdict and, when promoted, move the champion alias to it."""
    client.set_model_version_tag(name, version, "gate", "promoted" if promoted else "rejected")
    client.set_model_version_tag(name, version, "gate_reason", reason[:5000])
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)


@dataclass(frozen=True)
class ServedChampion:
    """The champion version of one registered model, loaded for serving."""

    name: str
    version: str
    model: ServingModel  # or what the cache's ``load`` returns (e.g. a PatternBundle)
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{CHAMPION}"


class ChampionCache:
    """Each registered model's champion, loaded from the registry by alias (``models:/<name>@champion``)
    and cached by version: a moved alias is picked up by the next call, with no restart and no shared
    local files (the bundle is downloaded from the artifact store into ``cache_dir`` once per version).

    ``refresh_s`` bounds how often the alias is looked up per name (0: on every call). ``load`` turns a
    downloaded bundle directory into the served model (default: the direction models' ONNX bundle), and
    ``marker`` is the file whose presence says a cached download is complete (e.g. the pattern
    classifiers: ``PatternBundle.load`` and ``pattern_model.json``).
    """

    def __init__(
        self,
        client,
        cache_dir: Path,
        refresh_s: float = 0.0,
        load: Callable[[Path], Any] = ServingModel.load,
        marker: str = SERVING_FILE,
    ) -> None:
        self.client = client
        self.cache_dir = Path(cache_dir)
        self.refresh_s = refresh_s
        self.load, self.marker = load, marker
        self._loaded: dict[tuple[str, str], ServedChampion] = {}
        self._current: dict[str, tuple[float, ServedChampion | None]] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> ServedChampion | None:
        """The serving champion of ``name``, or None when it has none (never raises for that)."""
        with self._lock:
            checked = self._current.get(name)
            if checked is not None and time.monotonic() - checked[0] < self.refresh_s:
                return checked[1]
            version = champion(self.client, name)
            served = None if version is None else self._load(version)
            self._current[name] = (time.monotonic(), served)
            return served

    def _load(self, version) -> ServedChampion:
        key = (version.name, str(version.version))
        if key not in self._loaded:
            target = self.cache_dir / _safe_name(version.name) / f"v{version.version}"
            if not (target / self.marker).exists():
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                staging = Path(tempfile.mkdtemp(prefix=".download-", dir=self.cache_dir))
                bundle = download_version(version, staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(bundle, target)
                except OSError:  # another process won the race: its copy is complete
                    if not (target / self.marker).exists():
                        raise
                shutil.rmtree(staging, ignore_errors=True)
            self._loaded[key] = ServedChampion(
                version.name, str(version.version), self.load(target), dict(version.tags or {})
            )
        return self._loaded[key]


def _safe_name(name: str) -> str:
    """A registered model name as one path component (never a path)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
    if not cleaned:
        raise ValueError(f"registered model name {name!r} gives no usable directory name")
    return cleaned
