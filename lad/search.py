"""In-process Optuna search with pruning: the teacher and data are loaded once for all trials.

The Hydra sweeper (``distil.py -m hparams_search=lad_optuna``) starts every trial from scratch;
this search keeps a memo of the loaded teacher, tokenizer and features, reports the dev score of
every evaluation to Optuna and stops unpromising trials early (median / successive halving /
hyperband pruners). Each trial's config is composed by Hydra from the search's overrides plus the
trial's values, so config group choices (``gate=mean``, ``loss=kd``) can be searched. Trials run
under ``study.optimize`` (Optuna's heartbeats fail the trials of killed workers); several processes
started with the same study name and RDB storage share one study, created under the study lock.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lad.errors import ConfigError
from lad.rerun import config_overrides, key_of, merge_overrides, rerun_command

log = logging.getLogger(__name__)


def make_pruner(cfg: DictConfig):
    import optuna

    pruners = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=int(cfg.startup_trials),
                                                      n_warmup_steps=_warmup_steps(cfg)),
        "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=_min_resource(cfg), reduction_factor=int(cfg.reduction_factor)),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(
            min_resource=_min_resource(cfg), reduction_factor=int(cfg.reduction_factor)),
        "none": lambda: optuna.pruners.NopPruner(),
    }
    if cfg.pruner not in pruners:
        raise ConfigError(f"search.pruner must be one of {', '.join(pruners)}, got {cfg.pruner!r}")
    return pruners[cfg.pruner]()


def prune_keys(task) -> tuple[str, ...]:
    """Valid ``search.prune_on`` values for a task: ``metric`` (its main dev metric), ``loss`` and
    each dev metric it logs (unsuffixed: ``accuracy`` averages MNLI's ``accuracy_m``/``_mm``)."""
    from lad.data.tasks import METRIC_KEYS

    return ("metric", "loss", *METRIC_KEYS[task.metric])


def resolve_prune_on(scfg: DictConfig, task) -> str:
    """``search.prune_on`` (default ``metric``), checked against what the task logs."""
    prune_on = str(scfg.get("prune_on", "metric"))
    if prune_on not in prune_keys(task):
        raise ConfigError(f"search.prune_on must be one of {', '.join(prune_keys(task))} for task {task.name}, "
                          f"got {prune_on!r}")
    return prune_on


DEV_ATTR = "dev@"  # trial user attr prefix: ``dev@<step>`` holds that evaluation's dev metrics


def dev_curves(trial) -> dict[int, dict]:
    """``{step: dev metrics}`` of a trial, from the ``dev@<step>`` user attrs that ``run_search`` records."""
    return {int(k[len(DEV_ATTR):]): v for k, v in trial.user_attrs.items() if k.startswith(DEV_ATTR)}


def prune_value(metrics: dict, task, prune_on: str) -> float:
    """What a trial reports to the pruner at an evaluation (higher is better): the task's main dev
    metric; with ``prune_on=loss`` the negated dev loss; with a metric name such as ``accuracy``
    that metric. Several eval splits (MNLI matched/mismatched) are averaged. Early F1 often sits on
    the all-positive plateau for every trial while accuracy or the loss already differ; which one
    predicts the final score depends on the task and the training budget."""
    from lad.data.tasks import eval_splits

    if prune_on == "metric":
        return float(metrics[task.main_metric])
    key = prune_on
    suffixes = {task.split(s).metric_suffix for s in eval_splits(task)}
    values = [float(metrics[key + sfx]) for sfx in sorted(suffixes) if key + sfx in metrics]
    if not values:
        raise ConfigError(f"search.prune_on={prune_on}: no such dev metric (got {', '.join(sorted(metrics))})")
    mean = sum(values) / len(values)
    return -mean if prune_on == "loss" else mean


def _check_prune_on(study, prune_on: str) -> None:
    """Pruners compare the values trials report at the same step, so a study keeps one kind: the
    first run stores it on the study; resuming with another ``search.prune_on`` is refused."""
    stored = study.user_attrs.get("prune_on")
    if stored is None and any(t.intermediate_values for t in study.trials):
        stored = "metric"  # studies from before the option reported the metric
    if stored is None:
        study.set_user_attr("prune_on", prune_on)
    elif stored != prune_on:
        raise ConfigError(f"study {study.study_name!r} was run with search.prune_on={stored}; resume it with "
                          f"the same value or start a new one with another search.study_name")


def _warmup_steps(cfg: DictConfig) -> int:
    """Median pruner: trials report at training steps, so the first ``warmup_evals`` evaluations
    (every ``eval_every`` steps) are protected by a warm-up of that many steps plus one."""
    evals = int(cfg.warmup_evals)
    if evals < 0:
        raise ConfigError(f"search.warmup_evals must be >= 0, got {evals}")
    return evals * int(cfg.eval_every) + 1 if evals else 0


def _min_resource(cfg: DictConfig):
    """Steps a trial trains before its first rung (halving / hyperband); "auto" = Optuna's estimate."""
    value = cfg.get("min_resource", "auto")
    if value in (None, "auto"):
        return "auto"
    if int(value) < 1:
        raise ConfigError(f"search.min_resource must be >= 1 or auto, got {value}")
    return int(value)


def load_space(space_file: str, params: dict | None = None):
    """The search space: ``hydra.sweeper.params`` of an hparams_search file plus ``params`` (the
    ``search.params`` entries, which win on the same key). Same grammar as the Hydra sweeper."""
    from lad.search_space import flat_params, parse_search_space

    path = Path(space_file)
    if not path.is_file():
        raise ConfigError(f"search.space_file {path} does not exist")
    from lad.config import load_with_bases

    base = OmegaConf.select(load_with_bases(path), "hydra.sweeper.params")  # none in hparams_search/default.yaml
    merged = flat_params(OmegaConf.to_container(base, resolve=False) if base is not None else {})
    merged.update(flat_params(params or {}))
    return parse_search_space(merged)


def check_group_choices(space) -> None:
    """Every searched config group choice (``gate=choice(lad,mean)``) names a file of its group."""
    from optuna.distributions import CategoricalDistribution

    from lad.config import CONF_DIR

    for name, dist in space.distributions.items():
        group = CONF_DIR / name
        if isinstance(dist, CategoricalDistribution) and group.is_dir():
            options = sorted(p.stem for p in group.glob("*.yaml"))
            for choice in dist.choices:
                if str(choice) not in options:
                    raise ConfigError(f"search.params.{name}: no option {choice!r} in conf/{name}/ "
                                      f"(options: {', '.join(options)})")


def compose_search(overrides: list[str]) -> DictConfig:
    """``conf/search.yaml`` composed with ``overrides`` by Hydra (inside the running app, or on its own)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lad.config import CONF_DIR, register_resolvers

    register_resolvers()
    if GlobalHydra.instance().is_initialized():
        return compose("search", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("search", overrides=overrides)


def trial_overrides(base: list[str], trial: list[str]) -> list[str]:
    """The search's own overrides with those of a trial (a trial's key replaces the search's)."""
    keys = {key_of(o) for o in trial}
    return [o for o in base if key_of(o) not in keys] + list(trial)


def trial_config(base: list[str], overrides: list[str], out_dir: Path, number: int) -> DictConfig:
    """The distil config of one trial, composed by Hydra: config group choices (``gate=mean``,
    ``loss=kd``) select their group's file exactly as on the command line."""
    trial = compose_search(trial_overrides(base, overrides))
    OmegaConf.set_struct(trial, False)
    trial.entry = "distil"
    trial.output_dir = str(out_dir / f"trial-{number:03d}")
    trial.overwrite = True
    trial.trainer.resume = False
    if len(trial.get("objectives") or ["metric"]) > 1:  # lad.pareto pick exports the chosen trial's model
        trial.trainer.keep_model = True
    trial.mlflow.run_name = None  # named by lad.run_record.display_name: "<method> <task> trial=<n>"
    for key in ("search", "n_trials", "max_trials"):
        trial.pop(key, None)
    return trial


def suggest(trial, space) -> dict:
    """Ask ``trial`` for every parameter of ``space`` (Optuna's suggest API, define-by-run)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    for name, dist in space.distributions.items():
        if isinstance(dist, CategoricalDistribution):
            trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, IntDistribution):
            trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return dict(trial.params)


class TrialLimit:
    """Stops ``study.optimize`` once this run has created ``run_limit`` trials (``n_trials``) or the
    study holds ``max_trials`` (its total, all workers and earlier runs included); None: no such limit.

    Counting and creating a trial happen under the study's lock: the lock is taken before the first
    trial and, as an Optuna callback, after each trial; the next trial's objective releases it once
    Optuna has created that trial. Without a lock file (in-memory or server storage) workers can
    overshoot ``max_trials`` by at most one trial each.
    """

    def __init__(self, lock, run_limit: int | None, max_trials: int | None) -> None:
        self.lock = lock  # lad.studies.lock_path(): a lock file, a PostgreSQL advisory lock, or None
        self.run_limit, self.max_trials = run_limit, max_trials
        self.admitted = 0  # trials this run created (each admitted trial is created)
        self.held = None

    def admit(self, study) -> bool:
        """Take the lock; True (keeping it) while both limits leave room for one more trial."""
        from lad.studies import study_lock

        self.held = study_lock(self.lock)
        self.held.__enter__()
        if ((self.run_limit is None or self.admitted < self.run_limit)
                and (self.max_trials is None or len(study.get_trials(deepcopy=False)) < self.max_trials)):
            self.admitted += 1
            return True
        self.release()
        return False

    def release(self) -> None:
        if self.held is not None:
            held, self.held = self.held, None
            held.__exit__(None, None, None)

    def __call__(self, study, trial) -> None:
        if not self.admit(study):
            study.stop()


class Progress:
    """Optuna callback printing each finished trial with the run's progress and an ETA."""

    def __init__(self, planned: int, overrides: dict) -> None:
        self.planned, self.overrides, self.done, self.t0 = planned, overrides, 0, time.monotonic()

    def __call__(self, study, trial) -> None:
        from lad.studies import format_seconds

        self.done += 1
        elapsed = time.monotonic() - self.t0
        left = max(0, self.planned - self.done)
        eta = f", ETA {format_seconds(elapsed / self.done * left)}" if left else ""
        value = "" if not trial.values else " " + ", ".join(f"{v:.4g}" for v in trial.values)
        print(f"[search] trial {trial.number}: {trial.state.name}{value} {' '.join(self.overrides.get(trial.number, []))}"
              f" | {self.done}/{self.planned} this run, {format_seconds(elapsed)}{eta}", flush=True)


def _estimate(study, planned: int) -> str:
    from lad.studies import format_seconds, trial_durations

    durations = trial_durations(study)
    if not durations:
        return "no estimate until the first trial finishes"
    mean = sum(durations) / len(durations)
    return (f"estimate {format_seconds(mean * planned)} ({planned} x {format_seconds(mean)}, the mean of "
            f"{len(durations)} stored trial(s); pruned trials end sooner)")


def trial_limits(cfg: DictConfig) -> tuple[int | None, int | None]:
    """``(n_trials, max_trials)``: the trials this run adds and the study's total (None: no limit);
    at least one is set. 1.5 is an error, never a silent 1."""
    from lad.schema import KEYS, check_value

    run_limit = check_value("n_trials", cfg.get("n_trials"), KEYS["n_trials"])
    max_trials = check_value("max_trials", cfg.get("max_trials"), KEYS["max_trials"])
    if run_limit is None and max_trials is None:
        raise ConfigError("n_trials and max_trials are both null: set n_trials (the trials this run adds) "
                          "or max_trials (the study's total)")
    return run_limit, max_trials


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

    from lad.data.tasks import TaskSpec
    from lad.pipeline import run
    from lad.errors import StudyError
    from lad.studies import (budget_record, check_space, lock_path, one_line, open_storage, open_study,
                             safe_url, study_lock)
    from lad.tracking import ensure_sweep_parent, mask_secrets

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = list(_app_overrides() if overrides is None else overrides)
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
    from lad.objectives import directions as objective_directions, job_value

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
    _check_prune_on(study, prune_on)
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
            from lad.secrets import mask

            trial.set_user_attr("error", mask(f"{type(exc).__name__}: {one_line(exc)}")[:1000])
            raise

    limit = TrialLimit(lock, run_limit, max_trials)
    stored = len(study.trials)
    planned = min(n for n in (run_limit, None if max_trials is None else max(0, max_trials - stored))
                  if n is not None)
    print(f"[search] study {study.study_name}: {stored} trial(s) stored, this run adds up to {planned} "
          f"(n_trials={_null(run_limit)}, max_trials={_null(max_trials)}); {_estimate(study, planned)}", flush=True)
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


def best_overrides(base: list[str], space, params: dict) -> list[str]:
    """Every override a trial with ``params`` ran with, for ``distil.py`` (lad.rerun): what
    conf/search.yaml sets beyond distil.yaml (``loss.tie_hard_soft``, ``trainer.eval_every`` ...),
    the search's command-line overrides, the trial's values."""
    from lad.config import CONF_DIR

    own = config_overrides(OmegaConf.load(CONF_DIR / "search.yaml"))
    return merge_overrides(own, base, space.overrides_for(params))


def sweep_arguments_as_params(argv: list[str]) -> list[str]:
    """Command-line sweeps (``'gate=choice(lad,mean)'``, ``'optim.lr=tag(log,interval(1e-5,1e-3))'``)
    as ``search.params`` entries, so they join the search space as they would the sweeper's; every
    other argument is returned unchanged."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for arg in argv:
        try:
            override = None if arg.startswith("-") else parser.parse_override(arg)
        except Exception:  # noqa: BLE001 - Hydra reports it with its own message
            override = None
        if override is None or not override.is_sweep_override():
            out.append(arg)
            continue
        key = override.get_key_element().lstrip("+")
        sweep = arg.split("=", 1)[1].replace("\\", "\\\\").replace("'", "\\'")
        out.append(f"++search.params.{key}='{sweep}'")
    return out


def _app_overrides() -> list[str]:
    """Command-line overrides of the running Hydra app ([] outside one)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        from lad.config import task_overrides

        return task_overrides(HydraConfig.get())
    except ValueError:
        return []


def search_entry(cfg: DictConfig, overrides: list[str] | None = None) -> float:
    """Entry point of ``sweeps/search.py``: search, then write the best config and plots."""
    import json

    from lad.config import setup_environment
    from lad.fileio import write_json, write_text

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

        from lad.studies import open_storage

        study = optuna.load_study(study_name=str(cfg.search.study_name), storage=open_storage(str(cfg.search.storage)))
        summary["plots"] = [str(p) for p in (save_front(study, out_dir) if len(study.directions) > 1
                                             else save_plots(study, out_dir))]
    _record_parent(cfg, out_dir, summary)
    print(json.dumps({k: summary[k] for k in ("study", "trials", "ran_now", "states", "best_value",
                                              "best_params", "wall_s")}, default=str), flush=True)
    if summary.get("best_file"):
        print(f"[search] best trial {summary['best_trial']} ({summary['metric']} {summary['best_value']:.4f}) "
              f"written to {summary['best_file']}; re-run it with:\n  {summary['best_command']}", flush=True)
    return float(summary["best_value"]) if summary["best_value"] is not None else float("nan")


def _record_parent(cfg: DictConfig, out_dir: Path, summary: dict) -> None:
    """Best params/value and plots on the search's MLflow parent run."""
    if not cfg.mlflow.enabled:
        return
    from lad.tracking import SWEEP_TAG, connect, get_experiment_id, shared_write

    mlflow = connect(cfg.mlflow)
    client = mlflow.tracking.MlflowClient()
    exp_id = get_experiment_id(mlflow, str(cfg.mlflow.experiment), cfg.mlflow.artifact_location)
    tag = f"search:{cfg.search.study_name}"
    found = client.search_runs([exp_id], filter_string=f"tags.`{SWEEP_TAG}` = '{tag}'", max_results=1)
    if not found:
        return
    parent = found[0].info.run_id
    shared_write(client.set_tag, parent, "optuna.study", summary["study"])
    shared_write(client.set_tag, parent, "optuna.best_trial", str(summary["best_trial"]))
    for key, value in summary["best_params"].items():
        shared_write(client.set_tag, parent, f"best.{key}", str(value))
    if summary["best_value"] is not None:
        import time as _time

        from mlflow.entities import Metric

        shared_write(client.log_batch, parent, metrics=[
            Metric("optuna/best_value", float(summary["best_value"]), int(_time.time() * 1000), 0),
            Metric("optuna/trials", float(summary["trials"]), int(_time.time() * 1000), 0)])
    for name in ("search.json", f"best_{cfg.task.name}.yaml", "optuna_history.png", "optuna_parallel.png",
                 "optuna_importance.png", "pareto.front.png", "pareto.front.json"):
        if (out_dir / name).exists():
            client.log_artifact(parent, str(out_dir / name))
    shared_write(client.set_terminated, parent, "FINISHED")


def summarize(study, metric: str, ran: int, wall_s: float) -> dict:
    import optuna

    states = [t.state for t in study.trials]
    count = {s.name: states.count(s) for s in optuna.trial.TrialState}
    out = {"study": study.study_name, "metric": metric, "trials": len(states), "ran_now": ran,
           "wall_s": round(wall_s, 1), "states": {k: v for k, v in count.items() if v}}
    if len(study.directions) > 1:  # no single best: the Pareto front (COMPLETE trials only)
        out.update(best_value=None, best_params={}, best_trial=None,
                   solutions=[{"number": t.number, "values": list(t.values), "params": dict(t.params)}
                              for t in study.best_trials])
        return out
    try:
        best = study.best_trial
        out.update(best_value=best.value, best_params=dict(best.params), best_trial=best.number)
    except ValueError:
        out.update(best_value=None, best_params={}, best_trial=None)
    return out


def best_trial_yaml(summary: dict) -> str:
    """The best trial as a self-contained record: its score, every override it ran with, and the
    command that re-runs it (nothing else to copy or install)."""
    record = {k: summary[k] for k in ("study", "metric")}
    record.update(trial=summary["best_trial"], value=summary["best_value"], params=summary["best_params"],
                  overrides=summary["best_overrides"], command=summary["best_command"])
    header = (f"# Best trial {summary['best_trial']} of the Optuna study {summary['study']} "
              f"({summary['metric']} = {summary['best_value']}); written by sweeps/search.py.\n"
              "# Every override the trial ran with; re-run it (from the repository root) with:\n"
              f"#   {summary['best_command']}\n")
    return header + OmegaConf.to_yaml(OmegaConf.create(record))


def save_plots(study, out_dir: Path) -> list[Path]:
    """Optimisation history, parameter importance and parallel coordinates as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    made = []
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    plots = {"optuna_history.png": ovm.plot_optimization_history,
             "optuna_parallel.png": ovm.plot_parallel_coordinate}
    if len(complete) >= 2:
        plots["optuna_importance.png"] = ovm.plot_param_importances
    for name, fn in plots.items():
        try:
            ax = fn(study)
            fig = ax.figure if hasattr(ax, "figure") else ax.flatten()[0].figure
            fig.set_size_inches(8, 5)
            fig.tight_layout()
            fig.savefig(out_dir / name, dpi=100)
            plt.close(fig)
            made.append(out_dir / name)
        except Exception as exc:  # noqa: BLE001 - a plot must not fail the search
            log.warning("could not draw %s: %s", name, exc)
    return made




def save_front(study, out_dir: Path) -> list[Path]:
    """A multi-objective study's Pareto front (``lad.pareto``) as ``pareto.front.png`` / ``.json``."""
    from lad import pareto

    try:
        done, front = pareto.rows_of(study)
        return list(pareto.write_front(study.study_name, done, front, pareto.reference_of(front),
                                       out_dir / "pareto")) if front else []
    except Exception as exc:  # noqa: BLE001 - a plot must not fail the search
        log.warning("could not draw the Pareto front: %s", exc)
        return []
