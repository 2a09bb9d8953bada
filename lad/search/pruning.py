"""Pruning an in-process search: the pruner a search names (median, successive halving, hyperband,
none) and what a trial reports to it at every evaluation (``search.prune_on``: the task's main dev
metric, the negated dev loss or one dev metric). Every evaluation's dev metrics stay on the trial
(``dev@<step>`` user attributes), so a finished study shows which signal would have ranked it."""

from __future__ import annotations

from omegaconf import DictConfig

from lad.core.errors import ConfigError


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


def check_prune_on(study, prune_on: str) -> None:
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
