"""Students: K-layer copies of a teacher (layer k <- teacher layer k*L/K) or narrower fresh models."""

from __future__ import annotations

import copy
import logging

from omegaconf import DictConfig

from lad.errors import ConfigError

log = logging.getLogger(__name__)


def layer_map(num_student_layers: int, num_teacher_layers: int) -> list[int]:
    """1-based teacher layer for each student layer: k*L/K (rounded down)."""
    k_, l_ = num_student_layers, num_teacher_layers
    if k_ < 1:
        raise ConfigError(f"student.num_layers must be >= 1, got {k_}")
    if k_ > l_:
        raise ConfigError(f"student has {k_} layers but the teacher only {l_}: a student cannot be deeper")
    return [(k * l_) // k_ for k in range(1, k_ + 1)]


def _encoder(model):
    base = getattr(model, model.base_model_prefix)
    return base, base.encoder.layer


def student_config(teacher_config, scfg: DictConfig):
    cfg = copy.deepcopy(teacher_config)
    cfg.num_hidden_layers = int(scfg.num_layers)
    if scfg.hidden_size:
        cfg.hidden_size = int(scfg.hidden_size)
        cfg.intermediate_size = int(scfg.intermediate_size or 4 * cfg.hidden_size)
    elif scfg.intermediate_size:
        cfg.intermediate_size = int(scfg.intermediate_size)
    if scfg.num_attention_heads:
        cfg.num_attention_heads = int(scfg.num_attention_heads)
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ConfigError(
            f"student hidden size {cfg.hidden_size} is not divisible by {cfg.num_attention_heads} heads"
        )
    return cfg


def build_student(teacher, scfg: DictConfig):
    """Student model and its layer map, initialised from ``teacher`` as ``scfg`` asks."""
    from transformers import AutoModelForSequenceClassification

    mapping = layer_map(int(scfg.num_layers), teacher.config.num_hidden_layers)
    cfg = student_config(teacher.config, scfg)
    student = AutoModelForSequenceClassification.from_config(cfg)
    same_width = cfg.hidden_size == teacher.config.hidden_size
    same_ffn = same_width and cfg.intermediate_size == teacher.config.intermediate_size
    same_heads = cfg.num_attention_heads == teacher.config.num_attention_heads
    t_base, t_layers = _encoder(teacher)
    s_base, s_layers = _encoder(student)
    if scfg.init_embeddings and same_width:
        s_base.embeddings.load_state_dict(t_base.embeddings.state_dict())
    if scfg.init_layers and same_ffn and same_heads:
        for k, m in enumerate(mapping):
            s_layers[k].load_state_dict(t_layers[m - 1].state_dict())
    elif scfg.init_layers:
        log.info("student width differs from the teacher: layers start from random init")
    if scfg.init_classifier and same_width:
        if getattr(s_base, "pooler", None) is not None and getattr(t_base, "pooler", None) is not None:
            s_base.pooler.load_state_dict(t_base.pooler.state_dict())
        student.classifier.load_state_dict(teacher.classifier.state_dict())
    return student, mapping
