"""The speed objective of an accuracy-speed search: one number per model shape, lower is faster.

Three measures (``speed.measure``), each a cost to minimise:

* ``flops`` (default): MFLOPs of one forward pass at batch 1 on the dev example of median length
  (``torch.utils.flop_counter``). Deterministic: the right choice on a shared or noisy machine.
* ``latency``: batch-1 CPU latency in ms at that example, the p50 of ``latency_runs`` calls; the
  median over ``rounds`` such rounds.
* ``throughput``: CPU time per example in ms (1000 / examples per second) over length-sorted batches
  of ``batch_size`` dev examples; the median over ``rounds``.

A shape (architecture, depth, width, heads, vocabulary, the length it is timed at, the measure and
its settings; for timed measures also the machine and the thread count) is measured once: the value
is stored in the JSON cache ``speed.cache`` (under a lock, shared by the workers of a study) and
reused by every later trial with that shape, so trials of one shape share one value.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
from pathlib import Path
from typing import Any, Callable, Mapping

from lad.core.errors import ConfigError

log = logging.getLogger(__name__)

UNITS = {"flops": "MFLOPs/example", "latency": "ms", "throughput": "ms/example"}
SHAPE_FIELDS = ("model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                "vocab_size", "n_layers", "dim", "hidden_dim", "n_heads")  # BERT-style + DistilBERT names


def _flops(runner, features, settings) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from lad.deploy import inference as inf

    one = inf.collate_numpy(features, [inf.median_example(features)])
    with FlopCounterMode(display=False) as counter:
        runner(one)
    return counter.get_total_flops() / 1e6


def _latency(runner, features, settings) -> float:
    from lad.deploy import inference as inf

    one = inf.collate_numpy(features, [inf.median_example(features)])
    rounds = []
    for _ in range(int(settings["rounds"])):
        for _ in range(int(settings["warmup"])):
            runner(one)
        times = [inf._clock(runner, one) * 1000 for _ in range(int(settings["latency_runs"]))]
        rounds.append(statistics.median(times))
    return float(statistics.median(rounds))


def _throughput(runner, features, settings) -> float:
    from lad.deploy import inference as inf

    batches = inf.throughput_batches(features, int(settings["batch_size"]), settings.get("throughput_examples"))
    examples = sum(len(b["input_ids"]) for b in batches)
    runner(batches[0])
    rounds = [sum(inf._clock(runner, b) for b in batches) * 1000 / examples for _ in range(int(settings["rounds"]))]
    return float(statistics.median(rounds))


MEASURES: dict[str, Callable[[Any, Any, Mapping], float]] = {
    "flops": _flops, "latency": _latency, "throughput": _throughput}
TIMED = ("latency", "throughput")
DEFAULTS = {"measure": "flops", "rounds": 5, "warmup": 5, "latency_runs": 50, "batch_size": 32,
            "throughput_examples": 256, "cache": None}


def settings_of(scfg: Mapping | None) -> dict:
    """``speed.*`` with defaults, checked: one ConfigError line for a bad value."""
    settings = {**DEFAULTS, **dict(scfg or {})}
    if settings["measure"] not in MEASURES:
        raise ConfigError(f"speed.measure must be one of {', '.join(MEASURES)}, got {settings['measure']!r}")
    for key in ("rounds", "warmup", "latency_runs", "batch_size"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "warmup" else 1):
            raise ConfigError(f"speed.{key} must be an integer >= {0 if key == 'warmup' else 1}, got {value!r}")
    return settings


def shape_of(model_config: Any) -> dict:
    """What a model's speed depends on in its config (depth, width, heads, vocabulary, architecture)."""
    data = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
    return {k: data[k] for k in SHAPE_FIELDS if data.get(k) is not None}


def cache_key(shape: Mapping, seq_len: int, settings: Mapping) -> str:
    """Stable key of one measurement: the shape, the length, the measure and, for timed measures,
    the settings, the machine and the thread count."""
    from lad.deploy import inference as inf

    what: dict[str, Any] = {"shape": dict(shape), "seq_len": int(seq_len), "measure": settings["measure"]}
    if settings["measure"] in TIMED:
        from lad.core.runtime import machine

        what.update(machine=machine(), threads=inf.num_threads(),
                    **{k: settings[k] for k in ("rounds", "warmup", "latency_runs", "batch_size",
                                                "throughput_examples")})
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


class SpeedCache:
    """``{key: value}`` in one JSON file, read and written under ``<file>.lock``; None: no cache."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path in (None, "", "None") else Path(str(path)).expanduser()

    def get_or_measure(self, key: str, measure: Callable[[], float], info: Mapping | None = None
                       ) -> tuple[float, bool]:
        """(value, True) when stored, else (measure(), False) after storing it. The lock is held while
        measuring, so two workers never time the same shape at once (nor disturb each other's clock)."""
        if self.path is None:
            return measure(), False
        from lad.core.fileio import write_json
        from lad.core.locks import file_lock

        with file_lock(self.path.with_name(self.path.name + ".lock")):
            stored = json.loads(self.path.read_text()) if self.path.is_file() else {}
            if key in stored:
                return float(stored[key]["value"]), True
            value = measure()
            stored[key] = {"value": value, **dict(info or {})}
            write_json(self.path, stored)
            return value, False


def measure_model_dir(model_dir: str | Path, features, scfg: Mapping | None = None) -> dict:
    """The speed of a saved classifier (from the cache when its shape was measured before)."""
    from transformers import AutoConfig

    from lad.deploy import inference as inf

    settings = settings_of(scfg)
    if len(features) == 0:
        raise ConfigError("cannot measure speed on an empty dev split")
    shape = shape_of(AutoConfig.from_pretrained(str(model_dir)))
    seq_len = int(features.lengths[inf.median_example(features)])
    key = cache_key(shape, seq_len, settings)

    def measure() -> float:
        return MEASURES[settings["measure"]](inf.torch_runner(inf.load_cpu_model(model_dir)), features, settings)

    info = {"measure": settings["measure"], "shape": shape, "seq_len": seq_len}
    value, cached = SpeedCache(settings["cache"]).get_or_measure(key, measure, info)
    return {"measure": settings["measure"], "unit": UNITS[settings["measure"]], "value": value,
            "seq_len": seq_len, "shape": shape, "key": key, "cached": cached}


def teacher_score(teacher_dir: str | Path | None, metric: str) -> float | None:
    """The teacher's best dev score as ``train_teacher.py`` recorded it (``metrics.json``), if known."""
    path = None if teacher_dir is None else Path(teacher_dir) / "metrics.json"
    if path is None or not path.is_file():
        return None
    value = json.loads(path.read_text()).get("best", {}).get(metric)
    return None if value is None else float(value)


def trivial_score(task, eval_sets: Mapping) -> float | None:
    """The dev score of the best constant prediction (``lad.data.metrics.constant_baseline``) on the labelled splits."""
    try:
        from lad.data.metrics import constant_baseline

        labelled = {s: f.labels for s, f in eval_sets.items() if f.has_labels}
        return float(constant_baseline(task, labelled)["score"]) if labelled else None
    except Exception as exc:  # noqa: BLE001 - a reference line on a figure must not fail a run
        log.warning("trivial baseline not computed: %s", exc)
        return None


def record_run_speed(cfg, task, model_dir: Path, teacher_dir: Path | None, eval_sets: Mapping, summary: dict,
                     tracker, step: int) -> None:
    """End of a run with a speed objective: the student's and the teacher's speed, the teacher's
    and the trivial baseline's dev scores into ``metrics.json`` (``speed``) and MLflow (``speed/*``)."""
    from omegaconf import OmegaConf

    scfg = OmegaConf.to_container(cfg.get("speed") or {}, resolve=True)
    split, features = next(iter(eval_sets.items()))
    row = measure_model_dir(model_dir, features, scfg)
    teacher = None
    if teacher_dir is not None and (Path(teacher_dir) / "config.json").is_file():
        teacher = measure_model_dir(teacher_dir, features, scfg)["value"]
    row.update(split=split, teacher=teacher, teacher_score=teacher_score(teacher_dir, task.main_metric),
               trivial_score=trivial_score(task, eval_sets))
    summary["speed"] = row
    tracker.log_metrics({f"speed/{k}": v for k, v in (("value", row["value"]), ("teacher", teacher))
                         if v is not None}, step)
    log.info("speed (%s): %.4g %s%s at %d tokens", row["measure"], row["value"], row["unit"],
             "" if teacher is None else f" (teacher {teacher:.4g})", row["seq_len"])
