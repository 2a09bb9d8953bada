"""End-to-end on the real packaged MiniLM teacher and the real GLUE RTE files (a few steps)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO, SHARED_GLUE

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not (SHARED_GLUE / "RTE" / "train.tsv").is_file(),
                                 reason=f"real GLUE files not found at {SHARED_GLUE}")]


def _run(script: str, *args: str, tmp) -> subprocess.CompletedProcess:
    cmd = [sys.executable, script, "task=rte", f"paths.output_root={tmp / 'outputs'}",
           f"paths.artifacts={tmp / 'artifacts'}", f"paths.cache={tmp / 'cache'}",
           f"mlflow.tracking_uri=sqlite:///{tmp / 'mlruns.db'}", f"mlflow.artifact_location={tmp / 'mlartifacts'}",
           "data.max_train_samples=64", "data.max_eval_samples=48", "optim.batch_size=16",
           "trainer.progress=false", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)


def test_minilm_teacher_then_lad_student_on_real_rte(tmp_path):
    out = _run("train_teacher.py", "trainer.max_steps=4", tmp=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    teacher = tmp_path / "artifacts" / "teachers" / "minilm_l6" / "rte"
    meta = json.loads((teacher / "metrics.json").read_text())
    assert meta["task"] == "rte" and 0.0 <= meta["best"]["accuracy"] <= 1.0
    cfg = json.loads((teacher / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 6 and cfg["hidden_size"] == 384 and cfg["id2label"]["0"] == "entailment"
    # the submission file covers the whole RTE test split (3000 rows) with label strings
    run_dirs = [p for p in (tmp_path / "outputs" / "train_teacher" / "rte").iterdir() if p.is_dir()]  # not the .lock files
    sub = (run_dirs[0] / "predictions" / "RTE.tsv").read_text().splitlines()
    assert sub[0] == "index\tprediction" and set(l.split("\t")[1] for l in sub[1:]) <= {"entailment", "not_entailment"}

    out = _run("distil.py", "student=3layer", "trainer.max_steps=3", tmp=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "best dev accuracy" in out.stdout
    (run_dir,) = [p for p in (tmp_path / "outputs" / "distil" / "rte").iterdir() if p.is_dir()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 3 and "accuracy" in metrics["best"]
    gate_cfg = json.loads((run_dir / "gates" / "gate_config.json").read_text())
    assert gate_cfg["layer_map"] == [2, 4, 6] and gate_cfg["num_layers"] == 6
    student = json.loads((run_dir / "model" / "config.json").read_text())
    assert student["num_hidden_layers"] == 3 and student["hidden_size"] == 384
