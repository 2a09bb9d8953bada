"""Reliability checks that need real processes: a real MLflow server on 127.0.0.1 with credentials
in its URI (every written file is grepped), two commands into one run directory, a kill during the
teacher-cache build, read-only and full directories (tmpfs; skipped with the reason where this
machine cannot mount one), and a stored Optuna study searched over another space.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from lad.testing.bad_input import Sandbox, run_entry, snapshot

SECRET = "Pw0rdZq91"


def _files_containing(root: Path, needle: str) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if needle.encode() in data:
                hits.append(str(path.relative_to(root)))
    return hits


def _one_error(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), \
        f"rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


def test_real_mlflow_server_never_receives_or_prints_the_password(tmp_path, tiny_glue, tiny_teacher):
    from lad.testing.ui_server import mlflow_server

    server_root = tmp_path / "server"
    server_root.mkdir()
    backend = f"sqlite:///{server_root / 'store.db'}"
    with mlflow_server(backend, server_root / "artifacts", tmp_path / "server.log", start_timeout=300) as url:
        uri = url.replace("http://", f"http://lad:{SECRET}@")
        sandbox = Sandbox(tmp_path / "job", tiny_glue, tiny_teacher, tiny_teacher)
        argv = [a for a in sandbox.distil(f"mlflow.tracking_uri={uri}", "mlflow.log_model=true",
                                          f"mlflow.artifact_location={tmp_path / 'run_artifacts'}")
                if a != "mlflow=off"]
        proc, _ = run_entry(argv)
        assert proc.returncode == 0, proc.stderr[-3000:]
        bad = run_entry(argv)[0]  # refused re-run (finished run): the error line is masked too
    out = proc.stdout + proc.stderr + bad.stdout + bad.stderr
    assert SECRET not in out, [line for line in out.splitlines() if SECRET in line]
    assert "lad:***@127.0.0.1" in bad.stderr or "already holds a finished run" in bad.stderr
    assert (sandbox.run_dir / "config.yaml").is_file() and (sandbox.run_dir / ".hydra" / "config.yaml").is_file()
    assert "lad:***@" in (sandbox.run_dir / "config.yaml").read_text()
    assert list((tmp_path / "run_artifacts").rglob("config.yaml")), "the config artifact was not logged"
    assert _files_containing(tmp_path, SECRET) == []


def test_printed_configurations_never_show_the_password(tmp_path, tiny_glue, tiny_teacher):
    """``--cfg job`` / ``--info config`` print the configuration before the app (and its masking) runs."""
    sandbox = Sandbox(tmp_path, tiny_glue, tiny_teacher, tiny_teacher)
    argv = sandbox.distil(f"mlflow.tracking_uri=http://lad:{SECRET}@127.0.0.1:9")[1:]
    for flags in (["--cfg", "job"], ["--info", "config"]):
        proc, _ = run_entry(["distil.py", *flags, *argv])
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert SECRET not in proc.stdout + proc.stderr
        assert "tracking_uri: http://lad:***@127.0.0.1:9" in proc.stdout, proc.stdout[-2000:]
    assert _files_containing(tmp_path, SECRET) == []


def test_two_commands_into_one_run_directory(tmp_path, tiny_glue, tiny_teacher):
    sandbox = Sandbox(tmp_path, tiny_glue, tiny_teacher, tiny_teacher)
    argv = [a for a in sandbox.distil() if a != "trainer.max_steps=2"] + ["trainer.max_steps=300"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.umask(0o022))
    try:
        deadline = time.monotonic() + 600
        while not (sandbox.run_dir / ".hydra" / "config.yaml").exists():  # written once the dir is claimed
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # holds the lock, mid-run
        before = snapshot(sandbox.run_dir)
        second, _ = run_entry(argv)
        line = _one_error(second)
        assert "is in use by another running command" in line, line
        assert snapshot(sandbox.run_dir) == before
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    assert (sandbox.run_dir / "metrics.json").is_file()
    # a finished run keeps the model and no resume checkpoint (trainer.keep_after_finish=0)
    assert (sandbox.run_dir / "model").is_dir() and not (sandbox.run_dir / "checkpoints").exists()
    # every output follows the user's umask (022 here): no 0700 folders, no 0600 weights
    modes = {str(p.relative_to(sandbox.root)): stat.S_IMODE(p.stat().st_mode)
             for p in sandbox.root.rglob("*") if not p.name.endswith(".lock")}
    wrong = {name: oct(mode) for name, mode in modes.items()
             if mode != (0o755 if (sandbox.root / name).is_dir() else 0o644)}
    assert any(name.endswith(".safetensors") for name in modes) and not wrong, wrong


KILL_DURING_BUILD = """
import os, runpy, signal, sys
import lad.method.teacher_store as store
calls = [0]
real = store.to_storage
def dying(*args, **kwargs):
    calls[0] += 1
    if calls[0] == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
store.to_storage = dying
sys.argv = sys.argv[1:]
runpy.run_path("distil.py", run_name="__main__")
"""


def test_kill_during_the_teacher_cache_build_then_rerun(tmp_path, tiny_glue, tiny_teacher):
    sandbox = Sandbox(tmp_path, tiny_glue, tiny_teacher, tiny_teacher)
    cache = tmp_path / "teacher_cache"
    argv = sandbox.distil(f"cache.dir={cache}", "cache.build_batch_size=8")
    script = tmp_path / "die.py"
    script.write_text(KILL_DURING_BUILD)
    killed, _ = run_entry([str(script), *argv])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert list(cache.rglob(".tmp-*")), "the kill did not land inside the build"
    assert not list(cache.rglob("manifest.json"))
    proc, _ = run_entry(argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(cache.rglob(".tmp-*")) and len(list(cache.rglob("manifest.json"))) == 1


@pytest.fixture
def tmpfs(tmp_path):
    """Mount small tmpfs folders (read-only or tiny); skip with the reason when this is impossible."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'mount failed'}): "
                        "read-only / full directory checks skipped")
        mounted.append(path)
        return path

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root: read-only / full directory checks skipped")
    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_read_only_and_full_directories_are_refused_before_training(tmp_path, tmpfs, tiny_glue, tiny_teacher):
    ro = tmpfs("ro", "size=1m,ro")
    full = tmpfs("full", "size=256k")
    sandbox = Sandbox(tmp_path / "s", tiny_glue, tiny_teacher, tiny_teacher)
    cases = [
        (sandbox.distil(f"data.cache_dir={ro}/features"), r"feature cache directory \S+ro/features is not writable"),
        (sandbox.distil(f"cache.dir={ro}/teacher"), r"teacher cache directory \S+ro/teacher is not writable"),
        ([a for a in sandbox.distil() if not a.startswith("hydra.run.dir")] + [f"hydra.run.dir={ro}/run"],
         r"output directory \S+ro/run is not writable \(Read-only file system\)"),
        ([a for a in sandbox.train_teacher() if not a.startswith("teacher.path")] + [f"teacher.path={ro}/t"],
         r"cannot create the run directory lock \S+ro/\.t\.lock: Read-only file system"),
        ([a for a in sandbox.distil() if not a.startswith("hydra.run.dir")] + [f"hydra.run.dir={full}/run"],
         r"not enough disk space for checkpoints and the model in \S+full/run"),
    ]
    import re

    for argv, pattern in cases:
        proc, _ = run_entry(argv)
        line = _one_error(proc)
        assert re.search(pattern, line), line
    assert not list(full.iterdir()) and not (sandbox.root / "outputs").exists()


def test_stored_study_over_another_space_is_one_error_and_leaves_no_running_trial(tmp_path, tiny_glue,
                                                                                  tiny_teacher):
    import optuna
    from optuna.distributions import FloatDistribution

    db = tmp_path / "optuna.db"
    study = optuna.create_study(study_name="space-test", storage=f"sqlite:///{db}", direction="maximize")
    study.add_trial(optuna.trial.create_trial(
        params={"optim.lr": 1e-4}, distributions={"optim.lr": FloatDistribution(1e-6, 1e-2, log=True)}, value=0.5))
    sandbox = Sandbox(tmp_path, tiny_glue, tiny_teacher, tiny_teacher)
    argv = ["distil.py", "-m", "hparams_search=lad_optuna", "hydra.sweeper.n_trials=3",
            f"hydra.sweeper.storage=sqlite:///{db}", "hydra.sweeper.study_name=space-test",
            f"hydra.sweep.dir={tmp_path / 'sweep'}", *sandbox.distil()[1:]]
    proc, _ = run_entry(argv)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "study 'space-test' in sqlite:///" in proc.stderr and "was searched over another space" in proc.stderr
    with sqlite3.connect(db) as con:
        states = [row[0] for row in con.execute("select state from trials")]
    assert states == ["COMPLETE"]


def test_make_ui_refuses_a_port_in_use():
    import socket

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(["make", "-s", "ui", f"UI_PORT={port}"], cwd=REPO, capture_output=True, text=True,
                              timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("make")]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert lines == [f"error: port {port} on 127.0.0.1 is already in use (its page may show another MLflow "
                     "store); stop that server or pass UI_PORT=<free port>"], proc.stderr
    assert "MLflow UI on" not in proc.stdout
