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

from lad.core.errors import ConfigError
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


INIT_FROM = ("teacher", "pretrained")


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


def init_source(scfg: DictConfig) -> str:
    """``student.init_from``, validated."""
    source = str(scfg.get("init_from", "teacher"))
    if source not in INIT_FROM:
        raise ConfigError(f"student.init_from must be one of {', '.join(INIT_FROM)}, got {source!r}")
    return source


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
    mapping = layer_map(int(scfg.num_layers), arch.num_layers(teacher))
    cfg = student_config(teacher.config, scfg)
    student = AutoModelForSequenceClassification.from_config(cfg)
    t_cfg = teacher.config
    same_width = arch.size(cfg, "hidden_size") == arch.size(t_cfg, "hidden_size")
    same_ffn = same_width and arch.size(cfg, "intermediate_size") == arch.size(t_cfg, "intermediate_size")
    same_heads = arch.size(cfg, "num_heads") == arch.size(t_cfg, "num_heads")
    if source_kind == "pretrained":
        if pretrained is None:
            raise ConfigError("student.init_from=pretrained needs the teacher's pre-trained backbone")
        for what in ("num_layers", "hidden_size", "intermediate_size", "num_heads"):
            if arch.size(pretrained.config, what) != arch.size(t_cfg, what):
                raise ConfigError(
                    f"student.init_from=pretrained: the backbone's {what} is {arch.size(pretrained.config, what)} "
                    f"but the teacher's is {arch.size(t_cfg, what)}; is it the model the teacher was fine-tuned "
                    "from? (set student.backbone)")
        source = pretrained
    else:
        source = teacher
    if scfg.init_embeddings and same_width:
        _copy_parts(arch.shared_modules(source), arch.shared_modules(student))
    if scfg.init_layers and same_ffn and same_heads:
        src_layers, s_layers = arch.layers(source), arch.layers(student)
        for k, m in enumerate(mapping):
            s_layers[k].load_state_dict(src_layers[m - 1].state_dict())
    elif scfg.init_layers:
        log.info("student width differs from the teacher: layers start from random init")
    if source_kind == "pretrained" and scfg.init_layers and same_width:
        # the reference takes the pre-trained pooler with the layers
        _copy_parts(arch.encoder_head_modules(pretrained), arch.head_modules(student))
    if scfg.init_classifier and same_width:
        from_backbone = arch.encoder_head_modules(pretrained) if source_kind == "pretrained" else {}
        _copy_parts({p: m for p, m in arch.head_modules(teacher).items() if p not in from_backbone},
                    arch.head_modules(student))
    return student, mapping


def _copy_parts(source: dict, target: dict) -> None:
    """Load every module of ``source`` into the module of ``target`` at the same path."""
    for path, module in target.items():
        if path in source:
            module.load_state_dict(source[path].state_dict())
