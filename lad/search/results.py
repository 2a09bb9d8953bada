"""What an in-process search leaves: a summary of the study, the best trial as a self-contained YAML
record with the command that re-runs it, the study's plots (or its Pareto front) and the best values
on the search's MLflow parent run."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lad.search.rerun import config_overrides, merge_overrides

log = logging.getLogger(__name__)


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


def best_overrides(base: list[str], space, params: dict) -> list[str]:
    """Every override a trial with ``params`` ran with, for ``distil.py`` (lad.search.rerun): what
    conf/search.yaml sets beyond distil.yaml (``loss.tie_hard_soft``, ``trainer.eval_every`` ...),
    the search's command-line overrides, the trial's values."""
    from lad.core.config import CONF_DIR

    own = config_overrides(OmegaConf.load(CONF_DIR / "search.yaml"))
    return merge_overrides(own, base, space.overrides_for(params))


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
    """A multi-objective study's Pareto front (``lad.search.pareto``) as ``pareto.front.png`` / ``.json``."""
    from lad.search import pareto

    try:
        done, front = pareto.rows_of(study)
        return list(pareto.write_front(study.study_name, done, front, pareto.reference_of(front),
                                       out_dir / "pareto")) if front else []
    except Exception as exc:  # noqa: BLE001 - a plot must not fail the search
        log.warning("could not draw the Pareto front: %s", exc)
        return []


def record_parent(cfg: DictConfig, out_dir: Path, summary: dict) -> None:
    """Best params/value and plots on the search's MLflow parent run."""
    if not cfg.mlflow.enabled:
        return
    from lad.tracking.parents import SWEEP_TAG, shared_write
    from lad.tracking.store import connect, get_experiment_id

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
