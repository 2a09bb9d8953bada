"""The best trial of ``distil.py -m hparams_search=...`` re-runs as printed; a resumed sweep's MLflow
parent shows its study's best (lad.search.rerun, the sweeper's optimization_results.yaml, lad.tracking.tracker)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from conftest import REPO
from lad.search.rerun import config_overrides, merge_overrides, rerun_command, value_text


def test_override_text_reads_back_and_search_keys_stay_out():
    assert [value_text(v) for v in (True, None, 0.5, 3, "a b", "x/y.csv", "null", [1, "k"])] == [
        "true", "null", "0.5", "3", "'a b'", "x/y.csv", "'null'", "[1,k]"]
    body = OmegaConf.create({"defaults": [{"override /hydra/sweeper": "lad_optuna"}, {"override /loss": "kd"}],
                             "loss": {"tie_hard_soft": True}, "hydra": {"sweeper": {"n_trials": 3}}})
    assert config_overrides(body) == ["loss=kd", "++loss.tie_hard_soft=true"]
    assert merge_overrides(["++loss.tie_hard_soft=true", "seed=1"], ["hparams_search=x", "seed=2", "n_trials=3"]) \
        == ["++loss.tie_hard_soft=true", "seed=2"]
    assert rerun_command("distil", ["data.train_file=my file.csv"]) == "python distil.py 'data.train_file=my file.csv'"


@pytest.mark.slow
def test_best_trial_of_the_sweeper_reruns_to_its_score_and_a_resumed_sweep_parent_shows_the_study_best(
        tmp_path, tiny_teacher, tiny_glue):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    common = ["task=sst2", "teacher=local", f"teacher.path={tiny_teacher}", "student=2layer",
              f"data.data_dir={tiny_glue}", f"paths.cache={tmp_path / 'cache'}", "trainer.progress=false",
              "optim.batch_size=16", "trainer.max_steps=3", "trainer.num_threads=1", "mlflow.log_model=false",
              "trainer.predict_test=false", "trainer.measure_inference=false"]
    sweep = ["hparams_search=lad_optuna", f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}",
             f"mlflow.tracking_uri={uri}", f"mlflow.artifact_location={tmp_path / 'art'}"]
    for total in (2, 3):  # a sweep, then the same command resumed with a larger study total
        out = subprocess.run([sys.executable, "distil.py", "-m", *common, *sweep, f"hydra.sweeper.max_trials={total}",
                              f"hydra.sweep.dir={tmp_path / f'sweep{total}'}"], cwd=REPO, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
    results = OmegaConf.load(tmp_path / "sweep3" / "optimization_results.yaml")
    overrides = list(results.best_overrides)
    # complete and self-contained: the search file's own setting, no hparams_search, no sweeper keys
    assert "++loss.tie_hard_soft=true" in overrides and f"teacher.path={tiny_teacher}" in overrides
    assert not [o for o in overrides if o.startswith(("hparams_search", "hydra."))]
    assert f"Re-run the best trial: {results.best_command}" in out.stdout + out.stderr
    argv = shlex.split(results.best_command)
    assert argv[:2] == ["python", "distil.py"]
    # as printed (python = this interpreter), plus where to write and no tracking
    rerun = subprocess.run([sys.executable, *argv[1:], f"hydra.run.dir={tmp_path / 'rerun'}", "mlflow=off"],
                           cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    metrics = json.loads((tmp_path / "rerun" / "metrics.json").read_text())
    trial_dir = next(tmp_path / f"sweep{n}" / str(results.best_trial) for n in (2, 3)
                     if (tmp_path / f"sweep{n}" / str(results.best_trial) / "metrics.json").is_file())
    trial = json.loads((trial_dir / "metrics.json").read_text())
    # the same score, and the same dev loss to the last digits (the tiny budget often ties accuracy)
    assert metrics["best"]["accuracy"] == pytest.approx(results.best_value, abs=1e-9)
    assert metrics["best"] == pytest.approx(trial["best"], abs=1e-6)

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("lad-sst2")
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`lad.kind` = 'sweep'")
    assert len(parents) == 2 and {p.info.run_name for p in parents} == {results.study_name}


def test_a_resumed_sweep_parent_shows_the_best_of_its_study_not_of_its_own_trials(tmp_path):
    from mlflow.tracking import MlflowClient

    from lad.tracking.parents import KIND_TAG, STUDY_TAG, SWEEP_TAG, update_sweep_parent

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    exp = client.create_experiment("e", artifact_location=str(tmp_path / "art"))

    def parent(sweep: str, study: str) -> str:
        return client.create_run(exp, run_name=study, tags={SWEEP_TAG: sweep, KIND_TAG: "sweep",
                                                           STUDY_TAG: study}).info.run_id

    def child(parent_id: str, score: float, overrides: list[str]):
        run_id = client.create_run(exp, tags={"mlflow.parentRunId": parent_id}).info.run_id
        tracker = type("T", (), {"client": client, "run_id": run_id})()
        update_sweep_parent(tracker, "x", score, "accuracy", overrides)
        return run_id

    first, other = parent("s1", "study-a"), parent("s0", "study-b")
    best_run = child(first, 0.8, ["optim.lr=1e-4"])
    child(other, 0.95, ["optim.lr=1e-3"])  # another study: not compared
    resumed = parent("s2", "study-a")
    child(resumed, 0.6, ["optim.lr=1e-5"])
    shown = client.get_run(resumed).data
    assert shown.metrics["best/accuracy"] == 0.8 and shown.tags["best.run_id"] == best_run
    assert shown.tags["best.overrides"] == "optim.lr=1e-4"
    child(resumed, 0.9, ["optim.lr=2e-4"])
    assert client.get_run(resumed).data.metrics["best/accuracy"] == 0.9
