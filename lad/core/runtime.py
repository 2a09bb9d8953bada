"""Torch runtime helpers: device choice, seeding, threads, RNG state capture, the CPU a process runs on."""

from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from lad.core.errors import ConfigError

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} requested but CUDA is not available (use device=auto or cpu)")
    return torch.device(name)


def cpu_info() -> dict:
    """The CPU's model name and instruction-set flags from ``/proc/cpuinfo`` (empty where unreadable)."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "flags": flags}


def machine() -> str:
    """The CPU model and logical CPU count, as exports and speed records name the machine."""
    import platform

    cpu = cpu_info()["model"] or platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} logical CPUs"


# CPU instruction sets with native bf16 matrix products (oneDNN uses them under autocast)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``trainer.precision`` as it will run: ``bf16`` (autocast) or ``fp32``.

    ``auto`` picks bf16 where the hardware computes it natively, i.e. on a CUDA GPU that supports
    bf16 and on a CPU with AVX-512-BF16 or AMX (the recorded accuracy check and the step-time
    benchmark behind this choice: docs/benchmarks/performance.md); fp32 elsewhere, where bf16
    autocast would be emulated and slower.
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if any(f in cpu_info()["flags"] for f in BF16_CPU_FLAGS) else "fp32"
    return "fp32"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's or taskset's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


AUTOGROUP = Path("/proc/sys/kernel/sched_autogroup_enabled")


def competing_load(samples: int = 3, interval: float = 0.05, proc: Path = Path("/proc")) -> float:
    """CPU demand of other processes that would take cores from this one.

    With Linux's autogroup scheduling on (the default on many systems), ``nice`` does not protect
    a process from other terminal sessions' work, so every running process competes: the
    1-minute load average. With it off, processes niced to 10 or more yield their core, so only
    the runnable processes below that count (sampled from ``/proc`` a few times): the step-time
    benchmark measured 2 threads beside a ``nice -n 19`` busy process as fast as on an idle
    machine there, and several times slower beside a process of normal priority.
    """
    try:
        autogroup = AUTOGROUP.read_text().strip() == "1"
    except OSError:
        autogroup = False
    if autogroup or not (proc / "self" / "stat").exists():
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):  # pragma: no cover - non-POSIX
            return 0.0
    own, counts = os.getpid(), []
    for i in range(samples):
        running = 0
        for stat in proc.glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            # fields[0] is the state; fields[16] the nice value (proc(5): fields 3 and 19)
            if fields[0] == "R" and int(fields[16]) < 10 and int(stat.parent.name) != own:
                running += 1
        counts.append(running)
        if i + 1 < samples:
            time.sleep(interval)
    return sum(counts) / len(counts)


def auto_threads(cores: int | None = None, load: float | None = None, local_world: int | None = None) -> int:
    """Intra-op threads for ``trainer.num_threads=auto``: the cores that are free right now.

    The cores of this process (split between the ``torchrun`` processes of one machine) minus
    the competing load (:func:`competing_load`), at least 1. On a dedicated machine that is every
    core; beside busy work it is what that work leaves, because threads that wait for a busy core
    slow every step down (docs/benchmarks/performance.md: the threads rows).
    """
    cores = available_cores() if cores is None else cores
    if local_world is None:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    if load is None:
        load = competing_load()
    per_process = max(1, cores // max(1, local_world))
    free = int(cores - load + 0.5)
    return max(1, min(per_process, free))


def set_threads(num_threads: int | str | None) -> int:
    """Apply ``trainer.num_threads`` (a number, ``auto``, or null = PyTorch's default); returns the count used.

    ``auto`` leaves an explicit ``OMP_NUM_THREADS`` alone (PyTorch already follows it).
    """
    if num_threads in (None, "", 0):
        return torch.get_num_threads()
    if str(num_threads) == "auto":
        if os.environ.get("OMP_NUM_THREADS"):
            return torch.get_num_threads()
        count = auto_threads()
        log.info("trainer.num_threads=auto -> %d (%d cores available)", count, available_cores())
    else:
        count = int(num_threads)
    torch.set_num_threads(count)
    return count


def rng_state() -> dict:
    """All RNG states as tensors / plain Python values (loadable with weights_only=True)."""
    state = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    internal = tuple(int(x) for x in state["python"].tolist())
    random.setstate((state["python_version"], internal, state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
