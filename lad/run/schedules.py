"""Learning-rate schedules by name (``optim.lr_scheduler_type``): Hugging Face's own schedules.

The schedule objects come from ``transformers.get_scheduler``, so a name here means exactly what it
means in the Hugging Face Trainer (e.g. ``linear``: ``step / warmup`` during warm-up, then a linear
decay to 0 at the last step). The names are listed without importing torch or transformers, so
config validation can check them before any heavy import. Under ``linear`` the decay ends at each
run's last step, so a run's early scores depend on its total budget; ``constant_with_warmup``
removes that dependence.
"""

from __future__ import annotations

from lad.core.errors import ConfigError

# Hugging Face SchedulerType values that need nothing beyond the warm-up and total step counts.
SCHEDULES: tuple[str, ...] = ("linear", "constant_with_warmup", "constant", "cosine", "polynomial")


def check(kind: str) -> str:
    """``kind`` when it is a supported schedule name; a one-line config error otherwise."""
    if kind not in SCHEDULES:
        raise ConfigError(f"optim.lr_scheduler_type must be one of {', '.join(SCHEDULES)}, got {kind!r}")
    return kind


def warmup_steps(optim_cfg, total_steps: int) -> int:
    """Warm-up steps: ``optim.warmup_steps`` when set (the reference teacher recipes give a step
    count), else ``round(optim.warmup_ratio * total_steps)``."""
    steps = optim_cfg.get("warmup_steps")
    if steps is not None:
        return int(steps)
    return int(round(float(optim_cfg.warmup_ratio) * total_steps))


def build(kind: str, optimizer, warmup_steps: int, total_steps: int):
    """The ``torch.optim.lr_scheduler.LambdaLR`` Hugging Face builds for ``kind``."""
    from transformers import get_scheduler

    return get_scheduler(check(kind), optimizer, num_warmup_steps=int(warmup_steps),
                         num_training_steps=int(total_steps))
