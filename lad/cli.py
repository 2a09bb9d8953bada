"""Glue between Hydra entry points and the library: one clear error line instead of a traceback."""

from __future__ import annotations

import logging
import os
import sys

from omegaconf import DictConfig

from lad.config import register_resolvers, setup_environment
from lad.errors import LADError

register_resolvers()
setup_environment()


def _hydra_context() -> tuple[list[str], str | None]:
    """Task overrides of this job and, in a multirun, the sweep directory."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        overrides = list(hc.overrides.task)
        sweep_dir = hc.sweep.dir if hc.mode == RunMode.MULTIRUN else None
        return overrides, sweep_dir
    except (ValueError, ImportError):
        return [], None


def run_entry(cfg: DictConfig) -> float:
    """Run ``lad.pipeline.run``; a user mistake prints ``error: ...`` and exits with status 2.

    In a multirun the error is re-raised instead, so the sweeper records the job as failed and
    moves on. ``HYDRA_FULL_ERROR=1`` shows the full traceback.
    """
    overrides, sweep_dir = _hydra_context()
    try:
        from lad.pipeline import run

        return run(cfg, overrides=overrides, sweep_dir=sweep_dir)
    except LADError as exc:
        if sweep_dir is not None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        logging.getLogger("lad").debug("user error", exc_info=True)
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)
