"""``run(cfg)``: the run behind the entry points, config in, trained model and records out, objective back.

``train_teacher.py`` and ``distil.py`` call it; the only difference between the two is how the
trainable ``Distiller`` is assembled, chosen by ``cfg.entry`` through ``lad.run.builders.BUILDERS``.
The stages: every input checked before any work (``lad.run.checks``), the run directory claimed
(``lad.run.rundir``), data read and tokenised, the module assembled (``lad.run.builders``), an MLflow
run opened, the module trained and everything saved (``lad.run.fit``), the run closed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig

from lad.core.config import setup_environment
from lad.core.errors import ConfigError
from lad.run.builders import BUILDERS, loss_config, memoized, model_max_len, truncation_params
from lad.run.checks import (check_disk_space, check_teacher_target, check_test_splits, check_writable_places,
                            validate_common)
from lad.run.fit import train_and_save
from lad.run.rundir import resolve_output_dir, target_dir
from lad.tracking.run_record import ui_extra

log = logging.getLogger(__name__)


def record_labels(cfg: DictConfig, task) -> None:
    """Write an inferred label set into ``cfg.task.labels`` (so config.yaml and MLflow params show it)."""
    if task.labels is not None and cfg.task.get("labels") is None:
        from omegaconf import open_dict

        with open_dict(cfg):
            cfg.task.labels = list(task.labels)


def run(cfg: DictConfig, overrides: list[str] | None = None, sweep_dir: str | None = None,
        memo: dict | None = None, on_eval=None, job_files: bool = False, trial: int | None = None) -> float:
    """Train per ``cfg`` (teacher fine-tune or distillation) and return the best dev main metric.

    ``memo`` (a dict kept by the caller) reuses the loaded teacher, tokenizer and features across
    calls in one process; ``on_eval(step, metrics)`` is called after every dev evaluation (an
    Optuna pruning callback raises ``optuna.TrialPruned`` there). ``job_files`` writes this Hydra
    job's ``.hydra/`` record and log into the run directory once it is claimed (the entry points).

    The run directory is locked for the whole call (``lad.run.rundir.claim``); every input is checked
    before anything in it changes.
    ``trial`` is the Optuna trial
    number when the run is one (it names the MLflow run).
    """
    from lad.core.secrets import remember
    from lad.run.rundir import claim, close_job_files, hold_early_log

    setup_environment()
    remember(cfg)
    validate_common(cfg)
    entry = str(cfg.entry)
    if entry not in BUILDERS:
        raise ConfigError(f"unknown entry {entry!r} (expected one of {sorted(BUILDERS)})")
    from lad.data.tasks import TaskSpec

    task = TaskSpec.from_config(cfg.task)
    if entry == "distil":
        loss = loss_config(cfg)
        from lad.method.losses import Objective

        Objective.from_config(loss, is_regression=task.is_regression)  # validate before heavy work
        from lad.run.objectives import names

        names(cfg)  # what the job returns to a sweeper (objectives, speed.*)
    target = target_dir(cfg)
    from lad.core.preflight import writable

    writable(target.parent, "output directory", "hydra.run.dir (or paths.output_root)")
    import contextlib

    # under torchrun rank 0 owns the directory (the other ranks write nothing there)
    owner = int(os.environ.get("RANK", "0") or 0) == 0
    teacher = Path(str(cfg.teacher.path)).expanduser() if entry == "train_teacher" else None
    if teacher is not None:
        from lad.run.rundir import check_apart

        check_apart(target, teacher)
    if job_files and owner:
        hold_early_log()  # the run's <job>.log gets the records logged before it opens (data checks, truncation)
    try:  # a teacher being published is locked like a run directory: two runs cannot race to replace it
        with claim(target) if owner else contextlib.nullcontext(), \
                claim(teacher, "teacher.path") if owner and teacher is not None else contextlib.nullcontext():
            return _run_claimed(cfg, entry, task, overrides, sweep_dir, memo, on_eval, job_files, owner, trial)
    finally:
        close_job_files()


def _run_claimed(cfg, entry, task, overrides, sweep_dir, memo, on_eval, job_files, owner=True,
                 trial: int | None = None) -> float:
    from lad.data.tasks import eval_splits
    from lad.run import rundir

    out_dir = target_dir(cfg)
    if owner:
        rundir.recover(out_dir)
    rundir.check_run_target(out_dir, entry)
    out_dir, resume = resolve_output_dir(cfg)
    if resume:
        rundir.check_resume_config(out_dir, cfg)
    check_writable_places(cfg, entry, out_dir)
    if entry == "train_teacher":
        check_teacher_target(cfg)

    from lad.core.runtime import pick_device, resolve_precision, seed_everything, set_threads
    from lad.data.features import load_features
    from lad.data.sources import read_split, with_labels
    from lad.run.distributed import DistContext
    from lad.tracking.store import connect
    from lad.tracking.tracker import config_tags, make_tracker

    dist = DistContext.from_env()
    device = pick_device(str(cfg.device))
    data_dir = cfg.data.data_dir  # resolved by the layouts that use it (GLUE folders)
    # cheap checks first: the label set, every data file parses, the tracking store answers
    task = memoized(memo, ("labels", task), lambda: with_labels(task, data_dir))
    record_labels(cfg, task)
    examples, limits = {}, {}
    for split in ["train", *eval_splits(task)]:
        limit = cfg.data.max_train_samples if split == "train" else cfg.data.max_eval_samples
        limits[split] = limit
        examples[split] = memoized(memo, ("examples", task, split, str(data_dir), limit),
                                   lambda: read_split(task, data_dir, split, limit))
    if cfg.trainer.predict_test:  # a bad test row is found now, not after training
        check_test_splits(task, data_dir, cfg.data.max_eval_samples, memo)
    if cfg.mlflow.enabled and dist.is_main:
        connect(cfg.mlflow)
        from lad.tracking.store import check_artifact_store

        check_artifact_store(cfg.mlflow)  # a remote store that is down: one line now, not after training
    threads = set_threads(cfg.trainer.get("num_threads"))
    device = dist.init(device)
    seed_everything(int(cfg.seed))
    asm = BUILDERS[entry](cfg, task, memo)
    asm.extra_params["runtime.num_threads"] = threads
    asm.extra_params["runtime.precision"] = resolve_precision(str(cfg.trainer.precision), device)
    module = asm.module
    max_len = model_max_len(task, asm)
    cache_dir = Path(str(cfg.data.cache_dir))

    def features(split: str, limit):
        key = ("features", task, split, str(data_dir), str(asm.model_source), max_len, limit)
        return memoized(memo, key, lambda: load_features(task, data_dir, split, asm.tokenizer, max_len,
                                                         cache_dir, limit))

    train_feats = features("train", cfg.data.max_train_samples)
    eval_sets = {s: features(s, cfg.data.max_eval_samples) for s in eval_splits(task)}
    asm.extra_params.update(truncation_params(task, {"train": train_feats, **eval_sets}, max_len))
    if dist.is_main:
        check_disk_space(cfg, module, out_dir)
    if entry == "distil" and module.teacher is not None and cfg.cache.enabled:
        from lad.method.teacher_cache import attach_cache

        attach_cache(cfg, module, train_feats, asm.model_source, task, split="train", device=device)

    set_aside = False
    if cfg.overwrite and not resume and dist.is_main:
        set_aside = rundir.set_aside(out_dir)
    dist.barrier()
    out_dir.mkdir(parents=True, exist_ok=True)
    if job_files and dist.is_main:
        rundir.write_job_files(out_dir, cfg)
    run_id_file = out_dir / "mlflow_run_id"
    prev_run = run_id_file.read_text().strip() if resume and run_id_file.exists() else None
    tracker = None
    try:
        if dist.is_main:
            from lad.tracking import run_record

            tags = config_tags(cfg, entry, overrides or [], trial)
            tags[run_record.NOTE_TAG] = run_record.description(entry, overrides, trial, in_sweep=bool(sweep_dir))
            tracker = make_tracker(cfg, tags, resume_run_id=prev_run, sweep_dir=sweep_dir,
                                   run_name=run_record.display_name(cfg, overrides, trial))
            ui_extra(run_record.log_datasets, tracker, task, data_dir, examples, limits)
            ui_extra(run_record.save_runs_view, tracker, task.main_metric)
        else:  # under torchrun only rank 0 records
            from lad.tracking.tracker import NullTracker

            tracker = NullTracker()
        if tracker.run_id:
            run_id_file.write_text(tracker.run_id)
        result = train_and_save(cfg, entry, task, asm, train_feats, eval_sets, out_dir, resume,
                                tracker, device, on_eval, dist)
    except BaseException as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        pruned = type(exc).__name__ == "TrialPruned"
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) or pruned else "FAILED"
        if tracker is not None:
            if pruned:
                tracker.set_tags({"optuna.state": "PRUNED"})
            tracker.end(status=status, error=f"{type(exc).__name__}: {message}"[:4000])
        if set_aside:  # overwrite=true never leaves the user with neither run
            rundir.close_job_files()
            rundir.restore(out_dir)
            log.warning("the new run failed; the previous run in %s was put back", out_dir)
        if isinstance(exc, KeyboardInterrupt) and not getattr(exc, "hint", ""):
            from lad.run import checkpoint as ckpt

            exc.hint = (f"the previous run in {out_dir} was put back" if set_aside
                        else ckpt.resume_hint(out_dir))
        dist.close()
        raise
    if set_aside:
        rundir.discard(out_dir)
    if dist.is_main:
        from lad.run import checkpoint as ckpt

        ckpt.prune(out_dir / "checkpoints", int(cfg.trainer.get("keep_after_finish", 1)))
    tracker.end("FINISHED")
    dist.close()
    if dist.is_main:
        from lad.tracking import run_record

        ui_extra(run_record.refresh_ablation_table, tracker)
    if sweep_dir:
        from lad.tracking.parents import update_sweep_parent

        update_sweep_parent(tracker, sweep_dir, result, task.main_metric, overrides or [])
    return result
