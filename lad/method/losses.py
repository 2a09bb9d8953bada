"""The weighted :class:`Objective`: total = sum over configured terms of ``<term>_weight * term``.

The terms are registered classes (:mod:`lad.method.loss_terms`); the flat loss config names them by
their weight keys (``loss.hard_weight``, ``loss.soft_weight``, ``loss.hidden_weight``,
``loss.pkd_weight``, and any registered term's ``loss.<name>_weight``) and sets their options
(``loss.temperature``, ``loss.hidden_positions``, ...). Terms with weight 0 are not computed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lad.core.config import as_dict
from lad.core.errors import ConfigError
from lad.method.loss_terms import (CAPTURED, GATED, TERMS, LossTerm, build_term, option_keys, term_of_weight,
                            weight_key)
from lad.method.loss_terms.layers import HIDDEN_POSITIONS, at_least_fp32, hidden_mse, pkd_loss
from lad.method.loss_terms.logits import hard_loss, soft_loss

__all__ = ["HIDDEN_POSITIONS", "Objective", "hard_loss", "hidden_mse", "pkd_loss", "soft_loss"]


class Objective:
    """Weighted sum of the configured loss terms (registered classes, :mod:`lad.method.loss_terms`).

    ``settings`` are the flat loss keys: ``<term>_weight`` for each term the config names (parts
    report every named term, 0.0 when its weight is 0) and the terms' options.
    """

    def __init__(self, is_regression: bool = False, **settings: Any) -> None:
        weights = {term_of_weight(k): v for k, v in settings.items() if term_of_weight(k)}
        unknown = sorted(k for k in settings if not term_of_weight(k) and k not in option_keys())
        if unknown:
            allowed = [weight_key(n) for n in TERMS] + sorted(option_keys())
            raise ConfigError(f"unknown loss config keys: {', '.join(unknown)}; allowed: name, {', '.join(allowed)}")
        for name, value in weights.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"loss.{weight_key(name)} must be a number, got {value!r}")
        negative = [weight_key(n) for n, v in weights.items() if v < 0]
        if negative:
            raise ConfigError(f"loss weights must be >= 0; negative: {', '.join(negative)}")
        if all(v == 0 for v in weights.values()):
            raise ConfigError("loss weights are all zero; set at least one of "
                              + ", ".join(weight_key(n) for n in (weights or TERMS)))
        self.is_regression = bool(is_regression)
        self.weights = {n: float(weights[n]) for n in TERMS if n in weights}  # summed in registry order
        built = {n: build_term(n, settings, is_regression) for n in self.weights}
        self.terms: list[tuple[str, float, LossTerm]] = [(n, w, built[n]) for n, w in self.weights.items() if w > 0]
        self.options = {k: getattr(term, k) for term in built.values() for k in type(term).options}

    @classmethod
    def from_config(cls, cfg: Any, is_regression: bool) -> "Objective":
        """Build from a flat loss config ``{name, <term>_weight..., <option>...}``."""
        spec = as_dict(cfg, "loss config")
        spec.pop("name", None)
        return cls(is_regression=is_regression, **spec)

    # --- what the terms need (asked by the distiller, the teacher cache and the pipeline) ----
    @property
    def teacher_needs(self) -> frozenset[str]:
        captured = {CAPTURED} if any(c.model == "teacher" for c in self.captures.values()) else set()
        return frozenset().union(*(t.teacher for _, _, t in self.terms), captured)

    @property
    def captures(self) -> dict:
        """``{key: Capture}`` of every configured term (the module outputs the distiller hooks)."""
        return {key: capture for _, _, t in self.terms for key, capture in t.captures.items()}

    @property
    def student_needs(self) -> frozenset[str]:
        return frozenset().union(*(t.student for _, _, t in self.terms))

    @property
    def needs_teacher(self) -> bool:
        return bool(self.teacher_needs)

    @property
    def uses_gate(self) -> bool:
        """True when a term reads the gate's targets (the gate is built and trained)."""
        return GATED in self.teacher_needs

    @property
    def pads_to_max_length(self) -> bool:
        """True when training batches must be padded to the task's max length (``hidden_positions=all``)."""
        return any(t.pads_to_max_length for _, _, t in self.terms)

    def weight_keys(self, reads: frozenset[str] | set[str] | None = None) -> list[str]:
        """The configured weight keys (of the terms that read any of ``reads`` from the teacher, if given)."""
        return [weight_key(n) for n in self.weights if reads is None or TERMS[n].teacher & reads]

    def __repr__(self) -> str:
        terms = ", ".join(f"{n}={w}" for n, w in self.weights.items())
        return f"Objective({terms}, options={self.options}, regression={self.is_regression})"

    def evaluate(self, inputs: Any) -> tuple[Tensor, dict[str, Tensor | float]]:
        """Return ``(total, parts)``; ``parts`` has the unweighted value of every configured term (0.0 if off).

        The computed parts are detached 0-dim tensors on the loss's device, so a training step never
        waits for the device to report them (the loop reads them every ``trainer.log_every`` steps).
        """
        total = inputs.s_logits.new_zeros((), dtype=at_least_fp32(inputs.s_logits.dtype))
        parts: dict[str, Tensor | float] = dict.fromkeys(self.weights, 0.0)
        for name, weight, term in self.terms:
            value = term(inputs)
            total = total + weight * value
            parts[name] = value.detach().float()
        return total, parts
