"""The bad-input harness: scratch space holding good tiny inputs that one case breaks
(:class:`Sandbox`), the case record (:class:`Case`: the command, the expected one-line error, and the
symptom / cause / fix that docs/troubleshooting.md shows), and running an entry point as a user
would (:func:`run_case`: a subprocess, with a snapshot of the scratch space before and after, so a
test can check that nothing was written). The cases are :data:`lad.testing.bad_input_cases.CASES`;
``tests/test_bad_input.py`` runs them and ``scripts/troubleshooting.py`` renders them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

from lad.testing import REPO

SUBPROCESS_TIMEOUT = int(os.environ.get("LAD_TEST_SUBPROCESS_TIMEOUT", "300"))  # raise on a crowded machine


class Sandbox:
    """Scratch space of one case: good tiny inputs, plus helpers that break exactly one thing."""

    def __init__(self, root: Path, glue: Path, teacher: Path, small_vocab_teacher: Path):
        self.root = root
        self.glue = glue                      # valid SST-2-format data (shared, never modified)
        self.teacher = teacher                # valid 4-layer SST-2 teacher (shared, never modified)
        self.small_vocab_teacher = small_vocab_teacher
        self.run_dir = root / "run"           # hydra.run.dir = the run's output_dir
        self.teacher_out = root / "teacher_out"

    # ---- command lines -------------------------------------------------------------
    def _common(self, data_dir: Path | str | None) -> list[str]:
        return [
            "mlflow=off", f"paths.output_root={self.root / 'outputs'}", f"hydra.run.dir={self.run_dir}",
            f"data.data_dir={data_dir or self.glue}", f"data.cache_dir={self.root / 'cache'}",
            "device=cpu", "trainer.progress=false", "trainer.num_threads=1", "trainer.max_steps=2",
            "trainer.predict_test=false", "optim.batch_size=8",
        ]

    def distil(self, *extra: str, data: Path | str | None = None, teacher: Path | str | None = None,
               task: str = "sst2") -> list[str]:
        return ["distil.py", f"task={task}", "teacher=local", f"teacher.path={teacher or self.teacher}",
                "student=2layer", *self._common(data), *extra]

    def train_teacher(self, *extra: str, data: Path | str | None = None, backbone: Path | str | None = None,
                      task: str = "sst2") -> list[str]:
        backbone_arg = [] if backbone == "" else [f"teacher.backbone={backbone or self.teacher}"]
        return ["train_teacher.py", f"task={task}", "teacher=local", *backbone_arg,
                f"teacher.path={self.teacher_out}", *self._common(data), *extra]

    # ---- broken inputs -------------------------------------------------------------
    def glue_with(self, name: str, text: str | bytes | None) -> Path:
        """A copy of the good data where SST-2/<name> has ``text`` (None: the file is deleted)."""
        glue = self.root / "glue"
        if not glue.exists():
            shutil.copytree(self.glue, glue)
        target = glue / "SST-2" / name
        if text is None:
            target.unlink()
        elif isinstance(text, bytes):
            target.write_bytes(text)
        else:
            target.write_text(text)
        return glue

    def stsb_glue(self, rows: list[str]) -> Path:
        task_dir = self.root / "glue_stsb" / "STS-B"
        task_dir.mkdir(parents=True)
        header = "index\tsentence1\tsentence2\tscore"
        for split in ("train", "dev"):
            (task_dir / f"{split}.tsv").write_text("\n".join([header, *rows]) + "\n")
        return task_dir.parent

    def not_a_model(self, with_config: bool = False) -> Path:
        path = self.root / "not_a_model"
        path.mkdir()
        (path / "README.txt").write_text("notes, not a model\n")
        if with_config:
            shutil.copy(self.teacher / "config.json", path / "config.json")
        return path

    def existing_run(self, finished: bool, corrupt: bool = False) -> None:
        """A previous run in the run dir: finished (metrics.json) or interrupted (checkpoints only)."""
        ckpt = self.run_dir / "checkpoints" / "step-5"
        ckpt.mkdir(parents=True)
        (ckpt / "weights.safetensors").write_bytes(b"\0" * 64)
        (ckpt / "state.pt").write_bytes(b"\1" * 64)
        sums = {"weights.safetensors": hashlib.sha256(b"\0" * 64).hexdigest(),
                "state.pt": hashlib.sha256(b"\1" * 64).hexdigest()}
        if corrupt:
            sums = {name: "0" * 64 for name in sums}
        (ckpt / "checksums.json").write_text(json.dumps(sums))
        if finished:
            (self.run_dir / "model").mkdir()
            (self.run_dir / "model" / "model.safetensors").write_bytes(b"weights of the finished run")
            (self.run_dir / "metrics.json").write_text('{"best": {"accuracy": 0.9}}')
            (self.run_dir / "config.yaml").write_text("seed: 42\n")
            (self.run_dir / ".hydra").mkdir()
            (self.run_dir / ".hydra" / "config.yaml").write_text("seed: 42\n")
            (self.run_dir / "distil.log").write_text("[lad] the finished run's log\n")

    def teacher_copy(self, name: str) -> Path:
        path = self.root / name
        shutil.copytree(self.teacher, path)
        return path

    def teacher_without_tokenizer(self) -> Path:
        path = self.teacher_copy("no_tokenizer")
        for file in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
            (path / file).unlink(missing_ok=True)
        return path

    def teacher_with_labels(self, labels: list[str]) -> Path:
        path = self.teacher_copy("relabelled")
        config = json.loads((path / "config.json").read_text())
        config["id2label"] = {str(i): name for i, name in enumerate(labels)}
        config["label2id"] = {name: i for i, name in enumerate(labels)}
        (path / "config.json").write_text(json.dumps(config))
        return path

    def teacher_truncated_weights(self) -> Path:
        path = self.teacher_copy("truncated")
        weights = path / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:4096])
        return path

    def teacher_with_weights(self, edit: Callable[[dict], dict]) -> Path:
        """A copy of the teacher whose (valid) safetensors file holds ``edit(tensors)``."""
        from safetensors.torch import load_file, save_file

        path = self.teacher_copy("reweighted")
        weights = path / "model.safetensors"
        save_file(edit(load_file(str(weights))), str(weights), metadata={"format": "pt"})
        return path

    def existing_teacher_at_target(self) -> None:
        shutil.copytree(self.teacher, self.teacher_out)

    def unfinished_run_with_config(self, **values) -> None:
        """An interrupted run (intact checkpoint) whose config.yaml records ``values``."""
        self.existing_run(finished=False)
        from omegaconf import OmegaConf

        (self.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(values)))

    def hold_run_dir_lock(self) -> None:
        """Another command is running in the run dir (its lock is held by this test process)."""
        from filelock import FileLock

        from lad.run.rundir import lock_file

        self.root.mkdir(parents=True, exist_ok=True)
        self._held = FileLock(str(lock_file(self.run_dir)))
        self._held.acquire()

    def elsewhere(self, argv: list[str], run_dir: Path) -> list[str]:
        """``argv`` with the run directory moved to ``run_dir``."""
        return [a for a in argv if not a.startswith("hydra.run.dir=")] + [f"hydra.run.dir={run_dir}"]

    def published_teacher(self) -> Path:
        """A copy of the teacher as train_teacher.py publishes it (lad_teacher.json, metrics.json)."""
        path = self.teacher_copy("teachers/local/sst2")
        (path / "lad_teacher.json").write_text('{"backbone": "x", "teacher": "local", "task": "sst2"}\n')
        (path / "metrics.json").write_text('{"best": {"accuracy": 0.9}}')
        return path

    def custom_jsonl(self, rows: list[str]) -> list[str]:
        """task=custom overrides reading train/dev from a JSON Lines file of ``rows``."""
        path = self.root / "data.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(row + "\n" for row in rows))
        return [f"data.train_file={path}", f"data.dev_file={path}"]

    def optuna_plugin(self) -> None:
        if not (REPO / "hydra_plugins" / "lad_optuna_sweeper").is_dir():
            import pytest

            pytest.skip("the lad_optuna sweeper plugin is not in hydra_plugins/ yet")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Case(NamedTuple):
    id: str
    argv: Callable[[Sandbox], list[str]]  # builds the command (script + overrides), preparing bad inputs
    expect: str                           # regex the error line must match
    symptom: str                          # the message as users see it (docs; must match ``expect``)
    cause: str
    fix: str
    hydra: bool = False                   # Hydra's own message (no "error:" prefix)
    known_defect: str | None = None       # xfail(strict) until fixed: why "nothing written" fails today


class Outcome(NamedTuple):
    proc: subprocess.CompletedProcess | None
    seconds: float
    before: dict[str, str]
    after: dict[str, str]
    skipped: str | None = None


def run_entry(argv: list[str], env_extra: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items()
           if k != "HYDRA_FULL_ERROR" and not k.startswith("MLFLOW_")}
    env.update({"HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1",
                **(env_extra or {})})
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT)
    return proc, time.monotonic() - t0


def snapshot(root: Path, skip: tuple[str, ...] = ("cache",)) -> dict[str, str]:
    """Relative path -> content hash ("dir" for folders) of everything under ``root``, except the
    feature cache, lock files beside run dirs (never inside them) and an empty run dir."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] in skip or (str(rel) == "run" and not any(path.iterdir())) or rel.name.endswith(".lock"):
            continue
        out[str(rel)] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def run_case(case: Case, sandbox: Sandbox) -> Outcome:
    import pytest

    try:
        argv = case.argv(sandbox)
    except pytest.skip.Exception as exc:
        return Outcome(None, 0.0, {}, {}, skipped=str(exc))
    before = snapshot(sandbox.root)
    proc, seconds = run_entry(argv)
    return Outcome(proc, seconds, before, snapshot(sandbox.root))
