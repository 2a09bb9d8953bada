"""Reliability round 3, checked in-process (fast): nothing outside the named run is touched, no secret
reaches MLflow or Optuna, signals and damaged checkpoints, inputs checked before training, values that
used to be accepted and then crash, and the results export's filter.

The real-process checks of the same classes (entry points, signals) are in
tests/test_reliability_round3_processes.py; the one-line errors are rows of tests/test_bad_input.py.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose
from lad.core.errors import ConfigError, DataError, LADError


def _train_teacher_cfg(tmp: Path, glue: Path, backbone: Path, *extra: str):
    return compose("train_teacher", [
        "task=sst2", "teacher=local", f"teacher.backbone={backbone}", f"teacher.path={tmp / 'teacher'}",
        f"data.data_dir={glue}", f"paths.cache={tmp / 'cache'}", f"output_dir={tmp / 'run'}", "mlflow=off",
        "trainer.progress=false", "trainer.max_steps=1", "trainer.predict_test=false", *extra])


def _published_teacher(path: Path, name: str = "sst2") -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"weights")
    (path / "lad_teacher.json").write_text(json.dumps({"teacher": "minilm_l6", "task": name}))
    (path / "metrics.json").write_text('{"best": {"accuracy": 0.9}}')
    return path


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- 1. paths and kinds
@pytest.mark.parametrize("key, value, problem", [
    ("task.name", "", "is empty"), ("task.name", "..", "is '..'"), ("task.name", "../../x", "contains a '/' or"),
    ("task.name", ".hidden", "starts with '.'"), ("teacher.name", "a/b", "contains a '/' or"),
    ("teacher.name", " ", "is empty"),
])
def test_every_name_that_becomes_a_path_segment_is_one_plain_folder_name(key, value, problem):
    from lad.run.checks import validate_common

    cfg = compose("distil", ["teacher=local", "teacher.path=/nowhere"])
    OmegaConf.update(cfg, key, value)
    with pytest.raises(ConfigError, match=rf"^{key}=.* {problem}.*: it names a folder"):
        validate_common(cfg)
    OmegaConf.update(cfg, key, "fine_name-1")
    validate_common(cfg)


def test_a_run_never_writes_into_a_published_teacher_nor_replaces_another_kind_of_run(tmp_path):
    from lad.run.rundir import check_run_target

    teacher = _published_teacher(tmp_path / "teachers" / "minilm_l6" / "sst2")
    for entry in ("distil", "train_teacher"):
        with pytest.raises(ConfigError, match=r"holds a published teacher, not a run directory"):
            check_run_target(teacher, entry)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"entry": "train_teacher", "best": {}}))
    with pytest.raises(ConfigError, match=r"holds a train_teacher run, not a distil run"):
        check_run_target(run, "distil")
    check_run_target(run, "train_teacher")
    check_run_target(tmp_path / "fresh", "distil")


def test_a_teacher_replaces_only_a_teacher(tmp_path):
    from lad.run.rundir import check_teacher_target

    teachers = tmp_path / "teachers" / "minilm_l6"
    _published_teacher(teachers / "sst2")
    _published_teacher(teachers / "rte", "rte")
    # an empty task.name used to make teacher.path the folder of every published teacher
    with pytest.raises(ConfigError, match=r"holds other files, not a published teacher"):
        check_teacher_target(teachers, overwrite=True)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"holds a run, not a published teacher"):
        check_teacher_target(run, overwrite=True)
    with pytest.raises(ConfigError, match=r"already holds a fine-tuned teacher.*pass overwrite=true"):
        check_teacher_target(teachers / "sst2", overwrite=False)
    check_teacher_target(teachers / "sst2", overwrite=True)
    check_teacher_target(teachers / "qnli", overwrite=False)


def test_teacher_path_and_run_directory_must_not_overlap(tmp_path):
    from lad.run.rundir import check_apart

    for teacher in (tmp_path / "run", tmp_path / "run" / "model", tmp_path):
        with pytest.raises(ConfigError, match=r"overlap"):
            check_apart(tmp_path / "run", teacher)
    check_apart(tmp_path / "run", tmp_path / "teacher")


def test_a_teacher_being_published_is_locked_against_a_second_run(tmp_path, tiny_glue, tiny_teacher):
    """Two train_teacher.py runs into one teacher.path: the second stops at once (before any training)."""
    from lad.run.pipeline import run
    from lad.run.rundir import claim

    cfg = _train_teacher_cfg(tmp_path, tiny_glue, tiny_teacher)
    with claim(tmp_path / "teacher", "teacher.path"):  # the first run, still training
        with pytest.raises(ConfigError, match=r"^teacher\.path \S+ is in use by another running command"):
            run(cfg)
    assert not (tmp_path / "teacher").exists() and not (tmp_path / "run").exists()


def test_atomic_dir_puts_the_old_folder_back_when_the_swap_fails(tmp_path, monkeypatch):
    from lad.core import fileio

    final = tmp_path / "teacher"
    final.mkdir()
    (final / "weights").write_text("old")
    real = os.replace
    calls = []

    def flaky(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the old folder was set aside; the new one cannot be moved in
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(fileio.os, "replace", flaky)
    with pytest.raises(OSError):
        fileio.atomic_dir(final, lambda tmp: (tmp / "weights").write_text("new"))
    assert _tree(tmp_path) == {"teacher/weights": b"old"}


# ----------------------------------------------------------------------------- 2. secrets
SECRET = "Pw9planted"


def test_artifact_location_with_a_password_is_refused_and_run_names_are_masked(tmp_path):
    from lad.tracking.store import check_stored_strings
    from lad.tracking.tracker import make_tracker

    mcfg = OmegaConf.create({"artifact_location": f"s3://bucket/x?secret_key={SECRET}"})
    with pytest.raises(ConfigError, match=r"mlflow\.artifact_location=s3://bucket/x\?secret_key=\*\*\* holds a "
                                          r"password or key") as err:
        check_stored_strings(mcfg)
    assert SECRET not in str(err.value)
    db = tmp_path / "m.db"
    cfg = OmegaConf.create({"mlflow": {
        "enabled": True, "tracking_uri": f"sqlite:///{db}", "artifact_location": str(tmp_path / "art"),
        "experiment": f"lad-http://u:{SECRET}@h/x", "run_name": f"see http://u:{SECRET}@host/db"}})
    tracker = make_tracker(cfg, {"lad.note": f"postgresql://u:{SECRET}@h/db"})
    tracker.end()
    assert tracker.run.info.run_name == "see http://u:***@host/db"
    assert SECRET.encode() not in db.read_bytes()


# ----------------------------------------------------------------------------- 5. stores
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_artifact_store_that_is_down_is_found_before_training_in_seconds(tmp_path):
    from lad.tracking.store import check_artifact_store, connect

    mcfg = OmegaConf.create({"tracking_uri": f"sqlite:///{tmp_path / 'm.db'}", "experiment": "lad-store",
                             "artifact_location": f"http://127.0.0.1:{_closed_port()}/artifacts"})
    connect(mcfg)
    t0 = time.monotonic()
    with pytest.raises(LADError, match=r"^cannot write to the MLflow artifact store http://127\.0\.0\.1:\d+/artifacts"):
        check_artifact_store(mcfg, timeout=20)
    assert time.monotonic() - t0 < 25
    check_artifact_store(OmegaConf.create({"experiment": "lad-local", "artifact_location": str(tmp_path / "a")}))


def test_optuna_storage_in_a_read_only_folder_is_one_line(tmp_path, monkeypatch):
    from lad.core import preflight
    from lad.core.errors import StudyError
    from lad.search.studies import lock_path

    def read_only(*args, **kwargs):  # as on a read-only mount (root ignores a folder's mode bits)
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(preflight.tempfile, "TemporaryFile", read_only)
    with pytest.raises(StudyError, match=r"^Optuna storage folder \S+ is not writable \(Read-only file system\)"):
        lock_path(f"sqlite:///{tmp_path}/ro/optuna.db")
    assert not (tmp_path / "ro").exists()


# ----------------------------------------------------------------------------- 3. signals, checkpoints
class NotAllowlisted:
    """A class ``torch.load(weights_only=True)`` refuses to unpickle."""


def _state(step: int) -> dict:
    return {"step": step, "epoch": 0, "in_epoch": step}


def test_a_checkpoint_interrupted_while_written_leaves_no_temporary_folder(tmp_path, monkeypatch):
    from lad.run import checkpoint as ckpt

    ckpt.save_checkpoint(tmp_path, 1, {"w": torch.ones(2)}, _state(1))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, 2, {"w": torch.ones(2)}, _state(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-1"]


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
def test_a_signal_during_a_checkpoint_save_waits_until_it_is_complete(tmp_path, monkeypatch):
    from lad.core import signals
    from lad.run import checkpoint as ckpt

    real = torch.save

    def save_then_signal(obj, path):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of the save
        real(obj, path)

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signals.install()
    monkeypatch.setattr(ckpt.torch, "save", save_then_signal)
    try:
        with pytest.raises(signals.Interrupted) as err:
            ckpt.save_checkpoint(tmp_path, 3, {"w": torch.ones(2)}, _state(3))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert err.value.signum == signal.SIGTERM
    assert [p.name for p in tmp_path.iterdir()] == ["step-3"] and ckpt.verify(tmp_path / "step-3")


def test_a_checkpoint_that_does_not_load_safely_falls_back_to_the_previous_one(tmp_path, caplog):
    from lad.run import checkpoint as ckpt

    ckpt.save_checkpoint(tmp_path, 1, {"w": torch.ones(2)}, _state(1), keep=3)
    ckpt.save_checkpoint(tmp_path, 2, {"w": torch.ones(2) * 2}, _state(2), keep=3)
    newest = tmp_path / "step-2"
    torch.save({"step": 2, "code": NotAllowlisted()}, newest / ckpt.STATE)  # needs weights_only=False
    (newest / ckpt.SUMS).write_text(json.dumps({n: ckpt.sha256(newest / n) for n in (ckpt.WEIGHTS, ckpt.STATE)}))
    with caplog.at_level(logging.WARNING, logger="lad.run.checkpoint"):
        weights, state, path = ckpt.load_latest(tmp_path)
    assert path.name == "step-1" and state["step"] == 1 and float(weights["w"][0]) == 1.0
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "step-2 cannot be loaded safely" in lines[0] and "trying an older one" in lines[0]
    torch.save({"code": NotAllowlisted()}, tmp_path / "step-1" / ckpt.STATE)
    (tmp_path / "step-1" / ckpt.SUMS).write_text(json.dumps(
        {n: ckpt.sha256(tmp_path / "step-1" / n) for n in (ckpt.WEIGHTS, ckpt.STATE)}))
    with pytest.raises(LADError, match=r"no checkpoint in \S+ loads safely \(tried step-2, step-1\)"):
        ckpt.load_latest(tmp_path)


def test_an_interrupted_command_ends_with_one_line_and_the_signal_status(capsys):
    from lad.core import signals
    from lad.core.guard import guarded

    def job(cfg):
        raise signals.Interrupted(signal.SIGTERM, hint="/r keeps checkpoint step-4: continue with trainer.resume=true")

    with pytest.raises(SystemExit) as exit_info:
        guarded(job, OmegaConf.create({}))
    assert exit_info.value.code == 128 + signal.SIGTERM
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: interrupted by SIGTERM; /r keeps checkpoint step-4: continue with trainer.resume=true"]


# ----------------------------------------------------------------------------- 4. inputs
def test_text_and_label_must_be_different_columns():
    from lad.data.tasks import TaskSpec

    task = OmegaConf.to_container(compose("distil", ["task=custom", "data.train_file=a.csv",
                                                     "data.dev_file=b.csv"]).task, resolve=True)
    task["text_a"] = task["label"] = "label"
    with pytest.raises(ConfigError, match=r"task\.text_a and task\.label both name column 'label'"):
        TaskSpec.from_config(task)


def test_a_json_object_as_text_is_an_error(tmp_path):
    from lad.data.sources import read_split
    from lad.data.tasks import TaskSpec

    rows = [{"text": "good film", "label": "pos"}, {"text": {"nested": "object"}, "label": "neg"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose("distil", ["task=custom", f"data.train_file={tmp_path / 'train.jsonl'}",
                             f"data.dev_file={tmp_path / 'train.jsonl'}"])
    task = TaskSpec.from_config(cfg.task)
    with pytest.raises(DataError, match=r"train\.jsonl: row 2: column 'text' \(task\.text_a\) holds a JSON object, "
                                        r"not text"):
        read_split(task, None, "train")


def test_a_directory_or_fifo_given_as_a_data_file_is_named_as_such(tmp_path):
    from lad.data.glue import check_data_file
    from lad.data.tasks import TaskSpec

    task = TaskSpec.from_config(compose("distil", ["task=sst2"]).task)
    (tmp_path / "dir.tsv").mkdir()
    with pytest.raises(DataError, match=r"dir\.tsv: is a directory, not a data file"):
        check_data_file(tmp_path / "dir.tsv", task, "train")
    os.mkfifo(tmp_path / "fifo.tsv")
    with pytest.raises(DataError, match=r"fifo\.tsv: is not a regular file \(a FIFO"):
        check_data_file(tmp_path / "fifo.tsv", task, "train")


def test_a_file_with_cr_only_line_ends_is_read(tmp_path):
    from lad.data.glue import read_split
    from lad.data.tasks import TaskSpec

    task = TaskSpec.from_config(compose("distil", ["task=sst2"]).task)
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "train.tsv").write_bytes(b"sentence\tlabel\rgood film\t1\rbad film\t0\r")
    examples = read_split(task, tmp_path, "train")
    assert [(e.text_a, e.label) for e in examples] == [("good film", 1), ("bad film", 0)]


def test_a_bad_test_row_is_found_before_training(tmp_path):
    from lad.data.tasks import TaskSpec
    from lad.run.checks import check_test_splits

    task = TaskSpec.from_config(compose("distil", ["task=sst2"]).task)
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "test.tsv").write_text("index\tsentence\n0\tgood\n1\tbad\textra\n")
    with pytest.raises(DataError, match=r"test\.tsv:3: expected 2 tab-separated columns, found 3"):
        check_test_splits(task, tmp_path, None)
    (tmp_path / "SST-2" / "test.tsv").unlink()
    check_test_splits(task, tmp_path, None)  # no test file: no predictions, a warning


# ----------------------------------------------------------------------------- 6. values
@pytest.mark.parametrize("override, message", [
    ("optim.lr=1e300", r"optim\.lr must be a number in \(0, 10\], got 1e\+300"),
    ("optim.gate_lr=1e30", r"optim\.gate_lr must be a number in \[0, 10\], got 1e\+30"),
])
def test_learning_rates_that_would_overflow_are_refused(override, message):
    from lad.run.checks import validate_common

    key, value = override.split("=")
    cfg = compose("distil", ["teacher=local", "teacher.path=/nowhere"])
    OmegaConf.update(cfg, key, float(value))
    with pytest.raises(ConfigError, match=message):
        validate_common(cfg)


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_deploy_tolerance_must_be_finite_and_not_negative(value):
    from lad.deploy.export import check_tolerance

    with pytest.raises(ConfigError, match=r"--tolerance must be a finite number >= 0"):
        check_tolerance(value)
    assert check_tolerance(0.0) == 0.0


def test_deploy_out_must_not_overlap_the_model_folder(tmp_path):
    from lad.deploy.export import check_out

    model = tmp_path / "run" / "model"
    for out in (model, model / "x", tmp_path / "run"):
        with pytest.raises(ConfigError, match=r"--out \S+ overlaps the model folder"):
            check_out(out, model)
    assert check_out(tmp_path / "run" / "export", model) == tmp_path / "run" / "export"


# ----------------------------------------------------------------------------- 8. extending a run
def test_a_larger_budget_on_resume_is_allowed_and_any_other_change_refused(tmp_path):
    from lad.run import rundir

    (tmp_path / "config.yaml").write_text("trainer:\n  max_steps: 40\n  epochs: 3\noptim:\n  lr: 0.1\n")

    def cfg(max_steps=40, epochs=3, lr=0.1):
        return OmegaConf.create({"trainer": {"max_steps": max_steps, "epochs": epochs}, "optim": {"lr": lr}})

    for larger in (cfg(max_steps=80), cfg(max_steps=-1), cfg(epochs=5), cfg(max_steps=80, epochs=5)):
        rundir.check_resume_config(tmp_path, larger)
    assert rundir.extended_budget(tmp_path, cfg(max_steps=80)) == {"trainer.max_steps": (40, 80)}
    for other in (cfg(max_steps=20), cfg(epochs=2), cfg(max_steps=80, lr=0.2)):
        with pytest.raises(ConfigError, match=r"was started with another configuration"):
            rundir.check_resume_config(tmp_path, other)


def test_resume_with_a_larger_budget_extends_a_finished_run(tmp_path, tiny_glue, tiny_teacher):
    from lad.run.pipeline import run

    def cfg(*extra: str):
        return compose("distil", [
            "task=sst2", "teacher=local", f"teacher.path={tiny_teacher}", f"data.data_dir={tiny_glue}",
            f"paths.cache={tmp_path / 'cache'}", f"output_dir={tmp_path / 'run'}", "mlflow=off", "device=cpu",
            "trainer.progress=false", "trainer.predict_test=false", "optim.batch_size=16", "student=2layer",
            "trainer.eval_every=2", "trainer.ckpt_every=2", "trainer.num_threads=1",
            "trainer.keep_after_finish=1", *extra])  # a finished run keeps a checkpoint to extend from

    run(cfg("trainer.max_steps=4"))
    for same_or_smaller in ("trainer.max_steps=4", "trainer.max_steps=2"):
        with pytest.raises(ConfigError, match=r"already holds a finished run; pass overwrite=true .* or "
                                              r"trainer\.resume=true with a larger trainer\.max_steps"):
            run(cfg(same_or_smaller, "trainer.resume=true"))
    run(cfg("trainer.max_steps=6", "trainer.resume=true"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["resumed_from"] == 4
    assert [h["step"] for h in metrics["history"]] == [2, 4, 6]


def test_an_interrupted_multirun_ends_with_one_line_not_a_traceback(monkeypatch, capsys):
    """Ctrl-C in `distil.py -m ...`: the sweeper marks its running trials FAIL and re-raises; Hydra handles
    only Exception, so the entry point's guard prints the one line (with the sweeper's resume hint)."""
    from lad.core.signals import Interrupted
    from lad.run.cli import main_guard

    def interrupted_sweep():
        raise Interrupted(signal.SIGTERM, hint="run the same command to resume it")

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as info:
        main_guard(interrupted_sweep)
    assert info.value.code == 128 + signal.SIGTERM
    assert capsys.readouterr().err.splitlines() == ["error: interrupted by SIGTERM; run the same command to resume it"]
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(Interrupted):
        main_guard(interrupted_sweep)
