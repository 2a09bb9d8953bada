"""The trainable unit of a run: a student plus (optionally) a frozen teacher, gates and projection.

Fine-tuning a teacher is the same module with no teacher and a CE-only objective, so one
training loop serves both entry points.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatch
from functools import cached_property, partial
from typing import NamedTuple

import torch
from torch import nn

from lad.core.errors import ConfigError
from lad.method.loss_terms import ATTENTIONS, HIDDEN, STUDENT_ATTENTIONS, TEACHER_HIDDEN
from lad.models.arch import forward_inputs, hidden_size


class TeacherOutputs(NamedTuple):
    """What ``Distiller.teacher_outputs`` returns; lists are indexed by teacher layer - 1 (None: not computed)."""

    logits: torch.Tensor
    hidden: list | None = None
    attentions: list | None = None


class Captured:
    """The outputs of the submodules that loss terms' :class:`lad.method.loss_terms.Capture` s name, kept by
    forward hooks while a training step's forward passes run (and only then)."""

    def __init__(self) -> None:
        self.outputs: dict[str, list] | None = None
        self.handles: list = []

    def hook(self, model: nn.Module, key: str, pattern: str, owner: str) -> None:
        """Keep the outputs of ``model``'s submodules whose names match the glob ``pattern`` under ``key``."""
        matched = [mod for name, mod in model.named_modules() if fnmatch(name, pattern)]
        if not matched:
            raise ConfigError(f"loss term input {key!r}: no {owner} module matches {pattern!r} "
                              f"(names as in {owner}.named_modules(), e.g. 'bert.encoder.layer.0.intermediate')")
        for mod in matched:
            self.handles.append(mod.register_forward_hook(partial(self._keep, key)))

    def _keep(self, key: str, module, args, output) -> None:
        if self.outputs is not None:
            self.outputs.setdefault(key, []).append(output[0] if isinstance(output, tuple) else output)

    @contextmanager
    def recording(self):
        self.outputs = {}
        try:
            yield self.outputs
        finally:
            self.outputs = None


class StepInputs:
    """The inputs of the loss terms for one training step, computed when a term first reads them."""

    def __init__(self, module: "Distiller", batch: dict, s_out, teacher: TeacherOutputs | None,
                 captured: dict | None = None):
        self.module, self.batch, self.s_out, self.teacher = module, batch, s_out, teacher
        self.captured = captured or {}
        self.s_logits = s_out.logits
        self.labels = batch["labels"]
        self.mask = batch["attention_mask"]
        self.layer_map = module.layer_map

    @property
    def t_logits(self):
        return self.teacher.logits

    @property
    def t_hidden(self):
        return self.teacher.hidden

    @property
    def t_attentions(self):
        return self.teacher.attentions

    @property
    def s_attentions(self):
        return list(self.s_out.attentions)

    @cached_property
    def s_hidden(self) -> list:
        """The student's layer outputs, projected to the teacher's width when they differ."""
        s_hidden = list(self.s_out.hidden_states[1:])
        projection = self.module.projection
        return [projection(h) for h in s_hidden] if projection is not None else s_hidden

    @cached_property
    def targets(self) -> list:
        """The gate's targets, one per student layer (not detached: the hidden term trains the gate)."""
        gate = self.module.gate
        student_arg = self.s_hidden if getattr(gate, "needs_student_hidden", False) else None
        return gate(self.t_hidden, self.mask, self.layer_map, student_arg)


@dataclass
class ParamGroup:
    """Parameters sharing one AdamW optimiser and learning rate, declared by the module that owns
    them: ``name`` (its LR is logged as ``train/lr_<name>``; the first group's as ``train/lr``),
    ``lr_key`` (the ``optim.<lr_key>`` that sets the LR) and ``clip_units`` (clipped separately;
    default: the whole group together)."""

    name: str
    params: list
    lr_key: str = "lr"
    clip_units: list | None = None

    def units(self) -> list:
        return self.clip_units if self.clip_units is not None else [self.params]


class Distiller(nn.Module):
    def __init__(self, student, objective, teacher=None, gate=None, layer_map=None,
                 teacher_hidden_size: int | None = None):
        super().__init__()
        self.student = student
        self.objective = objective
        self.teacher = teacher  # frozen; excluded from checkpoints
        self.gate = gate
        self.layer_map = list(layer_map or [])
        s_width = hidden_size(student)
        self.projection = None
        if HIDDEN in objective.student_needs and teacher_hidden_size and teacher_hidden_size != s_width:
            self.projection = nn.Linear(s_width, teacher_hidden_size)
        self.teacher_outputs = self._online_teacher
        if objective.needs_teacher and teacher is None:
            raise ValueError("the objective needs a teacher but none was given")
        for _, _, term in objective.terms:
            term.check_models(student, teacher)
        self.captured = Captured()  # the module outputs the terms read (a plain object: no submodule)
        for key, capture in objective.captures.items():
            self.captured.hook(student if capture.model == "student" else teacher, key, capture.modules, capture.model)
        # attention maps are returned by the eager attention path only (SDPA does not expose them)
        for model, reads in ((student, STUDENT_ATTENTIONS in objective.student_needs),
                             (teacher, ATTENTIONS in objective.teacher_needs)):
            if reads:
                model.set_attn_implementation("eager")

    # --- teacher outputs -------------------------------------------------------------
    def _online_teacher(self, batch: dict) -> TeacherOutputs:
        needs = self.objective.teacher_needs
        hidden, attentions = bool(needs & TEACHER_HIDDEN), ATTENTIONS in needs
        with torch.no_grad():
            out = self.teacher(**forward_inputs(self.teacher, batch), output_hidden_states=hidden,
                               **({"output_attentions": True} if attentions else {}))
        return TeacherOutputs(out.logits, list(out.hidden_states[1:]) if hidden else None,
                              list(out.attentions) if attentions else None)

    # --- steps -----------------------------------------------------------------------
    def student_forward(self, batch: dict, hidden: bool = False, attentions: bool = False):
        extra = {"output_attentions": True} if attentions else {}
        return self.student(**forward_inputs(self.student, batch), output_hidden_states=hidden, **extra)

    def training_step(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        needs = self.objective.student_needs
        with self.captured.recording() as captured:
            s_out = self.student_forward(batch, hidden=HIDDEN in needs, attentions=STUDENT_ATTENTIONS in needs)
            teacher = self.teacher_outputs(batch) if self.objective.needs_teacher else None
        return self.objective.evaluate(StepInputs(self, batch, s_out, teacher, captured))

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """The training step (so that DistributedDataParallel can wrap the module)."""
        return self.training_step(batch)

    # --- optimisation and state ------------------------------------------------------
    def param_groups(self) -> list[ParamGroup]:
        """What the training loop optimises: the student (with the projection) at ``optim.lr``, and the
        trainable gates at ``optim.gate_lr``, each gate clipped as the gate stack says."""
        student_params = [p for p in self.student.parameters() if p.requires_grad]
        if self.projection is not None:
            student_params += list(self.projection.parameters())
        groups = [ParamGroup("student", student_params, "lr")]
        gate_params = self.gate.trainable_parameters() if self.gate is not None else []
        if gate_params and self.objective.uses_gate:  # frozen gates: no optimiser sees them
            groups.append(ParamGroup("gate", gate_params, "gate_lr", self.gate.clip_units()))
        return groups

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"student.{k}": v for k, v in self.student.state_dict().items()}
        for name, mod in (("gate", self.gate), ("projection", self.projection)):
            if mod is not None:
                state.update({f"{name}.{k}": v for k, v in mod.state_dict().items()})
        return state

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, mod in (("student", self.student), ("gate", self.gate), ("projection", self.projection)):
            if mod is None:
                continue
            prefix = name + "."
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            mod.load_state_dict(sub)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # teacher dropout stays off
        return self
