"""Terms on intermediate layers: ``hidden`` (LAD's gated targets) and ``pkd`` (Patient-KD).

* hidden: (1/K) sum_k MSE(student_k, target_k) over the tokens chosen by ``loss.hidden_positions``:
          ``real`` averages over non-padding tokens and dims; ``all`` over every position of the
          batch, padding included (the reference code, which pads every batch to max length)
* pkd:    (1/K) sum_k mean_b || s/|s| - t/|t| ||^2 on [CLS] vectors of the intermediate student
          layers and their mapped teacher layers (Sun et al. 2019)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lad.core.errors import ConfigError
from lad.method.loss_terms.registry import CLS, GATED, HIDDEN, LossTerm, register

HIDDEN_POSITIONS = ("real", "all")


def at_least_fp32(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def hidden_mse(student: Sequence[Tensor], targets: Sequence[Tensor], mask: Tensor | None) -> Tensor:
    """Mean over the K layer pairs of the squared error averaged over real tokens and dims.

    Targets are not detached, so trainable aggregators (LAD gates) receive gradients.
    """
    if len(student) != len(targets) or len(student) == 0:
        raise ValueError(f"hidden_mse needs matching non-empty lists, got {len(student)} and {len(targets)}")
    dtype = at_least_fp32(student[0].dtype)  # fp32 under bf16 autocast; fp64 stays fp64
    total = student[0].new_zeros((), dtype=dtype)
    for s, t in zip(student, targets):
        if s.shape != t.shape:
            raise ValueError(f"student hidden {tuple(s.shape)} and target {tuple(t.shape)} differ")
        sq = (s.to(dtype) - t.to(dtype)).pow(2)
        if mask is None:
            total = total + sq.mean()
        else:
            m = mask.to(sq.dtype).unsqueeze(-1)
            count = m.sum() * sq.shape[-1]
            total = total + (sq * m).sum() / count.clamp_min(1.0)
    return total / len(student)


def pkd_loss(student_cls: Sequence[Tensor], teacher_cls: Sequence[Tensor], eps: float = 1e-12) -> Tensor:
    """Patient-KD: squared distance of L2-normalised [CLS] vectors, batch mean, averaged over K."""
    if len(student_cls) != len(teacher_cls) or len(student_cls) == 0:
        raise ValueError(f"pkd_loss needs matching non-empty lists, got {len(student_cls)} and {len(teacher_cls)}")
    total = student_cls[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student_cls, teacher_cls):
        s_n = F.normalize(s.float(), dim=-1, eps=eps)
        t_n = F.normalize(t.detach().float(), dim=-1, eps=eps)
        total = total + (s_n - t_n).pow(2).sum(dim=-1).mean()
    return total / len(student_cls)


@register("hidden")
class Hidden(LossTerm):
    """MSE between the student's hidden states and the gate's targets (the gate is trained by it)."""

    teacher = frozenset({GATED})
    student = frozenset({HIDDEN})
    options = {"hidden_positions": "real"}

    def __init__(self, is_regression: bool = False, hidden_positions: str = "real") -> None:
        if hidden_positions not in HIDDEN_POSITIONS:
            raise ConfigError(f"loss.hidden_positions must be one of {', '.join(HIDDEN_POSITIONS)}, "
                              f"got {hidden_positions!r}")
        super().__init__(is_regression, hidden_positions=hidden_positions)

    @property
    def pads_to_max_length(self) -> bool:
        return self.hidden_positions == "all"

    def uncacheable(self) -> str:
        if self.pads_to_max_length:
            return ("loss.hidden_positions=all matches the teacher's hidden states at padded "
                    "positions too, which a cache of unpadded rows does not hold")
        return ""

    def __call__(self, inputs) -> Tensor:
        hidden_mask = inputs.mask if self.hidden_positions == "real" else None
        return hidden_mse(inputs.s_hidden, inputs.targets, hidden_mask)


@register("pkd")
class PatientKD(LossTerm):
    """Patient-KD on the [CLS] vectors of the intermediate student layers (all of them if K = 1)."""

    teacher = frozenset({CLS})
    student = frozenset({HIDDEN})

    def __call__(self, inputs) -> Tensor:
        pairs = list(zip(inputs.s_hidden, inputs.layer_map))
        pairs = pairs[:-1] or pairs
        return pkd_loss([h[:, 0] for h, _ in pairs], [inputs.t_hidden[m - 1][:, 0] for _, m in pairs])
