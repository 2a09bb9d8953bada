"""The trials of an in-process search: the space (an hparams_search file plus ``search.params``),
each trial's config composed by Hydra from the search's overrides plus its values, the two limits
(``n_trials`` this run adds, ``max_trials`` the study's total) kept under the study's lock, and the
progress line printed after every trial."""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lad.core.errors import ConfigError
from lad.search.rerun import key_of


def load_space(space_file: str, params: dict | None = None):
    """The search space: ``hydra.sweeper.params`` of an hparams_search file plus ``params`` (the
    ``search.params`` entries, which win on the same key). Same grammar as the Hydra sweeper."""
    from lad.search.space import flat_params, parse_search_space

    path = Path(space_file)
    if not path.is_file():
        raise ConfigError(f"search.space_file {path} does not exist")
    from lad.core.config import load_with_bases

    base = OmegaConf.select(load_with_bases(path), "hydra.sweeper.params")  # none in hparams_search/default.yaml
    merged = flat_params(OmegaConf.to_container(base, resolve=False) if base is not None else {})
    merged.update(flat_params(params or {}))
    return parse_search_space(merged)


def check_group_choices(space) -> None:
    """Every searched config group choice (``gate=choice(lad,mean)``) names a file of its group."""
    from optuna.distributions import CategoricalDistribution

    from lad.core.config import CONF_DIR

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

    from lad.core.config import CONF_DIR, register_resolvers

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
    if len(trial.get("objectives") or ["metric"]) > 1:  # lad.search.pareto pick exports the chosen trial's model
        trial.trainer.keep_model = True
    trial.mlflow.run_name = None  # named by lad.tracking.run_record.display_name: "<method> <task> trial=<n>"
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


def trial_limits(cfg: DictConfig) -> tuple[int | None, int | None]:
    """``(n_trials, max_trials)``: the trials this run adds and the study's total (None: no limit);
    at least one is set. 1.5 is an error, never a silent 1."""
    from lad.core.schema import KEYS, check_value

    run_limit = check_value("n_trials", cfg.get("n_trials"), KEYS["n_trials"])
    max_trials = check_value("max_trials", cfg.get("max_trials"), KEYS["max_trials"])
    if run_limit is None and max_trials is None:
        raise ConfigError("n_trials and max_trials are both null: set n_trials (the trials this run adds) "
                          "or max_trials (the study's total)")
    return run_limit, max_trials


class TrialLimit:
    """Stops ``study.optimize`` once this run has created ``run_limit`` trials (``n_trials``) or the
    study holds ``max_trials`` (its total, all workers and earlier runs included); None: no such limit.

    Counting and creating a trial happen under the study's lock: the lock is taken before the first
    trial and, as an Optuna callback, after each trial; the next trial's objective releases it once
    Optuna has created that trial. Without a lock file (in-memory or server storage) workers can
    overshoot ``max_trials`` by at most one trial each.
    """

    def __init__(self, lock, run_limit: int | None, max_trials: int | None) -> None:
        self.lock = lock  # lad.search.studies.lock_path(): a lock file, a PostgreSQL advisory lock, or None
        self.run_limit, self.max_trials = run_limit, max_trials
        self.admitted = 0  # trials this run created (each admitted trial is created)
        self.held = None

    def admit(self, study) -> bool:
        """Take the lock; True (keeping it) while both limits leave room for one more trial."""
        from lad.search.studies import study_lock

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
        from lad.search.studies import format_seconds

        self.done += 1
        elapsed = time.monotonic() - self.t0
        left = max(0, self.planned - self.done)
        eta = f", ETA {format_seconds(elapsed / self.done * left)}" if left else ""
        value = "" if not trial.values else " " + ", ".join(f"{v:.4g}" for v in trial.values)
        print(f"[search] trial {trial.number}: {trial.state.name}{value} {' '.join(self.overrides.get(trial.number, []))}"
              f" | {self.done}/{self.planned} this run, {format_seconds(elapsed)}{eta}", flush=True)


def estimate(study, planned: int) -> str:
    from lad.search.studies import format_seconds, trial_durations

    durations = trial_durations(study)
    if not durations:
        return "no estimate until the first trial finishes"
    mean = sum(durations) / len(durations)
    return (f"estimate {format_seconds(mean * planned)} ({planned} x {format_seconds(mean)}, the mean of "
            f"{len(durations)} stored trial(s); pruned trials end sooner)")


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


def app_overrides() -> list[str]:
    """Command-line overrides of the running Hydra app ([] outside one)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        from lad.core.config import task_overrides

        return task_overrides(HydraConfig.get())
    except ValueError:
        return []
