"""Students: K-layer copies of a teacher (layer k <- teacher layer k*L/K) or narrower fresh models."""

from __future__ import annotations

import copy
import logging

from omegaconf import DictConfig

from lad.errors import ConfigError
from lad.models import arch

log = logging.getLogger(__name__)


def layer_map(num_student_layers: int, num_teacher_layers: int) -> list[int]:
    """1-based teacher layer for each student layer: k*L/K (rounded down)."""
    k_, l_ = num_student_layers, num_teacher_layers
    if k_ < 1:
        raise ConfigError(f"student.num_layers must be >= 1, got {k_}")
    if k_ > l_:
        raise ConfigError(f"student has {k_} layers but the teacher only {l_}: a student cannot be deeper")
    return [(k * l_) // k_ for k in range(1, k_ + 1)]


def student_config(teacher_config, scfg: DictConfig):
    cfg = copy.deepcopy(teacher_config)
    arch.set_size(cfg, "num_layers", int(scfg.num_layers))
    if scfg.hidden_size:
        arch.set_size(cfg, "hidden_size", int(scfg.hidden_size))
        arch.set_size(cfg, "intermediate_size", int(scfg.intermediate_size or 4 * int(scfg.hidden_size)))
    elif scfg.intermediate_size:
        arch.set_size(cfg, "intermediate_size", int(scfg.intermediate_size))
    if scfg.num_attention_heads:
        arch.set_size(cfg, "num_heads", int(scfg.num_attention_heads))
    width, heads = arch.size(cfg, "hidden_size"), arch.size(cfg, "num_heads")
    if width % heads:
        raise ConfigError(f"student hidden size {width} is not divisible by {heads} heads")
    return cfg


def build_student(teacher, scfg: DictConfig):
    """Student model and its layer map, initialised from ``teacher`` as ``scfg`` asks."""
    from transformers import AutoModelForSequenceClassification

    mapping = layer_map(int(scfg.num_layers), arch.num_layers(teacher))
    cfg = student_config(teacher.config, scfg)
    student = AutoModelForSequenceClassification.from_config(cfg)
    t_cfg = teacher.config
    same_width = arch.size(cfg, "hidden_size") == arch.size(t_cfg, "hidden_size")
    same_ffn = same_width and arch.size(cfg, "intermediate_size") == arch.size(t_cfg, "intermediate_size")
    same_heads = arch.size(cfg, "num_heads") == arch.size(t_cfg, "num_heads")
    if scfg.init_embeddings and same_width:
        _copy_parts(arch.shared_modules(teacher), arch.shared_modules(student))
    if scfg.init_layers and same_ffn and same_heads:
        t_layers, s_layers = arch.layers(teacher), arch.layers(student)
        for k, m in enumerate(mapping):
            s_layers[k].load_state_dict(t_layers[m - 1].state_dict())
    elif scfg.init_layers:
        log.info("student width differs from the teacher: layers start from random init")
    if scfg.init_classifier and same_width:
        _copy_parts(arch.head_modules(teacher), arch.head_modules(student))
    return student, mapping


def _copy_parts(source: dict, target: dict) -> None:
    """Load every module of ``source`` into the module of ``target`` at the same path."""
    for path, module in target.items():
        if path in source:
            module.load_state_dict(source[path].state_dict())
