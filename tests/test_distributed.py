"""torchrun with 2 CPU processes (gloo): same metrics as one process, only rank 0 records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, save_tiny_model


def _args(tmp: Path, teacher: Path, glue: Path, name: str) -> list[str]:
    return ["task=sst2", "teacher=local", f"teacher.path={teacher}", "student=2layer",
            f"data.data_dir={glue}", f"paths.cache={tmp / 'cache'}", f"output_dir={tmp / name}",
            f"hydra.run.dir={tmp / name}", f"mlflow.tracking_uri=sqlite:///{tmp / name}.db",
            f"mlflow.artifact_location={tmp / 'art'}", "mlflow.log_model=false", "mlflow.register_teacher=false",
            "trainer.progress=false", "optim.batch_size=16", "trainer.max_steps=6", "trainer.eval_every=3",
            "trainer.predict_test=false", "trainer.num_threads=1", "data.bucket=false", "cache.enabled=false",
            "trainer.keep_after_finish=1"]


@pytest.mark.slow
def test_torchrun_two_processes_match_one_and_only_rank0_writes(tmp_path, tiny_glue):
    teacher = save_tiny_model(tmp_path / "teacher", num_layers=4, dropout=0.0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "distil.py", *_args(tmp_path, teacher, tiny_glue, "single")],
                            cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = Path(sys.executable).parent / "torchrun"
    multi = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", "distil.py",
                            *_args(tmp_path, teacher, tiny_glue, "ddp")],
                           cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert multi.returncode == 0, multi.stderr[-3000:]
    one = json.loads((tmp_path / "single" / "metrics.json").read_text())
    two = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert two["steps"] == one["steps"] == 6
    assert [h["step"] for h in two["history"]] == [3, 6]
    for h1, h2 in zip(one["history"], two["history"]):
        assert h2["accuracy"] == pytest.approx(h1["accuracy"], abs=0.07)
    # one process printed the result line, one MLflow run, one set of checkpoints
    assert multi.stdout.count("[lad] distil sst2: best dev") == 1
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'ddp'}.db")
    exp = client.get_experiment_by_name("lad-sst2")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    # the train loss of the first step agrees (same global batch, gradients averaged by DDP)
    h1 = client.get_metric_history(runs[0].info.run_id, "train/loss")
    c1 = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'single'}.db")
    r1 = c1.search_runs([c1.get_experiment_by_name("lad-sst2").experiment_id])[0]
    h0 = c1.get_metric_history(r1.info.run_id, "train/loss")
    assert h1[0].value == pytest.approx(h0[0].value, rel=0.05)
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()) == ["step-6"]
