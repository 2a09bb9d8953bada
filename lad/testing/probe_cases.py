"""The adversarial probe's cases (``scripts/probe_inputs.py``): the entry points given bad inputs
the way a careless or hurried user would, in three rounds (1; 2: issue 22; 3: issue 34). A case is a
:class:`lad.testing.bad_input.Case` built in a :class:`~lad.testing.bad_input.Sandbox` and judged
by :func:`lad.testing.bad_input.judge`, as the documented cases of ``tests/test_bad_input.py`` are;
unlike those, most carry no expected message (the probe looks for tracebacks, leaks, silent runs and
changed run directories, not for wording). A value that looks wrong but is legitimate is a
``kind="ok"`` case with a comment saying why.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from lad.testing.bad_input import SECRET, Case, Sandbox, closed_port

def _schema_cases() -> list[Case]:
    """One wrong value per typed key that distil.py / train_teacher.py read (lad/schema.py)."""
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
            cases.append(Case(f"value:{name}={value}", lambda b, n=name, v=value: b.distil(f"{n}={v}"), kind=kind))
    return cases


def _config_not_json(path: Path) -> None:
    (path / "config.json").write_text("{ not json")


def _weights_empty(path: Path) -> None:
    (path / "model.safetensors").write_bytes(b"")


def _weights_garbage(path: Path) -> None:
    (path / "model.safetensors").write_bytes(os.urandom(4096))


TSV_HEAD = b"sentence\tlabel\n"


PUBLISHED = "artifacts/teachers/local/sst2"  # where a published teacher lies in a sandbox (own_stores)


def cases() -> list[Case]:
    """Every case of the three rounds (``round`` says which added it)."""
    port = closed_port()
    out = _schema_cases()
    out += [
        # Hydra's own composition errors
        Case("hydra:unknown_task", lambda b: b.distil("task=nope"), kind="hydra"),
        Case("hydra:unknown_student", lambda b: b.distil("student=9layer"), kind="hydra"),
        Case("hydra:unknown_key", lambda b: b.distil("optim.lrr=1"), kind="hydra"),
        Case("hydra:bad_override_syntax", lambda b: b.distil("optim.lr=="), kind="hydra"),
        # other values
        Case("value:device=tpu", lambda b: b.distil("device=tpu")),
        Case("value:optim.lr=inf", lambda b: b.distil("optim.lr=inf")),
        Case("value:optim.lr=nan", lambda b: b.distil("optim.lr=nan")),
        Case("value:optim.lr=string", lambda b: b.distil("optim.lr='1e-4'")),
        Case("value:lr_scheduler_type", lambda b: b.distil("optim.lr_scheduler_type=cosine_with_restarts")),
        Case("value:resume_missing_dir", lambda b: b.distil(f"trainer.resume={b.root}/nowhere")),
        Case("value:teacher.source", lambda b: b.distil("teacher.source=s3")),
        Case("value:missing_backbone", lambda b: [a for a in b.train_teacher() if not a.startswith("teacher.backbone")]),
        Case("value:all_loss_weights_zero",
             lambda b: b.distil("loss.hard_weight=0", "loss.soft_weight=0", "loss.hidden_weight=0")),
        Case("value:gate_without_hidden", lambda b: b.distil("loss=kd")),
        # data
        Case("data:dir_missing", lambda b: b.distil(data=b.root / "nope")),
        Case("data:dir_is_a_file", lambda b: (b.root.mkdir(parents=True, exist_ok=True),
                                              (b.root / "f").write_text("x"), b.distil(data=b.root / "f"))[2]),
        Case("data:task_folder_missing", lambda b: b.distil(task="rte")),
        Case("data:dev_missing", lambda b: b.distil(data=b.glue_with("dev.tsv", None))),
        Case("data:train_empty", lambda b: b.distil(data=b.glue_with("train.tsv", b""))),
        Case("data:header_only", lambda b: b.distil(data=b.glue_with("train.tsv", TSV_HEAD))),
        Case("data:latin1", lambda b: b.distil(data=b.glue_with("train.tsv", TSV_HEAD + b"caf\xe9 ok\t1\n"))),
        Case("data:utf16", lambda b: b.distil(data=b.glue_with("train.tsv", (TSV_HEAD + b"good\t1\n").decode()
                                                               .encode("utf-16")))),
        Case("data:nul_bytes", lambda b: b.distil(data=b.glue_with("train.tsv", TSV_HEAD + b"go\0od\t1\n"))),
        Case("data:extra_column", lambda b: b.distil(data=b.glue_with("train.tsv", TSV_HEAD + b"a\tb\t1\n"))),
        Case("data:missing_column", lambda b: b.distil(data=b.glue_with("train.tsv", b"text\tlabel\ngood\t1\n"))),
        Case("data:bad_label", lambda b: b.distil(data=b.glue_with("train.tsv", TSV_HEAD + b"good\t7\n"))),
        Case("data:binary_file", lambda b: b.distil(data=b.glue_with("dev.tsv", os.urandom(2000)))),
        Case("data:stsb_text_score", lambda b: b.train_teacher(task="stsb", data=b.stsb_glue(["0\ta\tb\thigh"]))),
        Case("data:stsb_nan_score", lambda b: b.train_teacher(task="stsb", data=b.stsb_glue(["0\ta\tb\tnan"]))),
        Case("data:stsb_out_of_range", lambda b: b.train_teacher(task="stsb", data=b.stsb_glue(["0\ta\tb\t9"]))),
        Case("data:cache_dir_is_a_file", lambda b: (b.root.mkdir(parents=True, exist_ok=True),
                                                    (b.root / "f").write_text("x"),
                                                    b.distil(f"data.cache_dir={b.root}/f/cache"))[2]),
        Case("data:long_texts_truncated", lambda b: b.distil("task.max_seq_length=8"), "truncated", kind="ok"),
        Case("data:max_len_above_positions", lambda b: b.distil("task.max_seq_length=4096"), "truncated", kind="ok"),
        # teacher folders
        Case("teacher:missing", lambda b: b.distil(teacher=b.root / "none")),
        Case("teacher:is_a_file", lambda b: (b.root.mkdir(parents=True, exist_ok=True),
                                             (b.root / "f").write_text("x"), b.distil(teacher=b.root / "f"))[2]),
        Case("teacher:no_tokenizer", lambda b: b.distil(teacher=b.teacher_without_tokenizer())),
        Case("teacher:label_order", lambda b: b.distil(teacher=b.teacher_with_labels(["1", "0"]))),
        Case("teacher:damaged_weights", lambda b: b.distil(teacher=b.teacher_truncated_weights(keep=2048))),
        Case("teacher:empty_weights", lambda b: b.distil(teacher=b.teacher_copy(edit=_weights_empty))),
        Case("teacher:garbage_weights", lambda b: b.distil(teacher=b.teacher_copy(edit=_weights_garbage))),
        Case("teacher:config_not_json", lambda b: b.distil(teacher=b.teacher_copy(edit=_config_not_json))),
        Case("teacher:vocab_mismatch", lambda b: b.distil(teacher=b.teacher_with_config(
            lambda c: c.update(vocab_size=100)))),
        Case("teacher:wrong_task", lambda b: b.distil(task="stsb", data=b.stsb_glue(["0\ta\tb\t4", "1\tc\td\t1"]))),
        Case("teacher:student_too_deep", lambda b: b.distil("student=6layer")),
        Case("backbone:no_tokenizer", lambda b: b.train_teacher(backbone=b.teacher_without_tokenizer())),
        Case("backbone:damaged_weights", lambda b: b.train_teacher(backbone=b.teacher_truncated_weights(keep=2048))),
        Case("backbone:output_under_a_file", lambda b: (b.root.mkdir(parents=True, exist_ok=True),
                                                        (b.root / "f").write_text("x"),
                                                        b.train_teacher(f"teacher.path={b.root}/f/t"))[2]),
        # run directory
        Case("run:finished_exists", lambda b: (b.existing_run(True), b.distil())[1]),
        Case("run:unfinished_exists", lambda b: (b.existing_run(False), b.distil())[1]),
        Case("run:corrupt_checkpoint_resume", lambda b: (b.existing_run(False, corrupt=True),
                                                         b.distil("trainer.resume=true"))[1]),
        Case("run:resume_other_config", lambda b: (b.existing_run(False, config={"optim": {"lr": 0.3}}),
                                                   b.distil("trainer.resume=true"))[1]),
        Case("run:in_use", lambda b: (b.hold_run_dir_lock(), b.distil())[1]),
        Case("run:in_use_finished", lambda b: (b.existing_run(True), b.hold_run_dir_lock(), b.distil("overwrite=true"))[2]),
        Case("run:overwrite_with_bad_data", lambda b: (b.existing_run(True),
                                                       b.distil("overwrite=true", data=b.glue_with("dev.tsv", None)))[1]),
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
                                                     *b.distil()[1:]], kind="hydra"),
        Case("secret:teacher_uri", lambda b: [a for a in b.no_mlflow_off(b.distil(
            f"mlflow.tracking_uri=http://u:{SECRET}@127.0.0.1:{port}")) if not a.startswith("teacher")]
            + ["teacher=mlflow", "teacher.uri=models:/nope/1"]),
        # Optuna sweeps
        Case("optuna:n_trials_zero", lambda b: ["distil.py", "-m", "hparams_search=lad_optuna",
                                                "hydra.sweeper.n_trials=0",
                                                f"hydra.sweeper.storage=sqlite:///{b.root}/o.db", *b.distil()[1:]],
             kind="hydra"),
        Case("optuna:n_trials_negative", lambda b: ["distil.py", "-m", "hparams_search=lad_optuna",
                                                    "hydra.sweeper.n_trials=-2",
                                                    f"hydra.sweeper.storage=sqlite:///{b.root}/o.db",
                                                    *b.distil()[1:]], kind="hydra"),
        Case("optuna:direction", lambda b: ["distil.py", "-m", "hparams_search=lad_optuna",
                                            "hydra.sweeper.direction=up",
                                            f"hydra.sweeper.storage=sqlite:///{b.root}/o.db", *b.distil()[1:]],
             kind="hydra"),
        Case("optuna:storage_not_url", lambda b: ["distil.py", "-m", "hparams_search=lad_optuna",
                                                  "hydra.sweeper.storage=nonsense", *b.distil()[1:]], kind="hydra"),
        Case("optuna:other_space", lambda b: (b.root.mkdir(parents=True, exist_ok=True),
                                              _stored_study(b.root / "o.db"),
                                              ["distil.py", "-m", "hparams_search=lad_optuna",
                                               "hydra.sweeper.n_trials=3", "hydra.sweeper.study_name=probe",
                                               f"hydra.sweeper.storage=sqlite:///{b.root}/o.db",
                                               f"hydra.sweep.dir={b.root}/sweep", *b.distil()[1:]])[2], kind="hydra"),
    ]
    return [c._replace(round=1) for c in out] + round2() + round3()


def _stored_study(db: Path) -> None:
    """A study named "probe" in ``db`` with one trial over another search space."""
    import optuna
    from optuna.distributions import FloatDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="probe", storage=f"sqlite:///{db}", direction="maximize")
    study.add_trial(optuna.trial.create_trial(
        params={"optim.lr": 1e-4}, distributions={"optim.lr": FloatDistribution(1e-6, 1e-2, log=True)},
        value=0.5))


def _nan_weights(tensors: dict) -> dict:
    name = next(k for k in tensors if k.startswith("classifier.weight"))
    tensors[name] = tensors[name].clone().fill_(float("nan"))
    return tensors


def _renamed_weights(tensors: dict) -> dict:
    return {f"other.{k}": v for k, v in tensors.items()}


def _wider(config: dict) -> None:
    config["intermediate_size"] = config["intermediate_size"] * 2


def _tokenizer_not_json(path: Path) -> None:
    (path / "tokenizer.json").write_text("{ not json")
    (path / "vocab.txt").unlink(missing_ok=True)


def _empty_model_dir(box: Sandbox) -> Path:
    path = box.root / "empty_teacher"
    path.mkdir(parents=True)
    return path


def _file(box: Sandbox, name: str = "f") -> Path:
    box.root.mkdir(parents=True, exist_ok=True)
    (box.root / name).write_text("x")
    return box.root / name


def _sweep(box: Sandbox, *extra: str) -> list[str]:
    tracked = any(a.startswith("mlflow.tracking_uri") for a in extra)
    argv = box.no_mlflow_off(box.distil()) if tracked else box.distil()
    return ["distil.py", "-m", "hparams_search=lad_optuna", f"hydra.sweep.dir={box.root}/sweep",
            *argv[1:], *extra]  # later overrides win: the case's come last


def _search(box: Sandbox, *extra: str) -> list[str]:
    keep = ("mlflow=off", "paths.", "data.", "cache.dir", "device", "trainer.", "optim.batch_size")
    return ["sweeps/search.py", "task=sst2", "teacher=local", f"teacher.path={box.teacher}", "student=2layer",
            f"output_dir={box.root}/search", "search.plots=false",
            *[a for a in box.common() if a.startswith(keep)], *extra]


UNICODE_DIR = "donn\u00e9es \u00fc"


def _glue_copy(box: Sandbox, name: str) -> Path:
    target = box.root / name
    shutil.copytree(box.glue, target)
    return target


def round2() -> list[Case]:
    """The second probe (issue 22): other keys, types, files and entry points than the first."""
    port = closed_port()
    pw_uri = f"http://u:{SECRET}@127.0.0.1:{port}"
    rows = b"good fun film\t1\nbad dull film\t0\n" * 8
    cases = [
        # 1. secrets: printed configs, other keys, other entry points, other spellings
        Case("secret:cfg_job_prints_config", lambda b: ["distil.py", "--cfg", "job", *b.no_mlflow_off(
            b.distil(f"mlflow.tracking_uri={pw_uri}"))[1:]], kind="ok"),
        Case("secret:cfg_hydra_prints_sweeper_storage", lambda b: ["distil.py", "--cfg", "hydra",
                                                                   "hparams_search=lad_optuna",
            f"hydra.sweeper.storage=postgresql://u:{SECRET}@127.0.0.1:{port}/x", *b.distil()[1:]], kind="ok"),
        Case("secret:info_config", lambda b: ["distil.py", "--info", "config", *b.no_mlflow_off(
            b.distil(f"mlflow.tracking_uri={pw_uri}"))[1:]], kind="ok"),
        Case("secret:cfg_all_resolve", lambda b: ["distil.py", "--cfg", "all", "--resolve", *b.no_mlflow_off(
            b.distil(f"mlflow.tracking_uri={pw_uri}"))[1:]], kind="ok"),
        Case("secret:percent_encoded_password", lambda b: b.no_mlflow_off(
            b.distil(f"mlflow.tracking_uri=http://u:{SECRET}%21x@127.0.0.1:{port}"))),
        Case("secret:token_query_parameter", lambda b: b.no_mlflow_off(
            b.distil(f"mlflow.tracking_uri='http://127.0.0.1:{port}/?token={SECRET}'"))),
        Case("secret:default_run_dir_name", lambda b: [a for a in b.no_mlflow_off(b.distil(
            f"mlflow.tracking_uri={pw_uri}", "optim.lr=-1")) if not a.startswith("hydra.run.dir")]),
        # LAD's mlflow.tracking_uri wins over the variable; its password still must not show anywhere
        Case("secret:env_tracking_uri", lambda b: b.no_mlflow_off(b.distil(
            f"mlflow.tracking_uri=sqlite:///{b.root}/m.db", f"mlflow.artifact_location={b.root}/art")), kind="ok",
             env={"MLFLOW_TRACKING_URI": pw_uri, "DATABASE_URL": f"postgresql://u:{SECRET}@127.0.0.1:{port}/x"}),
        Case("secret:search_storage_down", lambda b: _search(
            b, f"search.storage=postgresql://u:{SECRET}@127.0.0.1:{port}/x", "n_trials=1")),
        Case("secret:sweep_with_password_and_bad_value", lambda b: _sweep(
            b, "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage=sqlite:///{b.root}/o.db",
            f"mlflow.tracking_uri={pw_uri}", "optim.batch_size=0"), kind="hydra"),
        Case("secret:sweep_with_password_server_down", lambda b: _sweep(
            b, "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage=sqlite:///{b.root}/o.db",
            f"mlflow.tracking_uri={pw_uri}"), kind="hydra"),
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
                                                          f"hydra.sweeper.storage=sqlite:///{b.root}/o.db"), kind="hydra"),
        Case("optuna:n_jobs_zero", lambda b: _sweep(b, "hydra.sweeper.n_jobs=0",
                                                    f"hydra.sweeper.storage=sqlite:///{b.root}/o.db"), kind="hydra"),
        Case("teacher:config_fewer_layers_than_weights", lambda b: b.distil(teacher=b.teacher_with_config(
            lambda c: c.update(num_hidden_layers=2)))),
        Case("teacher:config_shape_differs_from_weights", lambda b: b.distil(
            teacher=b.teacher_with_config(_wider))),
        Case("teacher:weights_of_another_model", lambda b: b.distil(teacher=b.teacher_with_weights(_renamed_weights))),
        Case("teacher:tokenizer_json_damaged", lambda b: b.distil(teacher=b.teacher_copy(edit=_tokenizer_not_json))),
        Case("teacher:empty_directory", lambda b: b.distil(teacher=_empty_model_dir(b))),
        Case("backbone:weights_of_another_model", lambda b: b.train_teacher(
            backbone=b.teacher_with_weights(_renamed_weights))),
        # data files
        Case("data:utf8_bom", lambda b: b.distil(data=b.glue_with("train.tsv", b"\xef\xbb\xbf" + TSV_HEAD + rows)),
             kind="ok"),
        Case("data:crlf_line_ends", lambda b: b.distil(data=b.glue_with(
            "train.tsv", (TSV_HEAD + rows).replace(b"\n", b"\r\n"))), kind="ok"),
        Case("data:trailing_blank_lines", lambda b: b.distil(data=b.glue_with("train.tsv", TSV_HEAD + rows + b"\n\n")),
             kind="ok"),
        Case("data:blank_text", lambda b: b.distil(data=b.glue_with("train.tsv", TSV_HEAD + rows + b"   \t1\n"))),
        Case("data:dev_header_only", lambda b: b.distil(data=b.glue_with("dev.tsv", TSV_HEAD))),
        # spaces around a label are not part of it: the reader strips them (" 1" is label 1), as it always has
        Case("data:label_with_spaces", lambda b: b.distil(data=b.glue_with("train.tsv", TSV_HEAD + rows + b"ok\t 1\n")),
             kind="ok"),
        # a space needs Hydra's quotes inside the override (the shell's are gone by then)
        Case("data:unicode_and_space_in_path",
             lambda b: b.distil(f"data.data_dir='{_glue_copy(b, UNICODE_DIR)}'"), kind="ok"),
        # 3. a run directory belongs to one run
        Case("run:run_dir_is_a_file", lambda b: b.elsewhere(b.distil(), _file(b, "run"))),
        # resume=true starts a new run when there is nothing to resume (sweeps/teachers.py relies on it), and
        # with overwrite=true it resumes an unfinished run or replaces a finished one
        Case("run:resume_without_a_run", lambda b: b.distil("trainer.resume=true"), kind="ok"),
        Case("run:resume_and_overwrite", lambda b: (b.existing_run(True), b.distil("trainer.resume=true",
                                                                                    "overwrite=true"))[1], kind="ok"),
        Case("run:finished_rerun_with_password", lambda b: (b.existing_run(True), b.no_mlflow_off(
            b.distil(f"mlflow.tracking_uri={pw_uri}")))[1]),
        Case("run:teacher_output_is_an_existing_model", lambda b: [
            a for a in b.train_teacher() if not a.startswith("teacher.path")]
            + [f"teacher.path={b.teacher_copy()}"]),
        # 4. numeric faults
        Case("numeric:lr_huge", lambda b: b.distil("optim.lr=1e30", "trainer.eval_every=1")),
        Case("numeric:temperature_tiny", lambda b: b.distil("loss.temperature=1e-38", "trainer.eval_every=1")),
        Case("numeric:teacher_nan_weights", lambda b: b.distil(teacher=b.teacher_with_weights(_nan_weights))),
        # 5. one line, before heavy work
        # cache.max_gb is a cap, not a size: a cache over it falls back to the online teacher with one warning
        # (conf/cache/default.yaml), so a cap below any cache runs correctly, only without the cache
        Case("value:cache_max_gb_tiny", lambda b: b.distil("cache.max_gb=1e-9"),
             r"teacher cache: .* > cache\.max_gb=1e-09; falling back to the online teacher", kind="ok"),
        Case("value:artifacts_under_a_file", lambda b: [a for a in b.train_teacher()
                                                        if not a.startswith("teacher.path")]
             + [f"paths.artifacts={_file(b)}/a", f"teacher.path={b.root}/f/a/t"]),
    ]
    return [c._replace(round=2) for c in cases]


def _dev_replaced(box: Sandbox, make: Callable[[Path], None]) -> Path:
    glue = box.glue_with("dev.tsv", None)
    make(glue / "SST-2" / "dev.tsv")
    return glue


def _tracked(box: Sandbox, argv: list[str], *extra: str) -> list[str]:
    """``argv`` with MLflow on, its store inside the case's folder (searched for the password)."""
    return box.no_mlflow_off(argv) + [f"mlflow.tracking_uri=sqlite:///{box.root}/mlruns.db",
                                      f"mlflow.artifact_location={box.root}/mlartifacts", *extra]


def round3() -> list[Case]:
    """The third probe (issue 34): paths and kinds, secrets MLflow stores, stores, inputs, values."""
    port = closed_port()
    jsonl = ['{"text": "good film", "label": "1"}', '{"text": {"title": "bad"}, "label": "0"}']

    cases = [
        # 1. nothing outside the named run or teacher
        Case("run:task_name_parent", lambda b: b.distil("task.name=..")),
        Case("run:task_name_empty", lambda b: b.train_teacher("task.name=''")),
        Case("run:task_name_escapes_artifacts", lambda b: b.train_teacher("task.name=../../escaped")),
        Case("run:teacher_name_with_slash", lambda b: [a for a in b.train_teacher("teacher.name=a/b")
                                                       if not a.startswith("teacher.path")]),
        Case("run:student_into_published_teacher", lambda b: b.elsewhere(
            b.distil("overwrite=true"), b.published_teacher(PUBLISHED))),
        Case("run:teacher_path_is_every_teacher", lambda b: (b.published_teacher(PUBLISHED), b.train_teacher(
            "overwrite=true", f"teacher.path={b.root}/artifacts/teachers/local"))[1]),
        Case("run:teacher_path_is_the_run_dir", lambda b: b.train_teacher(f"teacher.path={b.run_dir}")),
        Case("run:teacher_overwrite_replaces_teacher", lambda b: (b.published_teacher(PUBLISHED), b.train_teacher(
            "overwrite=true", f"teacher.path={b.root}/{PUBLISHED}"))[1], kind="ok"),
        # 2. secrets that MLflow stores verbatim
        Case("secret:artifact_location_password", lambda b: _tracked(
            b, b.distil(), f"mlflow.artifact_location='s3://bucket/x?secret_key={SECRET}'")),
        Case("secret:run_name_url", lambda b: _tracked(b, b.distil(), f"mlflow.run_name=http://u:{SECRET}@h.example/x",
                                                        "mlflow.log_model=false"), kind="ok"),
        Case("secret:experiment_name_url", lambda b: _tracked(
            b, b.distil(), f"mlflow.experiment=lad-http://u:{SECRET}@h.example/x", "mlflow.log_model=false"), kind="ok"),
        # 3. stores checked before training
        Case("store:artifact_store_down", lambda b: _tracked(
            b, b.distil(), f"mlflow.artifact_location=http://127.0.0.1:{port}/art")),
        # 4. inputs
        Case("data:text_column_is_label", lambda b: b.distil("task.text_a=label")),
        Case("data:json_object_as_text", lambda b: b.distil(*b.custom_jsonl(jsonl), task="custom")),
        Case("data:test_bad_row", lambda b: b.distil("trainer.predict_test=true", data=b.glue_with(
            "test.tsv", b"index\tsentence\n0\tgood\n1\tbad\tfilm\n"))),
        Case("data:test_missing_is_skipped", lambda b: b.distil("trainer.predict_test=true",
                                                                data=b.glue_with("test.tsv", None)), kind="ok"),
        Case("data:dev_is_a_directory", lambda b: b.distil(data=_dev_replaced(b, lambda p: p.mkdir()))),
        Case("data:dev_is_a_fifo", lambda b: b.distil(data=_dev_replaced(b, os.mkfifo))),
        Case("data:cr_only_line_ends", lambda b: b.distil(data=b.glue_with(
            "train.tsv", (TSV_HEAD + b"good film\t1\nbad film\t0\n" * 8).replace(b"\n", b"\r"))), kind="ok"),
        # 6. values accepted then crashing
        Case("value:optim.lr=1e300", lambda b: b.distil("optim.lr=1e300")),
        Case("value:optim.gate_lr=1e30", lambda b: b.distil("optim.gate_lr=1e30")),
    ]
    return [c._replace(round=3) for c in cases]


