"""Hydra sweep overrides -> Optuna 4 distributions, with upstream hydra-optuna-sweeper 1.3's meanings.

Shared by the Hydra sweeper (``hydra.sweeper.params``) and the in-process search (``search.params``):

- ``interval(a, b)``               -> FloatDistribution(a, b)
- ``int(interval(a, b))``          -> IntDistribution(a, b)   (Hydra's int() cast makes integer bounds)
- ``tag(log, interval(a, b))``     -> the same, log-scaled
- ``range(a, b[, step])``          -> IntDistribution(a, b, step) / FloatDistribution(a, b, step): b INCLUDED
- ``shuffle(range(a, b))``         -> CategoricalDistribution over Python's range values (b excluded)
- ``choice(x, y)`` / ``x,y``       -> CategoricalDistribution (config group choices too)
- anything else                    -> fixed override passed unchanged to every trial

Project additions: ``tag(int, interval(a, b))`` -> IntDistribution(ceil(a), floor(b)); unknown tags,
empty or reversed ranges are errors instead of being ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from lad.core.errors import StudyError

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
        """Hydra overrides of one trial: the fixed ones, one per searched parameter, then any extra
        parameter a ``custom_search_space`` function suggested (as ``name=value``)."""
        out = list(self.fixed)
        for name, dist in self.distributions.items():
            out.append(f"{self.keys[name]}={self._format(name, dist, params[name])}")
        out.extend(f"{name}={_value_text(value)}" for name, value in params.items()
                   if name not in self.distributions)
        return out

    def _format(self, name: str, dist: BaseDistribution, value: Any) -> str:
        if isinstance(dist, CategoricalDistribution):
            return self.choice_text[name][dist.to_internal_repr(value)]
        if isinstance(dist, IntDistribution):
            return str(int(value))
        return repr(float(value))

    def grid(self) -> dict[str, list]:
        """Every value of every parameter, for Optuna's GridSampler (a float interval has none)."""
        return {name: grid_values(name, dist) for name, dist in self.distributions.items()}


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return repr(value) if isinstance(value, float) else str(value)


def grid_values(name: str, dist: BaseDistribution) -> list:
    """All values of a discrete distribution (both bounds included)."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution) and not dist.log:
        return list(range(dist.low, dist.high + 1, dist.step))
    if isinstance(dist, FloatDistribution) and dist.step is not None and not dist.log:
        count = int(round((dist.high - dist.low) / dist.step))
        return [dist.low + i * dist.step for i in range(count + 1)]
    raise StudyError(f"the grid sampler needs discrete values for '{name}': use choice(), range() "
                     "or int(interval()) without log")


def param_name(override: Override) -> str:
    """Optuna parameter name of an override: its key (with ``@package``), no ``+`` prefix."""
    return override.get_key_element().lstrip("+")


def flat_params(params: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """``{key: sweep}`` with nested mappings flattened to dotted keys (``loss: {temperature: ...}`` is
    ``loss.temperature``), so YAML's dotted keys and command-line ``+search.params.a.b=...`` agree."""
    out: dict[str, Any] = {}
    for key, value in (params or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_params(value, name + "."))
        else:
            out[name] = value
    return out


def parse_search_space(params: Mapping[str, Any] | None, arguments: Sequence[str] = (),
                       parser: OverridesParser | None = None) -> SearchSpace:
    """The search space of ``params`` (``key: <sweep>``) and command-line overrides ``arguments``;
    an argument wins over a ``params`` entry with the same key."""
    parser = parser or OverridesParser.create()
    lines = [f"{key}={_as_text(value)}" for key, value in flat_params(params).items()]
    lines.extend(arguments)
    by_key: dict[str, Override] = {}
    try:
        overrides = parser.parse_overrides(lines)
    except Exception as exc:  # noqa: BLE001 - Hydra's parse error names the bad override
        raise StudyError(f"cannot parse the search space: {str(exc).splitlines()[0]}") from None
    for override in overrides:
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
            raise StudyError(f"cannot sweep a deletion override: {override.input_line}")
        try:
            dist, texts = _distribution(override)
        except StudyError:
            raise
        except (ValueError, TypeError) as exc:
            raise StudyError(f"invalid search range for '{name}': {exc}") from None
        space.distributions[name] = dist
        space.keys[name] = override.get_key_element()
        if texts is not None:
            space.choice_text[name] = texts
    return space


def _tags(override: Override) -> set[str]:
    tags = set(getattr(override.value(), "tags", set()) or set())
    unknown = tags - _KNOWN_TAGS
    if unknown:
        raise StudyError(f"unknown tag(s) {sorted(unknown)} for '{param_name(override)}'; "
                         f"supported: {sorted(_KNOWN_TAGS)}")
    return tags


def _distribution(override: Override) -> tuple[BaseDistribution, list[str] | None]:
    value = override.value()
    tags = _tags(override)
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        return _interval(value.start, value.end, tags), None
    if override.is_range_sweep() and not value.shuffle:
        assert isinstance(value, RangeSweep)
        return _range(override, value, tags), None
    if tags & {"log", "int"}:
        raise StudyError(f"tags {sorted(tags)} need interval() or range() for '{param_name(override)}'")
    return _choice(override)


def _interval(low: Any, high: Any, tags: set[str]) -> BaseDistribution:
    log = "log" in tags
    if "int" in tags:
        return IntDistribution(math.ceil(low), math.floor(high), log=log)
    if isinstance(low, int) and isinstance(high, int):  # int(interval(a, b)): upstream's integer interval
        return IntDistribution(low, high, log=log)
    return FloatDistribution(float(low), float(high), log=log)


def _range(override: Override, value: RangeSweep, tags: set[str]) -> BaseDistribution:
    name = param_name(override)
    start, stop, step = value.start, value.stop, value.step
    if step is None or step <= 0:
        raise StudyError(f"range() for '{name}' needs a positive step, got {step}")
    if stop < start:
        raise StudyError(f"empty range for '{name}': {override.input_line}")
    log = "log" in tags
    if all(isinstance(v, int) for v in (start, stop, step)):
        if log and step != 1:
            raise StudyError(f"tag(log) needs step 1 in range() for '{name}'")
        return IntDistribution(int(start), int(stop), log=log, step=int(step))
    if log:
        raise StudyError(f"tag(log) cannot be used with a float range for '{name}'")
    return FloatDistribution(float(start), float(stop), step=float(step))


def _choice(override: Override) -> tuple[CategoricalDistribution, list[str]]:
    values = list(override.sweep_iterator())
    texts = list(override.sweep_string_iterator())
    if not values:
        raise StudyError(f"empty choice for '{param_name(override)}'")
    if len(set(texts)) != len(texts):
        raise StudyError(f"duplicate choices for '{param_name(override)}': {override.input_line}")
    categories = [v if isinstance(v, _CATEGORY_TYPES) else t for v, t in zip(values, texts)]
    if len(set(categories)) != len(categories):  # e.g. 1 and true compare equal: keep the text
        categories = texts
    return CategoricalDistribution(categories), texts


def legacy_distribution(name: str, spec: Mapping[str, Any]) -> BaseDistribution:
    """A distribution of upstream's deprecated ``hydra.sweeper.search_space`` form
    (``{type: int|float|categorical, low, high, log, step, choices}``)."""
    kind = str(spec.get("type", ""))
    low, high, log, step = spec.get("low"), spec.get("high"), bool(spec.get("log", False)), spec.get("step")
    try:
        if kind == "categorical":
            return CategoricalDistribution(list(spec["choices"]))
        if kind == "int":
            return IntDistribution(int(low), int(high), log=log, step=1 if step is None else int(step))
        if kind == "float":
            return FloatDistribution(float(low), float(high), log=log, step=None if step is None else float(step))
    except (KeyError, TypeError, ValueError) as exc:
        raise StudyError(f"invalid search_space entry '{name}': {exc}") from None
    raise StudyError(f"search_space entry '{name}' needs type int, float or categorical, got {kind!r}")
