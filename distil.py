"""Distil a fine-tuned teacher into a smaller student: ``python distil.py task=rte student=3layer``.

Returns the best dev score of the task's main metric, which Hydra sweepers optimise; with
``objectives: [metric, speed]`` (``hparams_search=lad_pareto``) a list of both (``lad.run.objectives``).
"""

import hydra
from omegaconf import DictConfig

from lad.run.cli import main_guard, protect_command_line, run_entry


@hydra.main(config_path="conf", config_name="distil", version_base="1.3")
def main(cfg: DictConfig) -> float | list[float]:
    return run_entry(cfg)


if __name__ == "__main__":
    protect_command_line()
    main_guard(main)
