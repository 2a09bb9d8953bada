"""Loss terms, registered by name (see :mod:`lad.method.loss_terms.registry` and docs/extending.md).

The built-in terms are imported first, in the order the objective sums them (hard, soft, hidden,
pkd); every other module of this package is imported after them, so a new term is one new module
here (plus a config that sets ``loss.<name>_weight``).
"""

from __future__ import annotations

import importlib
import pkgutil

from lad.method.loss_terms.registry import (ATTENTIONS, CAPTURED, CLS, GATED, HIDDEN, LOGITS, MAPPED, REQUIRED,
                                     STUDENT_ATTENTIONS, TEACHER_HIDDEN, TEACHER_NEEDS, TERMS, Capture, LossTerm,
                                     build_term, option_keys, register, term_of_weight, weight_key)

_BUILTIN = ("logits", "layers")  # registration order = the order the objective sums them
for _name in _BUILTIN + tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                                     if m.name not in _BUILTIN + ("registry",))):
    importlib.import_module(f"{__name__}.{_name}")

__all__ = ["ATTENTIONS", "CAPTURED", "CLS", "Capture", "GATED", "HIDDEN", "LOGITS", "MAPPED", "REQUIRED", "STUDENT_ATTENTIONS",
           "TEACHER_HIDDEN", "TEACHER_NEEDS", "TERMS", "LossTerm", "build_term", "option_keys", "register",
           "term_of_weight", "weight_key"]
