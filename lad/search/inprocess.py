"""In-process Optuna search with pruning: the teacher and data are loaded once for all trials.

The Hydra sweeper (``distil.py -m hparams_search=lad_optuna``) starts every trial from scratch;
this search keeps a memo of the loaded teacher, tokenizer and features, reports the dev score of
every evaluation to Optuna and stops unpromising trials early (median / successive halving /
hyperband pruners). Each trial's config is composed by Hydra from the search's overrides plus the
trial's values, so config group choices (``gate=mean``, ``loss=kd``) can be searched. Trials run
under ``study.optimize`` (Optuna's heartbeats fail the trials of killed workers); several processes
started with the same study name and RDB storage share one study, created under the study lock.
Its parts: the trials and their limits (``lad.search.trials``), pruning (``lad.search.pruning``) and
what a search leaves behind (``lad.search.results``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lad.core.errors import ConfigError
from lad.search.pruning import DEV_ATTR, check_prune_on, make_pruner, prune_value, resolve_prune_on
from lad.search.rerun import rerun_command
from lad.search.results import best_overrides, best_trial_yaml, record_parent, save_front, save_plots, summarize
from lad.search.trials import (Progress, TrialLimit, app_overrides, check_group_choices, estimate, load_space,
                               suggest, trial_config, trial_limits, trial_overrides)

log = logging.getLogger(__name__)


def _null(value) -> str:
    return "null" if value is None else str(value)


def run_search(cfg: DictConfig, out_dir: Path, overrides: list[str] | None = None, callbacks=()) -> dict:
    """Run up to ``n_trials`` trials (this run's), and none beyond a study total of ``max_trials``
    (the Hydra sweeper's meanings); returns a summary with the best trial.

    ``overrides`` are the search's command-line overrides: each trial's config is composed from
    them plus the trial's values (default: the running Hydra app's task overrides). ``callbacks``
    are more Optuna callbacks, called after each trial (``study.stop()`` ends the search early).
    """
    import optuna

    from lad.core.config import budget_record
    from lad.core.errors import StudyError
    from lad.data.tasks import TaskSpec
    from lad.run.pipeline import run
    from lad.search.studies import check_space, lock_path, one_line, open_storage, open_study, safe_url, study_lock
    from lad.tracking.parents import ensure_sweep_parent
    from lad.tracking.store import mask_secrets

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = list(app_overrides() if overrides is None else overrides)
    scfg = cfg.search
    task = TaskSpec.from_config(cfg.task)

    run_limit, max_trials = trial_limits(cfg)
    params = OmegaConf.to_container(scfg.params, resolve=False) if scfg.get("params") else {}
    space = load_space(str(scfg.space_file), params)
    check_group_choices(space)
    if cfg.teacher.source == "path" and not any(k.split(".")[0] == "teacher" for k in space.distributions):
        from lad.models.teacher import resolve_teacher_dir

        resolve_teacher_dir(cfg.teacher)  # no teacher: one error before a study exists, not N failed trials
    prune_on = resolve_prune_on(scfg, task)
    pruner = make_pruner(scfg)  # config errors before a study is created
    from lad.run.objectives import directions as objective_directions, job_value

    directions = objective_directions(cfg)
    multi = len(directions) > 1
    if multi and scfg.pruner != "none":
        # Optuna's Trial.report / should_prune are single-objective only (NotImplementedError otherwise)
        log.warning("search.pruner=%s is off: Optuna cannot prune multi-objective trials; every trial trains "
                    "its full budget", scfg.pruner)
        pruner = optuna.pruners.NopPruner()
    lock = lock_path(str(scfg.storage)) if scfg.storage else None

    def stale(study, trial) -> None:  # Optuna's failed_trial_callback: a killed worker's trial
        log.warning("trial %d of a stopped worker had no heartbeat for the grace period: marked FAIL", trial.number)

    with study_lock(lock):  # concurrent workers must not create the schema / study twice
        storage = open_storage(str(scfg.storage), heartbeat_interval=int(scfg.heartbeat_interval),
                               failed_trial_callback=stale) if scfg.storage else None
        study = open_study(storage, str(scfg.study_name), directions, None, budget_record(cfg))
    try:  # a stored study over another space: one error, before any trial exists
        check_space(study, space.distributions, f" in {safe_url(str(scfg.storage))}" if scfg.storage else "")
    except StudyError as exc:
        raise ConfigError(str(exc).replace("hydra.sweeper.study_name", "search.study_name")) from None
    check_prune_on(study, prune_on)
    study.pruner = pruner

    memo: dict = {}
    sweep_tag = f"search:{scfg.study_name}"
    shown: dict[int, list[str]] = {}
    with study_lock(lock):  # one MLflow parent run for all the workers of the study
        ensure_sweep_parent(cfg, sweep_tag)

    def objective(trial) -> float:
        limit.release()  # Optuna created this trial under the lock
        values = space.overrides_for(suggest(trial, space))
        shown[trial.number] = values
        tcfg = trial_config(base, values, out_dir, trial.number)

        def on_eval(step: int, metrics: dict) -> None:
            # every dev metric of the evaluation stays on the trial (Optuna user attrs), so a
            # finished study shows which signal would have ranked its trials
            trial.set_user_attr(f"{DEV_ATTR}{step}", {k: float(v) for k, v in metrics.items()})
            if multi:
                return
            trial.report(prune_value(metrics, task, prune_on), step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")

        log.info("trial %d: %s", trial.number, " ".join(values))
        trial.set_user_attr("output_dir", str(tcfg.output_dir))
        try:
            score = float(run(tcfg, overrides=trial_overrides(base, values), sweep_dir=sweep_tag, memo=memo,
                              on_eval=on_eval, trial=trial.number))
            return job_value(tcfg, score, Path(str(tcfg.output_dir)))
        except (optuna.TrialPruned, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - recorded on the trial; the study goes on
            from lad.core.secrets import mask

            trial.set_user_attr("error", mask(f"{type(exc).__name__}: {one_line(exc)}")[:1000])
            raise

    limit = TrialLimit(lock, run_limit, max_trials)
    stored = len(study.trials)
    planned = min(n for n in (run_limit, None if max_trials is None else max(0, max_trials - stored))
                  if n is not None)
    print(f"[search] study {study.study_name}: {stored} trial(s) stored, this run adds up to {planned} "
          f"(n_trials={_null(run_limit)}, max_trials={_null(max_trials)}); {estimate(study, planned)}", flush=True)
    if run_limit is not None and planned < run_limit:
        print(f"[search] max_trials={max_trials} is the study's total: raise it to add more "
              f"(n_trials counts the trials of this run, as the Hydra sweeper does)", flush=True)
    t0 = time.time()
    try:
        if planned and limit.admit(study):
            # a resumed or concurrent worker must not replay another worker's seeded suggestions:
            # the seed is the configured one + the number of this worker's first trial, counted under
            # the lock that also covers creating that trial (as the sweeper does), so two workers
            # started together get different seeds
            study.sampler = optuna.samplers.TPESampler(
                seed=int(scfg.sampler_seed) + len(study.get_trials(deepcopy=False)))
            study.optimize(objective, callbacks=[Progress(planned, shown), *callbacks, limit], catch=(Exception,),
                           gc_after_trial=False)
    finally:
        limit.release()
    summary = summarize(study, task.main_metric, len(shown), time.time() - t0)
    summary["storage"] = mask_secrets(str(scfg.storage))
    summary["overrides"] = base
    if summary["best_params"]:
        summary["best_overrides"] = [mask_secrets(o) for o in best_overrides(base, space, summary["best_params"])]
        summary["best_command"] = rerun_command("distil", summary["best_overrides"])
    return summary


def search_entry(cfg: DictConfig, overrides: list[str] | None = None) -> float:
    """Entry point of ``sweeps/search.py``: search, then write the best config and plots."""
    import json

    from lad.core.config import setup_environment
    from lad.core.fileio import write_json, write_text

    setup_environment()
    out_dir = Path(str(cfg.output_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = run_search(cfg, out_dir, overrides)
    if summary["best_params"]:
        best_file = out_dir / f"best_{cfg.task.name}.yaml"
        write_text(best_file, best_trial_yaml(summary))
        summary["best_file"] = str(best_file)
    write_json(out_dir / "search.json", summary)
    if cfg.search.plots and cfg.search.storage:
        import optuna

        from lad.search.studies import open_storage

        study = optuna.load_study(study_name=str(cfg.search.study_name), storage=open_storage(str(cfg.search.storage)))
        summary["plots"] = [str(p) for p in (save_front(study, out_dir) if len(study.directions) > 1
                                             else save_plots(study, out_dir))]
    record_parent(cfg, out_dir, summary)
    print(json.dumps({k: summary[k] for k in ("study", "trials", "ran_now", "states", "best_value",
                                              "best_params", "wall_s")}, default=str), flush=True)
    if summary.get("best_file"):
        print(f"[search] best trial {summary['best_trial']} ({summary['metric']} {summary['best_value']:.4f}) "
              f"written to {summary['best_file']}; re-run it with:\n  {summary['best_command']}", flush=True)
    return float(summary["best_value"]) if summary["best_value"] is not None else float("nan")
