"""MLflow model registry helpers: versions hold files (safetensors, JSON, ONNX, npz), never pickles.

The ``champion`` alias marks the serving version of each registered model; it is moved only by
the promotion gate (:mod:`antmeter.registry.promotion`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

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
