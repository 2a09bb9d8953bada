"""The MLflow UI server the browser tests and screenshots look at, and the store it shows: ``mlflow ui``
on a free loopback port (its whole process group stopped on exit), and an experiment's runs by name
(:class:`Store`). The browser side is :mod:`lad.testing.ui`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Store:
    """An experiment to show: its id and name, and run ids by run name."""

    experiment_id: str
    experiment_name: str
    run_ids: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # by run name


def load_store(tracking_uri: str, experiment: str, status: str = "FINISHED") -> Store:
    """The runs of ``experiment`` in the store at ``tracking_uri`` (oldest first), by run name."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise LookupError(f"no experiment {experiment!r} in {tracking_uri}")
    runs = client.search_runs([exp.experiment_id], filter_string=f"attributes.status = '{status}'",
                              order_by=["attributes.start_time ASC"])
    return Store(exp.experiment_id, experiment, {r.info.run_name: r.info.run_id for r in runs},
                 {r.info.run_name: dict(r.data.metrics) for r in runs})


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def mlflow_executable() -> str:
    """The ``mlflow`` script of the running interpreter's environment."""
    local = Path(sys.executable).parent / "mlflow"
    return str(local) if local.exists() else (shutil.which("mlflow") or "mlflow")


def mlflow_ui_command(backend_uri: str, artifact_root: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    """``mlflow ui`` bound to one loopback port with a single worker."""
    return [
        mlflow_executable(), "ui",
        "--backend-store-uri", backend_uri,
        "--default-artifact-root", str(artifact_root),
        "--host", host,
        "--port", str(port),
        "--workers", "1",
    ]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server's whole process group (uvicorn may fork workers)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def mlflow_server(backend_uri: str, artifact_root: Path, log_path: Path,
                  start_timeout: float = 300.0) -> Iterator[str]:
    """Run ``mlflow ui`` on a free 127.0.0.1 port; yield its base URL; stop it on exit."""
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    cmd = mlflow_ui_command(backend_uri, artifact_root, port)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=artifact_root.parent, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while not _healthy(url):
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow ui exited with {proc.returncode}: {_tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow ui not healthy after {start_timeout:.0f}s: {_tail(log_path)}")
            time.sleep(0.25)
        yield url
    finally:
        _stop(proc)


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "<no log>"
