"""Fine-tune a teacher classifier on a GLUE task: ``python train_teacher.py task=rte``."""

import hydra
from omegaconf import DictConfig

from lad.run.cli import main_guard, protect_command_line, run_entry


@hydra.main(config_path="conf", config_name="train_teacher", version_base="1.3")
def main(cfg: DictConfig) -> float:
    return run_entry(cfg)


if __name__ == "__main__":
    protect_command_line()
    main_guard(main)
