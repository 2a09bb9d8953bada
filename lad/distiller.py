"""The trainable unit of a run: a student plus (optionally) a frozen teacher, gates and projection.

Fine-tuning a teacher is the same module with no teacher and a CE-only objective, so one
training loop serves both entry points.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lad.models.arch import forward_inputs, hidden_size


@dataclass
class ParamGroup:
    """Parameters sharing one AdamW optimiser and LR; ``clip_units`` are clipped separately
    (default: the whole group together)."""

    name: str
    params: list
    lr: float
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
        if objective.needs_hidden and teacher_hidden_size and teacher_hidden_size != s_width:
            self.projection = nn.Linear(s_width, teacher_hidden_size)
        self.teacher_outputs = self._online_teacher
        if objective.needs_teacher and teacher is None:
            raise ValueError("the objective needs a teacher but none was given")

    # --- teacher outputs -------------------------------------------------------------
    def _online_teacher(self, batch: dict) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        with torch.no_grad():
            out = self.teacher(**forward_inputs(self.teacher, batch),
                               output_hidden_states=self.objective.needs_hidden)
        hidden = list(out.hidden_states[1:]) if self.objective.needs_hidden else None
        return out.logits, hidden

    # --- steps -----------------------------------------------------------------------
    def student_forward(self, batch: dict, hidden: bool = False):
        return self.student(**forward_inputs(self.student, batch), output_hidden_states=hidden)

    def training_step(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        obj = self.objective
        s_out = self.student_forward(batch, hidden=obj.needs_hidden)
        kwargs: dict = {}
        if obj.needs_teacher:
            t_logits, t_hidden = self.teacher_outputs(batch)
            kwargs["t_logits"] = t_logits
            if obj.needs_hidden:
                s_hidden = list(s_out.hidden_states[1:])
                if self.projection is not None:
                    s_hidden = [self.projection(h) for h in s_hidden]
                mask = batch["attention_mask"]
                kwargs.update(self.hidden_terms(s_hidden, t_hidden, mask))
        return obj(s_out.logits, batch["labels"], **kwargs)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """The training step (so that DistributedDataParallel can wrap the module)."""
        return self.training_step(batch)

    def hidden_terms(self, s_hidden, t_hidden, mask) -> dict:
        obj = self.objective
        out: dict = {"mask": mask}
        if obj.hidden_weight > 0:
            student_arg = s_hidden if getattr(self.gate, "needs_student_hidden", False) else None
            out["s_hidden"] = s_hidden
            out["targets"] = self.gate(t_hidden, mask, self.layer_map, student_arg)
        if obj.pkd_weight > 0:
            # Patient-KD: [CLS] of the intermediate student layers vs their mapped teacher layers.
            pairs = list(zip(s_hidden, self.layer_map))[:-1] or list(zip(s_hidden, self.layer_map))
            out["s_cls"] = [h[:, 0] for h, _ in pairs]
            out["t_cls"] = [t_hidden[m - 1][:, 0] for _, m in pairs]
        return out

    @torch.no_grad()
    def predict(self, batch: dict) -> torch.Tensor:
        return self.student_forward(batch).logits

    # --- optimisation and state ------------------------------------------------------
    def param_groups(self, lr: float, gate_lr: float) -> list[ParamGroup]:
        student_params = [p for p in self.student.parameters() if p.requires_grad]
        if self.projection is not None:
            student_params += list(self.projection.parameters())
        groups = [ParamGroup("student", student_params, lr)]
        gate_params = self.gate.trainable_parameters() if self.gate is not None else []
        if gate_params and self.objective.needs_targets:  # frozen gates: no optimiser sees them
            groups.append(ParamGroup("gate", gate_params, gate_lr, self.gate.clip_units()))
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
