"""Types and ranges of every scalar setting the pipeline reads, checked before any work.

One table (``KEYS``) says, per dotted key, what the value must be: an integer (``2.5`` is an error,
never a silent ``2``; an integral float such as ``1e3`` is accepted), a finite number, a boolean
(``yes`` / ``1`` are errors), or one of a few names; with bounds, and whether ``null`` is allowed.
A ``0`` is accepted only where it has a documented meaning (``trainer.eval_every=0``: once per
epoch); elsewhere it is an error instead of quietly meaning "unset".

Keys missing from a config are skipped, so the table also serves partial configs (tests, sweeps).
No torch import: this runs in the first second of a command.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lad.core.errors import ConfigError


@dataclass(frozen=True)
class Key:
    kind: str                          # int | float | bool | choice
    low: float | None = None           # inclusive lower bound
    high: float | None = None          # inclusive upper bound
    positive: bool = False             # strictly > 0 (floats)
    nullable: bool = False
    choices: tuple[str, ...] = ()
    special: tuple[Any, ...] = ()      # extra accepted values outside the range (e.g. -1)
    hint: str = ""                     # appended to the message

    def describe(self) -> str:
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        what = "an integer" if self.kind == "int" else "a number"
        shown = (lambda x: str(int(x))) if self.kind == "int" else (lambda x: f"{x:g}")
        if self.positive:
            what += " > 0"
        elif self.low is not None and self.high is not None:
            what += f" in [{shown(self.low)}, {shown(self.high)}]"
        elif self.low is not None:
            what += f" >= {shown(self.low)}"
        if self.special:
            what += " or " + " or ".join(str(s) for s in self.special)
        if self.nullable:
            what += " or null"
        return what


LR = Key("float", positive=True, high=10.0)  # larger overflows in AdamW (1e-5 to 1e-3 is usual)
INT_POS = Key("int", low=1)
FLOAT_POS = Key("float", positive=True)
FLOAT_NONNEG = Key("float", low=0)
BOOL = Key("bool")

KEYS: dict[str, Key] = {
    "seed": Key("int", low=0, high=2**32 - 1),  # NumPy's range: a larger seed would be cut silently
    "overwrite": BOOL,
    # optimisation
    "optim.lr": LR,
    "optim.gate_lr": Key("float", low=0, high=10.0),
    "optim.impl": Key("choice", choices=("auto", "fused", "foreach", "for_loop")),
    "optim.weight_decay": FLOAT_NONNEG,
    "optim.warmup_ratio": Key("float", low=0, high=1),
    "optim.warmup_steps": Key("int", low=0, nullable=True, hint=" (null = optim.warmup_ratio)"),
    "optim.batch_size": INT_POS,
    "optim.max_grad_norm": FLOAT_POS,
    # training loop
    "trainer.epochs": Key("int", low=0),
    "trainer.max_steps": Key("int", low=1, special=(-1,), hint=" (-1 = no cap)"),
    "trainer.eval_every": Key("int", low=0, hint=" (0 = once per epoch)"),
    "trainer.log_every": INT_POS,
    "trainer.ckpt_every": Key("int", low=0, hint=" (0 = at the end of each epoch)"),
    "trainer.keep_checkpoints": INT_POS,
    "trainer.keep_after_finish": Key("int", low=0, hint=" (0 = delete the checkpoints of a finished run)"),
    "trainer.eval_batch_size": INT_POS,
    "trainer.num_threads": Key("int", low=1, nullable=True, special=("auto",),
                               hint=" (auto = the idle cores; null = PyTorch's default)"),
    "trainer.progress": BOOL,
    "trainer.predict_test": BOOL,
    "trainer.precision": Key("choice", choices=("auto", "fp32", "bf16")),
    "trainer.measure_inference": BOOL,
    "trainer.keep_model": BOOL,
    "trainer.inference.warmup": Key("int", low=0),
    "trainer.inference.latency_runs": INT_POS,
    "trainer.inference.throughput_examples": Key("int", low=1, nullable=True, hint=" (null = the whole split)"),
    "trainer.inference.batch_size": INT_POS,
    # data
    "data.max_train_samples": Key("int", low=1, nullable=True, hint=" (null = all)"),
    "data.max_eval_samples": Key("int", low=1, nullable=True, hint=" (null = all)"),
    "data.bucket": BOOL,
    "data.bucket_factor": INT_POS,
    "task.max_seq_length": Key("int", low=4, high=100_000),
    "task.is_regression": BOOL,
    # teacher-output cache
    "cache.enabled": BOOL,
    "cache.dtype": Key("choice", choices=("float16", "bfloat16", "float32")),
    "cache.max_gb": Key("float", positive=True, hint=" (use cache=off to run the teacher online)"),
    "cache.release_teacher": BOOL,
    "cache.build_batch_size": INT_POS,
    # tracking
    "mlflow.enabled": BOOL,
    "mlflow.register_teacher": BOOL,
    "mlflow.log_model": BOOL,
    "mlflow.purpose": Key("choice", choices=("adhoc", "results", "tuning", "demo", "smoke", "test"),
                          hint=" (only purpose=results runs reach results/runs.jsonl)"),
    # loss (the built-in terms' weights; any other loss.<term>_weight is checked alike: see validate)
    "loss.hard_weight": FLOAT_NONNEG,
    "loss.soft_weight": FLOAT_NONNEG,
    "loss.hidden_weight": FLOAT_NONNEG,
    "loss.pkd_weight": FLOAT_NONNEG,
    # in float32 the soft term all but vanishes below 0.01 (it is exactly 0, or NaN, below ~1e-23) and loses its
    # precision above 1000; the conventions are 1-20 (below 1 sharpens the teacher)
    "loss.temperature": Key("float", low=0.01, high=1000.0,
                            hint=" (the soft loss is T^2 * KL(softmax(logits/T)): outside this range it vanishes, "
                                 "overflows or loses its precision in float32)"),
    "loss.tie_hard_soft": BOOL,
    "loss.hidden_positions": Key("choice", choices=("real", "all")),
    # gates (keys a gate file declares; parameter-free gates have fewer)
    "gate.frozen": BOOL,
    "gate.clip_per_gate": BOOL,
    "gate.reverse": BOOL,
    "gate.norm": Key("choice", choices=("per_token", "per_sequence")),
    "gate.affine": Key("choice", choices=("hidden", "position")),
    "gate.bias_init": Key("choice", choices=("default", "zeros")),
    # student shape
    "student.num_layers": INT_POS,
    "student.hidden_size": Key("int", low=1, nullable=True),
    "student.intermediate_size": Key("int", low=1, nullable=True),
    "student.num_attention_heads": Key("int", low=1, nullable=True),
    "student.init_from": Key("choice", choices=("teacher", "pretrained")),
    "student.init_layers": BOOL,
    "student.init_embeddings": BOOL,
    "student.init_classifier": BOOL,
    # in-process search (sweeps/search.py, conf/search.yaml)
    "n_trials": Key("int", low=1, nullable=True),    # the trials this run adds (null: no per-run limit)
    "max_trials": Key("int", low=1, nullable=True),  # the study's total (null: none)
    "search.startup_trials": Key("int", low=0),
    "search.warmup_evals": Key("int", low=0),
    "search.reduction_factor": Key("int", low=2),
    "search.heartbeat_interval": INT_POS,
    "search.plots": BOOL,
}


def _number_text(value: Any) -> str:
    if isinstance(value, str):
        return f"{value!r} (a string)"
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    return str(value)


def check_value(name: str, value: Any, key: Key) -> Any:
    """``value`` if it fits ``key``, else a ConfigError naming ``name``."""
    def fail() -> ConfigError:
        return ConfigError(f"{name} must be {key.describe()}{key.hint}, got {_number_text(value)}")

    if value is None:
        if key.nullable:
            return None
        raise ConfigError(f"{name} must be {key.describe()}{key.hint}, got null")
    if key.kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if key.kind == "choice":
        if str(value) not in key.choices or not isinstance(value, str):
            raise ConfigError(f"{name} must be {key.describe()}, got {value!r}")
        return value
    if isinstance(value, str) and value in key.special:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail()
    if isinstance(value, float) and not math.isfinite(value):
        raise fail()
    if key.kind == "int" and isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(f"{name} must be an integer, got {value} (it would be cut to {int(value)})")
    if value in key.special:
        return value
    if key.positive and not value > 0:
        raise ConfigError(f"{name} must be > 0{key.hint}, got {_number_text(value)}")
    if key.positive and key.high is not None and value > key.high:
        raise ConfigError(f"{name} must be a number in (0, {key.high:g}]{key.hint}, got {_number_text(value)}")
    if key.low is not None and value < key.low or key.high is not None and value > key.high:
        raise fail()
    return value


_ABSENT = object()


def _get(cfg: DictConfig, name: str) -> Any:
    """The value at ``name``, or ``_ABSENT`` when the key does not exist or is ``???``."""
    parent_path, _, leaf = name.rpartition(".")
    parent = OmegaConf.select(cfg, parent_path, throw_on_missing=False) if parent_path else cfg
    if not isinstance(parent, DictConfig) or leaf not in parent.keys():
        return _ABSENT
    if OmegaConf.is_missing(parent, leaf):
        return _ABSENT  # the place that needs it says how to set it
    return parent[leaf]


def loss_weight_keys(cfg: DictConfig) -> list[str]:
    """The ``loss.<term>_weight`` keys present in ``cfg`` (their values are checked like :data:`KEYS`)."""
    loss = cfg.get("loss") if isinstance(cfg, DictConfig) else None
    if not isinstance(loss, DictConfig):
        return []
    return [f"loss.{k}" for k in loss.keys() if str(k).endswith("_weight") and _get(cfg, f"loss.{k}") is not _ABSENT]


def validate(cfg: DictConfig, keys: dict[str, Key] | None = None) -> None:
    """Check every key of ``keys`` (default: :data:`KEYS`) present in ``cfg``; first problem wins."""
    for name, key in (keys or KEYS).items():
        value = _get(cfg, name)
        if value is not _ABSENT:
            check_value(name, value, key)
    if keys is None:  # the weight of any loss term (registered by name: lad.method.loss_terms)
        for name in (k for k in loss_weight_keys(cfg) if k not in KEYS):
            check_value(name, _get(cfg, name), FLOAT_NONNEG)
    tr = cfg.get("trainer")
    if tr is not None and "max_steps" in tr and "epochs" in tr and tr.max_steps == -1 and tr.epochs <= 0:
        raise ConfigError(f"trainer.epochs must be > 0 when trainer.max_steps=-1, got {tr.epochs}")
