"""The parent run of a sweep: one per Hydra multirun directory, or one per Optuna study when the
sweep's jobs are its trials (all workers of the study, earlier resumed sweeps included). The first
job creates it under a lock; every finished child keeps it pointing at the best child so far."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from lad.core import signals
from lad.core.locks import file_lock
from lad.tracking.store import connect, get_experiment_id, mask_secrets

SWEEP_TAG = "lad.sweep_dir"
STUDY_TAG = "lad.study"  # on a sweep's parent run: the Optuna study its children are trials of
KIND_TAG = "lad.kind"  # "sweep" (a sweep's parent run), "trial" (an Optuna trial) or "run" (any other run)
OPTUNA_SWEEPERS = ("OptunaSweeper",)  # class names whose jobs are Optuna trials (job num = trial number)


def sweep_parent(mlflow, client, experiment_id: str, sweep_dir: str, study: str | None = None) -> str:
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
    return sweep_parent(mlflow, MlflowClient(), exp_id, sweep_dir, sweep_study(cfg, sweep_dir))


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
