"""MLflow records: params, metrics, tags, registry, failures, resume, sweeps, a real tracking server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, compose, save_tiny_model


def _cfg(name, tmp: Path, uri: str, *extra: str):
    return compose(name, [
        "task=sst2", f"paths.cache={tmp / 'cache'}", f"mlflow.tracking_uri={uri}",
        f"mlflow.artifact_location={tmp / 'mlartifacts'}", "trainer.progress=false",
        "optim.batch_size=16", "trainer.max_steps=4", "trainer.eval_every=2", *extra,
    ])


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _runs(uri, experiment="lad-sst2"):
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"]) if exp else []


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_glue):
    """A sqlite store holding a registered tiny teacher and a distillation run from it."""
    from lad.run.pipeline import run

    tmp = tmp_path_factory.mktemp("mlstore")
    uri = f"sqlite:///{tmp / 'mlruns.db'}"
    backbone = save_tiny_model(tmp / "backbone", num_layers=4)
    run(_cfg("train_teacher", tmp, uri, "teacher=local", f"teacher.backbone={backbone}",
             f"teacher.path={tmp / 'teacher'}", f"data.data_dir={tiny_glue}", f"output_dir={tmp / 'out_t'}"))
    run(_cfg("distil", tmp, uri, "teacher=mlflow", "teacher.uri=models:/lad-teacher-sst2/1", "student=2layer",
             f"data.data_dir={tiny_glue}", f"output_dir={tmp / 'out_d'}"))
    return tmp, uri


def test_teacher_and_distil_runs_are_recorded(store):
    tmp, uri = store
    runs = _runs(uri)
    assert [r.data.tags["lad.entry"] for r in runs] == ["train_teacher", "distil"]
    teacher_run, distil_run = runs
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.tags["mlflow.source.git.commit"]
        assert {"train/loss", "train/hard", "dev/accuracy", "best/accuracy", "train_examples_per_s",
                "peak_rss_mb"} <= set(r.data.metrics)
        assert r.data.params["task.name"] == "sst2" and r.data.params["seed"] == "42"
    assert distil_run.data.tags["lad.method"] == "lad/2layer"
    p = distil_run.data.params
    assert (p["gate.name"], p["loss.name"], p["student.num_layers"], p["student.layer_map"]) == ("lad", "lad", "2", "2,4")
    assert {"loss.temperature", "loss.hidden_weight", "optim.lr", "optim.gate_lr"} <= set(p)
    assert {"train/soft", "train/hidden"} <= set(distil_run.data.metrics)
    history = _client(uri).get_metric_history(distil_run.info.run_id, "dev/accuracy")
    assert [m.step for m in history] == [2, 4]
    artifacts = {a.path for a in _client(uri).list_artifacts(distil_run.info.run_id)}
    assert {"metrics.json", "config.yaml", "predictions", "gates"} <= artifacts


def test_runs_log_at_most_40_params_and_every_param_as_an_artifact(store):
    """The MLflow UI opens on what describes a run (lad.tracking.tracker.UI_PARAMS); the rest of the
    resolved config is the params.json artifact, which the export reads (same records as before)."""
    import json

    from sweeps.export import load_mlflow_records

    tmp, uri = store
    client = _client(uri)
    for run in _runs(uri):
        assert len(run.data.params) <= 40
        full = json.loads(Path(client.download_artifacts(run.info.run_id, "params.json", str(tmp))).read_text())
        assert len(full) > 60 and {k: full[k] for k in run.data.params} == run.data.params
        assert "optim.max_grad_norm" in full and "optim.max_grad_norm" not in run.data.params
    distil_params = _runs(uri)[1].data.params
    assert {"task.name", "seed", "gate.name", "loss.temperature", "optim.lr", "optim.gate_lr", "trainer.max_steps",
            "teacher.path", "student.name", "loss.hidden_weight", "cache.enabled"} <= set(distil_params)
    exported = {r["entry"]: r for r in load_mlflow_records(uri)}
    assert exported["distil"]["params"]["optim.max_grad_norm"] == full["optim.max_grad_norm"]


def test_teacher_is_registered_and_distil_loaded_it_from_the_registry(store):
    tmp, uri = store
    versions = _client(uri).search_model_versions("name='lad-teacher-sst2'")
    assert [str(v.version) for v in versions] == ["1"]
    distil_run = _runs(uri)[1]
    assert distil_run.data.params["teacher.source"] == "mlflow"
    assert distil_run.data.params["teacher.uri"] == "models:/lad-teacher-sst2/1"


def test_failed_run_is_marked_failed_with_the_error(tmp_path, tiny_teacher, tiny_glue, monkeypatch):
    from lad.run.pipeline import run

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"

    def boom(self, resume=False):
        raise RuntimeError("simulated crash in the loop")

    monkeypatch.setattr("lad.run.train.Trainer.fit", boom)
    with pytest.raises(RuntimeError):
        run(_cfg("distil", tmp_path, uri, "teacher=local", f"teacher.path={tiny_teacher}", "student=2layer",
                 f"data.data_dir={tiny_glue}", f"output_dir={tmp_path / 'out'}"))
    (failed,) = _runs(uri)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["error"] == "RuntimeError: simulated crash in the loop"


def test_interrupted_run_resumes_in_the_same_mlflow_run(tmp_path, tiny_teacher, tiny_glue, monkeypatch):
    import lad.run.evaluation as evaluation
    import lad.run.pipeline as pipeline

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    real_batch_of = evaluation.batch_of
    calls = {"n": 0}

    def interrupt_at_5(features, idx, pad_to=None):
        if len(idx) == 16:  # training batches only (evaluation, gate probes and caches batch differently)
            calls["n"] += 1
            if calls["n"] == 5:
                raise KeyboardInterrupt
        return real_batch_of(features, idx, pad_to)

    args = ("teacher=local", f"teacher.path={tiny_teacher}", "student=2layer", f"data.data_dir={tiny_glue}",
            f"output_dir={tmp_path / 'out'}", "trainer.max_steps=6", "trainer.ckpt_every=2")
    monkeypatch.setattr(evaluation, "batch_of", interrupt_at_5)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(_cfg("distil", tmp_path, uri, *args))
    (first,) = _runs(uri)
    assert first.info.status == "KILLED"
    monkeypatch.setattr(evaluation, "batch_of", real_batch_of)
    pipeline.run(_cfg("distil", tmp_path, uri, *args, "trainer.resume=true"))
    (again,) = _runs(uri)
    assert again.info.run_id == first.info.run_id and again.info.status == "FINISHED"
    steps = [m.step for m in _client(uri).get_metric_history(again.info.run_id, "dev/accuracy")]
    assert steps == [2, 4, 6]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc, timeout: float = 90.0) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


@pytest.mark.e2e
def test_runs_against_a_real_mlflow_server(tmp_path, tiny_teacher, tiny_glue):
    from lad.run.pipeline import run

    port = _free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        uri = f"http://127.0.0.1:{port}"
        _wait_http(uri + "/health", server)
        run(compose("distil", [
            "task=sst2", "teacher=local", f"teacher.path={tiny_teacher}", "student=2layer",
            f"data.data_dir={tiny_glue}", f"paths.cache={tmp_path / 'cache'}", f"output_dir={tmp_path / 'out'}",
            f"mlflow.tracking_uri={uri}", "mlflow.artifact_location=null", "trainer.progress=false",
            "optim.batch_size=16", "trainer.max_steps=2"]))
        (recorded,) = _runs(uri)
        assert recorded.info.status == "FINISHED" and "best/accuracy" in recorded.data.metrics
        assert "metrics.json" in {a.path for a in _client(uri).list_artifacts(recorded.info.run_id)}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_multirun_jobs_are_children_of_one_sweep_run(tmp_path, tiny_teacher, tiny_glue, launcher):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    extra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    cmd = [sys.executable, "distil.py", "-m", *extra, "task=sst2", "seed=1,2", "teacher=local",
           f"teacher.path={tiny_teacher}", "student=2layer", f"data.data_dir={tiny_glue}",
           f"paths.cache={tmp_path / 'cache'}", f"paths.output_root={tmp_path / 'outputs'}",
           f"mlflow.tracking_uri={uri}", f"mlflow.artifact_location={tmp_path / 'art'}",
           "trainer.progress=false", "optim.batch_size=16", "trainer.max_steps=2", "mlflow.log_model=false"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = _runs(uri)
    parents = [r for r in runs if r.data.tags.get("lad.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert sorted(c.data.params["seed"] for c in children) == ["1", "2"]
    best_child = max(children, key=lambda c: c.data.metrics["best/accuracy"])
    assert parents[0].data.metrics["best/accuracy"] == best_child.data.metrics["best/accuracy"]
    assert parents[0].data.tags["best.run_id"] in {c.info.run_id for c in children}


@pytest.mark.slow
def test_seed_multirun_children_are_grid_cells_and_optuna_trials_are_trials(tmp_path, tiny_teacher, tiny_glue):
    """A seed multirun and an Optuna sweep side by side in one store: the ablation driver and the
    report (one definition, sweeps/kinds.py) count the seed children as cells, never as trials, and
    the trials as trials, never as cells (both kinds have a parent run)."""
    from sweeps import ablation, export
    from sweeps.kinds import is_grid_cell, is_sweep_trial
    from sweeps.reporting.grouping import build_report

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    common = ["task=sst2", "teacher=local", f"teacher.path={tiny_teacher}", "student=2layer",
              f"data.data_dir={tiny_glue}", f"paths.cache={tmp_path / 'cache'}",
              f"paths.output_root={tmp_path / 'outputs'}", f"mlflow.tracking_uri={uri}",
              f"mlflow.artifact_location={tmp_path / 'art'}", "trainer.progress=false", "optim.batch_size=16",
              "trainer.max_steps=2", "mlflow.log_model=false", "trainer.predict_test=false"]
    commands = [["seed=1,2", f"hydra.sweep.dir={tmp_path / 'seeds'}"],
                ["hparams_search=lad_optuna", "seed=1", "hydra.sweeper.max_trials=2",
                 f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}", f"hydra.sweep.dir={tmp_path / 'search'}"]]
    found = []
    for extra in commands:  # the seed multirun's children first, then the sweep's trials
        out = subprocess.run([sys.executable, "distil.py", "-m", *common, *extra], cwd=REPO, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        seen = {r["run_id"] for batch in found for r in batch}
        found.append([r for r in export.load_mlflow_records(uri) if r["run_id"] not in seen])
    seeds, trials = found
    records = seeds + trials
    assert len(seeds) == 2 and len(trials) == 2 and all(r["tags"].get("mlflow.parentRunId") for r in records)
    assert all(is_grid_cell(r) and not is_sweep_trial(r) for r in seeds)
    assert all(is_sweep_trial(r) and not is_grid_cell(r) for r in trials)
    # the ablation driver: cell lad/2layer seed=1 is done by the seed child, never by a trial of seed 1
    cell = ablation.Cell("sst2", "lad", "lad", "lad", "2layer", 1, ())
    planned = [ablation.PlannedCell(cell, {}, "lad-sst2", uri, tmp_path / "x", tmp_path / "x.log")]
    ablation.mark_done(planned, trials)
    assert planned[0].done_by is None
    ablation.mark_done(planned, records)
    assert planned[0].done_by in {r["run_id"] for r in seeds}
    # the report: the seed runs fill the LAD row, the trials the sweep section (not fANOVA over seed runs)
    rep = build_report(records)
    (table,) = rep.tables
    assert [(r.method, r.student, sorted(r.scores)) for r in table.rows] == [("lad", "2layer", [1, 2])]
    (group,) = rep.sweeps
    assert len(group.trials) == 2 and group.label.startswith("lad/2layer")


def test_sigterm_ends_the_mlflow_run_killed(tmp_path, tiny_teacher, tiny_glue):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    cmd = [sys.executable, "distil.py", "task=sst2", "teacher=local", f"teacher.path={tiny_teacher}",
           "student=2layer", f"data.data_dir={tiny_glue}", f"paths.cache={tmp_path / 'cache'}",
           f"output_dir={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'out'}", f"mlflow.tracking_uri={uri}",
           f"mlflow.artifact_location={tmp_path / 'art'}", "trainer.progress=false", "optim.batch_size=16",
           "trainer.max_steps=100000", "trainer.ckpt_every=0", "trainer.eval_every=0", "trainer.num_threads=1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (tmp_path / "out" / "mlflow_run_id").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-2000:]
        time.sleep(0.5)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    (run,) = _runs(uri)
    # (seen once in CI: the run stayed RUNNING; the child's stderr says where the signal landed)
    assert run.info.status == "KILLED", err[-3000:]
    assert run.data.tags["error"] == "Interrupted: interrupted by SIGTERM"


def test_logged_student_loads_offline_as_a_pyfunc_model(store):
    import mlflow
    import pandas as pd

    tmp, uri = store
    distil_run = _runs(uri)[1]
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(f"runs:/{distil_run.info.run_id}/model")
    finally:
        mlflow.set_tracking_uri(None)
    preds = model.predict(pd.DataFrame({"text_a": ["a good film", "an awful film"]}))
    assert list(preds) and set(preds) <= {"negative", "positive"}  # SST-2's label_names


def test_logged_models_carry_a_signature_and_an_input_example(store):
    import mlflow

    tmp, uri = store
    mlflow.set_tracking_uri(uri)
    try:
        for model_uri in ("models:/lad-teacher-sst2/1", f"runs:/{_runs(uri)[1].info.run_id}/model"):
            info = mlflow.models.get_model_info(model_uri)
            assert info.signature is not None, model_uri
            assert info.signature.inputs.input_names() == ["text_a"]  # SST-2: single sentences
            assert info.signature.outputs.to_dict()[0]["type"] == "string"  # label names
            assert info.saved_input_example_info is not None, model_uri
    finally:
        mlflow.set_tracking_uri(None)


def test_the_pyfunc_wrapper_raises_no_type_hint_warning():
    code = "import warnings; warnings.simplefilter('always'); import lad.tracking.mlflow_model"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "type hint" not in out.stderr.lower(), out.stderr[-2000:]


def test_deploy_a_registered_model_and_log_the_export_to_its_run(store, tiny_glue, capsys):
    from lad.deploy.export import main

    tmp, uri = store
    assert main(["models:/lad-teacher-sst2/1", "--onnx", "--tracking-uri", uri, "--out", str(tmp / "export"),
                 "--data-dir", str(tiny_glue), "--latency-runs", "3", "--throughput-examples", "16"]) == 0
    assert "logged the export to MLflow run" in capsys.readouterr().out
    teacher_run = _runs(uri)[0]
    client = _client(uri)
    exported = {a.path for a in client.list_artifacts(teacher_run.info.run_id, "export")}
    assert {"export/model.onnx", "export/README.md", "export/deploy.json"} <= exported
    metrics = client.get_run(teacher_run.info.run_id).data.metrics
    assert metrics["deploy/onnxruntime-fp32/score"] == metrics["deploy/pytorch-fp32/score"]
    card = (tmp / "export" / "README.md").read_text()
    assert "train_teacher.py (fine-tuned teacher)" in card and "models:/lad-teacher-sst2/1" in card


def test_runs_are_named_described_and_carry_datasets_plots_and_the_ablation_table(store):
    """What the MLflow UI shows (lad.tracking.run_record): readable names, the command as description,
    train/dev datasets as inputs (the Dataset column), plot artifacts, the experiment's table."""
    tmp, uri = store
    client = _client(uri)
    teacher_run, distil_run = _runs(uri)
    assert teacher_run.info.run_name == "teacher/local sst2 seed=42"
    assert distil_run.info.run_name == "lad/2layer sst2 seed=42"
    assert distil_run.data.tags["mlflow.note.content"] == "Command: `python distil.py`"
    inputs = client.get_run(distil_run.info.run_id).inputs.dataset_inputs
    by_context = {i.tags[0].value: i.dataset for i in inputs}
    assert by_context["train"].name == "sst2/train" and by_context["eval"].name == "sst2/dev"
    assert by_context["train"].source_type == "local" and "SST-2/train.tsv" in by_context["train"].source
    plots = {a.path for a in client.list_artifacts(distil_run.info.run_id, "plots")}
    assert plots == {"plots/learning_curve.png", "plots/gates.png"}
    assert {a.path for a in client.list_artifacts(teacher_run.info.run_id, "plots")} == {"plots/learning_curve.png"}
    note = client.get_experiment(distil_run.info.experiment_id).tags["mlflow.note.content"]
    table = note[note.index("| method"):].splitlines()
    assert table[0] == "| method | budget | runs | mean dev accuracy | best |"
    best = distil_run.data.metrics["best/accuracy"]
    assert table[2] == f"| lad/2layer | 4 steps | 1 | {best:.4f} | {best:.4f} |"
    assert table[3].startswith("| teacher | 4 steps | 1 |")


def test_an_extended_budget_keeps_the_first_param_and_tags_the_change(tmp_path):
    """MLflow params cannot change: a resumed run whose budget grew says so in a tag."""
    import json as _json

    import mlflow
    from mlflow.tracking import MlflowClient

    from lad.tracking.tracker import PARAMS_ARTIFACT, MlflowTracker

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("x", artifact_location=str(tmp_path / "art"))
    run = client.create_run(exp)
    tracker = MlflowTracker(mlflow, run, client)
    tracker.log_params({"trainer.max_steps": 4, "trainer.epochs": 3, "seed": 1})
    tracker.log_params({"trainer.max_steps": 6, "trainer.epochs": 3, "seed": 1})
    data = client.get_run(run.info.run_id).data
    assert data.params["trainer.max_steps"] == "4"
    assert data.tags["lad.extended.trainer.max_steps"] == "4 -> 6" and "lad.extended.trainer.epochs" not in data.tags
    path = client.download_artifacts(run.info.run_id, PARAMS_ARTIFACT, str(tmp_path / "dl"))
    assert _json.loads(Path(path).read_text())["trainer.max_steps"] == "6"

def test_a_signal_inside_a_store_write_waits_until_the_write_has_committed(tmp_path):
    """SIGTERM raised inside a SQLite commit left that connection holding the write lock, and the run's
    last writes (status KILLED, the error tag) failed with "database is locked" (seen in CI). A tracker
    write now holds the signal until it returns; the run then ends KILLED on the same store."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from lad.core import signals
    from lad.tracking.tracker import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("x", artifact_location=str(tmp_path / "art")))
    tracker = MlflowTracker(mlflow, run, client)
    real_log_batch = client.log_batch

    def log_batch_then_signal(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # lands while the write is in flight
        time.sleep(0.05)
        return real_log_batch(*args, **kwargs)

    client.log_batch = log_batch_then_signal
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signals.install()
    try:
        with pytest.raises(signals.Interrupted):
            tracker.log_metrics({"train/loss": 1.5}, step=3)
        client.log_batch = real_log_batch
        tracker.end(status="KILLED", error="Interrupted: interrupted by SIGTERM")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    data = client.get_run(run.info.run_id)
    assert data.data.metrics == {"train/loss": 1.5}  # the write finished before the signal acted
    assert data.info.status == "KILLED" and data.data.tags["error"].startswith("Interrupted")


def test_every_experiment_gets_the_lad_view_with_the_dev_metric_and_key_params_first(store, capsys):
    """MLflow's runs table cannot be given default columns by the server: the experiment holds a
    saved view (an ``mlflow.sharedViewState.*`` tag, as the UI's Views menu writes it) that starts
    with the dev metric, sorts on it, shows the key params and fits the run names."""
    import json

    from lad.tracking.run_record import VIEW_NAME, VIEW_TAG, main, runs_view_url

    tmp, uri = store
    distil_run = _runs(uri)[1]
    exp = _client(uri).get_experiment(distil_run.info.experiment_id)
    envelope = json.loads(exp.tags[VIEW_TAG])
    assert envelope["name"] == VIEW_NAME and isinstance(envelope["createdAt"], int)
    state = json.loads(envelope["state"])  # the UI reads the state as a JSON string
    assert state["selectedColumns"][:4] == ["metrics.`best/accuracy`", "params.`student.name`", "params.`gate.name`",
                                            "params.`loss.name`"]
    assert state["columnOrder"] == ["attributes.`Run Name`", *state["selectedColumns"]]
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`best/accuracy`", False)
    assert set(state["selectedColumns"]) - {"attributes.`Dataset`"} <= {
        f"metrics.`{k}`" for k in distil_run.data.metrics} | {f"params.`{k}`" for k in distil_run.data.params}
    names = [r.info.run_name for r in _runs(uri)]
    assert state["columnWidths"]["attributes.`Run Name`"] >= 8 * max(map(len, names))
    name_col = state["columnOrder"][0]
    assert all(w >= 8 * len(col.split("`")[1]) for col, w in state["columnWidths"].items() if col != name_col)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the runs table, not GenAI traces

    assert main(["--tracking-uri", uri, "--url", "http://127.0.0.1:5123"]) == 0
    link = runs_view_url("http://127.0.0.1:5123", exp.experiment_id)
    assert link == f"http://127.0.0.1:5123/#/experiments/{exp.experiment_id}/runs?viewStateShareKey=lad"
    assert f"  lad-sst2: {link}" in capsys.readouterr().out.splitlines()
    assert main(["--tracking-uri", f"sqlite:///{tmp / 'none.db'}"]) == 0 and not (tmp / "none.db").exists()
    assert "No LAD runs in this store yet" in capsys.readouterr().out


def test_the_view_is_rewritten_only_when_it_changes(tmp_path):
    import json

    from lad.tracking.run_record import VIEW_TAG, save_runs_view

    client = _client(f"sqlite:///{tmp_path / 'm.db'}")
    exp = client.create_experiment("e", artifact_location=str(tmp_path / "art"))
    run = client.create_run(exp, run_name="lad/3layer rte seed=1")
    tracker = type("T", (), {"client": client, "run": run})()
    first = save_runs_view(tracker, "accuracy")
    written = client.get_experiment(exp).tags[VIEW_TAG]
    assert save_runs_view(tracker, "accuracy") == first and client.get_experiment(exp).tags[VIEW_TAG] == written
    client.create_run(exp, run_name="kd/3layer rte seed=1 loss.temperature=4 optim.lr=0.0001 trainer.max_steps=800")
    wider = save_runs_view(tracker, "accuracy")
    assert wider["columnWidths"]["attributes.`Run Name`"] > first["columnWidths"]["attributes.`Run Name`"]
    assert json.loads(client.get_experiment(exp).tags[VIEW_TAG])["createdAt"] == json.loads(written)["createdAt"]
    client.set_experiment_tag(exp, "mlflow.experimentKind", "genai_development")  # the user's choice stays
    save_runs_view(tracker, "f1")
    assert client.get_experiment(exp).tags["mlflow.experimentKind"] == "genai_development"


def test_sweep_parents_are_named_after_their_study(tmp_path):
    from lad.tracking.parents import KIND_TAG, ensure_sweep_parent

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    cfg = compose("distil", ["task=sst2", f"mlflow.tracking_uri={uri}", f"mlflow.artifact_location={tmp_path / 'a'}"])
    parent = ensure_sweep_parent(cfg, "search:lad-sst2-search")
    assert ensure_sweep_parent(cfg, "search:lad-sst2-search") == parent  # its workers share one parent
    run = _client(uri).get_run(parent)
    assert run.info.run_name == "lad-sst2-search" and run.data.tags[KIND_TAG] == "sweep"
    plain = _client(uri).get_run(ensure_sweep_parent(cfg, str(tmp_path / "multirun" / "12-00-00")))
    assert plain.info.run_name == "sweep-12-00-00"  # a multirun without a study
