"""Students: K-layer models whose layer k starts from layer k*L/K of a source, or narrower fresh models.

The source (``student.init_from``) is either the fine-tuned teacher (``teacher``) or the pre-trained
backbone the teacher was fine-tuned from (``pretrained``, as the reference code does with
``bert-base-uncased``: mapped layers and pooler from the backbone, embeddings and classifier as
``student.init_embeddings`` / ``student.init_classifier`` say).
"""

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


INIT_FROM = ("teacher", "pretrained")


def _encoder(model):
    """(base model, its list of transformer layers); works for task models and bare encoders."""
    base = getattr(model, model.base_model_prefix, model)
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


def init_source(scfg: DictConfig) -> str:
    """``student.init_from``, validated."""
    source = str(scfg.get("init_from", "teacher"))
    if source not in INIT_FROM:
        raise ConfigError(f"student.init_from must be one of {', '.join(INIT_FROM)}, got {source!r}")
    return source


def _copy_pooler(dst_base, src_base) -> None:
    if getattr(dst_base, "pooler", None) is not None and getattr(src_base, "pooler", None) is not None:
        dst_base.pooler.load_state_dict(src_base.pooler.state_dict())


def build_student(teacher, scfg: DictConfig, pretrained=None):
    """Student model and its layer map, initialised as ``scfg`` asks.

    ``student.init_from=teacher``: layer k <- teacher layer k*L/K; ``init_embeddings`` copies the
    teacher's embeddings, ``init_classifier`` its pooler and classifier.
    ``student.init_from=pretrained``: layer k and the pooler <- the pre-trained backbone
    ``pretrained`` (an encoder with the teacher's depth and width); ``init_embeddings`` copies the
    backbone's embeddings, ``init_classifier`` the teacher's classifier.
    """
    from transformers import AutoModelForSequenceClassification

    source_kind = init_source(scfg)
    L = teacher.config.num_hidden_layers
    mapping = layer_map(int(scfg.num_layers), L)
    cfg = student_config(teacher.config, scfg)
    student = AutoModelForSequenceClassification.from_config(cfg)
    same_width = cfg.hidden_size == teacher.config.hidden_size
    same_ffn = same_width and cfg.intermediate_size == teacher.config.intermediate_size
    same_heads = cfg.num_attention_heads == teacher.config.num_attention_heads
    if source_kind == "pretrained":
        if pretrained is None:
            raise ConfigError("student.init_from=pretrained needs the teacher's pre-trained backbone")
        for key in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads"):
            if getattr(pretrained.config, key, None) != getattr(teacher.config, key, None):
                raise ConfigError(
                    f"student.init_from=pretrained: the backbone's {key} is "
                    f"{getattr(pretrained.config, key, None)} but the teacher's is {getattr(teacher.config, key, None)}; "
                    "is it the model the teacher was fine-tuned from? (set student.backbone)")
        source = pretrained
    else:
        source = teacher
    t_base, _ = _encoder(teacher)
    src_base, src_layers = _encoder(source)
    s_base, s_layers = _encoder(student)
    if scfg.init_embeddings and same_width:
        s_base.embeddings.load_state_dict(src_base.embeddings.state_dict())
    if scfg.init_layers and same_ffn and same_heads:
        for k, m in enumerate(mapping):
            s_layers[k].load_state_dict(src_layers[m - 1].state_dict())
    elif scfg.init_layers:
        log.info("student width differs from the teacher: layers start from random init")
    if source_kind == "pretrained" and scfg.init_layers and same_width:
        _copy_pooler(s_base, src_base)  # the reference takes the pre-trained pooler with the layers
    if scfg.init_classifier and same_width:
        if source_kind == "teacher":
            _copy_pooler(s_base, t_base)
        student.classifier.load_state_dict(teacher.classifier.state_dict())
    return student, mapping
