"""Credentials never leave the process: masking for text, configs, logging and the console.

A password can reach LAD inside any URL-valued setting (``mlflow.tracking_uri``,
``mlflow.artifact_location``, ``hydra.sweeper.storage``, ``search.storage``, ...). Rather than
masking each key, every string that is written or printed goes through :func:`mask`:

* ``scheme://user:password@host`` -> ``scheme://user:***@host`` (also inside longer text);
* ``password=...`` / ``token=...`` style query parameters -> ``password=***``;
* any password seen in the run's config (:func:`remember`) is replaced wherever it appears, also
  percent-encoded, so a library that prints a URL in its own format cannot leak it either.

:func:`redact` applies this to a whole config (what ``config.yaml`` and ``.hydra/*.yaml`` hold),
:class:`MaskingFilter` to log records (wired into Hydra's logging config in ``conf/hydra``) and
:func:`guard_streams` to ``sys.stdout`` / ``sys.stderr`` (MLflow prints run URLs with ``print``).
"""

from __future__ import annotations

import io
import logging
import re
import sys
from typing import Any
from urllib.parse import quote, unquote

MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*):(?P<pw>[^@\s'\"/]+)@")
_QUERY_SECRET = re.compile(
    r"(?P<head>(?:password|passwd|pwd|token|secret|access_key|secret_key|api_key)=)(?P<pw>[^&\s'\"]+)",
    re.IGNORECASE)
_KNOWN: set[str] = set()


def _forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), unquote(secret)} - {""}


def remember(value: Any) -> None:
    """Collect every password found in ``value`` (a string, or a config / container of them)."""
    for text in _strings(value):
        for pattern in (_URL_PASSWORD, _QUERY_SECRET):
            for match in pattern.finditer(text):
                if match.group("pw") != MASK and len(match.group("pw")) >= 6:  # shorter: too common a word
                    _KNOWN.update(_forms(match.group("pw")))


def mask(text: Any) -> str:
    """``text`` with URL passwords, secret query parameters and remembered secrets hidden."""
    text = str(text)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
    text = _QUERY_SECRET.sub(lambda m: f"{m.group('head')}{MASK}", text)
    for secret in sorted(_KNOWN, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def has_secret(text: str) -> bool:
    return mask(text) != str(text)


def _strings(value: Any):
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def redact(value: Any) -> Any:
    """A plain copy of ``value`` (config, dict, list, string) with every string masked."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        try:
            value = OmegaConf.to_container(value, resolve=True)
        except Exception:  # noqa: BLE001 - e.g. ${hydra:...} outside a Hydra job: keep it unresolved
            value = OmegaConf.to_container(value, resolve=False)
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


class MaskingFilter(logging.Filter):
    """Logging filter that masks secrets in the formatted message (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is left to logging to report
            return True
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            text = str(record.exc_info[1])
            if mask(text) != text:  # the traceback would print the secret: print the masked text only
                record.msg = f"{record.msg} ({type(record.exc_info[1]).__name__}: {mask(text)})"
                record.exc_info, record.exc_text = None, None
        return True


def masking_filter() -> MaskingFilter:
    """Factory used by ``conf/hydra/*_logging/lad.yaml`` (logging.config ``()`` key)."""
    return MaskingFilter()


def install_log_filter() -> None:
    """Add :class:`MaskingFilter` to every handler of the root logger (idempotent)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(MaskingFilter())


class _MaskingStream(io.TextIOBase):
    """Text stream wrapper that masks each write (line-buffered enough for prints and tqdm)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(mask(text) if _KNOWN or "://" in text or "=" in text else text)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self):  # noqa: D401 - mirrors the wrapped stream
        return getattr(self._stream, "encoding", "utf-8")

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def guard_streams() -> None:
    """Mask secrets in everything written to ``sys.stdout`` / ``sys.stderr`` from now on."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _MaskingStream):
            setattr(sys, name, _MaskingStream(stream))
    for handler in logging.getLogger().handlers:  # handlers that captured the raw stream
        if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.__stdout__, sys.__stderr__):
            handler.setStream(sys.stdout if handler.stream is sys.__stdout__ else sys.stderr)
