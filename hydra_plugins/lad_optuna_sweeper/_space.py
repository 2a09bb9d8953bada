"""Translate Hydra sweep overrides into Optuna 4 distributions and back.

Supported value forms (tags: ``log``, ``int``):

- ``interval(a, b)``            -> FloatDistribution(a, b)  (``tag(int, ...)`` -> IntDistribution)
- ``tag(log, interval(a, b))``  -> log-scaled distribution
- ``range(a, b[, s])``          -> Int/FloatDistribution over Python ``range`` values (b excluded)
- ``choice(x, y)`` / ``x,y``    -> CategoricalDistribution
- anything else                 -> fixed override passed unchanged to every trial
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, ValueType
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from .errors import SweeperError

_KNOWN_TAGS = frozenset({"log", "int"})
_CATEGORY_TYPES = (str, int, float, bool)


@dataclass
class SearchSpace:
    """Searched parameters plus fixed overrides shared by all trials."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # param name -> override key (with +)
    choice_text: dict[str, list[str]] = field(default_factory=dict)  # categorical -> override text
    fixed: list[str] = field(default_factory=list)

    def overrides_for(self, params: Mapping[str, Any]) -> list[str]:
        """Hydra overrides of one trial: the fixed ones, then one per searched parameter."""
        out = list(self.fixed)
        for name, dist in self.distributions.items():
            out.append(f"{self.keys[name]}={self._format(name, dist, params[name])}")
        return out

    def _format(self, name: str, dist: BaseDistribution, value: Any) -> str:
        if isinstance(dist, CategoricalDistribution):
            return self.choice_text[name][dist.to_internal_repr(value)]
        if isinstance(dist, IntDistribution):
            return str(int(value))
        return repr(float(value))


def param_name(override: Override) -> str:
    """Optuna parameter name of an override: its key (with ``@package``), no ``+`` prefix."""
    return override.get_key_element().lstrip("+")


def parse_search_space(
    params: Mapping[str, Any] | None,
    arguments: Sequence[str],
    parser: OverridesParser | None = None,
) -> SearchSpace:
    """Build the search space from ``hydra.sweeper.params`` and command-line overrides.

    Command-line overrides win over ``params`` entries with the same key.
    """
    parser = parser or OverridesParser.create()
    lines = [f"{key}={_as_text(value)}" for key, value in (params or {}).items()]
    lines.extend(arguments)
    by_key: dict[str, Override] = {}
    for override in parser.parse_overrides(lines):
        by_key[param_name(override)] = override
    return _space_from_overrides(by_key.values())


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return str(value)


def _space_from_overrides(overrides: Iterable[Override]) -> SearchSpace:
    space = SearchSpace()
    for override in overrides:
        name = param_name(override)
        if not override.is_sweep_override():
            assert override.input_line is not None
            space.fixed.append(override.input_line)
            continue
        if override.is_delete():
            raise SweeperError(f"cannot sweep a deletion override: {override.input_line}")
        try:
            dist, texts = _distribution(override)
        except SweeperError:
            raise
        except (ValueError, TypeError) as exc:
            raise SweeperError(f"invalid search range for '{name}': {exc}") from None
        space.distributions[name] = dist
        space.keys[name] = override.get_key_element()
        if texts is not None:
            space.choice_text[name] = texts
    return space


def _tags(override: Override) -> set[str]:
    tags = set(getattr(override.value(), "tags", set()) or set())
    unknown = tags - _KNOWN_TAGS
    if unknown:
        raise SweeperError(
            f"unknown tag(s) {sorted(unknown)} for '{param_name(override)}'; "
            f"supported: {sorted(_KNOWN_TAGS)}"
        )
    return tags


def _distribution(override: Override) -> tuple[BaseDistribution, list[str] | None]:
    value = override.value()
    tags = _tags(override)
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        return _interval(float(value.start), float(value.end), tags), None
    if override.value_type == ValueType.RANGE_SWEEP:
        assert isinstance(value, RangeSweep)
        return _range(override, value, tags), None
    if tags:
        raise SweeperError(f"tags {sorted(tags)} need interval() or range() for '{param_name(override)}'")
    return _choice(override)


def _interval(low: float, high: float, tags: set[str]) -> BaseDistribution:
    if "int" in tags:
        return IntDistribution(math.ceil(low), math.floor(high), log="log" in tags)
    return FloatDistribution(low, high, log="log" in tags)


def _range(override: Override, value: RangeSweep, tags: set[str]) -> BaseDistribution:
    values = list(value.range())
    if not values:
        raise SweeperError(f"empty range for '{param_name(override)}': {override.input_line}")
    low, high, step = min(values), max(values), abs(value.step)
    log = "log" in tags
    if all(isinstance(v, int) for v in values) and isinstance(step, int):
        return IntDistribution(int(low), int(high), log=log, step=1 if log else step)
    if log:
        raise SweeperError(f"tag(log) cannot be used with a float range step for '{param_name(override)}'")
    return FloatDistribution(float(low), float(high), step=float(step))


def _choice(override: Override) -> tuple[CategoricalDistribution, list[str]]:
    values = list(override.sweep_iterator())
    texts = list(override.sweep_string_iterator())
    if not values:
        raise SweeperError(f"empty choice for '{param_name(override)}'")
    if len(set(texts)) != len(texts):
        raise SweeperError(f"duplicate choices for '{param_name(override)}': {override.input_line}")
    categories = [v if isinstance(v, _CATEGORY_TYPES) else t for v, t in zip(values, texts)]
    if len(set(categories)) != len(categories):  # e.g. 1 and true compare equal: keep the text
        categories = texts
    return CategoricalDistribution(categories), texts
