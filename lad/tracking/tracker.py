"""A run in MLflow: lifecycle, params, metrics, tags, artifacts, model registry.

``make_tracker`` returns a ``NullTracker`` when ``mlflow.enabled=false`` so the training code never
branches on tracking. mlflow is imported lazily (it costs seconds at start-up). Reaching the store is
``lad.tracking.store``; a sweep's parent run is ``lad.tracking.parents``.
"""

from __future__ import annotations

import functools
import json
import logging
import subprocess
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lad.core import signals
from lad.core.config import REPO_ROOT, flatten
from lad.tracking.parents import KIND_TAG, sweep_parent, sweep_study
from lad.tracking.store import connect, get_experiment_id, mask_secrets

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"

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
    from lad.method.gates import gate_class
    from lad.method.loss_terms import GATED, TERMS, term_of_weight

    loss = cfg.loss
    reads_gate = any(GATED in TERMS[term].teacher and float(loss[key] or 0.0) > 0
                     for key in loss if (term := term_of_weight(str(key))))
    if not reads_gate:
        return str(loss.name)
    if gate_class(cfg.gate).direct_map:
        return f"{loss.name}-nogate"
    return f"{cfg.gate.name}-frozen" if cfg.gate.get("frozen") else str(cfg.gate.name)


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


class NullTracker:
    run_id: str | None = None

    def log_params(self, params: dict) -> None: ...
    def log_metrics(self, metrics: dict, step: int | None = None) -> None: ...
    def set_tags(self, tags: dict) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_model_dir(self, model_dir: Path, registered_name: str | None = None, input_example=None) -> None: ...
    def end(self, status: str = "FINISHED", error: str | None = None) -> None: ...


def _uninterrupted(write):
    """A tracking-store write that SIGINT / SIGTERM cannot cut in half (``lad.core.signals.deferred``).

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
        a signature and ``input_example`` (a DataFrame of ``text_a``/``text_b``; see lad.tracking.mlflow_model)."""
        from lad.tracking.mlflow_model import log_hf_model

        log_hf_model(self.mlflow, self.run_id, Path(model_dir), registered_name, input_example)

    @_uninterrupted
    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        if error:
            self.set_tags({"error": error})
        self.client.set_terminated(self.run_id, status=status)


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
        parent = sweep_parent(mlflow, client, exp_id, sweep_dir, sweep_study(cfg, sweep_dir))
        all_tags["mlflow.parentRunId"] = parent
    name = mcfg.run_name or run_name
    run = client.create_run(exp_id, run_name=mask_secrets(name) if name else None, tags=all_tags)
    return MlflowTracker(mlflow, run, client)


def full_params(client, run) -> dict[str, str]:
    """Every param of a run: its ``params.json`` artifact, else (older runs) its MLflow params."""
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(run.info.run_id, PARAMS_ARTIFACT, tmp)
            return {**run.data.params, **json.loads(Path(path).read_text())}
    except Exception:  # noqa: BLE001 - no artifact (a run from before params.json), or unreadable
        return dict(run.data.params)
