"""The complete, self-contained override list (and command) that re-runs one search trial.

A trial of ``distil.py -m hparams_search=<space>`` or ``sweeps/search.py`` runs with more than its
searched values: the command line's fixed overrides and what the search file itself sets outside
``hydra:`` (``loss.tie_hard_soft: true``, ``override /loss: kd``), or ``conf/search.yaml``'s own
values (``trainer.eval_every``). :func:`rerun_overrides` lists them all as plain ``key=value`` /
``group=option`` overrides, so ``python distil.py <overrides>`` scores what the trial scored,
without the search file and without an ``experiment`` file of its own.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

#: keys that steer the search or the bookkeeping, never the trial's training (a re-run of the best
#: trial keeps and logs its model as any run does)
SEARCH_ONLY = ("hydra.", "hydra/", "hparams_search", "search.", "n_trials", "max_trials", "entry", "output_dir",
               "overwrite", "trainer.resume", "mlflow.run_name", "trainer.keep_model", "mlflow.log_model")
_PLAIN = re.compile(r"[\w./:@+-]+")


def key_of(override: str) -> str:
    """The key of an override line (``+a.b=1`` -> ``a.b``; ``~a`` -> ``a``)."""
    return override.split("=", 1)[0].lstrip("+~")


def value_text(value: Any) -> str:
    """``value`` as Hydra's override grammar reads it back (quoted where it must be)."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple, ListConfig)):
        return "[" + ",".join(value_text(v) for v in value) + "]"
    if isinstance(value, (dict, DictConfig)):
        return "{" + ",".join(f"{k}:{value_text(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in ("true", "false", "null"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def config_overrides(node: Mapping | DictConfig, skip: Iterable[str] = ()) -> list[str]:
    """The leaves of a config file's body as ``dotted.key=value`` overrides (``defaults`` and
    ``hydra`` and any key under ``skip`` left out; ``++``: a file may add a key the composed config
    lacks, e.g. ``loss.tie_hard_soft`` next to ``loss=kd``); ``override /group: option`` defaults
    entries become ``group=option``."""
    raw = OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else dict(node)
    out = [f"{group}={option}" for group, option in _default_overrides(raw.get("defaults") or [])]
    out += [f"++{key}={value_text(value)}" for key, value in _leaves(raw)
            if not key.startswith(("defaults", "hydra", *skip))]
    return [o for o in out if not key_of(o).startswith(SEARCH_ONLY)]


def _default_overrides(defaults: list) -> list[tuple[str, str]]:
    out = []
    for entry in defaults:
        if isinstance(entry, Mapping):
            for key, option in entry.items():
                group = str(key).removeprefix("override ").strip().lstrip("/")
                if str(key).startswith("override ") and option is not None:
                    out.append((group, str(option)))
    return out


def _leaves(node: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.extend(_leaves(value, name + "."))
        else:
            out.append((name, value))
    return out


def merge_overrides(*layers: Iterable[str]) -> list[str]:
    """Override lists in order of precedence (a later layer's key replaces an earlier one's), search
    keys dropped; the result keeps the first-seen order of the keys."""
    merged: dict[str, str] = {}
    for layer in layers:
        for override in layer:
            key = key_of(override)
            if "=" in override and not key.startswith(SEARCH_ONLY):
                merged[key] = override
    return list(merged.values())


def rerun_command(entry: str, overrides: Iterable[str]) -> str:
    """``python <entry>.py <overrides>``, quoted for a POSIX shell, to be pasted as it is."""
    return shlex.join(["python", f"{entry}.py", *overrides])
