"""Assembling the trainable unit of a run, chosen by ``cfg.entry`` through :data:`BUILDERS`.

``train_teacher.py`` fine-tunes the backbone alone (:func:`build_teacher_finetune`); ``distil.py``
builds student + frozen teacher + gate + objective (:func:`build_distillation`). Both return an
:class:`Assembled`: the module, its tokenizer, the folder its weights came from and the extra params
the run records. ``memo`` (a dict kept by an in-process search) reuses loaded teachers across calls.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lad.core.errors import ConfigError
from lad.models.arch import hidden_size, num_layers

log = logging.getLogger(__name__)


@dataclass
class Assembled:
    module: object          # lad.method.distiller.Distiller
    tokenizer: object
    model_source: Path       # directory the tokenizer / weights came from
    extra_params: dict


def memoized(memo: dict | None, key: tuple, make):
    """``make()`` once per ``key`` when a memo dict is given (in-process sweeps reuse teachers/data)."""
    if memo is None:
        return make()
    if key not in memo:
        memo[key] = make()
    return memo[key]


def build_teacher_finetune(cfg: DictConfig, task, memo: dict | None = None) -> Assembled:
    from lad.method.distiller import Distiller
    from lad.method.losses import Objective
    from lad.models import load_backbone, load_tokenizer
    from lad.models.hub import resolve_pretrained
    from lad.models.teacher import check_model_dir

    backbone = check_model_dir(resolve_pretrained(str(cfg.teacher.backbone), "teacher.backbone"), "teacher.backbone")
    tokenizer = load_tokenizer(backbone)
    model = load_backbone(backbone, task)
    objective = Objective(hard_weight=1.0, is_regression=task.is_regression)
    n_params = sum(p.numel() for p in model.parameters())
    return Assembled(Distiller(model, objective), tokenizer, backbone,
                     {"teacher.num_layers": num_layers(model), "teacher.hidden_size": hidden_size(model),
                      "teacher.params": n_params, "student.params": n_params})


def loss_config(cfg: DictConfig) -> DictConfig:
    """The loss group, with hard_weight tied to 1 - soft_weight when ``loss.tie_hard_soft``."""
    loss = OmegaConf.to_container(cfg.loss, resolve=True)
    if loss.pop("tie_hard_soft", False):
        loss["hard_weight"] = 1.0 - float(loss["soft_weight"])
    return OmegaConf.create(loss)


def chosen_loss_needs_teacher(name: str, is_regression: bool) -> bool:
    """Whether ``conf/loss/<name>.yaml`` on its own (before an experiment or an override changes its
    weights) has a term that reads the teacher; True for a loss that has no file there."""
    from lad.core.config import CONF_DIR, load_with_bases
    from lad.method.losses import Objective

    path = CONF_DIR / "loss" / f"{name}.yaml"
    return not path.is_file() or Objective.from_config(load_with_bases(path), is_regression).needs_teacher


def build_distillation(cfg: DictConfig, task, memo: dict | None = None) -> Assembled:
    from lad.method.distiller import Distiller
    from lad.method.gates import build_gate, gate_class
    from lad.method.loss_terms import GATED, TEACHER_NEEDS
    from lad.method.losses import Objective
    from lad.models import build_student, load_teacher, load_tokenizer
    from lad.models.student import init_source
    from lad.models.teacher import load_pretrained_encoder, pretrained_source

    objective = Objective.from_config(loss_config(cfg), is_regression=task.is_regression)
    if not objective.uses_gate and not gate_class(cfg.gate).direct_map:
        gated = "/".join(f"{k}=0" for k in objective.weight_keys({GATED})) or "no term that reads the gate"
        raise ConfigError(
            f"gate={cfg.gate.name} needs a loss with a hidden-state term (loss=lad), "
            f"but loss={cfg.loss.name} has {gated}; use gate=none with loss={cfg.loss.name}"
        )
    if objective.needs_teacher and not chosen_loss_needs_teacher(cfg.loss.name, task.is_regression):
        raise ConfigError(
            f"loss={cfg.loss.name} is fine-tuning without a teacher, but "
            f"{'/'.join(objective.weight_keys(TEACHER_NEEDS))} are set "
            "(an experiment file such as reference_<task> sets LAD's loss weights); use loss=kd or loss=lad, "
            "or drop the experiment and set optim.* directly")
    key = ("teacher", str(cfg.teacher.source), str(cfg.teacher.path), str(cfg.teacher.uri), task.name)
    teacher, teacher_dir = memoized(memo, key, lambda: load_teacher(cfg.teacher, task))
    tokenizer = memoized(memo, key + ("tokenizer",), lambda: load_tokenizer(teacher_dir))
    pretrained, source = None, str(teacher_dir)
    if init_source(cfg.student) == "pretrained":
        source = pretrained_source(cfg.student, cfg.teacher, teacher_dir)
        pretrained = memoized(memo, ("pretrained", source), lambda: load_pretrained_encoder(source))
    student, mapping = build_student(teacher, cfg.student, pretrained)
    L, width = num_layers(teacher), hidden_size(teacher)
    gate = build_gate(cfg.gate, num_layers=L, hidden_size=width) if objective.uses_gate else None
    if getattr(gate, "affine", None) == "position" and not objective.pads_to_max_length:
        raise ConfigError("gate.affine=position needs every batch padded to max length: "
                          "set loss.hidden_positions=all (as the reference recipe does)")
    module = Distiller(student, objective, teacher=teacher if objective.needs_teacher else None,
                       gate=gate, layer_map=mapping, teacher_hidden_size=width)
    n_params = sum(p.numel() for p in student.parameters())
    extra = {
        "teacher.dir": str(teacher_dir),
        "student.init_source": source,
        "teacher.num_layers": L,
        "student.layer_map": ",".join(map(str, mapping)),
        "student.params": n_params,
        "teacher.params": sum(p.numel() for p in teacher.parameters()),
    }
    log.info("student %d layers <- teacher layers %s (%.1fM params)", len(mapping), mapping, n_params / 1e6)
    return Assembled(module, tokenizer, teacher_dir, extra)


BUILDERS = {"train_teacher": build_teacher_finetune, "distil": build_distillation}


def model_max_len(task, asm: Assembled) -> int:
    """``task.max_seq_length``, capped at the model's position embeddings (longer ids would crash)."""
    max_len = int(task.max_seq_length)
    config = getattr(getattr(asm.module, "student", None), "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and 4 <= positions < max_len:
        log.warning("task.max_seq_length=%d exceeds the model's %d positions: texts are truncated to %d tokens",
                    max_len, positions, positions)
        max_len = positions
    return max_len


def truncation_params(task, splits: dict, max_len: int) -> dict:
    """``data.<split>_truncated``: examples cut to ``max_len`` tokens (logged once per split)."""
    out = {"data.max_len": max_len}
    for split, feats in splits.items():
        count = int(getattr(feats, "truncated", 0) or 0)
        out[f"data.{split}_truncated"] = count
        if count:
            log.warning("%s %s: %d of %d example(s) longer than %d tokens were truncated",
                        task.name, split, count, len(feats), max_len)
    return out
