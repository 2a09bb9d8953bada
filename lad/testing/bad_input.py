"""The bad-input harness, once for the tests and the probe: how a case is set up, run and judged.

* :class:`Sandbox`: scratch space of one case, holding good tiny inputs and helpers that break
  exactly one thing, and the entry points' command lines (every output kept inside it);
* :class:`Case`: a command and how it must end (``kind``): a user mistake (exit status 2 and exactly
  one ``error:`` line), Hydra's own composition error, or a valid input that must run;
* :func:`run_case`: runs the command as a user would (a subprocess), with a snapshot before and
  after of what it must leave alone (:class:`Watch`) and a search for the planted password;
* :func:`judge`: the flags of an outcome (:data:`FLAGS`; none when it ended as it should).

Two tables use it: :data:`lad.testing.bad_input_cases.CASES` (``tests/test_bad_input.py``; the
source of docs/troubleshooting.md) and :func:`lad.testing.probe_cases.cases` (the adversarial probe,
``scripts/probe_inputs.py``, which only selects, runs and reports).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

from lad.testing import REPO

SUBPROCESS_TIMEOUT = int(os.environ.get("LAD_TEST_SUBPROCESS_TIMEOUT", "300"))  # raise on a crowded machine
SECRET = "Xy9SecretPw"  # the password cases plant in URIs: it must show nowhere (output, files, file names)

FLAGS = {
    "TRACEBACK": "a Python traceback reached the user",
    "EXIT=<n>": "a user mistake not ending with status 2; Hydra's own errors exit 1 by design",
    "LINES=<n>": "not exactly one `error:` line",
    "MESSAGE": "the error line does not match the case's pattern, or a valid input did not print its expected line",
    "LEAK": "the password in any output, file or file name",
    "CHANGED": "something the command must leave alone was written or modified",
    "RAN": "a mistake not caught: exit 0",
    "FAILED": "a valid input that did not run",
}


class Sandbox:
    """Scratch space of one case: good tiny inputs, plus helpers that break exactly one thing.

    ``own_stores`` also keeps the teacher-output cache and ``paths.artifacts`` inside the sandbox
    (the probe); without it they keep their defaults (the tests).
    """

    def __init__(self, root: Path, glue: Path, teacher: Path, small_vocab_teacher: Path | None = None,
                 own_stores: bool = False):
        self.root = root
        self.glue = glue                      # valid SST-2-format data (shared, never modified)
        self.teacher = teacher                # valid 4-layer SST-2 teacher (shared, never modified)
        self.small_vocab_teacher = small_vocab_teacher
        self.own_stores = own_stores
        self.run_dir = root / "run"           # hydra.run.dir = the run's output_dir
        self.teacher_out = root / "teacher_out"

    # ---- command lines -------------------------------------------------------------
    def common(self, data: Path | str | None = None, teacher_cache: bool = True) -> list[str]:
        """The overrides every command shares (``teacher_cache``: distil.py's ``cache.dir`` too)."""
        stores = []
        if self.own_stores:
            stores = [f"cache.dir={self.root / 'tcache'}"] if teacher_cache else []
            stores.append(f"paths.artifacts={self.root / 'artifacts'}")
        return [
            "mlflow=off", f"paths.output_root={self.root / 'outputs'}", f"hydra.run.dir={self.run_dir}",
            f"data.data_dir={data or self.glue}", f"data.cache_dir={self.root / 'cache'}", *stores,
            "device=cpu", "trainer.progress=false", "trainer.num_threads=1", "trainer.max_steps=2",
            "trainer.predict_test=false", "optim.batch_size=8",
        ]

    def distil(self, *extra: str, data: Path | str | None = None, teacher: Path | str | None = None,
               task: str = "sst2") -> list[str]:
        return ["distil.py", f"task={task}", "teacher=local", f"teacher.path={teacher or self.teacher}",
                "student=2layer", *self.common(data), *extra]

    def train_teacher(self, *extra: str, data: Path | str | None = None, backbone: Path | str | None = None,
                      task: str = "sst2") -> list[str]:
        backbone_arg = [] if backbone == "" else [f"teacher.backbone={backbone or self.teacher}"]
        return ["train_teacher.py", f"task={task}", "teacher=local", *backbone_arg,
                f"teacher.path={self.teacher_out}", *self.common(data, teacher_cache=False), *extra]

    @staticmethod
    def no_mlflow_off(argv: list[str]) -> list[str]:
        """``argv`` with MLflow as its other overrides configure it."""
        return [a for a in argv if a != "mlflow=off"]

    def elsewhere(self, argv: list[str], run_dir: Path) -> list[str]:
        """``argv`` with the run directory moved to ``run_dir``."""
        return [a for a in argv if not a.startswith("hydra.run.dir=")] + [f"hydra.run.dir={run_dir}"]

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

    def custom_jsonl(self, rows: list[str]) -> list[str]:
        """task=custom overrides reading train/dev from a JSON Lines file of ``rows``."""
        path = self.root / "data.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(row + "\n" for row in rows))
        return [f"data.train_file={path}", f"data.dev_file={path}"]

    def not_a_model(self, with_config: bool = False) -> Path:
        path = self.root / "not_a_model"
        path.mkdir()
        (path / "README.txt").write_text("notes, not a model\n")
        if with_config:
            shutil.copy(self.teacher / "config.json", path / "config.json")
        return path

    def existing_run(self, finished: bool, corrupt: bool = False, config: dict | None = None) -> None:
        """A previous run in the run dir: finished (model, metrics.json) or interrupted (checkpoints
        only), with its job record (``.hydra/``, log) and ``config.yaml`` (``config``; finished: a stub)."""
        ckpt = self.run_dir / "checkpoints" / "step-5"
        ckpt.mkdir(parents=True)
        (ckpt / "weights.safetensors").write_bytes(b"\0" * 64)
        (ckpt / "state.pt").write_bytes(b"\1" * 64)
        sums = {"weights.safetensors": hashlib.sha256(b"\0" * 64).hexdigest(),
                "state.pt": hashlib.sha256(b"\1" * 64).hexdigest()}
        if corrupt:
            sums = {name: "0" * 64 for name in sums}
        (ckpt / "checksums.json").write_text(json.dumps(sums))
        (self.run_dir / ".hydra").mkdir()
        (self.run_dir / ".hydra" / "config.yaml").write_text("seed: 42\n")
        (self.run_dir / "distil.log").write_text("[lad] the earlier run's log\n")
        if config is not None:
            from omegaconf import OmegaConf

            (self.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
        elif finished:
            (self.run_dir / "config.yaml").write_text("seed: 42\n")
        if finished:
            (self.run_dir / "model").mkdir()
            (self.run_dir / "model" / "model.safetensors").write_bytes(b"weights of the finished run")
            (self.run_dir / "metrics.json").write_text('{"best": {"accuracy": 0.9}}')

    def hold_run_dir_lock(self) -> None:
        """Another command is running in the run dir (its lock is held by this process)."""
        from filelock import FileLock

        from lad.run.rundir import lock_file

        self.root.mkdir(parents=True, exist_ok=True)
        self._held = FileLock(str(lock_file(self.run_dir)))
        self._held.acquire()

    def teacher_copy(self, name: str = "teacher_copy", edit: Callable[[Path], None] | None = None) -> Path:
        """A copy of the good teacher at ``root/name``, changed by ``edit(path)``."""
        path = self.root / name
        shutil.copytree(self.teacher, path)
        if edit is not None:
            edit(path)
        return path

    def teacher_without_tokenizer(self) -> Path:
        def drop(path: Path) -> None:
            for file in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
                (path / file).unlink(missing_ok=True)

        return self.teacher_copy("no_tokenizer", drop)

    def teacher_with_labels(self, labels: list[str]) -> Path:
        return self.teacher_with_config(lambda config: config.update(
            id2label={str(i): name for i, name in enumerate(labels)},
            label2id={name: i for i, name in enumerate(labels)}), name="relabelled")

    def teacher_with_config(self, edit: Callable[[dict], None], name: str = "teacher_copy") -> Path:
        """A copy of the teacher whose config.json is changed in place by ``edit(config)``."""
        def rewrite(path: Path) -> None:
            config = json.loads((path / "config.json").read_text())
            edit(config)
            (path / "config.json").write_text(json.dumps(config))

        return self.teacher_copy(name, rewrite)

    def teacher_truncated_weights(self, keep: int = 4096) -> Path:
        def cut(path: Path) -> None:
            weights = path / "model.safetensors"
            weights.write_bytes(weights.read_bytes()[:keep])

        return self.teacher_copy("truncated", cut)

    def teacher_with_weights(self, edit: Callable[[dict], dict]) -> Path:
        """A copy of the teacher whose (valid) safetensors file holds ``edit(tensors)``."""
        def rewrite(path: Path) -> None:
            from safetensors.torch import load_file, save_file

            weights = path / "model.safetensors"
            save_file(edit(load_file(str(weights))), str(weights), metadata={"format": "pt"})

        return self.teacher_copy("reweighted", rewrite)

    def existing_teacher_at_target(self) -> None:
        shutil.copytree(self.teacher, self.teacher_out)

    def published_teacher(self, where: str = "teachers/local/sst2") -> Path:
        """A copy of the teacher as train_teacher.py publishes it (lad_teacher.json, metrics.json)."""
        path = self.teacher_copy(where)
        (path / "lad_teacher.json").write_text('{"backbone": "x", "teacher": "local", "task": "sst2"}\n')
        (path / "metrics.json").write_text('{"best": {"accuracy": 0.9}}')
        return path

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
    expect: str | None = None             # regex the error line must match (kind ok: a line the run prints)
    symptom: str = ""                     # the message as users see it (docs; must match ``expect``)
    cause: str = ""
    fix: str = ""
    kind: str = "user"                    # user: exit 2, one error line | hydra: Hydra's own error | ok: must run
    known_defect: str | None = None       # xfail(strict) until fixed: why "nothing written" fails today
    env: dict[str, str] | None = None     # extra environment variables of the command
    round: int = 0                        # the probe round that added the case (probe cases only)

    @property
    def hydra(self) -> bool:
        return self.kind == "hydra"


class Watch(NamedTuple):
    """What a case's command must leave as it was."""
    folder: Callable[[Sandbox], Path]
    only_if_there: bool  # True: a folder that was missing or empty before may be written


WHOLE_SANDBOX = Watch(lambda s: s.root, only_if_there=False)       # the tests: nothing written anywhere
EXISTING_RUN_DIR = Watch(lambda s: s.run_dir, only_if_there=True)  # the probe: an earlier run is untouched


class Outcome(NamedTuple):
    rc: int
    stdout: str
    stderr: str
    seconds: float
    changed: list[str]     # paths under the watched folder written, modified or removed
    leaked: bool           # SECRET in the output or in any file or file name of the sandbox
    skipped: str | None = None


def run_entry(argv: list[str], env_extra: dict[str, str] | None = None,
              timeout: float = SUBPROCESS_TIMEOUT) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items()
           if k != "HYDRA_FULL_ERROR" and not k.startswith("MLFLOW_")}
    env.update({"HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1",
                **(env_extra or {})})
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return proc, time.monotonic() - t0


def snapshot(root: Path, skip: tuple[str, ...] = ("cache",)) -> dict[str, str]:
    """Relative path -> content hash ("dir" for folders) of everything under ``root`` (a file: ``"."``),
    except the feature cache, lock files beside run dirs (never inside them) and an empty run dir."""
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] in skip or (str(rel) == "run" and not any(path.iterdir())) or rel.name.endswith(".lock"):
            continue
        if path.is_dir():
            out[str(rel)] = "dir"
        else:  # a FIFO or socket is never read (that would block)
            out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "special"
    return out


def _leaked(root: Path, output: str) -> bool:
    return SECRET in output or any(SECRET in str(p) or p.is_file() and SECRET.encode() in p.read_bytes()
                                   for p in root.rglob("*"))


def run_case(case: Case, sandbox: Sandbox, watch: Watch = WHOLE_SANDBOX, env: dict[str, str] | None = None,
             timeout: float = SUBPROCESS_TIMEOUT) -> Outcome:
    """Build the case's command in ``sandbox`` and run it (``env``: extra variables of every case)."""
    import pytest

    sandbox.root.mkdir(parents=True, exist_ok=True)
    try:
        argv = case.argv(sandbox)
    except pytest.skip.Exception as exc:
        return Outcome(0, "", "", 0.0, [], False, skipped=str(exc))
    folder = watch.folder(sandbox)
    before = snapshot(folder)
    t0 = time.monotonic()
    try:
        proc, seconds = run_entry(argv, {**(env or {}), **(case.env or {})}, timeout)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, seconds = 124, time.monotonic() - t0
        out, err = _text(exc.stdout), _text(exc.stderr) + f"\n(timed out after {timeout:g} s)"
    after = snapshot(folder)
    watched = bool(before) or not watch.only_if_there
    changed = sorted({k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}) if watched else []
    return Outcome(rc, out, err, seconds, changed, _leaked(sandbox.root, out + err))


def _text(data: str | bytes | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else data or ""


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def judge(case: Case, outcome: Outcome) -> list[str]:
    """The flags (:data:`FLAGS`) of ``outcome``: empty when the command ended as ``case`` says it must."""
    output = outcome.stdout + outcome.stderr
    lines = _lines(outcome.stderr)
    flags = ["TRACEBACK"] if "Traceback" in output else []
    if outcome.leaked:
        flags.append("LEAK")
    if case.kind == "ok":
        if outcome.rc != 0:
            flags.append("FAILED")
        elif case.expect and not re.search(case.expect, output, re.MULTILINE):
            flags.append("MESSAGE")
        return flags
    if outcome.rc == 0:
        flags.append("RAN")
    elif case.kind == "user":
        if outcome.rc != 2:
            flags.append(f"EXIT={outcome.rc}")
        if len(lines) != 1 or not lines[0].startswith("error: "):
            flags.append(f"LINES={len(lines)}")
        elif case.expect and not re.search(case.expect, lines[0]):
            flags.append("MESSAGE")
    elif case.expect and not re.search(case.expect, outcome.stderr, re.MULTILINE):
        flags.append("MESSAGE")
    if outcome.changed:
        flags.append("CHANGED")
    return flags


def headline(case: Case, outcome: Outcome) -> str:
    """The line that shows how the command ended: the first matching the case's pattern, else the first
    ``error`` line, else the first line of stderr."""
    if case.expect:
        found = next((line for line in _lines(outcome.stdout + outcome.stderr) if re.search(case.expect, line)), None)
        if found is not None:
            return found
    lines = _lines(outcome.stderr)
    return next((line for line in lines if line.startswith("error")), lines[0] if lines else "")


def explain(flags: list[str], outcome: Outcome) -> str:
    """An assertion message: the flags, what changed, and the end of the output."""
    changed = f"; written or changed: {outcome.changed}" if outcome.changed else ""
    return f"{' '.join(flags)} (exit {outcome.rc}){changed}\n{(outcome.stdout + outcome.stderr)[-3000:]}"
