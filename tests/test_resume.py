"""Crash safety: kill -9 + ``trainer.resume=true`` reproduces an uninterrupted run exactly; corrupt
checkpoints are skipped; NaN stops training with a clear message; finished runs are never
overwritten silently; checkpoints load with ``weights_only=True``; secrets never reach params.

The kill tests run the real entry points as subprocesses (tiny teacher, tiny data, CPU, 40 steps,
a checkpoint every 5): a reference run and the run to be killed start together; the second is
SIGKILLed as soon as a checkpoint exists, then restarted with the same command + resume.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, compose
from lad.core.errors import LADError
from lad.run import checkpoint as ckpt

TRAIN = ["task=sst2", "mlflow=off", "device=cpu", "seed=7", "trainer.progress=false", "trainer.num_threads=1",
         "trainer.predict_test=false", "optim.batch_size=8", "trainer.max_steps=40", "trainer.eval_every=10",
         "trainer.ckpt_every=5", "trainer.log_every=5",
         "trainer.keep_after_finish=1"]  # the final checkpoint is compared too
COMPARED = ("best", "last", "best_step", "steps", "history", "main_metric", "task")
TIMEOUT = 300


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR" and not k.startswith("MLFLOW_")}
    out.update({"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    return out


def launch(argv: list[str], log: Path) -> subprocess.Popen:
    fh = open(log, "w")
    try:
        return subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env(), stdout=fh, stderr=subprocess.STDOUT)
    finally:
        fh.close()


def finish(proc: subprocess.Popen, log: Path) -> str:
    try:
        proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    text = log.read_text()
    assert proc.returncode == 0, text[-4000:]
    return text


def run_dir_of(root: Path, entry: str) -> Path:
    found = [p for p in (root / entry / "sst2").iterdir() if p.is_dir()]
    assert len(found) == 1, found
    return found[0]


def steps_on_disk(root: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in root.glob("*/sst2/*/checkpoints/step-*"))


def kill_at_first_checkpoint(proc: subprocess.Popen, root: Path, log: Path) -> int:
    """SIGKILL ``proc`` once a checkpoint exists under ``root``; the newest checkpoint's step."""
    deadline = time.monotonic() + TIMEOUT
    while not steps_on_disk(root):
        assert proc.poll() is None, f"exited ({proc.returncode}) before its first checkpoint:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return max(steps_on_disk(root))


def interrupted_vs_uninterrupted(tmp: Path, entry_argv) -> dict:
    """Reference run in ``tmp/ref``; killed + resumed run in ``tmp/crash``; both run dirs and facts."""
    ref_root, crash_root = tmp / "ref", tmp / "crash"
    ref = launch(entry_argv(ref_root), tmp / "ref.log")
    crash = launch(entry_argv(crash_root), tmp / "crash.log")
    try:
        killed_at = kill_at_first_checkpoint(crash, crash_root, tmp / "crash.log")
    finally:
        if crash.poll() is None:
            crash.kill()
    finish(ref, tmp / "ref.log")
    crashed_dir = run_dir_of(crash_root, entry_argv.entry)
    assert not (crashed_dir / "metrics.json").exists(), "the run finished before it could be killed"
    resumed = launch([*entry_argv(crash_root), "trainer.resume=true"], tmp / "resume.log")
    resume_log = finish(resumed, tmp / "resume.log")
    return {"ref": run_dir_of(ref_root, entry_argv.entry), "resumed": crashed_dir, "killed_at": killed_at,
            "resume_log": resume_log, "ref_argv": entry_argv(ref_root)}


class Argv:
    """Callable building an entry point's command line for an output root."""

    def __init__(self, entry: str, build):
        self.entry, self.build = entry, build

    def __call__(self, root: Path) -> list[str]:
        return self.build(root)


@pytest.fixture(scope="module")
def distil_runs(tmp_path_factory, tiny_teacher, tiny_glue) -> dict:
    argv = Argv("distil", lambda root: [
        "distil.py", "teacher=local", f"teacher.path={tiny_teacher}", "student=2layer",
        f"paths.output_root={root}", f"data.data_dir={tiny_glue}", f"data.cache_dir={root / 'cache'}", *TRAIN])
    return interrupted_vs_uninterrupted(tmp_path_factory.mktemp("distil_resume"), argv)


@pytest.fixture(scope="module")
def teacher_runs(tmp_path_factory, tiny_teacher, tiny_glue) -> dict:
    argv = Argv("train_teacher", lambda root: [
        "train_teacher.py", "teacher=local", f"teacher.backbone={tiny_teacher}", f"teacher.path={root / 'teacher'}",
        f"paths.output_root={root}", f"data.data_dir={tiny_glue}", f"data.cache_dir={root / 'cache'}", *TRAIN])
    return interrupted_vs_uninterrupted(tmp_path_factory.mktemp("teacher_resume"), argv)


def assert_same_run(runs: dict) -> None:
    ref = json.loads((runs["ref"] / "metrics.json").read_text())
    res = json.loads((runs["resumed"] / "metrics.json").read_text())
    assert res["resumed_from"] == runs["killed_at"] > 0
    assert ref["resumed_from"] is None
    assert [h["step"] for h in ref["history"]] == [10, 20, 30, 40]
    assert {k: res[k] for k in COMPARED} == {k: ref[k] for k in COMPARED}
    # bit-identical final weights (metrics alone could coincide by chance)
    from safetensors.torch import load_file

    for name in ("checkpoints/step-40/weights.safetensors", "model/model.safetensors"):
        a, b = load_file(str(runs["ref"] / name)), load_file(str(runs["resumed"] / name))
        assert a.keys() == b.keys()
        different = [k for k in a if not torch.equal(a[k], b[k])]
        assert not different, f"{name}: {different[:5]}"
    assert f"resumed from {runs['resumed'] / 'checkpoints'}/step-{runs['killed_at']}" in runs["resume_log"]
    assert not list((runs["resumed"] / "checkpoints").glob(".tmp-*")), "stale temporary checkpoint left behind"


def test_distil_kill9_then_resume_matches_uninterrupted_run(distil_runs):
    assert_same_run(distil_runs)


def test_train_teacher_kill9_then_resume_matches_uninterrupted_run(teacher_runs):
    assert_same_run(teacher_runs)
    ref_teacher = teacher_runs["ref"].parents[2] / "teacher"
    resumed_teacher = teacher_runs["resumed"].parents[2] / "teacher"
    assert (ref_teacher / "model.safetensors").read_bytes() == (resumed_teacher / "model.safetensors").read_bytes()


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix != ".log" and ".hydra" not in p.parts}


def test_finished_run_is_never_overwritten_silently(distil_runs):
    run_dir = distil_runs["ref"]
    before = _tree(run_dir)
    again = subprocess.run([sys.executable, *distil_runs["ref_argv"]], cwd=REPO, env=env(),
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert again.returncode == 2
    assert re.search(r"^error: \S+ already holds a finished run; pass overwrite=true", again.stderr, re.M), again.stderr
    assert "Traceback" not in again.stderr
    assert _tree(run_dir) == before


# --------------------------------------------------------------------------- checkpoints (unit)
def _save(tmp: Path, step: int, keep: int = 5) -> Path:
    weights = {"w": torch.full((4, 3), float(step)), "b": torch.arange(3.0) + step}
    state = {"step": step, "history": [{"step": step, "accuracy": 0.5}], "nested": {"lr": [1e-4, 2e-4]}}
    return ckpt.save_checkpoint(tmp / "checkpoints", step, weights, state, keep=keep)


def test_truncated_newest_checkpoint_falls_back_to_previous(tmp_path, caplog):
    for step in (5, 10, 15):
        _save(tmp_path, step)
    newest = tmp_path / "checkpoints" / "step-15" / ckpt.WEIGHTS
    newest.write_bytes(newest.read_bytes()[:40])  # truncated by a crash / full disk
    with caplog.at_level(logging.WARNING, logger="lad.run.checkpoint"):
        weights, state, path = ckpt.load_latest(tmp_path / "checkpoints")
    assert path.name == "step-10" and state["step"] == 10
    assert torch.equal(weights["w"], torch.full((4, 3), 10.0))
    assert "step-15 is corrupt" in caplog.text


@pytest.mark.parametrize("damage", ["flip_state_byte", "drop_checksums", "drop_weights"])
def test_any_damage_is_detected_by_the_checksums(tmp_path, damage):
    path = _save(tmp_path, 5)
    _save(tmp_path, 3)
    if damage == "flip_state_byte":
        data = bytearray((path / ckpt.STATE).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (path / ckpt.STATE).write_bytes(bytes(data))
    elif damage == "drop_checksums":
        (path / ckpt.SUMS).unlink()
    else:
        (path / ckpt.WEIGHTS).unlink()
    assert not ckpt.verify(path)
    assert ckpt.latest_intact(tmp_path / "checkpoints").name == "step-3"


def test_all_checkpoints_corrupt_is_a_clear_error(tmp_path):
    for step in (5, 10):
        path = _save(tmp_path, step)
        (path / ckpt.STATE).write_bytes(b"garbage")
    with pytest.raises(LADError, match=r"every checkpoint in .* is corrupt \(checksum mismatch\); cannot resume"):
        ckpt.load_latest(tmp_path / "checkpoints")


def test_no_checkpoint_means_start_from_scratch(tmp_path):
    assert ckpt.load_latest(tmp_path / "missing") is None
    (tmp_path / "checkpoints").mkdir()
    assert ckpt.load_latest(tmp_path / "checkpoints") is None


def test_stale_temp_dirs_are_ignored_and_cleaned_and_old_checkpoints_pruned(tmp_path):
    stale = tmp_path / "checkpoints" / ".tmp-step-20-99999"
    stale.mkdir(parents=True)
    (stale / ckpt.WEIGHTS).write_bytes(b"half written")
    assert ckpt.list_checkpoints(tmp_path / "checkpoints") == []
    for step in (5, 10, 15):
        _save(tmp_path, step, keep=2)
    assert not stale.exists()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == ["step-15", "step-10"]


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    from lad.core.runtime import rng_state, seed_everything, set_rng_state

    seed_everything(3)
    torch.rand(5)
    random.random()
    random.gauss(0, 1)  # leaves a cached gauss value in the state
    ckpt.save_checkpoint(tmp_path, 1, {"w": torch.zeros(1)}, {"step": 1, "rng": rng_state()})
    expected = (torch.rand(3), random.random(), random.gauss(0, 1))
    torch.rand(7)
    random.random()
    np.random.rand()
    _, state, _ = ckpt.load_latest(tmp_path)
    set_rng_state(state["rng"])
    got = (torch.rand(3), random.random(), random.gauss(0, 1))
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]


def _torch_load_calls(text: str) -> list[str]:
    """Full text of every ``torch.load(...)`` call (balanced parentheses, may span lines)."""
    calls = []
    for match in re.finditer(r"torch\.load\(", text):
        depth, i = 1, match.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        calls.append(text[match.start():i])
    return calls


def test_every_torch_load_in_lad_is_weights_only():
    calls = {str(p.relative_to(REPO)): _torch_load_calls(p.read_text()) for p in (REPO / "lad").rglob("*.py")}
    calls = {k: v for k, v in calls.items() if v}
    assert "lad/run/checkpoint.py" in calls  # the resume path itself is covered
    unsafe = {k: [c for c in v if not re.search(r"weights_only\s*=\s*True", c)] for k, v in calls.items()}
    assert not any(unsafe.values()), unsafe


# --------------------------------------------------------------------------- divergence (in-process)
def _nan_run(tmp: Path, teacher: Path, glue: Path, poison) -> tuple[LADError, Path]:
    from lad.method.distiller import Distiller
    from lad.run.pipeline import run

    original = Distiller.training_step
    calls = {"n": 0}

    def training_step(self, batch):
        loss, parts = original(self, batch)
        calls["n"] += 1
        return poison(self, loss, parts) if calls["n"] == 7 else (loss, parts)

    out = tmp / "run"
    cfg = compose("distil", [
        "task=sst2", "teacher=local", f"teacher.path={teacher}", "student=2layer", f"data.data_dir={glue}",
        f"data.cache_dir={tmp / 'cache'}", f"output_dir={out}", *TRAIN, "trainer.max_steps=12",
    ])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Distiller, "training_step", training_step)
        with pytest.raises(LADError) as info:
            run(cfg)
    return info.value, out


def _assert_last_good_checkpoint_kept(out: Path) -> None:
    assert not (out / "metrics.json").exists()
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == ["step-5"]
    weights, state, _ = ckpt.load_latest(out / "checkpoints")
    assert state["step"] == 5
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_nan_loss_stops_with_the_step_and_the_loss_parts(tmp_path, tiny_teacher, tiny_glue):
    def poison(module, loss, parts):
        return loss * math.nan, {**parts, "hidden": math.nan}

    err, out = _nan_run(tmp_path, tiny_teacher, tiny_glue, poison)
    message = str(err)
    assert "\n" not in message
    assert re.search(r"loss became nan at step 7 \(parts: hard=[\d.]+, soft=[\d.]+, hidden=nan", message), message
    assert f"the last good checkpoint is {out / 'checkpoints' / 'step-5'}:" in message  # one that exists
    _assert_last_good_checkpoint_kept(out)


def test_nan_gradients_with_a_finite_loss_stop_before_the_update(tmp_path, tiny_teacher, tiny_glue):
    def poison(module, loss, parts):
        p = next(module.student.parameters())
        zero_with_nan_grad = torch.sqrt(((p - p.detach()) ** 2).sum())  # value 0, gradient 0 * inf = nan
        return loss + zero_with_nan_grad, parts

    err, out = _nan_run(tmp_path, tiny_teacher, tiny_glue, poison)
    assert re.search(r"gradient norm became nan at step 7 \(loss [\d.]+; parts: hard=", str(err)), str(err)
    _assert_last_good_checkpoint_kept(out)


# --------------------------------------------------------------------------- secrets
def test_tracking_uri_password_is_masked_and_never_in_params(tmp_path):
    from lad.tracking.store import mask_secrets
    from lad.tracking.tracker import run_params

    uri = "postgresql://u:secret@127.0.0.1/x"
    assert mask_secrets(uri) == "postgresql://u:***@127.0.0.1/x"
    assert mask_secrets(f"tracking at {uri} failed") == "tracking at postgresql://u:***@127.0.0.1/x failed"
    assert mask_secrets("sqlite:///mlruns.db") == "sqlite:///mlruns.db"
    assert mask_secrets("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    cfg = compose("distil", [f"mlflow.tracking_uri={uri}", "mlflow.artifact_location=s3://key:secret@bucket/a",
                             f"+extra.db={uri}", f"output_dir={tmp_path / 'run'}"])
    params = run_params(cfg)
    assert params["extra.db"] == "postgresql://u:***@127.0.0.1/x"
    leaked = {k: v for k, v in params.items() if "secret" in f"{k}={v}"}
    assert not leaked


def test_nonfinite_guard_skips_every_update_from_the_bad_step_and_names_it_after_a_resume():
    from lad.run.train import NonFiniteGuard, TrainingDiverged

    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([w], lr=0.1, fused=True)
    guard = NonFiniteGuard([opt], torch.device("cpu"), lambda: "hint")
    assert guard.deferred
    guard.step.fill_(10)  # resumed at step 10
    for i, value in enumerate([1.0, float("nan"), 1.0]):
        w.grad = torch.full((3,), value)
        loss = torch.tensor(value)
        guard.observe(loss, [w.grad.norm()], {"hard": loss})
        before = w.detach().clone()
        opt.step()
        if i == 0:
            assert not torch.equal(w.detach(), before)  # a good step updates
        else:
            assert torch.equal(w.detach(), before)      # from the bad step on, nothing is applied
    with pytest.raises(TrainingDiverged, match=r"^loss became nan at step 12 \(parts: hard=nan\); hint$"):
        guard.check()
