"""Pretrained models by Hugging Face Hub id (``teacher.backbone=bert-base-uncased``), online or not.

A backbone is either a local checkpoint directory or a Hub model id. For an id the weights are
fetched once into the Hugging Face cache with ``huggingface_hub.snapshot_download`` and used from
there as a local directory, so the rest of LAD only ever sees directories.

Offline mode is a choice, not a default: ``HF_HUB_OFFLINE=1`` set by the user (or by CI and the
tests) is respected; otherwise the Hub is asked, and only when it cannot be reached within a
couple of seconds does this process go offline and use what the cache already holds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from lad.core.errors import ConfigError

log = logging.getLogger(__name__)

# files a sequence classifier needs; weights are tried as safetensors first, then PyTorch bins
_CONFIG_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "vocab.txt", "vocab.json", "merges.txt", "*.model"]
_WEIGHTS = (["*.safetensors"], ["pytorch_model*.bin"])
_TRUE = ("1", "true", "yes", "on")


def offline_requested() -> bool:
    """True when the user (or CI / the tests) set ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether a TCP connection to the Hub (``HF_ENDPOINT``, default huggingface.co) opens in time.

    Runs in a daemon thread so that a slow DNS lookup cannot stall the run beyond ``timeout``.
    """
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    result = {"ok": False}

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["ok"] = True
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return result["ok"]


def go_offline() -> None:
    """Switch this process to offline mode (also for an already imported huggingface_hub)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as constants

        constants.HF_HUB_OFFLINE = True
    except (ImportError, AttributeError):  # pragma: no cover - depends on the installed version
        pass


def looks_like_path(spec: str) -> bool:
    """A directory reference rather than a Hub id (``name`` or ``org/name``)."""
    return (Path(spec).expanduser().exists() or spec.startswith(("/", ".", "~"))
            or spec.count("/") > 1 or "\\" in spec)


def resolve_pretrained(spec: str, what: str) -> Path:
    """Local directory for ``spec``: itself when it is a path, else the cached Hub snapshot."""
    spec = str(spec)
    if looks_like_path(spec):
        return Path(spec).expanduser()
    offline = user_offline = offline_requested()
    if not offline and not hub_reachable():
        log.warning("the Hugging Face Hub is unreachable: offline mode (using the local cache)")
        go_offline()
        offline = True
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        for weights in _WEIGHTS:
            local = Path(snapshot_download(spec, allow_patterns=_CONFIG_FILES + weights, local_files_only=offline))
            if any(local.glob(weights[0])):
                return local
        return local
    except LocalEntryNotFoundError as exc:
        why = "HF_HUB_OFFLINE is set" if user_offline else "the Hub is unreachable"
        raise ConfigError(f"{what}={spec}: not a local directory and not in the Hugging Face cache ({why}); "
                          "download it on a connected machine first or pass a local directory") from exc
    except RepositoryNotFoundError as exc:
        raise ConfigError(f"{what}={spec}: no such model on the Hugging Face Hub (nor a local directory)") from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{what}={spec}: cannot download from the Hugging Face Hub: {first[:200]}") from exc
