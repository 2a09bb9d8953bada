"""Bad-input matrix: each user mistake ends the real entry point with ONE clear error line.

Every case runs ``distil.py`` / ``train_teacher.py`` as a subprocess (the way users run them) and
checks: exit status != 0, no traceback (unless ``HYDRA_FULL_ERROR=1``), one ``error: ...`` line on
stderr matching the case's pattern (Hydra's own message for unknown config options), and that
nothing was written or overwritten (a pre-existing run dir, its ``.hydra/`` and log included, is
byte-identical; a fresh one is not left behind). The error must come before training: every command
caps training at 2 steps, so a check that fired too late would show as a successful exit.

``CASES`` is also the source of docs/troubleshooting.md (``python scripts/troubleshooting.py``):
keep ``symptom`` (what the user sees), ``cause`` and ``fix`` readable.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, NamedTuple

import pytest

from conftest import REPO

SUBPROCESS_TIMEOUT = int(os.environ.get("LAD_TEST_SUBPROCESS_TIMEOUT", "300"))  # raise on a crowded machine
PARALLEL = 2  # concurrent subprocesses (2 cores); each spends most of its time importing torch


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

        from lad.rundir import lock_file

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


STSB_ROW = "0\tA man is playing a flute.\tA man plays a flute.\t{}"

CASES: list[Case] = [
    # ---- config groups and keys (Hydra reports these itself)
    Case("unknown_task", lambda s: s.distil("task=nope"),
         r"Could not find 'task/nope'", "Could not find 'task/nope' (followed by the available options)",
         "No conf/task/nope.yaml: task names are lower-case GLUE ids.",
         "Use one of the listed options, e.g. task=rte, task=sst2, task=mnli.", hydra=True),
    Case("unknown_group_option", lambda s: s.distil("student=7layer"),
         r"Could not find 'student/7layer'", "Could not find 'student/7layer'",
         "The config group has no such option (conf/student/7layer.yaml does not exist).",
         "Pick a listed option (student=2layer|3layer|4layer|6layer) or add a yaml file to the group.",
         hydra=True),
    Case("unknown_key", lambda s: s.distil("optim.lrr=1e-4"),
         r"Key 'lrr' is not in struct", "Could not override 'optim.lrr'. ... Key 'lrr' is not in struct",
         "A typo in a config key; Hydra only accepts keys that exist.",
         "Fix the spelling (see conf/<group>/*.yaml), or use +key=value to add a new key on purpose.",
         hydra=True),
    Case("missing_required_value", lambda s: s.train_teacher(backbone=""),
         r"^error: teacher\.backbone is required here but not set",
         "error: teacher.backbone is required here but not set: pass teacher.backbone=<value> on the command line",
         "teacher=local has no default backbone (???).",
         "Pass teacher.backbone=/path/to/pretrained/model or a Hugging Face Hub id (teacher.backbone=roberta-base)."),
    Case("interpolation_unresolvable", lambda s: s.distil("optim.lr=${optim.nope}"),
         r"^error: Interpolation key 'optim\.nope' not found",
         "error: Interpolation key 'optim.nope' not found",
         "A ${...} reference on the command line (or in a yaml file) names a key or environment variable "
         "that does not exist (oc.env: \"Environment variable 'X' not found\").",
         "Fix the reference (keys as in conf/), or export the variable; quote overrides that hold ${...}."),
    # ---- data
    Case("data_dir_missing", lambda s: s.distil(data=s.root / "nope"),
         r"^error: GLUE data directory not found: \S+",
         "error: GLUE data directory not found: <dir>",
         "data.data_dir does not exist (data.data_dir=auto looks for ../shared/glue, then data/glue).",
         "Point data.data_dir at the folder that holds the GLUE task folders (SST-2/, RTE/, ...)."),
    Case("data_dir_empty", lambda s: s.distil("data.data_dir=''"),
         r"^error: data\.data_dir is empty: set it to the folder holding the GLUE task folders, or to auto",
         "error: data.data_dir is empty: set it to the folder holding the GLUE task folders, or to auto",
         "An empty data.data_dir (often an unset shell variable: data.data_dir=$DATA) would quietly fall back "
         "to the shared GLUE copy.",
         "Pass the folder (data.data_dir=/path/to/glue), or data.data_dir=auto for ../shared/glue or data/glue."),
    Case("task_folder_missing", lambda s: s.distil(task="rte"),
         r"^error: .*: GLUE task folder 'RTE' not found",
         "error: <data_dir>/RTE: GLUE task folder 'RTE' not found",
         "The data dir exists but has no folder for this task (names as in the GLUE download).",
         "Download/unpack the task into <data_dir>/RTE (GLUE layout) or fix data.data_dir."),
    Case("tsv_missing", lambda s: s.distil(data=s.glue_with("dev.tsv", None)),
         r"^error: .*SST-2/dev\.tsv: file not found \(task 'sst2', split 'dev'\)",
         "error: <data_dir>/SST-2/dev.tsv: file not found (task 'sst2', split 'dev')",
         "A split file named in conf/task/<task>.yaml (splits:) is missing.",
         "Restore the file from the GLUE download (or fix the file name under splits:)."),
    Case("tsv_empty", lambda s: s.distil(data=s.glue_with("train.tsv", "")),
         r"^error: .*SST-2/train\.tsv:1: empty file", "error: <data_dir>/SST-2/train.tsv:1: empty file",
         "The TSV file has no content (interrupted download or copy).",
         "Re-download the task's files."),
    Case("wrong_column_count",
         lambda s: s.distil(data=s.glue_with("train.tsv", "sentence\tlabel\ngood film\t1\nbad\tfilm\t0\n")),
         r"^error: .*SST-2/train\.tsv:3: expected 2 tab-separated columns, found 3",
         "error: <data_dir>/SST-2/train.tsv:3: expected 2 tab-separated columns, found 3",
         "A row has more or fewer tab-separated fields than the header (stray tab, or a file of another task).",
         "Fix the named line (texts must not contain tabs) or re-download the file."),
    Case("label_not_in_label_set",
         lambda s: s.distil(data=s.glue_with("train.tsv", "sentence\tlabel\ngood film\t1\nbad film\t2\n")),
         r"^error: .*SST-2/train\.tsv:3: label '2' not in label set \[0, 1\]",
         "error: <data_dir>/SST-2/train.tsv:3: label '2' not in label set [0, 1]",
         "A label that the task config (conf/task/<task>.yaml, labels:) does not list.",
         "Fix the named line, or check that task= matches the data (e.g. MNLI labels in an RTE file)."),
    Case("stsb_non_numeric_score",
         lambda s: s.train_teacher(task="stsb", data=s.stsb_glue([STSB_ROW.format("4.2"), STSB_ROW.format("high")])),
         r"^error: .*STS-B/train\.tsv:3: non-numeric score 'high'",
         "error: <data_dir>/STS-B/train.tsv:3: non-numeric score 'high'",
         "STS-B is a regression task: every score must be a number in [0, 5].",
         "Fix the named line (e.g. 3.8), or re-download STS-B."),
    # ---- teacher / backbone / student
    Case("teacher_dir_missing", lambda s: s.distil(teacher=s.root / "no_teacher"),
         r"^error: teacher\.path \S+ does not exist: fine-tune one first",
         "error: teacher.path <dir> does not exist: fine-tune one first (python train_teacher.py task=... "
         "teacher=local) or set teacher.path",
         "distil.py needs a fine-tuned teacher; none was trained for this task/teacher yet.",
         "Run train_teacher.py for the same task and teacher first, or point teacher.path at a fine-tuned model."),
    Case("teacher_not_a_model", lambda s: s.distil(teacher=s.not_a_model()),
         r"^error: teacher\.path \S+ is not a model directory \(no config\.json\)",
         "error: teacher.path <dir> is not a model directory (no config.json)",
         "teacher.path points at a folder that is not a saved Hugging Face model.",
         "Point teacher.path at the folder train_teacher.py wrote (config.json, model.safetensors, tokenizer)."),
    Case("teacher_without_weights", lambda s: s.distil(teacher=s.not_a_model(with_config=True)),
         r"^error: teacher\.path \S+ has no weights",
         "error: teacher.path <dir> has no weights (*.safetensors)",
         "The model folder has a config.json but no weight file (incomplete copy).",
         "Copy the whole model folder, or fine-tune the teacher again."),
    Case("teacher_num_labels_mismatch",
         lambda s: s.distil(task="stsb", data=s.stsb_glue([STSB_ROW.format("4.2"), STSB_ROW.format("1.5")])),
         r"^error: teacher .* has 2 labels but task stsb needs 1: was it fine-tuned on another task\?",
         "error: teacher <dir> has 2 labels but task stsb needs 1: was it fine-tuned on another task?",
         "The teacher's classifier head does not fit the task (a teacher fine-tuned on another task).",
         "Use the teacher fine-tuned on this task (teacher.path=.../<task>), or fine-tune one."),
    Case("teacher_tokenizer_vocab_mismatch", lambda s: s.distil(teacher=s.small_vocab_teacher),
         r"^error: teacher .*: its tokenizer has 30522 tokens but the model's vocab_size is 100",
         "error: teacher <dir>: its tokenizer has 30522 tokens but the model's vocab_size is 100: "
         "tokenizer and weights do not belong together",
         "The tokenizer saved next to the weights comes from another model; its ids would index past "
         "the embedding table (the student inherits the teacher's vocabulary).",
         "Save the model's own tokenizer into the folder (tokenizer.save_pretrained(model_dir))."),
    Case("backbone_tokenizer_vocab_mismatch", lambda s: s.train_teacher(backbone=s.small_vocab_teacher),
         r"^error: teacher\.backbone .*: its tokenizer has 30522 tokens but the model's vocab_size is 100",
         "error: teacher.backbone <dir>: its tokenizer has 30522 tokens but the model's vocab_size is 100: ...",
         "The pretrained backbone folder pairs weights with another model's tokenizer.",
         "Use the tokenizer that was released with the backbone."),
    Case("hub_backbone_offline_not_cached", lambda s: s.train_teacher(backbone="lad-tests/not-cached-model"),
         r"^error: teacher\.backbone=\S+: not a local directory and not in the Hugging Face cache "
         r"\(HF_HUB_OFFLINE is set\)",
         "error: teacher.backbone=bert-base-uncased: not a local directory and not in the Hugging Face cache "
         "(HF_HUB_OFFLINE is set); download it on a connected machine first or pass a local directory",
         "A Hub model id (teacher=bert_base uses bert-base-uncased) while offline: HF_HUB_OFFLINE=1, or "
         "the Hub did not answer within 2 s, and the model was never downloaded here.",
         "Run the command once on a connected machine (it fills the Hugging Face cache), or pass "
         "teacher.backbone=/path/to/checkpoint; see docs/own-machine.md."),
    Case("student_deeper_than_teacher", lambda s: s.distil("student=6layer"),
         r"^error: student has 6 layers but the teacher only 4: a student cannot be deeper",
         "error: student has 6 layers but the teacher only 4: a student cannot be deeper",
         "Each student layer copies/mimics a distinct teacher layer, so K must be <= L.",
         "Choose a smaller student (student=2layer|3layer) or a deeper teacher."),
    # ---- optimisation and loss values
    Case("lr_negative", lambda s: s.distil("optim.lr=-1e-4"),
         r"^error: optim\.lr must be > 0, got -0\.0001", "error: optim.lr must be > 0, got -0.0001",
         "A learning rate must be positive.", "Use e.g. optim.lr=1e-4 (distillation) or 2e-5 (BERT fine-tuning)."),
    Case("lr_zero", lambda s: s.train_teacher("optim.lr=0"),
         r"^error: optim\.lr must be > 0, got 0", "error: optim.lr must be > 0, got 0",
         "lr=0 would train nothing.", "Use a positive optim.lr."),
    Case("temperature_not_positive", lambda s: s.distil("loss.temperature=0"),
         r"^error: loss\.temperature must be > 0, got 0", "error: loss.temperature must be > 0, got 0.0",
         "The KD temperature divides the logits.", "Use loss.temperature >= 1 (the paper searches 1-20)."),
    Case("all_loss_weights_zero",
         lambda s: s.distil("loss.hard_weight=0", "loss.soft_weight=0", "loss.hidden_weight=0"),
         r"^error: loss weights are all zero", "error: loss weights are all zero; set at least one of ...",
         "With every weight at 0 the objective is constant: nothing would be learned.",
         "Set at least one of loss.hard_weight, soft_weight, hidden_weight, pkd_weight > 0."),
    Case("gate_without_hidden_loss", lambda s: s.distil("gate=lad", "loss=kd"),
         r"^error: gate=lad needs a loss with a hidden-state term",
         "error: gate=lad needs a loss with a hidden-state term (loss=lad), but loss=kd has hidden_weight=0; ...",
         "Gates only shape the hidden-state targets; with hidden_weight=0 they would never be used.",
         "Use loss=lad with a gate, or gate=none with loss=kd/pkd/ce."),
    Case("ce_with_teacher_weights", lambda s: s.distil("gate=none", "loss=ce", "experiment=reference_rte"),
         r"^error: loss=ce is fine-tuning without a teacher, but soft_weight/hidden_weight/pkd_weight are set",
         "error: loss=ce is fine-tuning without a teacher, but soft_weight/hidden_weight/pkd_weight are set ...",
         "A reference_<task> experiment sets LAD's loss weights globally; on top of loss=ce they would silently "
         "turn the baseline into KD.",
         "Use loss=kd / loss=lad with the experiment, or set optim.lr / optim.gate_lr directly for a ce run."),
    Case("warmup_ratio_above_one", lambda s: s.distil("optim.warmup_ratio=1.5"),
         r"^error: optim\.warmup_ratio must be a number in \[0, 1\], got 1\.5",
         "error: optim.warmup_ratio must be a number in [0, 1], got 1.5",
         "warmup_ratio is the fraction of all steps spent warming up the learning rate.",
         "Use a value in [0, 1], typically 0.1."),
    Case("warmup_ratio_negative", lambda s: s.train_teacher("optim.warmup_ratio=-0.1"),
         r"^error: optim\.warmup_ratio must be a number in \[0, 1\], got -0\.1",
         "error: optim.warmup_ratio must be a number in [0, 1], got -0.1",
         "warmup_ratio is a fraction of the training steps.", "Use a value in [0, 1]."),
    Case("unknown_lr_schedule", lambda s: s.distil("optim.lr_scheduler_type=cosine_restarts"),
         r"^error: optim\.lr_scheduler_type must be one of linear, constant_with_warmup, constant, cosine, polynomial, "
         r"got 'cosine_restarts'",
         "error: optim.lr_scheduler_type must be one of linear, constant_with_warmup, constant, cosine, polynomial, "
         "got 'cosine_restarts'",
         "The names are Hugging Face Trainer's lr_scheduler_type values (built by transformers.get_scheduler); "
         "those that need more than warm-up and total steps are not offered.",
         "Use linear (the default), constant_with_warmup, constant, cosine or polynomial."),
    # ---- typed values (lad/schema.py: every scalar key has a type and a range)
    Case("integer_key_given_a_fraction", lambda s: s.distil("trainer.max_steps=2.5"),
         r"^error: trainer\.max_steps must be an integer, got 2\.5 \(it would be cut to 2\)",
         "error: trainer.max_steps must be an integer, got 2.5 (it would be cut to 2)",
         "Integer settings (steps, sizes, counts) are never rounded silently.",
         "Pass a whole number (1e3 is accepted as 1000)."),
    Case("zero_where_zero_means_nothing", lambda s: s.distil("trainer.log_every=0"),
         r"^error: trainer\.log_every must be an integer >= 1, got 0",
         "error: trainer.log_every must be an integer >= 1, got 0",
         "0 is accepted only where it has a documented meaning (trainer.eval_every=0: once per epoch; "
         "trainer.ckpt_every=0: at the end of each epoch; trainer.keep_after_finish=0: no checkpoint kept).",
         "Pass a positive value, or null where the key allows it (trainer.num_threads, data.max_*_samples)."),
    Case("boolean_key_given_a_word", lambda s: s.distil("data.bucket=yes"),
         r"^error: data\.bucket must be true or false, got 'yes'",
         "error: data.bucket must be true or false, got 'yes'",
         "Switches take true or false only (yes, 1, on are not guessed).", "Pass true or false."),
    Case("not_a_number", lambda s: s.distil("optim.lr=nan"),
         r"^error: optim\.lr must be a number > 0, got nan", "error: optim.lr must be a number > 0, got nan",
         "nan / inf are not usable values for any setting.", "Pass a finite number."),
    # ---- teacher folders (checked before the teacher is loaded)
    Case("teacher_without_tokenizer_files", lambda s: s.distil(teacher=s.teacher_without_tokenizer()),
         r"^error: teacher\.path \S+ has no tokenizer files",
         "error: teacher.path <dir> has no tokenizer files (tokenizer.json, vocab.txt): without them every "
         "word would become [UNK]; ...",
         "The model folder holds weights but not the tokenizer it was trained with.",
         "Save the tokenizer next to the weights (tokenizer.save_pretrained(dir)); train_teacher.py does this."),
    Case("teacher_label_order_differs", lambda s: s.distil(teacher=s.teacher_with_labels(["1", "0"])),
         r"^error: teacher \S+: its labels are \[1, 0\] but task sst2 has \[0, 1\] \(in this order\)",
         "error: teacher <dir>: its labels are [1, 0] but task sst2 has [0, 1] (in this order): ...",
         "The teacher names its classes in another order than conf/task/<task>.yaml (labels:): its "
         "predictions would be read as the wrong classes.",
         "Use a teacher fine-tuned on this task with this label list (train_teacher.py task=<task>)."),
    Case("teacher_weights_damaged", lambda s: s.distil(teacher=s.teacher_truncated_weights()),
         r"^error: teacher\.path \S+: model\.safetensors is damaged or incomplete",
         "error: teacher.path <dir>: model.safetensors is damaged or incomplete (...); copy the model folder "
         "again or fine-tune the teacher again",
         "The weight file is cut short or overwritten (interrupted copy, full disk).",
         "Copy the folder again, or fine-tune the teacher again."),
    Case("teacher_weights_do_not_fit_config",
         lambda s: s.distil(teacher=s.teacher_with_weights(lambda t: {f"old.{k}": v for k, v in t.items()})),
         r"^error: teacher \S+: its weights do not fit its config\.json \(\d+ missing \(e\.g\. ",
         "error: teacher <dir>: its weights do not fit its config.json (40 missing (e.g. bert.embeddings...); "
         "40 not used by its config (...)): the model would run with randomly initialised weights; ...",
         "The weight file belongs to another model or architecture than config.json (names or shapes differ); "
         "transformers would quietly start the missing weights from random values.",
         "Copy the whole model folder of one model again (config.json and weights together)."),
    Case("teacher_weights_not_finite",
         lambda s: s.distil(teacher=s.teacher_with_weights(
             lambda t: {**t, "classifier.weight": t["classifier.weight"].clone().fill_(float("nan"))})),
         r"^error: teacher \S+: 1 weight tensor\(s\) hold NaN or infinite values \(e\.g\. classifier\.weight\)",
         "error: teacher <dir>: 1 weight tensor(s) hold NaN or infinite values (e.g. classifier.weight): the "
         "checkpoint is damaged or comes from a diverged training run; use another checkpoint",
         "The teacher's weights are not finite: every target it gives would be NaN.",
         "Use a checkpoint saved before training diverged, or fine-tune the teacher again."),
    Case("teacher_path_holds_a_teacher",
         lambda s: (s.existing_teacher_at_target(), s.train_teacher())[1],
         r"^error: teacher\.path \S+ already holds a fine-tuned teacher \(distillation runs may use it\); "
         r"pass overwrite=true",
         "error: teacher.path <dir> already holds a fine-tuned teacher (distillation runs may use it); pass "
         "overwrite=true to replace it, or set teacher.path to another directory",
         "train_teacher.py would replace a teacher that another run fine-tuned (and distillation runs recorded).",
         "Pass overwrite=true to replace it, or give this teacher its own teacher.path."),
    # ---- text
    Case("tsv_not_utf8",
         lambda s: s.distil(data=s.glue_with("train.tsv", b"sentence\tlabel\ngood film\t1\nna\xefve\t0\n")),
         r"^error: .*SST-2/train\.tsv:3: not valid UTF-8 \(byte 0xef at column 3\)",
         "error: <data_dir>/SST-2/train.tsv:3: not valid UTF-8 (byte 0xef at column 3); re-save the file as UTF-8 ...",
         "The file is in another encoding (Latin-1, Windows-1252) or damaged.",
         "Convert it (iconv -f latin1 -t utf-8 in.tsv > out.tsv). Texts longer than task.max_seq_length (or "
         "the model's positions) are not an error: they are truncated and counted (data.<split>_truncated)."),
    # ---- run directory
    Case("run_dir_in_use", lambda s: (s.hold_run_dir_lock(), s.distil())[1],
         r"^error: \S+ is in use by another running command \(lock \S+\)",
         "error: <run_dir> is in use by another running command (lock <dir>/.<run>.lock); wait for it to "
         "finish, or give this run its own directory ...",
         "Another train_teacher.py / distil.py is writing to the same run directory.",
         "Wait for it, or change an override (or hydra.run.dir) so this run gets its own directory."),
    Case("resume_with_another_configuration",
         lambda s: (s.unfinished_run_with_config(optim={"lr": 0.5}), s.distil("trainer.resume=true"))[1],
         r"^error: trainer\.resume: \S+ was started with another configuration \(.*optim\.lr: 0\.5 -> 0\.0001",
         "error: trainer.resume: <run_dir> was started with another configuration (optim.lr: 0.5 -> 0.0001, ...); "
         "resume with the same settings (a larger trainer.max_steps or trainer.epochs extends the run), or pass "
         "overwrite=true to start over",
         "trainer.resume=true continues the checkpoints of a run that trained with other settings.",
         "Resume with the command that started the run, or start over with overwrite=true."),
    Case("task_name_not_a_folder_name", lambda s: s.distil("task.name=.."),
         r"^error: task\.name='\.\.' is '\.\.': it names a folder",
         "error: task.name='..' is '..': it names a folder (paths.artifacts/teachers/<teacher.name>/<task.name>, "
         "outputs/<entry>/<task.name>/...); use a plain name such as my_task",
         "task.name and teacher.name become folder names; an empty one, '..', one with '/' or a leading '.' "
         "would point the command at a parent folder or outside paths.artifacts / paths.output_root.",
         "Use a plain name (letters, digits, '-', '_')."),
    Case("run_dir_is_a_published_teacher",
         lambda s: s.elsewhere(s.distil("overwrite=true"), s.published_teacher()),
         r"^error: \S+ holds a published teacher, not a run directory: a run never writes into it",
         "error: <dir> holds a published teacher, not a run directory: a run never writes into it (not even "
         "with overwrite=true); give the run its own hydra.run.dir",
         "hydra.run.dir points at a teacher that train_teacher.py published; overwrite=true would mix the "
         "run's files into it and replace its metrics.json.",
         "Give the run its own directory (drop hydra.run.dir, or point it elsewhere)."),
    Case("teacher_path_holds_other_teachers",
         lambda s: (s.published_teacher(), s.train_teacher("overwrite=true", f"teacher.path={s.root / 'teachers/local'}"))[1],
         r"^error: teacher\.path \S+ holds other files, not a published teacher: a teacher replaces only a teacher",
         "error: teacher.path <dir> holds other files, not a published teacher: a teacher replaces only a teacher "
         "(not even overwrite=true replaces it); set teacher.path to a folder of its own",
         "teacher.path names a folder that is not a published teacher (e.g. teachers/<teacher>/, the folder of "
         "every task's teacher, or a run directory): overwrite=true would have deleted all of it.",
         "Point teacher.path at the teacher's own folder (paths.artifacts/teachers/<teacher>/<task>)."),
    # ---- inputs that used to train silently wrong
    Case("text_column_is_the_label_column", lambda s: s.distil("task.text_a=label"),
         r"^error: task config 'sst2': task\.text_a and task\.label both name column 'label'",
         "error: task config 'sst2': task.text_a and task.label both name column 'label' (split 'train'): each role "
         "needs its own column; set task.text_a to the column that holds the text",
         "The text column is the label column: the model would read the answer (dev accuracy 1.0).",
         "Set task.text_a (and task.text_b) to the text columns, task.label to the label column."),
    Case("json_object_as_text",
         lambda s: s.distil(*s.custom_jsonl(['{"text": "good film", "label": "1"}',
                                             '{"text": {"title": "bad"}, "label": "0"}']), task="custom"),
         r"^error: \S+data\.jsonl: row 2: column 'text' \(task\.text_a\) holds a JSON object, not text",
         "error: <dir>/data.jsonl: row 2: column 'text' (task.text_a) holds a JSON object, not text; texts must be "
         "strings (quote them in JSON)",
         "A text value that is a JSON object, list or number would be trained on as its Python repr.",
         "Write the text as a JSON string, or point task.text_a at the column that holds the text."),
    Case("test_tsv_bad_row",
         lambda s: s.distil("trainer.predict_test=true",
                            data=s.glue_with("test.tsv", "index\tsentence\n0\tgood film\n1\tbad\tfilm\n")),
         r"^error: .*SST-2/test\.tsv:3: expected 2 tab-separated columns, found 3",
         "error: <data_dir>/SST-2/test.tsv:3: expected 2 tab-separated columns, found 3",
         "With trainer.predict_test=true (the default) the test split is read before training: a bad row used "
         "to be found only after it, and the run ended without predictions/.",
         "Fix the named line, or pass trainer.predict_test=false (a missing test file only skips the predictions)."),
    Case("data_file_is_a_directory",
         lambda s: s.distil(data=(s.glue_with("dev.tsv", None), (s.root / "glue/SST-2/dev.tsv").mkdir())[0]),
         r"^error: .*SST-2/dev\.tsv: is a directory, not a data file \(task 'sst2', split 'dev'\)",
         "error: <data_dir>/SST-2/dev.tsv: is a directory, not a data file (task 'sst2', split 'dev')",
         "A split's path names a folder (or a FIFO, socket or device: 'is not a regular file').",
         "Point the split at the file itself (data.<split>_file, or the GLUE folder's <split>.tsv)."),
    Case("lr_too_large", lambda s: s.distil("optim.lr=1e300"),
         r"^error: optim\.lr must be a number in \(0, 10\], got 1e\+300",
         "error: optim.lr must be a number in (0, 10], got 1e+300",
         "A learning rate that large overflows in the optimiser (NaN weights after the first step).",
         "Use e.g. optim.lr=1e-4 (distillation) or 2e-5 (BERT fine-tuning)."),
    # ---- existing outputs and resuming
    Case("finished_run_exists", lambda s: (s.existing_run(finished=True), s.distil())[1],
         r"^error: \S+ already holds a finished run; pass overwrite=true to replace it",
         "error: <run_dir> already holds a finished run; pass overwrite=true to replace it",
         "The same command already finished in this output dir; outputs are never replaced silently.",
         "Pass overwrite=true to train again, or change an override so the run gets its own dir."),
    Case("unfinished_run_exists", lambda s: (s.existing_run(finished=False), s.distil())[1],
         r"^error: \S+ already holds an unfinished run; pass trainer\.resume=true to continue it",
         "error: <run_dir> already holds an unfinished run; pass trainer.resume=true to continue it, "
         "or overwrite=true to replace it",
         "An earlier run of the same command stopped (crash, kill, Ctrl-C) and left checkpoints.",
         "trainer.resume=true continues from the last checkpoint; overwrite=true starts over."),
    Case("corrupt_checkpoint_on_resume",
         lambda s: (s.existing_run(finished=False, corrupt=True), s.distil("trainer.resume=true"))[1],
         r"^error: every checkpoint in \S+ is corrupt \(checksum mismatch\); cannot resume",
         "error: every checkpoint in <run_dir>/checkpoints is corrupt (checksum mismatch); cannot resume: ...",
         "Every checkpoint fails its checksum (disk full, copied while being written). A corrupt newest "
         "checkpoint alone is skipped with a warning and the previous one is used.",
         "Delete <run_dir>/checkpoints to start over, or pass overwrite=true."),
    Case("overwrite_with_bad_input_keeps_old_run",
         lambda s: (s.existing_run(finished=True), s.distil("overwrite=true", data=s.glue_with("dev.tsv", None)))[1],
         r"^error: .*SST-2/dev\.tsv: file not found",
         "error: <data_dir>/SST-2/dev.tsv: file not found (task 'sst2', split 'dev')",
         "overwrite=true does not skip the input checks: the run stops at the first mistake.",
         "Fix the input and run the command again."),
    # ---- tracking and sweeps
    Case("mlflow_unreachable",
         lambda s: [a for a in s.distil(f"mlflow.tracking_uri=http://127.0.0.1:{closed_port()}") if a != "mlflow=off"],
         r"^error: cannot reach the MLflow tracking store http://127\.0\.0\.1:\d+ .*run with mlflow=off",
         "error: cannot reach the MLflow tracking store http://127.0.0.1:5000 (...Connection refused...); "
         "start the server, fix mlflow.tracking_uri, or run with mlflow=off",
         "No MLflow server listens at mlflow.tracking_uri (one retry, so this takes seconds, not minutes).",
         "Start it (make ui), use the default sqlite:///mlruns.db, or pass mlflow=off."),
    Case("mlflow_uri_password_masked",
         lambda s: [a for a in s.distil(f"mlflow.tracking_uri=postgresql://u:s3cr3t@127.0.0.1:{closed_port()}/x")
                    if a != "mlflow=off"],
         r"^error: cannot reach the MLflow tracking store postgresql://u:\*\*\*@127\.0\.0\.1:\d+/x",
         "error: cannot reach the MLflow tracking store postgresql://u:***@127.0.0.1:5432/x (...)",
         "The database behind mlflow.tracking_uri is down, or its driver is not installed; passwords are "
         "masked in messages, params and tags.",
         "Start the database / install its driver (e.g. psycopg2 for postgresql), or pass mlflow=off."),
    Case("mlflow_artifact_location_with_password",
         lambda s: [a for a in s.distil(f"mlflow.tracking_uri=sqlite:///{s.root}-mlruns.db",
                                        "mlflow.artifact_location='s3://bucket/x?secret_key=Kx81pw2'") if a != "mlflow=off"],
         r"^error: mlflow\.artifact_location=s3://bucket/x\?secret_key=\*\*\* holds a password or key",
         "error: mlflow.artifact_location=s3://bucket/x?secret_key=*** holds a password or key: MLflow stores the "
         "location in the experiment and every run (shown in its UI); give the store's credentials through its "
         "own environment variables (AWS_SECRET_ACCESS_KEY, AZURE_STORAGE_ACCESS_KEY, ...) instead",
         "MLflow keeps the artifact location verbatim in the experiment and in every run's artifact URI.",
         "Drop the credentials from the location; the store's client reads them from its environment."),
    Case("mlflow_artifact_store_down",
         lambda s: [a for a in s.distil(f"mlflow.tracking_uri=sqlite:///{s.root}-mlruns.db",
                                        f"mlflow.experiment=lad-down-{s.root.name}",
                                        f"mlflow.artifact_location=http://127.0.0.1:{closed_port()}/art")
                    if a != "mlflow=off"],
         r"^error: cannot write to the MLflow artifact store http://127\.0\.0\.1:\d+/art \(",
         "error: cannot write to the MLflow artifact store http://127.0.0.1:5001/art (...Connection refused...); "
         "start it or fix mlflow.artifact_location (...), or run with mlflow=off",
         "A remote artifact store (s3://, http(s)://, mlflow-artifacts:) that is down or refuses writes; it is "
         "probed with one small file before training (30 s at most), not found after training.",
         "Start the store or fix its credentials; an existing experiment keeps the location it was created with "
         "(use another mlflow.experiment to change it); or pass mlflow=off."),
    Case("optuna_n_trials_zero",
         lambda s: (s.optuna_plugin(), ["distil.py", "-m", "hparams_search=lad_optuna", "hydra.sweeper.n_trials=0",
                                        f"hydra.sweeper.storage=sqlite:///{s.root}/o.db", *s.distil()[1:]])[1],
         r"hydra\.sweeper\.n_trials must be an integer >= 1 \(or null\), got 0",
         "hydra.sweeper.n_trials must be an integer >= 1 (or null), got 0",
         "A sweep of zero trials would do nothing and report no result.",
         "Pass how many trials this run adds (upstream's meaning), or hydra.sweeper.max_trials for a study total.",
         hydra=True),
    Case("optuna_every_trial_refused",
         lambda s: (s.optuna_plugin(), ["distil.py", "-m", "hparams_search=lad_optuna", "hydra.sweeper.n_trials=1",
                                        # the study and sweep folder are the sweep's own record, kept
                                        # outside the sandbox whose files must stay untouched
                                        f"hydra.sweeper.storage=sqlite:///{s.root}-study.db",
                                        f"hydra.sweep.dir={s.root}-sweep", *s.distil()[1:], "optim.batch_size=0"])[1],
         r"all 1 trial\(s\) of this sweep failed; first: trial 0: ConfigError: optim\.batch_size must be an "
         r"integer >= 1, got 0",
         "all 1 trial(s) of this sweep failed; first: trial 0: ConfigError: optim.batch_size must be an integer "
         ">= 1, got 0",
         "A value that is wrong for every trial (here a fixed override, not a searched one): each trial is "
         "recorded FAIL with its one-line error, and the sweep ends with the first one.",
         "Fix the value and run the sweep again (the study keeps the FAIL trials; they are not re-sampled).",
         hydra=True),
    Case("optuna_storage_malformed",
         lambda s: (s.optuna_plugin(), ["distil.py", "-m", "hparams_search=lad_optuna", "hydra.sweeper.n_trials=1",
                                        "hydra.sweeper.storage=not-a-url", *s.distil()[1:]])[1],
         r"cannot open Optuna storage 'not-a-url' \(expected an SQLAlchemy URL",
         "cannot open Optuna storage 'not-a-url' (expected an SQLAlchemy URL such as sqlite:///sweeps/optuna.db)",
         "hydra.sweeper.storage must be an SQLAlchemy URL.",
         "Use sqlite:///sweeps/optuna.db (the default), or postgresql://user:pw@host/db.", hydra=True),
]


# --------------------------------------------------------------------------- helpers
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
    try:
        argv = case.argv(sandbox)
    except pytest.skip.Exception as exc:
        return Outcome(None, 0.0, {}, {}, skipped=str(exc))
    before = snapshot(sandbox.root)
    proc, seconds = run_entry(argv)
    return Outcome(proc, seconds, before, snapshot(sandbox.root))


@pytest.fixture(scope="session")
def small_vocab_teacher(tmp_path_factory) -> Path:
    """A teacher whose config says vocab_size=100 next to the 30522-token MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from conftest import minilm_dir

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=37, max_position_embeddings=128, num_labels=2)
    path = tmp_path_factory.mktemp("small_vocab") / "teacher"
    BertForSequenceClassification(cfg).save_pretrained(path, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(minilm_dir())).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory, tiny_glue, tiny_teacher, small_vocab_teacher) -> dict[str, Outcome]:
    """Run every selected case at once (a few at a time): most of each run is interpreter start-up."""
    wanted = {item.callspec.params["case"].id for item in request.session.items
              if item.module is request.module and hasattr(item, "callspec") and "case" in item.callspec.params}
    cases = [c for c in CASES if c.id in wanted]

    def one(case: Case) -> Outcome:
        root = tmp_path_factory.mktemp(case.id)
        return run_case(case, Sandbox(root, tiny_glue, tiny_teacher, small_vocab_teacher))

    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        return dict(zip([c.id for c in cases], pool.map(one, cases)))


def _param(case: Case):
    marks = [pytest.mark.xfail(strict=True, reason=case.known_defect)] if case.known_defect else []
    return pytest.param(case, id=case.id, marks=marks)


# --------------------------------------------------------------------------- tests
def test_case_table_is_complete_and_consistent():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) >= 15
    for case in CASES:
        assert re.search(case.expect, case.symptom), f"{case.id}: symptom does not match its own pattern"
        assert case.cause.strip() and case.fix.strip(), case.id


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input_gives_one_clear_error_and_writes_nothing(case: Case, outcomes: dict[str, Outcome]):
    outcome = outcomes[case.id]
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    proc = outcome.proc
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"exit 0: the mistake was not caught\n{out[-3000:]}"
    assert "Traceback" not in out, out[-3000:]
    if case.hydra:
        assert re.search(case.expect, proc.stderr, re.MULTILINE), proc.stderr[-3000:]
    else:
        assert proc.returncode == 2, out[-3000:]
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), \
            f"stderr should hold exactly one error line:\n{proc.stderr[-3000:]}"
        assert re.search(case.expect, lines[0]), lines[0]
    changed = sorted(set(outcome.after.items()) ^ set(outcome.before.items()))
    assert outcome.after == outcome.before, f"files written or changed: {changed}"


def test_hydra_full_error_shows_the_traceback(tmp_path, tiny_glue, tiny_teacher):
    sandbox = Sandbox(tmp_path, tiny_glue, tiny_teacher, tmp_path)
    proc, _ = run_entry(sandbox.distil("optim.lr=-1"), env_extra={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ConfigError: optim.lr must be > 0" in proc.stderr


def test_unreachable_mlflow_server_fails_fast(monkeypatch):
    """One retry and a short timeout (set by lad.tracking.connect): seconds, not minutes."""
    from omegaconf import OmegaConf

    from lad.errors import LADError
    from lad.tracking import connect

    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    saved = dict(os.environ)
    uri = f"http://127.0.0.1:{closed_port()}"
    t0 = time.monotonic()
    try:
        with pytest.raises(LADError, match=f"cannot reach the MLflow tracking store {re.escape(uri)}"):
            connect(OmegaConf.create({"tracking_uri": uri}))
    finally:
        os.environ.clear()
        os.environ.update(saved)
        import mlflow

        mlflow.set_tracking_uri(None)
    assert time.monotonic() - t0 < 30


def test_troubleshooting_doc_is_generated_from_this_table():
    """docs/troubleshooting.md is rendered from CASES; re-run scripts/troubleshooting.py after edits."""
    proc = subprocess.run([sys.executable, "scripts/troubleshooting.py", "--check"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = (REPO / "docs" / "troubleshooting.md").read_text()
    assert all(f"`{' '.join(c.symptom.split())}`".replace("|", "\\|") in doc for c in CASES)
