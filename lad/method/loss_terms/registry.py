"""The loss-term registry: every term of the objective is a small class registered by name.

A term declares what it reads (``teacher``: from the teacher; ``student``: from the student's
forward pass) and the flat ``loss.<option>`` keys it takes, and computes its unweighted value from
the step's inputs. ``loss.<name>_weight`` sets its weight; :class:`lad.method.losses.Objective` sums the
configured terms. The distiller, the teacher-output cache and the pipeline rules ask the terms
what they need; nothing lists terms by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, TypeVar

from torch import Tensor

from lad.core.errors import ConfigError

# What a term reads from the teacher (the vocabulary the distiller and the teacher cache answer)
LOGITS = "logits"            # the teacher's logits
GATED = "gated"              # the gate's targets (the gate says which teacher layers it reads)
MAPPED = "mapped"            # every token of the mapped teacher layers (student layer k <-> layer_map[k])
CLS = "cls"                  # the [CLS] vector of the mapped teacher layers
ATTENTIONS = "attentions"    # attention probabilities of the mapped teacher layers
CAPTURED = "captured"        # outputs of named teacher modules (a term's ``captures``); never cached
TEACHER_HIDDEN = frozenset({GATED, MAPPED, CLS})   # needs served by the teacher's hidden states
TEACHER_NEEDS = TEACHER_HIDDEN | {LOGITS, ATTENTIONS, CAPTURED}
# ... and from the student's forward pass
HIDDEN = "hidden"            # hidden states of every student layer (projected to the teacher's width)
STUDENT_ATTENTIONS = "attentions"

REQUIRED = object()          # an option without a default


@dataclass(frozen=True)
class Capture:
    """An open vocabulary of inputs: the outputs of named submodules of the ``student`` or the
    ``teacher``, captured by forward hooks while the step's forward passes run (as torchdistill's
    forward hooks). ``modules`` is a glob over the model's ``named_modules()`` names, e.g.
    ``"*.encoder.layer.*.intermediate"`` (every layer's FFN activation) or ``"*.embeddings"``; the
    term reads ``inputs.captured[<key>]``: the outputs of the matching modules in the order the
    forward pass ran them (the first element of a tuple output). Student outputs carry gradients;
    teacher outputs are computed without them and are never cached."""

    model: str      # "student" | "teacher"
    modules: str    # glob over named_modules() names

    def __post_init__(self) -> None:
        if self.model not in ("student", "teacher"):
            raise ValueError(f"Capture.model must be 'student' or 'teacher', got {self.model!r}")


class LossTerm:
    """One term of the objective. Subclass, set the class attributes, implement :meth:`__call__`.

    ``inputs`` has the attributes ``s_logits``, ``labels``, ``mask`` and, as declared,
    ``t_logits``, ``targets`` (gate), ``s_hidden``, ``t_hidden`` (indexed by teacher layer - 1),
    ``s_attentions``, ``t_attentions`` (same indexing), ``layer_map`` (1-based teacher layer
    of each student layer) and ``captured`` (``{key: outputs}`` of the term's :class:`Capture` s).
    """

    name: ClassVar[str] = ""
    teacher: ClassVar[frozenset[str]] = frozenset()
    student: ClassVar[frozenset[str]] = frozenset()
    options: ClassVar[Mapping[str, Any]] = {}   # flat loss.<option> -> default (or REQUIRED)
    captures: ClassVar[Mapping[str, Capture]] = {}  # inputs.captured[<key>]: named module outputs
    pads_to_max_length: bool = False            # training batches must be padded to max length

    def __init__(self, is_regression: bool = False, **options: Any) -> None:
        self.is_regression = bool(is_regression)
        for key, value in options.items():
            setattr(self, key, value)

    def check_models(self, student, teacher) -> None:
        """Raise ConfigError when the student/teacher pair cannot give this term its inputs."""

    def uncacheable(self) -> str:
        """Why the teacher-output cache (unpadded rows) cannot serve this term; "" when it can."""
        return ""

    def __call__(self, inputs: Any) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={getattr(self, k)!r}' for k in self.options)})"


TERMS: dict[str, type[LossTerm]] = {}
T = TypeVar("T", bound=type)


def register(name: str) -> Callable[[T], T]:
    """Class decorator: ``@register("soft")`` makes ``loss.soft_weight`` select the class."""

    def deco(cls: T) -> T:
        if not (isinstance(cls, type) and issubclass(cls, LossTerm)):
            raise TypeError(f"@register({name!r}) needs a LossTerm subclass, got {cls!r}")
        if name in TERMS and TERMS[name] is not cls:
            raise ValueError(f"loss term {name!r} is already registered by {TERMS[name].__qualname__}")
        cls.name = name
        TERMS[name] = cls
        return cls

    return deco


def weight_key(name: str) -> str:
    return f"{name}_weight"


def term_of_weight(key: str) -> str | None:
    """The registered term that ``key`` (``<term>_weight``) weighs, else None."""
    name = key[:-len("_weight")] if key.endswith("_weight") else None
    return name if name in TERMS else None


def option_keys() -> set[str]:
    return {key for cls in TERMS.values() for key in cls.options}


def build_term(name: str, settings: Mapping[str, Any], is_regression: bool) -> LossTerm:
    """Instantiate term ``name`` with its options from the flat loss ``settings``."""
    cls = TERMS[name]
    missing = [k for k, default in cls.options.items() if default is REQUIRED and k not in settings]
    if missing:
        raise ConfigError(f"loss config is missing: {', '.join(missing)} (needed by {weight_key(name)})")
    values = {k: settings.get(k, default) for k, default in cls.options.items()}
    return cls(is_regression=is_regression, **values)
