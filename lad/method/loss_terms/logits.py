"""Terms on the logits: ``hard`` (labels) and ``soft`` (the teacher's logits, Hinton et al.).

* hard: CE(student, labels)  (regression: MSE)
* soft: T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean  (regression: MSE(s, t))
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lad.core.errors import ConfigError
from lad.method.loss_terms.registry import LOGITS, REQUIRED, LossTerm, register


def hard_loss(logits: Tensor, labels: Tensor, is_regression: bool) -> Tensor:
    """Cross-entropy on class logits ``[B, C]`` (labels -100 ignored), or MSE for ``[B, 1]``."""
    if is_regression:
        return F.mse_loss(logits.reshape(-1).float(), labels.reshape(-1).float())
    return F.cross_entropy(logits.float(), labels.long(), ignore_index=-100)


def soft_loss(s_logits: Tensor, t_logits: Tensor, temperature: float, is_regression: bool) -> Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))`` averaged over the batch; regression: MSE."""
    t_logits = t_logits.detach()
    if is_regression:
        return F.mse_loss(s_logits.reshape(-1).float(), t_logits.reshape(-1).float())
    T = float(temperature)
    log_p_s = F.log_softmax(s_logits.float() / T, dim=-1)
    log_p_t = F.log_softmax(t_logits.float() / T, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1).mean()
    return kl * (T * T)


@register("hard")
class Hard(LossTerm):
    """Supervised loss on the labels; needs no teacher."""

    def __call__(self, inputs) -> Tensor:
        return hard_loss(inputs.s_logits, inputs.labels, self.is_regression)


@register("soft")
class Soft(LossTerm):
    """Knowledge distillation on the logits at ``loss.temperature``."""

    teacher = frozenset({LOGITS})
    options = {"temperature": REQUIRED}

    def __init__(self, is_regression: bool = False, temperature: float = 1.0) -> None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise ConfigError(f"loss.temperature must be a number, got {temperature!r}")
        if not temperature > 0:
            raise ConfigError(f"loss.temperature must be > 0, got {temperature}")
        super().__init__(is_regression, temperature=float(temperature))

    def __call__(self, inputs) -> Tensor:
        return soft_loss(inputs.s_logits, inputs.t_logits, self.temperature, self.is_regression)
