"""Probe the real entry points with bad and adversarial inputs, the way a new user would.

    python scripts/probe_inputs.py                 # all cases, 2 at a time
    python scripts/probe_inputs.py -k teacher -j 1 # cases whose id contains "teacher"

Every case runs ``distil.py`` / ``train_teacher.py`` in a subprocess inside its own scratch folder
(tiny random teacher, tiny SST-2-format data, MLflow off unless the case is about MLflow) and
prints one row: case -> exit code -> first stderr line -> flags. Flags:

* ``TRACEBACK``  a Python traceback reached the user;
* ``EXIT=<n>``   a user mistake did not end with exit status 2 (Hydra's own composition errors,
                 marked ``hydra``, exit 1 by design);
* ``LINES=<n>``  more than one stderr line for a user mistake;
* ``LEAK``       the case's password appeared on stdout/stderr or in any file under its folder;
* ``CHANGED``    a run directory that existed before the command was modified;
* ``RAN``        a mistake was not caught (exit 0); ``FAILED`` an input that should run did not.

Exit status 1 when any case is flagged. Not part of the test suite (it takes a few minutes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent

SECRET = "Xy9SecretPw"


@dataclass
class Box:
    root: Path
    glue: Path
    teacher: Path

    @property
    def run(self) -> Path:
        return self.root / "run"

    def common(self, data: Path | None = None) -> list[str]:
        return ["mlflow=off", f"paths.output_root={self.root / 'outputs'}", f"hydra.run.dir={self.run}",
                f"data.data_dir={data or self.glue}", f"data.cache_dir={self.root / 'cache'}",
                f"cache.dir={self.root / 'tcache'}", f"paths.artifacts={self.root / 'artifacts'}",
                "device=cpu", "trainer.progress=false", "trainer.num_threads=1", "trainer.max_steps=2",
                "trainer.predict_test=false", "optim.batch_size=8"]

    def distil(self, *extra: str, data: Path | None = None, teacher: Path | str | None = None,
               task: str = "sst2") -> list[str]:
        return ["distil.py", f"task={task}", "teacher=local", f"teacher.path={teacher or self.teacher}",
                "student=2layer", *self.common(data), *extra]

    def teacher_cmd(self, *extra: str, backbone: Path | None = None, data: Path | None = None,
                    task: str = "sst2") -> list[str]:
        common = [a for a in self.common(data) if not a.startswith("cache.dir")]
        return ["train_teacher.py", f"task={task}", "teacher=local", f"teacher.backbone={backbone or self.teacher}",
                f"teacher.path={self.root / 'teacher_out'}", *common, *extra]

    def no_mlflow_off(self, argv: list[str]) -> list[str]:
        return [a for a in argv if a != "mlflow=off"]

    # broken inputs --------------------------------------------------------------------------
    def data_with(self, name: str, content: bytes | None) -> Path:
        glue = self.root / "glue"
        if not glue.exists():
            shutil.copytree(self.glue, glue)
        target = glue / "SST-2" / name
        if content is None:
            target.unlink()
        else:
            target.write_bytes(content)
        return glue

    def teacher_copy(self, edit: Callable[[Path], None]) -> Path:
        path = self.root / "teacher_copy"
        shutil.copytree(self.teacher, path)
        edit(path)
        return path

    def existing_run(self, finished: bool, corrupt: bool = False, config: dict | None = None) -> None:
        ckpt = self.run / "checkpoints" / "step-5"
        ckpt.mkdir(parents=True)
        (ckpt / "weights.safetensors").write_bytes(b"\0" * 64)
        (ckpt / "state.pt").write_bytes(b"\1" * 64)
        sums = {"weights.safetensors": hashlib.sha256(b"\0" * 64).hexdigest(),
                "state.pt": hashlib.sha256(b"\1" * 64).hexdigest()}
        (ckpt / "checksums.json").write_text(json.dumps({k: "0" * 64 for k in sums} if corrupt else sums))
        (self.run / ".hydra").mkdir()
        (self.run / ".hydra" / "config.yaml").write_text("seed: 42\n")
        (self.run / "distil.log").write_text("old log\n")
        if config is not None:
            from omegaconf import OmegaConf

            (self.run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
        if finished:
            (self.run / "model").mkdir()
            (self.run / "model" / "model.safetensors").write_bytes(b"finished weights")
            (self.run / "metrics.json").write_text('{"best": {"accuracy": 0.9}}')

    def hold_lock(self) -> None:
        from filelock import FileLock

        from lad.run.rundir import lock_file

        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(str(lock_file(self.run)))
        self.lock.acquire()

    def stored_study(self, db: Path) -> None:
        import optuna
        from optuna.distributions import FloatDistribution

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(study_name="probe", storage=f"sqlite:///{db}", direction="maximize")
        study.add_trial(optuna.trial.create_trial(
            params={"optim.lr": 1e-4}, distributions={"optim.lr": FloatDistribution(1e-6, 1e-2, log=True)},
            value=0.5))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Case:
    id: str
    argv: Callable[[Box], list[str]]
    kind: str = "user"          # user (exit 2, one error line) | hydra (Hydra's own error) | ok (must run)
    round: int = 1              # the probe that added the case (--round N): 1, 2 (issue 22) or 3 (issue 34)
    env: dict | None = None     # extra environment variables of the command


def _schema_cases() -> list[Case]:
    """One wrong value per typed key that distil.py / train_teacher.py read (lad/core/schema.py)."""
    from omegaconf import OmegaConf

    from lad.core.schema import KEYS
    from lad.testing import compose

    defaults = compose("distil", ["teacher=local", "student=2layer"])
    cases = []
    for name, key in KEYS.items():
        if name.startswith(("search.", "n_trials", "max_trials", "student.hidden_size", "student.intermediate_size",
                            "student.num_attention_heads", "task.is_regression")):
            continue
        if key.kind == "int":
            bad = ["2.5"] + (["0"] if (key.low or 0) >= 1 else ["-7"])
        elif key.kind == "bool":
            bad = ["yes"]
        elif key.kind == "choice":
            bad = ["bogus"]
        else:
            bad = ["-1"] if key.positive or key.low is not None else ["nan"]
        for value in bad:
            # a key the default config lacks (e.g. one of another loss) is Hydra's "not in struct" error
            kind = "user" if OmegaConf.select(defaults, name, default="<absent>") != "<absent>" else "hydra"
            cases.append(Case(f"value:{name}={value}", lambda b, n=name, v=value: b.distil(f"{n}={v}"), kind))
    return cases


def _damage_weights(path: Path) -> None:
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:2048])


def _drop_tokenizer(path: Path) -> None:
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (path / name).unlink(missing_ok=True)


def _relabel(path: Path) -> None:
    config = json.loads((path / "config.json").read_text())
    config["id2label"], config["label2id"] = {"0": "1", "1": "0"}, {"1": 0, "0": 1}
    (path / "config.json").write_text(json.dumps(config))


def _small_vocab(path: Path) -> None:
    config = json.loads((path / "config.json").read_text())
    config["vocab_size"] = 100
    (path / "config.json").write_text(json.dumps(config))


def _config_not_json(path: Path) -> None:
    (path / "config.json").write_text("{ not json")


def _weights_empty(path: Path) -> None:
    (path / "model.safetensors").write_bytes(b"")


def _weights_garbage(path: Path) -> None:
    (path / "model.safetensors").write_bytes(os.urandom(4096))


TSV_HEAD = b"sentence\tlabel\n"
STSB = b"index\tsentence1\tsentence2\tscore\n"


def _stsb(box: Box, rows: bytes) -> Path:
    task_dir = box.root / "glue_stsb" / "STS-B"
    task_dir.mkdir(parents=True)
    for split in ("train", "dev"):
        (task_dir / f"{split}.tsv").write_bytes(STSB + rows)
    return task_dir.parent


def cases() -> list[Case]:
    port = free_port()
    out = _schema_cases()
    out += [
        # Hydra's own composition errors
        Case("hydra:unknown_task", lambda b: b.distil("task=nope"), "hydra"),
        Case("hydra:unknown_student", lambda b: b.distil("student=9layer"), "hydra"),
        Case("hydra:unknown_key", lambda b: b.distil("optim.lrr=1"), "hydra"),
        Case("hydra:bad_override_syntax", lambda b: b.distil("optim.lr=="), "hydra"),
        # other values
        Case("value:device=tpu", lambda b: b.distil("device=tpu")),
        Case("value:optim.lr=inf", lambda b: b.distil("optim.lr=inf")),
        Case("value:optim.lr=nan", lambda b: b.distil("optim.lr=nan")),
        Case("value:optim.lr=string", lambda b: b.distil("optim.lr='1e-4'")),
        Case("value:lr_scheduler_type", lambda b: b.distil("optim.lr_scheduler_type=cosine_with_restarts")),
        Case("value:resume_missing_dir", lambda b: b.distil(f"trainer.resume={b.root}/nowhere")),
        Case("value:teacher.source", lambda b: b.distil("teacher.source=s3")),
        Case("value:missing_backbone", lambda b: [a for a in b.teacher_cmd() if not a.startswith("teacher.backbone")]),
        Case("value:all_loss_weights_zero",
             lambda b: b.distil("loss.hard_weight=0", "loss.soft_weight=0", "loss.hidden_weight=0")),
        Case("value:gate_without_hidden", lambda b: b.distil("loss=kd")),
        # data
        Case("data:dir_missing", lambda b: b.distil(data=b.root / "nope")),
        Case("data:dir_is_a_file", lambda b: (b.root.mkdir(parents=True, exist_ok=True),
                                              (b.root / "f").write_text("x"), b.distil(data=b.root / "f"))[2]),
        Case("data:task_folder_missing", lambda b: b.distil(task="rte")),
        Case("data:dev_missing", lambda b: b.distil(data=b.data_with("dev.tsv", None))),
        Case("data:train_empty", lambda b: b.distil(data=b.data_with("train.tsv", b""))),
        Case("data:header_only", lambda b: b.distil(data=b.data_with("train.tsv", TSV_HEAD))),
        Case("data:latin1", lambda b: b.distil(data=b.data_with("train.tsv", TSV_HEAD + b"caf\xe9 ok\t1\n"))),
        Case("data:utf16", lambda b: b.distil(data=b.data_with("train.tsv", (TSV_HEAD + b"good\t1\n").decode()
                                                               .encode("utf-16")))),
        Case("data:nul_bytes", lambda b: b.distil(data=b.data_with("train.tsv", TSV_HEAD + b"go\0od\t1\n"))),
        Case("data:extra_column", lambda b: b.distil(data=b.data_with("train.tsv", TSV_HEAD + b"a\tb\t1\n"))),
        Case("data:missing_column", lambda b: b.distil(data=b.data_with("train.tsv", b"text\tlabel\ngood\t1\n"))),
        Case("data:bad_label", lambda b: b.distil(data=b.data_with("train.tsv", TSV_HEAD + b"good\t7\n"))),
        Case("data:binary_file", lambda b: b.distil(data=b.data_with("dev.tsv", os.urandom(2000)))),
        Case("data:stsb_text_score", lambda b: b.teacher_cmd(task="stsb", data=_stsb(b, b"0\ta\tb\thigh\n"))),
        Case("data:stsb_nan_score", lambda b: b.teacher_cmd(task="stsb", data=_stsb(b, b"0\ta\tb\tnan\n"))),
        Case("data:stsb_out_of_range", lambda b: b.teacher_cmd(task="stsb", data=_stsb(b, b"0\ta\tb\t9\n"))),
        Case("data:cache_dir_is_a_file", lambda b: (b.root.mkdir(parents=True, exist_ok=True),
                                                    (b.root / "f").write_text("x"),
                                                    b.distil(f"data.cache_dir={b.root}/f/cache"))[2]),
        Case("data:long_texts_truncated", lambda b: b.distil("task.max_seq_length=8"), "ok"),
        Case("data:max_len_above_positions", lambda b: b.distil("task.max_seq_length=4096"), "ok"),
        # teacher folders
        Case("teacher:missing", lambda b: b.distil(teacher=b.root / "none")),
        Case("teacher:is_a_file", lambda b: (b.root.mkdir(parents=True, exist_ok=True),
                                             (b.root / "f").write_text("x"), b.distil(teacher=b.root / "f"))[2]),
        Case("teacher:no_tokenizer", lambda b: b.distil(teacher=b.teacher_copy(_drop_tokenizer))),
        Case("teacher:label_order", lambda b: b.distil(teacher=b.teacher_copy(_relabel))),
        Case("teacher:damaged_weights", lambda b: b.distil(teacher=b.teacher_copy(_damage_weights))),
        Case("teacher:empty_weights", lambda b: b.distil(teacher=b.teacher_copy(_weights_empty))),
        Case("teacher:garbage_weights", lambda b: b.distil(teacher=b.teacher_copy(_weights_garbage))),
        Case("teacher:config_not_json", lambda b: b.distil(teacher=b.teacher_copy(_config_not_json))),
        Case("teacher:vocab_mismatch", lambda b: b.distil(teacher=b.teacher_copy(_small_vocab))),
        Case("teacher:wrong_task", lambda b: b.distil(task="stsb", data=_stsb(b, b"0\ta\tb\t4\n1\tc\td\t1\n"))),
        Case("teacher:student_too_deep", lambda b: b.distil("student=6layer")),
        Case("backbone:no_tokenizer", lambda b: b.teacher_cmd(backbone=b.teacher_copy(_drop_tokenizer))),
        Case("backbone:damaged_weights", lambda b: b.teacher_cmd(backbone=b.teacher_copy(_damage_weights))),
        Case("backbone:output_under_a_file", lambda b: (b.root.mkdir(parents=True, exist_ok=True),
                                                        (b.root / "f").write_text("x"),
                                                        b.teacher_cmd(f"teacher.path={b.root}/f/t"))[2]),
        # run directory
        Case("run:finished_exists", lambda b: (b.existing_run(True), b.distil())[1]),
        Case("run:unfinished_exists", lambda b: (b.existing_run(False), b.distil())[1]),
        Case("run:corrupt_checkpoint_resume", lambda b: (b.existing_run(False, corrupt=True),
                                                         b.distil("trainer.resume=true"))[1]),
        Case("run:resume_other_config", lambda b: (b.existing_run(False, config={"optim": {"lr": 0.3}}),
                                                   b.distil("trainer.resume=true"))[1]),
        Case("run:in_use", lambda b: (b.hold_lock(), b.distil())[1]),
        Case("run:in_use_finished", lambda b: (b.existing_run(True), b.hold_lock(), b.distil("overwrite=true"))[2]),
        Case("run:overwrite_with_bad_data", lambda b: (b.existing_run(True),
                                                       b.distil("overwrite=true", data=b.data_with("dev.tsv", None)))[1]),
        Case("run:output_under_a_file", lambda b: (b.root.mkdir(parents=True, exist_ok=True),
                                                   (b.root / "f").write_text("x"),
                                                   [a for a in b.distil() if not a.startswith("hydra.run.dir")]
                                                   + [f"hydra.run.dir={b.root}/f/run"])[-1]),
        # secrets
        Case("secret:mlflow_http_down", lambda b: b.no_mlflow_off(
            b.distil(f"mlflow.tracking_uri=http://u:{SECRET}@127.0.0.1:{port}"))),
        Case("secret:mlflow_postgres_down", lambda b: b.no_mlflow_off(
            b.distil(f"mlflow.tracking_uri=postgresql://u:{SECRET}@127.0.0.1:{port}/db"))),
        Case("secret:mlflow_bad_scheme", lambda b: b.no_mlflow_off(
            b.distil(f"mlflow.tracking_uri=ftp://u:{SECRET}@127.0.0.1:{port}/db"))),
        Case("secret:in_unrelated_override_and_bad_value", lambda b: b.no_mlflow_off(
            b.distil(f"mlflow.tracking_uri=http://u:{SECRET}@127.0.0.1:{port}", "optim.lr=-1"))),
        Case("secret:artifact_location_with_key", lambda b: b.no_mlflow_off(
            b.distil(f"mlflow.tracking_uri=http://127.0.0.1:{port}",
                     f"mlflow.artifact_location='s3://bucket?secret_key={SECRET}'"))),
        Case("secret:optuna_storage_bad", lambda b: ["distil.py", "-m", "hparams_search=lad_optuna",
                                                     "hydra.sweeper.n_trials=1",
                                                     f"hydra.sweeper.storage=postgresql://u:{SECRET}@127.0.0.1:{port}/x",
                                                     *b.distil()[1:]], "hydra"),
        Case("secret:teacher_uri", lambda b: [a for a in b.no_mlflow_off(b.distil(
            f"mlflow.tracking_uri=http://u:{SECRET}@127.0.0.1:{port}")) if not a.startswith("teacher")]
            + ["teacher=mlflow", "teacher.uri=models:/nope/1"]),
        # Optuna sweeps
        Case("optuna:n_trials_zero", lambda b: ["distil.py", "-m", "hparams_search=lad_optuna",
                                                "hydra.sweeper.n_trials=0",
                                                f"hydra.sweeper.storage=sqlite:///{b.root}/o.db", *b.distil()[1:]],
             "hydra"),
        Case("optuna:n_trials_negative", lambda b: ["distil.py", "-m", "hparams_search=lad_optuna",
                                                    "hydra.sweeper.n_trials=-2",
                                                    f"hydra.sweeper.storage=sqlite:///{b.root}/o.db",
                                                    *b.distil()[1:]], "hydra"),
        Case("optuna:direction", lambda b: ["distil.py", "-m", "hparams_search=lad_optuna",
                                            "hydra.sweeper.direction=up",
                                            f"hydra.sweeper.storage=sqlite:///{b.root}/o.db", *b.distil()[1:]],
             "hydra"),
        Case("optuna:storage_not_url", lambda b: ["distil.py", "-m", "hparams_search=lad_optuna",
                                                  "hydra.sweeper.storage=nonsense", *b.distil()[1:]], "hydra"),
        Case("optuna:other_space", lambda b: (b.root.mkdir(parents=True, exist_ok=True),
                                              b.stored_study(b.root / "o.db"),
                                              ["distil.py", "-m", "hparams_search=lad_optuna",
                                               "hydra.sweeper.n_trials=3", "hydra.sweeper.study_name=probe",
                                               f"hydra.sweeper.storage=sqlite:///{b.root}/o.db",
                                               f"hydra.sweep.dir={b.root}/sweep", *b.distil()[1:]])[2], "hydra"),
    ]
    return out + round2() + round3()


def _tensors(path: Path, edit: Callable[[dict], dict]) -> None:
    """Rewrite the teacher's weights through ``edit`` (a valid safetensors file with other content)."""
    from safetensors.torch import load_file, save_file

    weights = path / "model.safetensors"
    save_file(edit(load_file(str(weights))), str(weights), metadata={"format": "pt"})


def _nan_weights(path: Path) -> None:
    def edit(tensors: dict) -> dict:
        name = next(k for k in tensors if k.startswith("classifier.weight"))
        tensors[name] = tensors[name].clone().fill_(float("nan"))
        return tensors

    _tensors(path, edit)


def _renamed_weights(path: Path) -> None:
    _tensors(path, lambda tensors: {f"other.{k}": v for k, v in tensors.items()})


def _fewer_layers_in_config(path: Path) -> None:
    config = json.loads((path / "config.json").read_text())
    config["num_hidden_layers"] = 2
    (path / "config.json").write_text(json.dumps(config))


def _wider_config(path: Path) -> None:
    config = json.loads((path / "config.json").read_text())
    config["intermediate_size"] = config["intermediate_size"] * 2
    (path / "config.json").write_text(json.dumps(config))


def _tokenizer_not_json(path: Path) -> None:
    (path / "tokenizer.json").write_text("{ not json")
    (path / "vocab.txt").unlink(missing_ok=True)


def _empty_model_dir(box: Box) -> Path:
    path = box.root / "empty_teacher"
    path.mkdir(parents=True)
    return path


def _file(box: Box, name: str = "f") -> Path:
    box.root.mkdir(parents=True, exist_ok=True)
    (box.root / name).write_text("x")
    return box.root / name


def _run_elsewhere(box: Box, argv: list[str], run: Path) -> list[str]:
    return [a for a in argv if not a.startswith("hydra.run.dir")] + [f"hydra.run.dir={run}"]


def _sweep(box: Box, *extra: str) -> list[str]:
    tracked = any(a.startswith("mlflow.tracking_uri") for a in extra)
    argv = box.no_mlflow_off(box.distil()) if tracked else box.distil()
    return ["distil.py", "-m", "hparams_search=lad_optuna", f"hydra.sweep.dir={box.root}/sweep",
            *argv[1:], *extra]  # later overrides win: the case's come last


def _search(box: Box, *extra: str) -> list[str]:
    keep = ("mlflow=off", "paths.", "data.", "cache.dir", "device", "trainer.", "optim.batch_size")
    return ["sweeps/search.py", "task=sst2", "teacher=local", f"teacher.path={box.teacher}", "student=2layer",
            f"output_dir={box.root}/search", "search.plots=false",
            *[a for a in box.common() if a.startswith(keep)], *extra]


UNICODE_DIR = "donn\u00e9es \u00fc"


def _glue_copy(box: Box, name: str) -> Path:
    target = box.root / name
    shutil.copytree(box.glue, target)
    return target


def round2() -> list[Case]:
    """The second probe (issue 22): other keys, types, files and entry points than the first."""
    port = free_port()
    pw_uri = f"http://u:{SECRET}@127.0.0.1:{port}"
    rows = b"good fun film\t1\nbad dull film\t0\n" * 8
    cases = [
        # 1. secrets: printed configs, other keys, other entry points, other spellings
        Case("secret:cfg_job_prints_config", lambda b: ["distil.py", "--cfg", "job", *b.no_mlflow_off(
            b.distil(f"mlflow.tracking_uri={pw_uri}"))[1:]], "ok"),
        Case("secret:cfg_hydra_prints_sweeper_storage", lambda b: ["distil.py", "--cfg", "hydra",
                                                                   "hparams_search=lad_optuna",
            f"hydra.sweeper.storage=postgresql://u:{SECRET}@127.0.0.1:{port}/x", *b.distil()[1:]], "ok"),
        Case("secret:info_config", lambda b: ["distil.py", "--info", "config", *b.no_mlflow_off(
            b.distil(f"mlflow.tracking_uri={pw_uri}"))[1:]], "ok"),
        Case("secret:cfg_all_resolve", lambda b: ["distil.py", "--cfg", "all", "--resolve", *b.no_mlflow_off(
            b.distil(f"mlflow.tracking_uri={pw_uri}"))[1:]], "ok"),
        Case("secret:percent_encoded_password", lambda b: b.no_mlflow_off(
            b.distil(f"mlflow.tracking_uri=http://u:{SECRET}%21x@127.0.0.1:{port}"))),
        Case("secret:token_query_parameter", lambda b: b.no_mlflow_off(
            b.distil(f"mlflow.tracking_uri='http://127.0.0.1:{port}/?token={SECRET}'"))),
        Case("secret:default_run_dir_name", lambda b: [a for a in b.no_mlflow_off(b.distil(
            f"mlflow.tracking_uri={pw_uri}", "optim.lr=-1")) if not a.startswith("hydra.run.dir")]),
        # LAD's mlflow.tracking_uri wins over the variable; its password still must not show anywhere
        Case("secret:env_tracking_uri", lambda b: b.no_mlflow_off(b.distil(
            f"mlflow.tracking_uri=sqlite:///{b.root}/m.db", f"mlflow.artifact_location={b.root}/art")), "ok",
             env={"MLFLOW_TRACKING_URI": pw_uri, "DATABASE_URL": f"postgresql://u:{SECRET}@127.0.0.1:{port}/x"}),
        Case("secret:search_storage_down", lambda b: _search(
            b, f"search.storage=postgresql://u:{SECRET}@127.0.0.1:{port}/x", "n_trials=1")),
        Case("secret:sweep_with_password_and_bad_value", lambda b: _sweep(
            b, "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage=sqlite:///{b.root}/o.db",
            f"mlflow.tracking_uri={pw_uri}", "optim.batch_size=0"), "hydra"),
        Case("secret:sweep_with_password_server_down", lambda b: _sweep(
            b, "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage=sqlite:///{b.root}/o.db",
            f"mlflow.tracking_uri={pw_uri}"), "hydra"),
        # 2. what is recorded is what ran
        Case("value:bool_as_quoted_string", lambda b: b.distil("trainer.progress='false'")),
        Case("value:float_key_given_true", lambda b: b.distil("optim.lr=true")),
        Case("value:seed_above_2_32", lambda b: b.distil("seed=99999999999")),
        Case("value:interpolation_to_missing_key", lambda b: b.distil("optim.lr=${optim.nope}")),
        Case("value:unset_env_interpolation", lambda b: b.distil("optim.lr=${oc.env:LAD_PROBE_UNSET}")),
        Case("value:data_dir_empty", lambda b: b.distil("data.data_dir=''")),
        Case("value:search_n_trials_zero", lambda b: _search(b, "n_trials=0")),
        Case("value:search_n_trials_fraction", lambda b: _search(b, "n_trials=1.5")),
        Case("optuna:n_trials_fraction", lambda b: _sweep(b, "hydra.sweeper.n_trials=1.5",
                                                          f"hydra.sweeper.storage=sqlite:///{b.root}/o.db"), "hydra"),
        Case("optuna:n_jobs_zero", lambda b: _sweep(b, "hydra.sweeper.n_jobs=0",
                                                    f"hydra.sweeper.storage=sqlite:///{b.root}/o.db"), "hydra"),
        Case("teacher:config_fewer_layers_than_weights", lambda b: b.distil(teacher=b.teacher_copy(
            _fewer_layers_in_config))),
        Case("teacher:config_shape_differs_from_weights", lambda b: b.distil(teacher=b.teacher_copy(_wider_config))),
        Case("teacher:weights_of_another_model", lambda b: b.distil(teacher=b.teacher_copy(_renamed_weights))),
        Case("teacher:tokenizer_json_damaged", lambda b: b.distil(teacher=b.teacher_copy(_tokenizer_not_json))),
        Case("teacher:empty_directory", lambda b: b.distil(teacher=_empty_model_dir(b))),
        Case("backbone:weights_of_another_model", lambda b: b.teacher_cmd(backbone=b.teacher_copy(_renamed_weights))),
        # data files
        Case("data:utf8_bom", lambda b: b.distil(data=b.data_with("train.tsv", b"\xef\xbb\xbf" + TSV_HEAD + rows)),
             "ok"),
        Case("data:crlf_line_ends", lambda b: b.distil(data=b.data_with(
            "train.tsv", (TSV_HEAD + rows).replace(b"\n", b"\r\n"))), "ok"),
        Case("data:trailing_blank_lines", lambda b: b.distil(data=b.data_with("train.tsv", TSV_HEAD + rows + b"\n\n")),
             "ok"),
        Case("data:blank_text", lambda b: b.distil(data=b.data_with("train.tsv", TSV_HEAD + rows + b"   \t1\n"))),
        Case("data:dev_header_only", lambda b: b.distil(data=b.data_with("dev.tsv", TSV_HEAD))),
        # spaces around a label are not part of it: the reader strips them (" 1" is label 1), as it always has
        Case("data:label_with_spaces", lambda b: b.distil(data=b.data_with("train.tsv", TSV_HEAD + rows + b"ok\t 1\n")),
             "ok"),
        # a space needs Hydra's quotes inside the override (the shell's are gone by then)
        Case("data:unicode_and_space_in_path",
             lambda b: b.distil(f"data.data_dir='{_glue_copy(b, UNICODE_DIR)}'"), "ok"),
        # 3. a run directory belongs to one run
        Case("run:run_dir_is_a_file", lambda b: _run_elsewhere(b, b.distil(), _file(b, "run"))),
        # resume=true starts a new run when there is nothing to resume (sweeps/teachers.py relies on it), and
        # with overwrite=true it resumes an unfinished run or replaces a finished one
        Case("run:resume_without_a_run", lambda b: b.distil("trainer.resume=true"), "ok"),
        Case("run:resume_and_overwrite", lambda b: (b.existing_run(True), b.distil("trainer.resume=true",
                                                                                    "overwrite=true"))[1], "ok"),
        Case("run:finished_rerun_with_password", lambda b: (b.existing_run(True), b.no_mlflow_off(
            b.distil(f"mlflow.tracking_uri={pw_uri}")))[1]),
        Case("run:teacher_output_is_an_existing_model", lambda b: [
            a for a in b.teacher_cmd() if not a.startswith("teacher.path")]
            + [f"teacher.path={b.teacher_copy(lambda p: None)}"]),
        # 4. numeric faults
        Case("numeric:lr_huge", lambda b: b.distil("optim.lr=1e30", "trainer.eval_every=1")),
        Case("numeric:temperature_tiny", lambda b: b.distil("loss.temperature=1e-38", "trainer.eval_every=1")),
        Case("numeric:teacher_nan_weights", lambda b: b.distil(teacher=b.teacher_copy(_nan_weights))),
        # 5. one line, before heavy work
        Case("value:cache_max_gb_tiny", lambda b: b.distil("cache.max_gb=1e-9")),
        Case("value:artifacts_under_a_file", lambda b: [a for a in b.teacher_cmd()
                                                        if not a.startswith("teacher.path")]
             + [f"paths.artifacts={_file(b)}/a", f"teacher.path={b.root}/f/a/t"]),
    ]
    return [replace(c, round=2) for c in cases]


def _published_teacher(box: Box) -> Path:
    """A teacher as train_teacher.py publishes it, under ``<root>/artifacts/teachers/local/sst2``."""
    path = box.root / "artifacts" / "teachers" / "local" / "sst2"
    shutil.copytree(box.teacher, path)
    (path / "lad_teacher.json").write_text('{"backbone": "x", "teacher": "local", "task": "sst2"}\n')
    (path / "metrics.json").write_text('{"best": {"accuracy": 0.9}}')
    return path


def _dev_replaced(box: Box, make: Callable[[Path], None]) -> Path:
    glue = box.data_with("dev.tsv", None)
    make(glue / "SST-2" / "dev.tsv")
    return glue


def _tracked(box: Box, argv: list[str], *extra: str) -> list[str]:
    """``argv`` with MLflow on, its store inside the case's folder (searched for the password)."""
    return box.no_mlflow_off(argv) + [f"mlflow.tracking_uri=sqlite:///{box.root}/mlruns.db",
                                      f"mlflow.artifact_location={box.root}/mlartifacts", *extra]


def round3() -> list[Case]:
    """The third probe (issue 34): paths and kinds, secrets MLflow stores, stores, inputs, values."""
    port = free_port()
    jsonl = b'{"text": "good film", "label": "1"}\n{"text": {"title": "bad"}, "label": "0"}\n'

    def custom(box: Box, rows: bytes) -> list[str]:
        box.root.mkdir(parents=True, exist_ok=True)
        (box.root / "d.jsonl").write_bytes(rows)
        return box.distil(f"data.train_file={box.root}/d.jsonl", f"data.dev_file={box.root}/d.jsonl", task="custom")

    cases = [
        # 1. nothing outside the named run or teacher
        Case("run:task_name_parent", lambda b: b.distil("task.name=..")),
        Case("run:task_name_empty", lambda b: b.teacher_cmd("task.name=''")),
        Case("run:task_name_escapes_artifacts", lambda b: b.teacher_cmd("task.name=../../escaped")),
        Case("run:teacher_name_with_slash", lambda b: [a for a in b.teacher_cmd("teacher.name=a/b")
                                                       if not a.startswith("teacher.path")]),
        Case("run:student_into_published_teacher", lambda b: _run_elsewhere(
            b, b.distil("overwrite=true"), _published_teacher(b))),
        Case("run:teacher_path_is_every_teacher", lambda b: (_published_teacher(b), b.teacher_cmd(
            "overwrite=true", f"teacher.path={b.root}/artifacts/teachers/local"))[1]),
        Case("run:teacher_path_is_the_run_dir", lambda b: b.teacher_cmd(f"teacher.path={b.run}")),
        Case("run:teacher_overwrite_replaces_teacher", lambda b: (_published_teacher(b), b.teacher_cmd(
            "overwrite=true", f"teacher.path={b.root}/artifacts/teachers/local/sst2"))[1], "ok"),
        # 2. secrets that MLflow stores verbatim
        Case("secret:artifact_location_password", lambda b: _tracked(
            b, b.distil(), f"mlflow.artifact_location='s3://bucket/x?secret_key={SECRET}'")),
        Case("secret:run_name_url", lambda b: _tracked(b, b.distil(), f"mlflow.run_name=http://u:{SECRET}@h.example/x",
                                                        "mlflow.log_model=false"), "ok"),
        Case("secret:experiment_name_url", lambda b: _tracked(
            b, b.distil(), f"mlflow.experiment=lad-http://u:{SECRET}@h.example/x", "mlflow.log_model=false"), "ok"),
        # 3. stores checked before training
        Case("store:artifact_store_down", lambda b: _tracked(
            b, b.distil(), f"mlflow.artifact_location=http://127.0.0.1:{port}/art")),
        # 4. inputs
        Case("data:text_column_is_label", lambda b: b.distil("task.text_a=label")),
        Case("data:json_object_as_text", lambda b: custom(b, jsonl)),
        Case("data:test_bad_row", lambda b: b.distil("trainer.predict_test=true", data=b.data_with(
            "test.tsv", b"index\tsentence\n0\tgood\n1\tbad\tfilm\n"))),
        Case("data:test_missing_is_skipped", lambda b: b.distil("trainer.predict_test=true",
                                                                data=b.data_with("test.tsv", None)), "ok"),
        Case("data:dev_is_a_directory", lambda b: b.distil(data=_dev_replaced(b, lambda p: p.mkdir()))),
        Case("data:dev_is_a_fifo", lambda b: b.distil(data=_dev_replaced(b, os.mkfifo))),
        Case("data:cr_only_line_ends", lambda b: b.distil(data=b.data_with(
            "train.tsv", (TSV_HEAD + b"good film\t1\nbad film\t0\n" * 8).replace(b"\n", b"\r"))), "ok"),
        # 6. values accepted then crashing
        Case("value:optim.lr=1e300", lambda b: b.distil("optim.lr=1e300")),
        Case("value:optim.gate_lr=1e30", lambda b: b.distil("optim.gate_lr=1e30")),
    ]
    return [replace(c, round=3) for c in cases]


def _snapshot(path: Path) -> dict[str, str]:
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): ("dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(path.rglob("*"))}


def run_case(case: Case, box: Box) -> dict:
    box.root.mkdir(parents=True, exist_ok=True)
    argv = case.argv(box)
    before = _snapshot(box.run)
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR" and not k.startswith("MLFLOW_")}
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                **(case.env or {})})
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=int(os.environ.get('PROBE_TIMEOUT', '900')))
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = 124, str(exc.stdout or ""), str(exc.stderr or "") + "\n(timed out)"
    seconds = time.monotonic() - t0
    after = _snapshot(box.run)
    lines = [line for line in err.splitlines() if line.strip()]
    flags = []
    if "Traceback" in out + err:
        flags.append("TRACEBACK")
    leaked = SECRET in out + err or any(  # in a file, or in a file or folder name
        SECRET in str(p) or p.is_file() and SECRET.encode() in p.read_bytes() for p in box.root.rglob("*"))
    if leaked:
        flags.append("LEAK")
    if case.kind == "ok":
        if rc != 0:
            flags.append("FAILED")
    else:
        if rc == 0:
            flags.append("RAN")
        elif case.kind == "user":
            if rc != 2:
                flags.append(f"EXIT={rc}")
            if len(lines) != 1 or not lines[0].startswith("error: "):
                flags.append(f"LINES={len(lines)}")
        if before and after != before:
            flags.append("CHANGED")
    first = next((line for line in lines if line.startswith("error")), lines[0] if lines else "")
    if case.kind == "ok":
        first = next((line for line in (out + err).splitlines() if "truncat" in line), first)
    return {"id": case.id, "round": case.round, "kind": case.kind, "rc": rc, "first": first[:150], "flags": flags, "s": seconds}


HEADER = "| case | round | kind | exit | first stderr line | flags |\n|---|---|---|---|---|---|"


def _row(r: dict) -> str:
    first = r["first"].replace("|", "\\|")
    return f"| {r['id']} | {r['round']} | {r['kind']} | {r['rc']} | {first} | {' '.join(r['flags']) or 'ok'} |"


def write_summary(path: Path, results: list[dict], known: set[str]) -> None:
    """Merge ``results`` into ``path`` (markdown) and its ``.json`` twin, under a lock (runs in parallel)."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    store = path.with_suffix(".json")
    lock = Path(tempfile.gettempdir()) / f"lad-probe-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}.lock"
    with FileLock(str(lock)):
        rows = {r["id"]: r for r in json.loads(store.read_text())} if store.is_file() else {}
        rows.update({r["id"]: {k: v for k, v in r.items() if k != "s"} for r in results})
        merged = sorted((r for r in rows.values() if r["id"] in known), key=lambda r: (r["round"], r["id"]))
        store.write_text(json.dumps(merged, indent=1) + "\n")
        clean = sum(not r["flags"] for r in merged)
        per_round = "; ".join(f"round {n}: {sum(r['round'] == n for r in merged)} cases, "
                              f"{sum(r['round'] == n and not r['flags'] for r in merged)} found nothing"
                              for n in sorted({r["round"] for r in merged}))
        missing = len(known) - len(merged)
        path.write_text(
            "<!-- generated by scripts/probe_inputs.py --summary; do not edit -->\n"
            f"# Input probe\n\n{len(merged)} cases run, {clean} found nothing, {len(merged) - clean} flagged "
            f"({per_round}){f'; {missing} cases not run yet' if missing else ''}.\n\n"
            "Flags: TRACEBACK, EXIT=<n> (a user mistake not ending with status 2), LINES=<n> (not exactly one "
            "`error:` line), LEAK (the password in any output, file or file name), CHANGED (an existing run "
            "directory modified), RAN (a mistake not caught), FAILED (a valid input that did not run).\n\n"
            + HEADER + "\n" + "\n".join(_row(r) for r in merged) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only cases whose id contains this text")
    parser.add_argument("-j", type=int, default=2, help="cases run at once")
    parser.add_argument("--exclude", default=None, help="leave out cases whose id contains this text")
    parser.add_argument("--round", type=int, default=None, help="only the cases of this probe round (1, 2 or 3)")
    parser.add_argument("--pending", action="store_true", help="only cases the --summary file has no row for")
    parser.add_argument("--shard", default="0/1", help="i/n: every n-th selected case from the i-th (parallel runs)")
    parser.add_argument("--fixtures", type=Path, default=None,
                        help="keep the good tiny data and teacher in this folder (built once, reused by later runs)")
    parser.add_argument("--summary", type=Path, default=None,
                        help="merge this run's results into this markdown file (and its .json twin): cases "
                             "run now replace their earlier row, so flagged cases can be re-run alone")
    args = parser.parse_args(argv)
    from lad.testing import offline_environment, save_tiny_model, write_sst2_like

    offline_environment()

    # the other classes first, then one wrong value per typed key
    every = cases()
    known = {c.id for c in every}
    selected = sorted((c for c in every if args.k in c.id and args.round in (None, c.round)
                       and not (args.exclude and args.exclude in c.id)), key=lambda c: c.id.startswith("value:"))
    if args.pending and args.summary and args.summary.with_suffix(".json").is_file():
        done = {r["id"] for r in json.loads(args.summary.with_suffix(".json").read_text())}
        selected = [c for c in selected if c.id not in done]
    shard, shards = (int(x) for x in args.shard.split("/"))
    selected = selected[shard::shards]
    with tempfile.TemporaryDirectory(prefix="lad-probe-") as tmp:
        tmp = Path(tmp)
        base = args.fixtures or tmp
        glue, teacher = base / "glue", base / "teacher" / "sst2"
        if not (teacher / "config.json").is_file():
            write_sst2_like(glue)
            save_tiny_model(teacher, num_layers=4)
        print(HEADER, flush=True)

        def one(ic):
            r = run_case(ic[1], Box(tmp / f"case{ic[0]}", glue, teacher))
            r["first"] = r["first"].replace(str(tmp), "<tmp>").replace(f"/case{ic[0]}/", "/")
            print(_row(r), flush=True)
            if args.summary:  # row by row: an interrupted probe keeps what it found
                write_summary(args.summary, [r], known)
            return r

        with ThreadPoolExecutor(max_workers=args.j) as pool:
            results = list(pool.map(one, enumerate(selected)))
    flagged = [r for r in results if r["flags"]]
    total = f"{len(results)} cases, {len(flagged)} flagged, {len(results) - len(flagged)} found nothing"
    print(f"\n{total}" + (": " + ", ".join(f"{r['id']} ({' '.join(r['flags'])})" for r in flagged) if flagged else ""))
    return 1 if flagged else 0


if __name__ == "__main__":
    sys.exit(main())
