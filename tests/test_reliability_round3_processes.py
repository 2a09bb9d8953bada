"""Reliability round 3 with real processes: a password planted in every URI-carrying option never
reaches the MLflow store, the Optuna database, the run folders or the output; SIGINT / SIGTERM end a
training command with one line, a resumable run directory and no temporary folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from lad.testing.bad_input import Sandbox, run_entry

SECRET = "Qz7plantedPw"


def _files_containing(root: Path, needle: str) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*")
            if needle in p.name or p.is_file() and needle.encode() in p.read_bytes()]


def test_a_password_in_each_uri_carrying_option_reaches_no_store_file_or_output(tmp_path, tiny_glue, tiny_teacher):
    sandbox = Sandbox(tmp_path / "job", tiny_glue, tiny_teacher, tiny_teacher)
    store = tmp_path / "mlruns.db"
    tracked = [a for a in sandbox.distil() if a != "mlflow=off"]
    planted = [f"mlflow.tracking_uri=sqlite:///{store}", f"mlflow.artifact_location={tmp_path / 'artifacts'}",
               f"mlflow.run_name=http://lad:{SECRET}@runs.example/x",
               f"mlflow.teacher_model_name=postgresql://lad:{SECRET}@db.example/x",
               f"+notes.endpoint='https://lad:{SECRET}@notes.example/?token={SECRET}'"]
    sweep = ["distil.py", "-m", "hparams_search=lad_optuna", "hydra.sweeper.n_trials=1",
             f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
             *tracked[1:], *planted, "mlflow.log_model=false"]
    env = {"DATABASE_URL": f"postgresql://lad:{SECRET}@db.example/x"}
    proc, _ = run_entry(sweep, env_extra=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    # the artifact location itself: refused with one line, the password masked
    bad, _ = run_entry([*tracked, *planted[:1], f"mlflow.artifact_location='s3://bucket/x?secret_key={SECRET}'"],
                       env_extra=env)
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 2 and len(lines) == 1, bad.stderr[-3000:]
    assert lines[0].startswith("error: mlflow.artifact_location=s3://bucket/x?secret_key=*** holds a password")
    out = proc.stdout + proc.stderr + bad.stdout + bad.stderr
    assert SECRET not in out, [line for line in out.splitlines() if SECRET in line]
    assert (tmp_path / "optuna.db").is_file() and store.is_file() and list((tmp_path / "artifacts").rglob("*.yaml"))
    assert _files_containing(tmp_path, SECRET) == []
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(f"sqlite:///{store}").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{store}").search_experiments()])
    assert "http://lad:***@runs.example/x" in {r.info.run_name for r in runs}


def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_ends_training_with_one_line_a_resumable_run_and_no_temporary_folder(
        tmp_path, tiny_glue, tiny_teacher, signum):
    sandbox = Sandbox(tmp_path, tiny_glue, tiny_teacher, tiny_teacher)
    argv = [a for a in sandbox.distil("trainer.ckpt_every=1", "trainer.eval_every=1000", "task.max_seq_length=8")
            if a != "trainer.max_steps=2"] + ["trainer.max_steps=100000", "trainer.keep_checkpoints=2"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR" and not k.startswith("MLFLOW_")}
    env.update({"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    proc = subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ckpts = sandbox.run_dir / "checkpoints"
    try:
        assert _wait_for(lambda: len(list(ckpts.glob("step-*"))) >= 1 or proc.poll() is not None, 600)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in out + err and len(lines) == 1, err[-3000:]
    name = signal.Signals(signum).name
    assert lines[0].startswith(f"error: interrupted by {name}; ") and "continue with trainer.resume=true" in lines[0]
    leftovers = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob(".*tmp*")]
    assert leftovers == [] and not list(ckpts.glob(".tmp-step-*"))
    from lad.run import checkpoint as ckpt

    newest = ckpt.latest_intact(ckpts)
    assert newest is not None and ckpt.load_latest(ckpts)[2] == newest  # resumable: the newest loads
    assert not (sandbox.run_dir / "metrics.json").exists()
    # distil.log holds what was logged before it opened too (the truncation warning of the data loading)
    assert "were truncated" in (sandbox.run_dir / "distil.log").read_text()
