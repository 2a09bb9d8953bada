"""In-process Optuna search with pruning: ``python sweeps/search.py task=rte n_trials=30``.

Takes every ``distil.py`` override (task, student, gate, trainer budget, ...) plus ``n_trials`` (the
trials this run adds), ``max_trials`` (the study's total) and ``search.*`` (storage, study_name,
pruner, params). A sweep on the command line joins the search
space, config groups included: ``python sweeps/search.py task=rte 'gate=choice(lad,mean)'``.
Re-running the same command resumes the study up to ``max_trials``; several processes with the same study and storage
share it. Writes the best trial as a ready-to-run experiment file and Optuna plots into the run
directory, and records everything in MLflow.
"""

import sys

import hydra
from omegaconf import DictConfig

from lad.core.guard import guarded
from lad.run.cli import protect_command_line


@hydra.main(config_path="../conf", config_name="search", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from lad.search.inprocess import search_entry

    return guarded(search_entry, cfg)


if __name__ == "__main__":
    from lad.search.trials import sweep_arguments_as_params

    protect_command_line()
    sys.argv[1:] = sweep_arguments_as_params(sys.argv[1:])
    main()
