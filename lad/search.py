"""In-process Optuna search with pruning: the teacher and data are loaded once for all trials.

The Hydra sweeper (``distil.py -m hparams_search=lad_optuna``) starts every trial from scratch;
this search keeps a memo of the loaded teacher, tokenizer and features, reports the dev score of
every evaluation to Optuna and stops unpromising trials early (median / successive halving /
hyperband pruners). Several processes started with the same study name and RDB storage share
one study (trial creation is serialised by the sweeper plugin's lock for SQLite).
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lad.errors import ConfigError

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


def load_space(space_file: str):
    """The search space declared under ``hydra.sweeper.params`` of an hparams_search file."""
    from hydra_plugins.lad_optuna_sweeper._space import parse_search_space

    path = Path(space_file)
    if not path.is_file():
        raise ConfigError(f"search.space_file {path} does not exist")
    params = OmegaConf.load(path).hydra.sweeper.params
    return parse_search_space(OmegaConf.to_container(params, resolve=False), [])


def trial_config(cfg: DictConfig, overrides: list[str], out_dir: Path, number: int) -> DictConfig:
    """The distil config of one trial: the search config with the trial's values set."""
    trial = copy.deepcopy(cfg)
    OmegaConf.set_struct(trial, False)
    for item in overrides:
        key, value = item.split("=", 1)
        OmegaConf.update(trial, key.lstrip("+"), _parse(value), merge=False)
    trial.entry = "distil"
    trial.output_dir = str(out_dir / f"trial-{number:03d}")
    trial.overwrite = True
    trial.trainer.resume = False
    trial.mlflow.run_name = f"trial-{number:03d}"
    for key in ("search", "n_trials"):
        trial.pop(key, None)
    return trial


def _parse(text: str):
    import yaml

    return yaml.safe_load(text)


def run_search(cfg: DictConfig, out_dir: Path) -> dict:
    """Run trials until the study holds ``n_trials``; returns a summary with the best trial."""
    import optuna
    from hydra_plugins.lad_optuna_sweeper._study import (ask, exclusive, heartbeat, lock_path,
                                                          open_storage, open_study, record_heartbeats,
                                                          reserve_trials)

    from lad.data.tasks import TaskSpec
    from lad.pipeline import run
    from lad.tracking import ensure_sweep_parent, mask_secrets

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    scfg = cfg.search
    task = TaskSpec.from_config(cfg.task)
    if int(cfg.n_trials) < 1:
        raise ConfigError(f"n_trials must be >= 1, got {cfg.n_trials}")
    space = load_space(str(scfg.space_file))
    prune_on = resolve_prune_on(scfg, task)
    pruner = make_pruner(scfg)  # config errors before a study is created
    lock = lock_path(str(scfg.storage)) if scfg.storage else None
    with exclusive(lock):  # concurrent workers must not create the schema / study twice
        storage = open_storage(str(scfg.storage), heartbeat_interval=int(scfg.heartbeat_interval),
                               grace_period=None) if scfg.storage else None
        sampler = optuna.samplers.TPESampler(seed=int(scfg.sampler_seed))
        study = open_study(storage, str(scfg.study_name), "maximize", sampler)
    _check_prune_on(study, prune_on)
    study.pruner = pruner
    seeded: list[bool] = []

    def create(number: int):
        # a resumed or concurrent worker must not replay another worker's seeded suggestions: the
        # sampler is seeded with seed + the number of this process's first trial, taken under the
        # reservation lock (two workers starting together would otherwise share a seed)
        if not seeded:
            study.sampler = optuna.samplers.TPESampler(seed=int(scfg.sampler_seed) + number)
            seeded.append(True)
        return ask(study, space.distributions)

    memo: dict = {}
    sweep_tag = f"search:{scfg.study_name}"
    with exclusive(lock):  # one MLflow parent run for all the workers of the study
        ensure_sweep_parent(cfg, sweep_tag)
    t0 = time.time()
    ran = 0
    while True:
        trials = reserve_trials(study, lock, int(cfg.n_trials), 1, create)
        if not trials:
            break
        trial = trials[0]
        # heartbeats let a later worker fail this trial if this process is killed mid-trial
        record_heartbeats(storage, [trial._trial_id])
        overrides = space.overrides_for(trial.params)
        tcfg = trial_config(cfg, overrides, out_dir, trial.number)

        def on_eval(step: int, metrics: dict, trial=trial) -> None:
            # every dev metric of the evaluation stays on the trial (Optuna user attrs), so a
            # finished study shows which signal would have ranked its trials
            trial.set_user_attr(f"{DEV_ATTR}{step}", {k: float(v) for k, v in metrics.items()})
            trial.report(prune_value(metrics, task, prune_on), step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")

        log.info("trial %d: %s", trial.number, " ".join(overrides))
        try:
            with heartbeat(storage, [trial._trial_id], float(scfg.heartbeat_interval)):
                value = run(tcfg, overrides=overrides, sweep_dir=sweep_tag, memo=memo, on_eval=on_eval)
            study.tell(trial, value)
            state = "COMPLETE"
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            state = "PRUNED"
        except Exception as exc:  # noqa: BLE001 - a failed trial must not end the study
            log.warning("trial %d failed: %s", trial.number, str(exc).splitlines()[0] if str(exc) else exc)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            state = "FAIL"
        ran += 1
        print(f"[search] trial {trial.number}: {state} {' '.join(overrides)}", flush=True)
    wall = time.time() - t0
    summary = summarize(study, task.main_metric, ran, wall)
    summary["storage"] = mask_secrets(str(scfg.storage))
    return summary


def search_entry(cfg: DictConfig) -> float:
    """Entry point of ``sweeps/search.py``: search, then write the best config and plots."""
    import json

    from lad.config import setup_environment
    from lad.fileio import write_json, write_text

    setup_environment()
    out_dir = Path(str(cfg.output_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = run_search(cfg, out_dir)
    groups = {g: cfg[g].name for g in ("task", "teacher", "student", "gate", "loss")}
    if summary["best_params"]:
        best_file = out_dir / f"best_{cfg.task.name}.yaml"
        write_text(best_file, best_experiment_yaml(cfg.task.name, groups, summary["best_params"],
                                                   summary["metric"], summary["best_value"]))
        summary["best_experiment"] = str(best_file)
    write_json(out_dir / "search.json", summary)
    if cfg.search.plots:
        import optuna

        from hydra_plugins.lad_optuna_sweeper._study import open_storage

        storage = open_storage(str(cfg.search.storage), 60, None) if cfg.search.storage else None
        if storage is not None:
            study = optuna.load_study(study_name=str(cfg.search.study_name), storage=storage)
            summary["plots"] = [str(p) for p in save_plots(study, out_dir)]
    _record_parent(cfg, out_dir, summary)
    print(json.dumps({k: summary[k] for k in ("study", "trials", "ran_now", "states", "best_value",
                                              "best_params", "wall_s")}, default=str), flush=True)
    if summary.get("best_experiment"):
        print(f"[search] best config: {summary['best_experiment']} "
              f"(copy it to conf/experiment/ and run: python distil.py experiment=best_{cfg.task.name})")
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
                 "optuna_importance.png"):
        if (out_dir / name).exists():
            client.log_artifact(parent, str(out_dir / name))
    shared_write(client.set_terminated, parent, "FINISHED")


def summarize(study, metric: str, ran: int, wall_s: float) -> dict:
    import optuna

    states = [t.state for t in study.trials]
    count = {s.name: states.count(s) for s in optuna.trial.TrialState}
    out = {"study": study.study_name, "metric": metric, "trials": len(states), "ran_now": ran,
           "wall_s": round(wall_s, 1), "states": {k: v for k, v in count.items() if v}}
    try:
        best = study.best_trial
        out.update(best_value=best.value, best_params=dict(best.params), best_trial=best.number)
    except ValueError:
        out.update(best_value=None, best_params={}, best_trial=None)
    return out


def best_experiment_yaml(task_name: str, base_groups: dict, params: dict, metric: str, value) -> str:
    """A ready-to-run ``conf/experiment`` file holding the best trial's values."""
    lines = ["# @package _global_",
             f"# Best trial of an Optuna search on {task_name} ({metric} = {value}); written by sweeps/search.py.",
             f"#   python distil.py experiment=best_{task_name}",
             "defaults:"]
    lines += [f"  - override /{group}: {option}" for group, option in base_groups.items()]
    nested: dict = {}
    for key, val in sorted(params.items()):
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = val
    nested.setdefault("loss", {})["tie_hard_soft"] = True
    return "\n".join(lines) + "\n" + OmegaConf.to_yaml(OmegaConf.create(nested))


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


