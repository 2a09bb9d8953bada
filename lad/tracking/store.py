"""Reaching MLflow's stores: the tracking store a config names (one quick probe and a one-line error
instead of minutes of retries), the experiment, and the artifact store (one small file written before
training, so a store that is down is found before the work, not after it)."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from lad.core.config import import_mlflow
from lad.core.errors import ConfigError, LADError
from lad.core.locks import file_lock


def mask_secrets(text: str) -> str:
    """Hide passwords in URLs such as postgresql://user:pw@host/db (see lad.core.secrets)."""
    from lad.core.secrets import mask

    return mask(text)


def _artifact_root(location: str | None) -> str | None:
    if not location:
        return None
    if "://" in location:
        return location
    return Path(location).expanduser().resolve().as_uri()


def connect(mcfg: DictConfig):
    """Import mlflow and point it at ``mlflow.tracking_uri``; unreachable stores are a clear error."""
    check_stored_strings(mcfg)
    mlflow = import_mlflow()
    uri = str(mcfg.tracking_uri)
    mlflow.set_tracking_uri(uri)
    location = str(mcfg.get("artifact_location") or "")
    if uri.startswith("http") or location.startswith(("http", "mlflow-artifacts")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        _probe_database(uri)  # one quick try: MLflow itself retries a dead database for minutes
        with _sqlite_lock(uri):  # parallel jobs must not create a fresh store's schema twice
            mlflow.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any failure here means "cannot reach the store"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LADError(
            f"cannot reach the MLflow tracking store {mask_secrets(uri)} ({first[:200]}); "
            "start the server, fix mlflow.tracking_uri, or run with mlflow=off"
        ) from exc
    return mlflow


def check_stored_strings(mcfg: DictConfig) -> None:
    """ConfigError when a setting MLflow stores verbatim (and shows in its UI) holds a password.

    ``mlflow.artifact_location`` becomes the experiment's and every run's artifact URI: masking it
    would send the artifacts elsewhere, so a password there is refused; names are masked where used.
    """
    from lad.core.secrets import has_secret

    location = mcfg.get("artifact_location")
    if location and has_secret(str(location)):
        raise ConfigError(
            f"mlflow.artifact_location={mask_secrets(location)} holds a password or key: MLflow stores the location "
            "in the experiment and every run (shown in its UI); give the store's credentials through its own "
            "environment variables (AWS_SECRET_ACCESS_KEY, AZURE_STORAGE_ACCESS_KEY, ...) instead")


STORE_CHECK_TIMEOUT_S = 30.0
_LOCAL_SCHEMES = ("file:", "/")


def check_artifact_store(mcfg: DictConfig, timeout: float = STORE_CHECK_TIMEOUT_S) -> None:
    """Write (and delete) one small file in the experiment's artifact store, before training.

    A remote store (``s3://``, ``http(s)://``, ``mlflow-artifacts:``, ...) that is down would
    otherwise be found only when the trained model is logged, after MLflow's retries. The probe runs
    in a thread bounded by ``timeout``; local folders are checked by ``lad.core.preflight.writable``.
    """
    import tempfile
    import threading
    import uuid

    mlflow = import_mlflow()
    exp_id = get_experiment_id(mlflow, str(mcfg.experiment), mcfg.get("artifact_location"))
    location = str(mlflow.get_experiment(exp_id).artifact_location or "")
    if not location or location.startswith(_LOCAL_SCHEMES) or "://" not in location and ":" not in location:
        return
    outcome: list[BaseException | None] = []

    def probe() -> None:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        try:
            repo = get_artifact_repository(f"{location.rstrip('/')}/.lad-store-check/{uuid.uuid4().hex}")
            with tempfile.TemporaryDirectory() as tmp:
                probe_file = Path(tmp) / "probe.txt"
                probe_file.write_text("LAD checks that the artifact store accepts files before training\n")
                repo.log_artifact(str(probe_file))
            try:
                repo.delete_artifacts()
            except Exception:  # noqa: BLE001 - a store without deletes keeps the 70-byte probe
                pass
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported below as one line
            outcome.append(exc)

    worker = threading.Thread(target=probe, name="lad-artifact-store-check", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        reason = f"no answer within {timeout:g} s"
    elif outcome[0] is not None:
        text = str(outcome[0]).strip()
        reason = text.splitlines()[0][:200] if text else type(outcome[0]).__name__
    else:
        return
    raise LADError(f"cannot write to the MLflow artifact store {mask_secrets(location)} ({mask_secrets(reason)}); "
                   "start it or fix mlflow.artifact_location (an existing experiment keeps the location it was "
                   "created with: use another mlflow.experiment), or run with mlflow=off")


def _probe_database(uri: str) -> None:
    """Connect once to a database-backed store (PostgreSQL, MySQL, ...); raises when it is down."""
    if "://" not in uri or uri.startswith(("http", "file:", "sqlite:", "databricks")):
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(uri, poolclass=NullPool)
    try:
        engine.connect().close()
    finally:
        engine.dispose()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None for other stores."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix):]) if uri.startswith(prefix) else None


def _sqlite_lock(uri: str):
    """An exclusive file lock next to a SQLite store (a no-op for other stores)."""
    import contextlib

    db = sqlite_path(uri)
    return contextlib.nullcontext() if db is None else file_lock(db.with_name(db.name + ".lock"))


def get_experiment_id(mlflow, name: str, artifact_location: str | None) -> str:
    name = mask_secrets(name)
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return mlflow.create_experiment(name, artifact_location=_artifact_root(artifact_location))
    except Exception:  # noqa: BLE001 - another process created it first
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id
