"""MLflow as the system of record: run lifecycle, params, metrics, artifacts, model registry.

``make_tracker`` returns a ``NullTracker`` when ``mlflow.enabled=false`` so the training code never
branches on tracking. mlflow is imported lazily (it costs seconds at start-up).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lad import signals
from lad.config import REPO_ROOT, flatten, setup_environment
from lad.errors import ConfigError, LADError
from lad.locks import file_lock

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"
SWEEP_TAG = "lad.sweep_dir"
STUDY_TAG = "lad.study"  # on a sweep's parent run: the Optuna study its children are trials of
KIND_TAG = "lad.kind"  # "sweep" (a sweep's parent run), "trial" (an Optuna trial) or "run" (any other run)

# keys of the resolved config that are not hyper-parameters of the run
_SKIP_PARAMS = ("hydra.", "mlflow.", "output_dir", "overwrite", "trainer.resume", "trainer.progress")
#: the MLflow params of a run, in this order: what describes it in the UI's columns (<= 40); the
#: whole resolved config (and the assembly's extras) is the run's ``params.json`` artifact
UI_PARAMS = (
    "task.name", "task.main_metric", "seed", "teacher.name", "teacher.source", "teacher.path", "teacher.uri",
    "teacher.backbone", "teacher.params", "student.name", "student.num_layers", "student.layer_map",
    "student.init_from", "student.params", "gate.name", "gate.frozen", "loss.name", "loss.hard_weight",
    "loss.soft_weight", "loss.hidden_weight", "loss.pkd_weight", "loss.temperature", "loss.hidden_positions",
    "loss.tie_hard_soft", "optim.lr", "optim.gate_lr", "optim.batch_size", "optim.lr_scheduler_type",
    "optim.warmup_ratio", "trainer.epochs", "trainer.max_steps", "trainer.precision", "data.max_train_samples",
    "data.train_examples", "runtime.num_threads", "device", "cache.enabled",
)
PARAMS_ARTIFACT = "params.json"


def mask_secrets(text: str) -> str:
    """Hide passwords in URLs such as postgresql://user:pw@host/db (see lad.secrets)."""
    from lad.secrets import mask

    return mask(text)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=5, check=False)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_params(cfg: DictConfig) -> dict[str, str]:
    """Flattened resolved config (dotted, sortable names): a run's params (MLflow shows ``UI_PARAMS``
    of them, ``params.json`` holds them all)."""
    params = {}
    for key, value in flatten(cfg).items():
        if key.startswith(_SKIP_PARAMS):
            continue
        params[key] = mask_secrets(str(value))[:6000]
    return params


def method_label(cfg: DictConfig) -> str:
    """Short method name for tables, built from what the config composed: the loss's name when none
    of its weighted terms reads the gate's targets; else the gate's name, ``<loss>-nogate`` for a
    gate that maps teacher layers directly (``gate=none``), ``<gate>-frozen`` for a gate stack kept
    at its random init (``gate.frozen=true``). ``teacher`` for a run without a gate group.
    """
    if "gate" not in cfg:
        return "teacher"
    from lad.gates import gate_class
    from lad.loss_terms import GATED, TERMS, term_of_weight

    loss = cfg.loss
    reads_gate = any(GATED in TERMS[term].teacher and float(loss[key] or 0.0) > 0
                     for key in loss if (term := term_of_weight(str(key))))
    if not reads_gate:
        return str(loss.name)
    if gate_class(cfg.gate).direct_map:
        return f"{loss.name}-nogate"
    return f"{cfg.gate.name}-frozen" if cfg.gate.get("frozen") else str(cfg.gate.name)


class NullTracker:
    run_id: str | None = None

    def log_params(self, params: dict) -> None: ...
    def log_metrics(self, metrics: dict, step: int | None = None) -> None: ...
    def set_tags(self, tags: dict) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_model_dir(self, model_dir: Path, registered_name: str | None = None, input_example=None) -> None: ...
    def end(self, status: str = "FINISHED", error: str | None = None) -> None: ...


def _import_mlflow():
    setup_environment()
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return mlflow


def _artifact_root(location: str | None) -> str | None:
    if not location:
        return None
    if "://" in location:
        return location
    return Path(location).expanduser().resolve().as_uri()


def connect(mcfg: DictConfig):
    """Import mlflow and point it at ``mlflow.tracking_uri``; unreachable stores are a clear error."""
    check_stored_strings(mcfg)
    mlflow = _import_mlflow()
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
    from lad.secrets import has_secret

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
    in a thread bounded by ``timeout``; local folders are checked by ``lad.preflight.writable``.
    """
    import tempfile
    import threading
    import uuid

    mlflow = _import_mlflow()
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


def _uninterrupted(write):
    """A tracking-store write that SIGINT / SIGTERM cannot cut in half (``lad.signals.deferred``).

    An interrupt raised inside a SQLite commit leaves that connection holding the write lock, and the
    run's last write (status ``KILLED``, the ``error`` tag) then fails with "database is locked"."""

    @functools.wraps(write)
    def wrapper(*args, **kwargs):
        with signals.deferred():
            return write(*args, **kwargs)

    return wrapper


class MlflowTracker:
    def __init__(self, mlflow, run, client):
        self.mlflow = mlflow
        self.run = run
        self.run_id = run.info.run_id
        self.client = client

    @_uninterrupted
    def log_params(self, params: dict) -> None:
        """The ``UI_PARAMS`` of ``params`` as MLflow params; all of them as ``params.json``.

        MLflow params cannot change; a resumed run whose budget grew (``trainer.max_steps`` /
        ``trainer.epochs``) keeps the first value as the param and gets the change as a tag
        ``lad.extended.<key>`` = ``"<first> -> <now>"`` (params.json holds the values it ran with)."""
        existing = self.client.get_run(self.run_id).data.params
        fresh = {k: params[k] for k in UI_PARAMS if k in params and k not in existing}
        changed = {k: f"{existing[k]} -> {params[k]}" for k in UI_PARAMS
                   if k in params and k in existing and existing[k] != str(params[k])}
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in fresh.items()])
        if changed:
            self.set_tags({f"lad.extended.{k}": v for k, v in changed.items()})
        self.client.log_dict(self.run_id, {k: str(v) for k, v in sorted(params.items())}, PARAMS_ARTIFACT)

    @_uninterrupted
    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    @_uninterrupted
    def set_tags(self, tags: dict) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, mask_secrets(str(v))[:5000])

    @_uninterrupted
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.exists():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    @_uninterrupted
    def log_model_dir(self, model_dir: Path, registered_name: str | None = None, input_example=None) -> None:
        """Log a Hugging Face model directory as an MLflow pyfunc model (optionally registered), with
        a signature and ``input_example`` (a DataFrame of ``text_a``/``text_b``; see lad.mlflow_model)."""
        from lad.mlflow_model import log_hf_model

        log_hf_model(self.mlflow, self.run_id, Path(model_dir), registered_name, input_example)

    @_uninterrupted
    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        if error:
            self.set_tags({"error": error})
        self.client.set_terminated(self.run_id, status=status)


def _sweep_parent(mlflow, client, experiment_id: str, sweep_dir: str, study: str | None = None) -> str:
    """The parent run of a Hydra multirun (one per sweep dir), created by the first job; named
    after its Optuna study (``study``) when its jobs are trials, else ``sweep-<dir name>``.

    Jobs of a parallel launcher (joblib) run in several processes: a lock file in the sweep
    directory makes sure only one of them creates the parent.
    """
    import contextlib

    sweep = Path(sweep_dir)
    with file_lock(sweep / ".lad-mlflow-parent.lock") if sweep.is_dir() else contextlib.nullcontext():
        found = client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_TAG}` = '{sweep_dir}'",
                                   max_results=1)
        if found:
            client.update_run(found[0].info.run_id, status="RUNNING")
            return found[0].info.run_id
        tags = {SWEEP_TAG: sweep_dir, KIND_TAG: "sweep", **({STUDY_TAG: study} if study else {})}
        run = client.create_run(experiment_id, run_name=study or f"sweep-{sweep.name}", tags=tags)
        return run.info.run_id


def sweep_study(cfg: DictConfig, sweep_dir: str) -> str | None:
    """The Optuna study whose trials a sweep's jobs are: ``search:<study>`` (sweeps/search.py) or
    the Optuna sweeper's ``study_name`` with a storage (None for a plain multirun)."""
    from omegaconf import OmegaConf

    if sweep_dir.startswith("search:"):
        return sweep_dir.split(":", 1)[1]
    try:
        from hydra.core.hydra_config import HydraConfig

        from lad.cli import OPTUNA_SWEEPERS

        hydra_cfg = OmegaConf.to_container(HydraConfig.get(), resolve=False)
        if not str(hydra_cfg["sweeper"].get("_target_", "")).endswith(OPTUNA_SWEEPERS):
            return None
        full = OmegaConf.create({**OmegaConf.to_container(cfg, resolve=False), "hydra": hydra_cfg})
        if OmegaConf.select(full, "hydra.sweeper.storage") is None:  # in memory: a study per run
            return None
        return str(OmegaConf.select(full, "hydra.sweeper.study_name"))
    except Exception:  # noqa: BLE001 - outside Hydra, or a name that does not resolve: per-dir parent
        return None


def ensure_sweep_parent(cfg: DictConfig, sweep_dir: str) -> str | None:
    """Find or create the parent run of ``sweep_dir`` now (None with MLflow off).

    For workers that share no sweep directory (``sweeps/search.py`` workers, possibly on other
    machines): called under their shared Optuna lock, it leaves one parent for all of them.
    """
    if not cfg.mlflow.enabled:
        return None
    mlflow = connect(cfg.mlflow)
    from mlflow.tracking import MlflowClient

    exp_id = get_experiment_id(mlflow, str(cfg.mlflow.experiment), cfg.mlflow.artifact_location)
    return _sweep_parent(mlflow, MlflowClient(), exp_id, sweep_dir, sweep_study(cfg, sweep_dir))


def make_tracker(cfg: DictConfig, tags: dict[str, Any], resume_run_id: str | None = None,
                 sweep_dir: str | None = None, run_name: str | None = None):
    mcfg = cfg.mlflow
    if not mcfg.enabled:
        return NullTracker()
    mlflow = connect(mcfg)
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp_id = get_experiment_id(mlflow, str(mcfg.experiment), mcfg.artifact_location)
    all_tags = {k: mask_secrets(str(v)) for k, v in tags.items()}
    if resume_run_id:
        try:
            run = client.get_run(resume_run_id)
            client.update_run(resume_run_id, status="RUNNING")
            return MlflowTracker(mlflow, run, client)
        except Exception:  # noqa: BLE001 - the store may have been reset; start a fresh run
            log.warning("MLflow run %s not found in the store: starting a new run", resume_run_id)
    if sweep_dir:
        parent = _sweep_parent(mlflow, client, exp_id, sweep_dir, sweep_study(cfg, sweep_dir))
        all_tags["mlflow.parentRunId"] = parent
    name = mcfg.run_name or run_name
    run = client.create_run(exp_id, run_name=mask_secrets(name) if name else None, tags=all_tags)
    return MlflowTracker(mlflow, run, client)


_CONCURRENT_WRITE = ("duplicate key", "UniqueViolation", "UNIQUE constraint failed", "IntegrityError")


def shared_write(call, *args, attempts: int = 4, **kwargs):
    """An MLflow client write to a run that other processes write to as well (a sweep's parent).

    Two first writes of one tag or metric at the same moment make a tracking store on PostgreSQL
    (or MySQL) answer one of them with a unique-key violation; written again, it updates the row.
    """
    import time

    for attempt in range(attempts):
        try:
            with signals.deferred():
                return call(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - only the concurrent-insert failure is retried
            if attempt == attempts - 1 or not any(mark in str(exc) for mark in _CONCURRENT_WRITE):
                raise
            time.sleep(0.2 * (attempt + 1))
    return None


def full_params(client, run) -> dict[str, str]:
    """Every param of a run: its ``params.json`` artifact, else (older runs) its MLflow params."""
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(run.info.run_id, PARAMS_ARTIFACT, tmp)
            return {**run.data.params, **json.loads(Path(path).read_text())}
    except Exception:  # noqa: BLE001 - no artifact (a run from before params.json), or unreadable
        return dict(run.data.params)


def update_sweep_parent(tracker, sweep_dir: str, score: float, metric: str, overrides: list[str]) -> None:
    """Keep the sweep's parent run pointing at its best child (value, run id, overrides); for the
    parent of an Optuna study, the study's best so far, earlier (resumed) sweeps of it included."""
    if not getattr(tracker, "run_id", None) or score != score:  # NullTracker, or NaN score
        return
    client = tracker.client
    parent_id = client.get_run(tracker.run_id).data.tags.get("mlflow.parentRunId")
    if not parent_id:
        return
    parent = client.get_run(parent_id)
    key = f"best/{metric}"
    best = (score, tracker.run_id, mask_secrets(" ".join(overrides))[:5000])
    study = parent.data.tags.get(STUDY_TAG)
    siblings = client.search_runs([parent.info.experiment_id], max_results=1000,
                                  filter_string=f"tags.`{STUDY_TAG}` = '{study}'") if study else [parent]
    for run in siblings:
        value = run.data.metrics.get(key)
        if value is not None and value > best[0]:
            best = (value, run.data.tags.get("best.run_id", ""), run.data.tags.get("best.overrides", ""))
    if parent.data.metrics.get(key) != best[0]:
        import time

        from mlflow.entities import Metric

        shared_write(client.log_batch, parent_id,
                     metrics=[Metric(key, float(best[0]), int(time.time() * 1000), 0)])
        shared_write(client.set_tag, parent_id, "best.run_id", best[1])
        shared_write(client.set_tag, parent_id, "best.overrides", best[2])
    shared_write(client.set_terminated, parent_id, "FINISHED")  # re-opened by the next child; ends FINISHED


def download_model(uri: str) -> Path:
    """Local Hugging Face directory of a model logged by ``log_model_dir`` (models:/ or runs:/ URI)."""
    from lad.mlflow_model import hf_dir_of

    mlflow = _import_mlflow()
    tracking = os.environ.get("MLFLOW_TRACKING_URI")
    if tracking:
        mlflow.set_tracking_uri(tracking)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri)
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot load teacher {uri} from MLflow: {first[:200]}") from exc
    return hf_dir_of(Path(local))


def config_tags(cfg: DictConfig, entry: str, overrides: list[str], trial: int | None = None) -> dict[str, str]:
    """Tags of a training run; ``trial``: its Optuna trial number (``lad.kind=trial``, see sweeps/kinds.py)."""
    return {
        "lad.entry": entry,
        KIND_TAG: "run" if trial is None else "trial",
        "lad.method": f"{method_label(cfg)}/{cfg.student.name}" if "student" in cfg else "teacher",
        "lad.task": cfg.task.name,
        "lad.teacher": cfg.teacher.name,
        "lad.overrides": json.dumps(list(overrides)),
        "lad.purpose": str(cfg.mlflow.get("purpose", "adhoc")),
        "mlflow.source.git.commit": git_commit(),
    }
