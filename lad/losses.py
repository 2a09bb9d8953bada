"""Distillation loss terms (pure functions) and the weighted :class:`Objective`.

total = hard_w * hard + soft_w * soft + hidden_w * hidden + pkd_w * pkd, where

* hard:   CE(student, labels)  (regression: MSE)
* soft:   T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean  (regression: MSE(s, t))
* hidden: (1/K) sum_k MSE(student_k, target_k) over the tokens chosen by ``hidden_positions``:
          ``real`` averages over non-padding tokens and dims; ``all`` over every position of the
          batch, padding included (the reference code, which pads every batch to max length)
* pkd:    Patient-KD, (1/K) sum_k mean_b || s/|s| - t/|t| ||^2 on [CLS] vectors
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lad.errors import ConfigError

WEIGHT_KEYS = ("hard_weight", "soft_weight", "hidden_weight", "pkd_weight")
HIDDEN_POSITIONS = ("real", "all")
PART_KEYS = ("hard", "soft", "hidden", "pkd")


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


def hidden_mse(student: Sequence[Tensor], targets: Sequence[Tensor], mask: Tensor | None) -> Tensor:
    """Mean over the K layer pairs of the squared error averaged over real tokens and dims.

    Targets are not detached, so trainable aggregators (LAD gates) receive gradients.
    """
    if len(student) != len(targets) or len(student) == 0:
        raise ValueError(f"hidden_mse needs matching non-empty lists, got {len(student)} and {len(targets)}")
    dtype = _at_least_fp32(student[0].dtype)  # fp32 under bf16 autocast; fp64 stays fp64
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


class Objective:
    """Weighted sum of the distillation terms; terms with weight 0 are not computed."""

    def __init__(
        self,
        hard_weight: float,
        soft_weight: float,
        hidden_weight: float,
        pkd_weight: float,
        temperature: float,
        is_regression: bool,
        hidden_positions: str = "real",
    ) -> None:
        if hidden_positions not in HIDDEN_POSITIONS:
            raise ConfigError(f"loss.hidden_positions must be one of {', '.join(HIDDEN_POSITIONS)}, "
                              f"got {hidden_positions!r}")
        weights = {
            "hard_weight": hard_weight,
            "soft_weight": soft_weight,
            "hidden_weight": hidden_weight,
            "pkd_weight": pkd_weight,
        }
        for key, value in {**weights, "temperature": temperature}.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"loss.{key} must be a number, got {value!r}")
        if not temperature > 0:
            raise ConfigError(f"loss.temperature must be > 0, got {temperature}")
        negative = [k for k, v in weights.items() if v < 0]
        if negative:
            raise ConfigError(f"loss weights must be >= 0; negative: {', '.join(negative)}")
        if all(v == 0 for v in weights.values()):
            raise ConfigError("loss weights are all zero; set at least one of " + ", ".join(WEIGHT_KEYS))
        self.hard_weight = float(hard_weight)
        self.soft_weight = float(soft_weight)
        self.hidden_weight = float(hidden_weight)
        self.pkd_weight = float(pkd_weight)
        self.temperature = float(temperature)
        self.is_regression = bool(is_regression)
        self.hidden_positions = hidden_positions

    @property
    def pads_to_max_length(self) -> bool:
        """True when training batches must be padded to the task's max length (``hidden_positions=all``)."""
        return self.hidden_weight > 0 and self.hidden_positions == "all"

    @classmethod
    def from_config(cls, cfg: Any, is_regression: bool) -> "Objective":
        """Build from a loss config ``{name, hard_weight, soft_weight, hidden_weight, pkd_weight, temperature}``."""
        spec = _to_dict(cfg)
        spec.pop("name", None)
        required = (*WEIGHT_KEYS, "temperature")
        optional = ("hidden_positions",)
        missing = [k for k in required if k not in spec]
        if missing:
            raise ConfigError(f"loss config is missing: {', '.join(missing)}")
        unknown = sorted(set(spec) - set(required) - set(optional))
        if unknown:
            raise ConfigError(f"unknown loss config keys: {', '.join(unknown)}; "
                              f"allowed: name, {', '.join(required + optional)}")
        return cls(is_regression=is_regression, **spec)

    @property
    def needs_teacher(self) -> bool:
        return self.soft_weight > 0 or self.hidden_weight > 0 or self.pkd_weight > 0

    @property
    def needs_hidden(self) -> bool:
        return self.hidden_weight > 0 or self.pkd_weight > 0

    @property
    def needs_targets(self) -> bool:
        """True when gate targets (the hidden term) are used."""
        return self.hidden_weight > 0

    @property
    def needs_cls(self) -> bool:
        """True when [CLS] vectors (Patient-KD term) are used."""
        return self.pkd_weight > 0

    def __repr__(self) -> str:
        return (
            f"Objective(hard={self.hard_weight}, soft={self.soft_weight}, hidden={self.hidden_weight}, "
            f"pkd={self.pkd_weight}, T={self.temperature}, regression={self.is_regression}, "
            f"hidden_positions={self.hidden_positions!r})"
        )

    def __call__(
        self,
        s_logits: Tensor,
        labels: Tensor | None,
        t_logits: Tensor | None = None,
        s_hidden: Sequence[Tensor] | None = None,
        targets: Sequence[Tensor] | None = None,
        mask: Tensor | None = None,
        s_cls: Sequence[Tensor] | None = None,
        t_cls: Sequence[Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Return ``(total, parts)``; ``parts`` has the unweighted value of every term (0.0 if off)."""
        total = s_logits.new_zeros((), dtype=_at_least_fp32(s_logits.dtype))
        parts = dict.fromkeys(PART_KEYS, 0.0)
        terms: list[tuple[str, float, Tensor]] = []
        if self.hard_weight > 0:
            _require(labels, "labels", "hard_weight")
            terms.append(("hard", self.hard_weight, hard_loss(s_logits, labels, self.is_regression)))
        if self.soft_weight > 0:
            _require(t_logits, "t_logits", "soft_weight")
            terms.append(
                ("soft", self.soft_weight, soft_loss(s_logits, t_logits, self.temperature, self.is_regression))
            )
        if self.hidden_weight > 0:
            _require(s_hidden, "s_hidden", "hidden_weight")
            _require(targets, "targets", "hidden_weight")
            hidden_mask = mask if self.hidden_positions == "real" else None
            terms.append(("hidden", self.hidden_weight, hidden_mse(s_hidden, targets, hidden_mask)))
        if self.pkd_weight > 0:
            _require(s_cls, "s_cls", "pkd_weight")
            _require(t_cls, "t_cls", "pkd_weight")
            terms.append(("pkd", self.pkd_weight, pkd_loss(s_cls, t_cls)))
        for key, weight, value in terms:
            total = total + weight * value
        values = torch.stack([v.detach().float() for _, _, v in terms]).tolist()
        for (key, _, _), value in zip(terms, values):
            parts[key] = value
        return total, parts


def _at_least_fp32(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _require(value: Any, arg: str, weight: str) -> None:
    if value is None:
        raise ValueError(f"Objective: {arg} is required when {weight} > 0")


def _to_dict(cfg: Any) -> dict[str, Any]:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return dict(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise ConfigError(f"loss config must be a mapping, got {type(cfg).__name__}")
