"""Hydra callback of the entry points: secrets and unusable output folders, before Hydra writes.

Hydra creates the run (or sweep) directory and, for a multirun, writes ``multirun.yaml`` outside
the app, so the app alone cannot keep a password out of them or turn an unwritable folder into one
line. Registered under ``hydra.callbacks.lad`` in ``conf/distil.yaml`` / ``conf/train_teacher.yaml``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


class LadCallback(Callback):
    def _start(self, config: DictConfig, dir_key: str) -> None:
        from lad.core.config import task_overrides
        from lad.core.errors import ConfigError
        from lad.core.preflight import writable
        from lad.run.cli import protect_secrets

        from lad.run.rundir import check_path_names

        protect_secrets(config, task_overrides(config.hydra))
        try:  # before Hydra creates a run directory named after them
            check_path_names(config)
        except ConfigError as exc:
            _fail(str(exc))
        try:
            target = OmegaConf.select(config, dir_key)
        except Exception:  # noqa: BLE001 - an unresolvable dir is reported by Hydra itself
            return
        if target:
            try:
                writable(str(target), "output directory", dir_key)
            except ConfigError as exc:
                _fail(str(exc))

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._start(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._start(config, "hydra.sweep.dir")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        try:
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                self.on_multirun_end(config)
        except ValueError:
            pass

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Hydra's basic sweeper saves the whole config (passwords included) as multirun.yaml."""
        from lad.core.fileio import write_text
        from lad.core.secrets import has_secret, redact

        try:
            path = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))) / "multirun.yaml"
        except Exception:  # noqa: BLE001
            return
        if path.is_file() and has_secret(text := path.read_text()):
            write_text(path, OmegaConf.to_yaml(OmegaConf.create(redact(OmegaConf.create(text)))))
