"""TinyBERT's attention-map loss (Jiao et al. 2020): L_attn = (1/h) sum_i MSE(A_i^S, A_i^T).

``A_i`` is the attention-probability matrix of head ``i`` of a student layer and of its mapped
teacher layer (student layer k <-> teacher layer ``layer_map[k]``). The squared error is averaged
over heads and over (query, key) pairs of real tokens (padding excluded), then over the K layers.
Student and teacher need the same number of attention heads. Enable it with
``loss=tinybert_attn`` or ``+loss.tinybert_attn_weight=<w>`` on any loss.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from lad.core.errors import ConfigError
from lad.method.loss_terms.registry import ATTENTIONS, STUDENT_ATTENTIONS, LossTerm, register


def attention_mse(student: Sequence[Tensor], teacher: Sequence[Tensor], mask: Tensor) -> Tensor:
    """Mean over layer pairs of the squared error of ``[B, h, T, T]`` attention maps over heads and real pairs."""
    pair = mask.float()[:, None, :, None] * mask.float()[:, None, None, :]   # [B, 1, T, T]
    total = student[0].new_zeros(())
    for s, t in zip(student, teacher, strict=True):
        if s.shape != t.shape:
            raise ValueError(f"tinybert_attn: student attentions {tuple(s.shape)} and teacher {tuple(t.shape)} "
                             "differ (student.num_attention_heads must equal the teacher's)")
        sq = (s.float() - t.detach().float()).pow(2) * pair
        total = total + sq.sum() / (pair.sum() * s.shape[1]).clamp_min(1.0)
    return total / len(student)


@register("tinybert_attn")
class TinyBERTAttention(LossTerm):
    """Attention probabilities of each student layer vs its mapped teacher layer."""

    teacher = frozenset({ATTENTIONS})
    student = frozenset({STUDENT_ATTENTIONS})

    def check_models(self, student, teacher) -> None:
        heads = (student.config.num_attention_heads, teacher.config.num_attention_heads)
        if heads[0] != heads[1]:
            raise ConfigError(f"loss.tinybert_attn_weight > 0 compares attention maps head by head, but the student "
                              f"has {heads[0]} attention heads and the teacher {heads[1]}; "
                              f"set student.num_attention_heads={heads[1]}")

    def __call__(self, inputs) -> Tensor:
        teacher = [inputs.t_attentions[m - 1] for m in inputs.layer_map]
        return attention_mse(inputs.s_attentions, teacher, inputs.mask)
