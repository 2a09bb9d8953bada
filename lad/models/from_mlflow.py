"""Models logged to MLflow (``models:/<name>/<version>`` or ``runs:/<id>/model``) as local Hugging Face
folders: a teacher named by ``teacher.source=mlflow`` and a model ``python -m lad.deploy`` exports
are downloaded here and loaded with ``from_pretrained`` like any other folder. Logging them is
``lad.tracking.mlflow_model``'s part."""

from __future__ import annotations

import os
from pathlib import Path

from lad.core.config import import_mlflow
from lad.core.errors import ConfigError


def hf_dir_of(local: Path) -> Path:
    """The Hugging Face directory inside a downloaded pyfunc model (or ``local`` itself)."""
    if (local / "config.json").exists():
        return local
    for cand in sorted(local.rglob("config.json")):
        return cand.parent
    raise ConfigError(f"{local} does not contain a Hugging Face model (no config.json)")


def download_model(uri: str) -> Path:
    """Local Hugging Face directory of a model logged by ``log_model_dir`` (models:/ or runs:/ URI)."""
    mlflow = import_mlflow()
    tracking = os.environ.get("MLFLOW_TRACKING_URI")
    if tracking:
        mlflow.set_tracking_uri(tracking)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri)
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot load teacher {uri} from MLflow: {first[:200]}") from exc
    return hf_dir_of(Path(local))
