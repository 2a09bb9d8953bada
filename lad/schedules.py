"""Learning-rate schedules by name (``optim.lr_scheduler_type``, Hugging Face Trainer's names).

Each is the LR multiplier at an optimisation step, given the warm-up and total step counts; pure
Python, so config validation can check the name without importing torch. Under ``linear`` the decay
ends at each run's last step, so a run's early scores depend on its total budget; a constant LR
after warm-up removes that dependence (tried for pruned searches: ``results/search/search-160const-*.md``).
"""

from __future__ import annotations

from typing import Callable

from lad.errors import ConfigError


def _linear(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def _constant_with_warmup(step: int, warmup: int, total: int) -> float:
    return (step + 1) / max(1, warmup) if step < warmup else 1.0


def _constant(step: int, warmup: int, total: int) -> float:
    return 1.0


SCHEDULES: dict[str, Callable[[int, int, int], float]] = {
    "linear": _linear,
    "constant_with_warmup": _constant_with_warmup,
    "constant": _constant,
}


def schedule(kind: str) -> Callable[[int, int, int], float]:
    """The multiplier function for ``kind``; an unknown name is a one-line config error."""
    if kind not in SCHEDULES:
        raise ConfigError(f"optim.lr_scheduler_type must be one of {', '.join(SCHEDULES)}, got {kind!r}")
    return SCHEDULES[kind]
