"""What a recorded run counts as: a grid cell or a sweep trial (one definition for every driver).

``sweeps/ablation.py`` (which cells of its grid are done) and the report (which runs fill the tables
and which the sweep section) both decide with these functions, on export records (the format of
``sweeps/export.py``, read from MLflow or from ``results/runs.jsonl``).

- A **sweep trial** is a run that an Optuna search launched: the Hydra Optuna sweeper
  (``distil.py -m hparams_search=...``) or ``sweeps/search.py``. Since the ``lad.kind`` tag exists
  such runs carry ``lad.kind=trial``; every other training run carries ``lad.kind=run``, including
  the children of a plain multirun (``distil.py -m seed=1,2``), which also have a parent run (the
  multirun's) but are ordinary seed runs. Runs recorded before the tag have no ``lad.kind``: among
  them, a child of a parent run (``mlflow.parentRunId``) is a trial (only Optuna sweeps made parents
  for the results then).
- A **grid cell** is a FINISHED ``distil`` run of a student that is not a sweep trial: one
  (task, method, student, seed) point of a grid, whether the ablation driver, a seed multirun or a
  single command recorded it.
"""

from __future__ import annotations

from lad.tracking.parents import KIND_TAG  # "trial" | "run" on every training run (lad.tracking.tracker.config_tags)

PARENT_TAG = "mlflow.parentRunId"
PRUNED_TAG = "optuna.state"


def is_sweep_trial(record: dict) -> bool:
    """Whether an export record is a trial of an Optuna sweep (finished, pruned or failed)."""
    tags = record.get("tags", {})
    kind = tags.get(KIND_TAG)
    if kind is not None:
        return kind == "trial"
    return bool(tags.get(PARENT_TAG))


def is_pruned_trial(record: dict) -> bool:
    """A sweep trial stopped by the pruner (exported with status KILLED: it counts, without a score)."""
    return (is_sweep_trial(record) and record.get("status") == "KILLED"
            and record.get("tags", {}).get(PRUNED_TAG) == "PRUNED")


def is_grid_cell(record: dict) -> bool:
    """Whether an export record is a finished grid cell (a distil run of a student, not a trial)."""
    return (record.get("entry") == "distil" and record.get("status", "FINISHED") == "FINISHED"
            and bool(record.get("student")) and not is_sweep_trial(record))


def cell_key(record: dict) -> tuple:
    """(task, method, student, seed): the grid point a cell record fills."""
    return record.get("task"), record.get("method"), record.get("student"), record.get("seed")
