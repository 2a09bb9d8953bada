"""End-to-end behaviour of the run function on tiny random teachers and tiny GLUE-format data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, compose, save_tiny_model
from lad.core.errors import ConfigError
from lad.models.student import build_student, layer_map


def distil_cfg(tmp: Path, teacher: Path, glue: Path, *extra: str, name: str = "run"):
    return compose("distil", [
        "task=sst2", "teacher=local", f"teacher.path={teacher}", f"data.data_dir={glue}",
        f"paths.cache={tmp / 'cache'}", f"output_dir={tmp / name}", "mlflow=off",
        "trainer.progress=false", "optim.batch_size=16", "student=2layer", *extra,
    ])


class RecordingTracker:
    """Stands in for MLflow: keeps every logged metric."""

    run_id = None

    def __init__(self):
        self.metrics: list[tuple[int, dict]] = []
        self.params: dict = {}
        self.status = None

    def log_params(self, params):
        self.params.update(params)

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, dict(metrics)))

    def set_tags(self, tags): ...
    def log_artifact(self, path, artifact_path=None): ...
    def log_model_dir(self, model_dir, registered_name=None, input_example=None): ...

    def end(self, status="FINISHED", error=None):
        self.status = status


@pytest.fixture()
def recorder(monkeypatch):
    rec = RecordingTracker()
    monkeypatch.setattr("lad.tracking.tracker.make_tracker", lambda *a, **k: rec)
    return rec


# --------------------------------------------------------------------------- students
@pytest.mark.parametrize("k,l,expected", [(6, 12, [2, 4, 6, 8, 10, 12]), (3, 6, [2, 4, 6]),
                                          (2, 6, [3, 6]), (4, 6, [1, 3, 4, 6]), (6, 6, [1, 2, 3, 4, 5, 6])])
def test_layer_map(k, l, expected):
    assert layer_map(k, l) == expected


def test_student_deeper_than_teacher_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot be deeper"):
        layer_map(7, 6)


def _student_cfg(num_layers, **kw):
    from omegaconf import OmegaConf

    base = dict(name=f"{num_layers}layer", num_layers=num_layers, hidden_size=None, intermediate_size=None,
                num_attention_heads=None, init_layers=True, init_embeddings=True, init_classifier=True)
    base.update(kw)
    return OmegaConf.create(base)


def test_student_layer_k_is_teacher_layer_k_L_over_K(tmp_path):
    from transformers import AutoModelForSequenceClassification

    teacher = AutoModelForSequenceClassification.from_pretrained(
        str(save_tiny_model(tmp_path / "t12", num_layers=12)))
    student, mapping = build_student(teacher, _student_cfg(6))
    assert mapping == [2, 4, 6, 8, 10, 12]
    t_layers, s_layers = teacher.bert.encoder.layer, student.bert.encoder.layer
    for k, m in enumerate(mapping):
        for (name, sp), (_, tp) in zip(s_layers[k].named_parameters(), t_layers[m - 1].named_parameters()):
            assert torch.equal(sp, tp), f"student layer {k + 1} {name} != teacher layer {m}"
    # a different teacher layer is really different (the check above can fail)
    assert not torch.equal(s_layers[0].attention.self.query.weight, t_layers[0].attention.self.query.weight)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)


def test_reference_init_leaves_embeddings_and_classifier_random(tmp_path):
    from transformers import AutoModelForSequenceClassification

    teacher = AutoModelForSequenceClassification.from_pretrained(str(save_tiny_model(tmp_path / "t4")))
    student, _ = build_student(teacher, _student_cfg(2, init_embeddings=False, init_classifier=False))
    assert not torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert not torch.equal(student.bert.embeddings.word_embeddings.weight,
                           teacher.bert.embeddings.word_embeddings.weight)


# --------------------------------------------------------------------------- runs
VALID = [("lad", "lad"), ("lad_reverse", "lad"), ("mean", "lad"), ("attention", "lad"),
         ("none", "lad"), ("none", "kd"), ("none", "pkd"), ("none", "ce")]


@pytest.mark.parametrize("gate,loss", VALID)
def test_every_valid_gate_loss_pair_trains_and_saves(tmp_path, tiny_teacher, tiny_glue, gate, loss):
    from lad.run.pipeline import run

    cfg = distil_cfg(tmp_path, tiny_teacher, tiny_glue, f"gate={gate}", f"loss={loss}",
                     "trainer.max_steps=4", "trainer.eval_every=2")
    score = run(cfg)
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best"]["accuracy"] == pytest.approx(score)
    assert metrics["steps"] == 4 and [h["step"] for h in metrics["history"]] == [2, 4]
    assert (out / "model" / "model.safetensors").is_file()
    predictions = (out / "predictions" / "SST-2.tsv").read_text().splitlines()
    assert predictions[0] == "index\tprediction" and {r.split("\t")[1] for r in predictions[1:]} <= {"0", "1"}
    # the teacher names its classes 0/1 (saved before SST-2 had label names): the student says what they are
    assert json.loads((out / "model" / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}
    has_gate_params = gate in ("lad", "lad_reverse")
    assert (out / "gates" / "gate.safetensors").is_file() == has_gate_params
    if has_gate_params:
        gate_cfg = json.loads((out / "gates" / "gate_config.json").read_text())
        assert gate_cfg["layer_map"] == [2, 4] and gate_cfg["name"] == gate
        values = json.loads((out / "gates" / "gate_values.json").read_text())
        # top-down gates only compute down to the lowest mapped layer (2); bottom-up ones all four
        expected = {"2", "3", "4"} if gate == "lad_reverse" else {"1", "2", "3", "4"}
        assert set(values) == expected and all(0.0 <= v <= 1.0 for v in values.values())


@pytest.mark.parametrize("gate,loss", [("lad", "ce"), ("lad", "kd"), ("mean", "pkd")])
def test_gate_without_hidden_loss_is_a_config_error(tmp_path, tiny_teacher, tiny_glue, gate, loss):
    from lad.run.pipeline import run

    with pytest.raises(ConfigError, match="needs a loss with a hidden-state term"):
        run(distil_cfg(tmp_path, tiny_teacher, tiny_glue, f"gate={gate}", f"loss={loss}"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_student_deeper_than_teacher_run_fails_cleanly(tmp_path, tiny_teacher, tiny_glue):
    from lad.run.pipeline import run

    with pytest.raises(ConfigError, match="cannot be deeper"):
        run(distil_cfg(tmp_path, tiny_teacher, tiny_glue, "student=6layer"))


def test_loss_ce_never_runs_the_teacher(tmp_path, tiny_teacher, tiny_glue):
    from lad.data.tasks import TaskSpec
    from lad.run.builders import build_distillation

    cfg = distil_cfg(tmp_path, tiny_teacher, tiny_glue, "gate=none", "loss=ce")
    asm = build_distillation(cfg, TaskSpec.from_config(cfg.task))
    assert asm.module.teacher is None and asm.module.gate is None
    cfg = distil_cfg(tmp_path, tiny_teacher, tiny_glue, "gate=lad", "loss=lad")
    asm = build_distillation(cfg, TaskSpec.from_config(cfg.task))
    assert asm.module.teacher is not None and not any(p.requires_grad for p in asm.module.teacher.parameters())


def test_narrow_student_trains_through_a_projection(tmp_path, tiny_teacher, tiny_glue):
    from lad.data.tasks import TaskSpec
    from lad.run.builders import build_distillation

    cfg = distil_cfg(tmp_path, tiny_teacher, tiny_glue, "student.hidden_size=16", "student.num_attention_heads=2")
    asm = build_distillation(cfg, TaskSpec.from_config(cfg.task))
    module = asm.module
    assert module.projection is not None and module.projection.in_features == 16
    assert module.projection.out_features == 32
    batch = {"input_ids": torch.randint(1000, 2000, (3, 7)), "attention_mask": torch.ones(3, 7, dtype=torch.long),
             "token_type_ids": torch.zeros(3, 7, dtype=torch.long), "labels": torch.tensor([0, 1, 0])}
    loss, parts = module.training_step(batch)
    loss.backward()
    assert parts["hidden"] > 0
    assert module.projection.weight.grad is not None and module.projection.weight.grad.abs().sum() > 0


# LAD's hidden term falls within 30 steps; plain CE on the synthetic task needs ~25 steps to
# leave its plateau, so it gets 60 (and then reaches 100% dev accuracy).
@pytest.mark.parametrize("gate,loss,lr,steps", [("lad", "lad", 1e-3, 30), ("none", "ce", 5e-3, 60)])
def test_training_lowers_the_loss(tmp_path, tiny_teacher, tiny_glue, recorder, gate, loss, lr, steps):
    from lad.run.pipeline import run

    cfg = distil_cfg(tmp_path, tiny_teacher, tiny_glue, f"loss={loss}", f"gate={gate}", f"trainer.max_steps={steps}",
                     "trainer.log_every=1", f"optim.lr={lr}", "optim.warmup_ratio=0.0", f"trainer.eval_every={steps}")
    run(cfg)
    losses = [m["train/loss"] for _, m in recorder.metrics if "train/loss" in m]
    assert len(losses) == steps
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.9 * first, (first, last)
    if loss == "lad":  # the method's own term fell too (not just the logit terms)
        hidden = [m["train/hidden"] for _, m in recorder.metrics if "train/hidden" in m]
        assert sum(hidden[-5:]) < 0.9 * sum(hidden[:5]), hidden
    else:  # and what was learned is the task: the synthetic signal words separate the classes
        dev = [m["dev/accuracy"] for _, m in recorder.metrics if "dev/accuracy" in m]
        assert dev[-1] >= 0.9, dev
    assert recorder.status == "FINISHED"
    assert recorder.params["loss.name"] == loss and recorder.params["student.layer_map"] == "2,4"


def test_teacher_finetune_uses_the_same_loop_and_is_loadable_without_lad(tmp_path, tiny_glue):
    from lad.run.pipeline import run

    backbone = save_tiny_model(tmp_path / "backbone", num_layers=2)
    target = tmp_path / "teachers" / "sst2"
    cfg = compose("train_teacher", [
        "task=sst2", "teacher=local", f"teacher.backbone={backbone}", f"teacher.path={target}",
        f"data.data_dir={tiny_glue}", f"paths.cache={tmp_path / 'cache'}", f"output_dir={tmp_path / 'out'}",
        "mlflow=off", "trainer.progress=false", "trainer.max_steps=3", "optim.batch_size=16"])
    run(cfg)
    assert json.loads((target / "metrics.json").read_text())["task"] == "sst2"
    code = ("import sys; from transformers import AutoModelForSequenceClassification as A, AutoTokenizer as T;"
            f"m = A.from_pretrained({str(target)!r}); t = T.from_pretrained({str(target)!r});"
            "ids = t('a fine movie')['input_ids']; assert len(ids) > 2 and m.config.num_labels == 2;"
            "assert m.config.id2label == {0: 'negative', 1: 'positive'}, m.config.id2label;"
            "assert 'lad' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


def test_finished_run_is_not_overwritten(tmp_path, tiny_teacher, tiny_glue):
    from lad.run.pipeline import run

    run(distil_cfg(tmp_path, tiny_teacher, tiny_glue, "loss=ce", "gate=none", "trainer.max_steps=2"))
    before = (tmp_path / "run" / "metrics.json").read_bytes()
    with pytest.raises(ConfigError, match="already holds a finished run"):
        run(distil_cfg(tmp_path, tiny_teacher, tiny_glue, "loss=ce", "gate=none", "trainer.max_steps=2"))
    assert (tmp_path / "run" / "metrics.json").read_bytes() == before
    run(distil_cfg(tmp_path, tiny_teacher, tiny_glue, "loss=ce", "gate=none", "trainer.max_steps=3",
                   "overwrite=true"))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 3


# --------------------------------------------------------------------------- configs
TASKS = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]


@pytest.mark.parametrize("task", TASKS)
def test_train_teacher_composes_for_every_task(task):
    from omegaconf import OmegaConf

    from lad.data.tasks import TaskSpec

    cfg = compose("train_teacher", [f"task={task}"])
    OmegaConf.to_container(cfg.teacher, resolve=True)  # resolves the packaged backbone path
    assert TaskSpec.from_config(cfg.task).name == task
    assert cfg.teacher.path.endswith(f"teachers/minilm_l6/{task}")


def _declared_overrides(path: Path) -> list[dict]:
    """The ``override /<group>: <option>`` entries of a config file and of the bases it names."""
    from omegaconf import OmegaConf

    out = []
    for entry in OmegaConf.load(path).get("defaults", []):
        if isinstance(entry, str):
            out += [] if entry == "_self_" else _declared_overrides(path.parent / f"{entry}.yaml")
        else:
            out.append(dict(entry))
    return out


def test_every_distil_group_option_composes():
    from omegaconf import OmegaConf

    groups = {g: sorted(p.stem for p in (REPO / "conf" / g).glob("*.yaml"))
              for g in ("student", "gate", "loss", "teacher", "experiment")}
    assert {"lad", "lad_reverse", "none", "mean", "attention"} <= set(groups["gate"])
    assert {"lad", "kd", "pkd", "ce"} <= set(groups["loss"])
    for group, options in groups.items():
        for option in options:
            overrides = [f"{group}={option}"]
            if group == "teacher" and option in ("bert_base", "local"):
                overrides.append("teacher.backbone=/x")
            if group == "experiment":
                overrides.append("teacher.backbone=/x")
            cfg = compose("distil", overrides)
            for key in ("student", "gate", "loss", "optim", "trainer"):
                OmegaConf.to_container(cfg[key], resolve=True)
            if group != "experiment":  # the option chosen is the one composed
                assert cfg[group].name == option, (group, option)
                continue
            for entry in _declared_overrides(REPO / "conf" / "experiment" / f"{option}.yaml"):
                for key, value in entry.items():  # every `override /<group>: <option>` took effect
                    picked = key.split("/")[-1].replace("student_size", "student")  # picks distil.py's student
                    assert cfg[picked].name == value, (option, key, value)


def test_cli_composes_qnli_6layer():
    out = subprocess.run([sys.executable, "distil.py", "--cfg", "job", "task=qnli", "student=6layer"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "name: qnli" in out.stdout and "num_layers: 6" in out.stdout


def test_six_layer_student_of_twelve_layer_teacher_maps_even_layers(tmp_path, tiny_glue):
    from lad.data.tasks import TaskSpec
    from lad.run.builders import build_distillation

    teacher = save_tiny_model(tmp_path / "t12", num_layers=12)
    cfg = distil_cfg(tmp_path, teacher, tiny_glue, "student=6layer")
    asm = build_distillation(cfg, TaskSpec.from_config(cfg.task))
    assert asm.module.layer_map == [2, 4, 6, 8, 10, 12]
    assert asm.extra_params["student.layer_map"] == "2,4,6,8,10,12"


def test_bf16_autocast_on_cpu_trains_and_the_precision_that_ran_is_recorded(tmp_path, tiny_teacher, tiny_glue,
                                                                             monkeypatch):
    from lad.core import runtime
    from lad.run.pipeline import run

    score = run(distil_cfg(tmp_path, tiny_teacher, tiny_glue, "trainer.precision=bf16", "trainer.max_steps=2"))
    assert 0.0 <= score <= 1.0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["precision"] == "bf16"
    # auto follows the CPU's instruction set: bf16 only where it is native
    for flags, expected in (({"avx2"}, "fp32"), ({"avx512f", "avx512_bf16"}, "bf16"), ({"amx_bf16"}, "bf16")):
        monkeypatch.setattr(runtime, "cpu_info", lambda f=flags: {"model": "x", "flags": f})
        out = tmp_path / f"auto-{expected}-{len(flags)}"
        run(distil_cfg(out, tiny_teacher, tiny_glue, "trainer.precision=auto", "trainer.max_steps=1"))
        assert json.loads((out / "run" / "metrics.json").read_text())["precision"] == expected
    with pytest.raises(ConfigError, match="trainer.precision must be"):
        run(distil_cfg(tmp_path, tiny_teacher, tiny_glue, "trainer.precision=fp8", name="other"))


@pytest.mark.parametrize("entry", ["train_teacher", "distil"])
def test_experiment_files_override_the_primary_config(entry):
    cfg = compose(entry, ["experiment=demo"])
    assert cfg.overwrite is True and cfg.trainer.epochs == 2 and cfg.data.max_train_samples == 2000
    assert cfg.task.name == "sst2" and cfg.trainer.predict_test is False
    # the demo never touches a real task's teacher, runs, experiment or registered model
    assert cfg.paths.artifacts == "artifacts/demo" and cfg.paths.output_root == "outputs/demo"
    assert cfg.teacher.path == "artifacts/demo/teachers/minilm_l6/sst2"
    assert cfg.mlflow.experiment == "demo-lad-sst2" and cfg.mlflow.teacher_model_name == "lad-demo-teacher-sst2"
    real = compose(entry, ["task=sst2"])
    assert real.mlflow.teacher_model_name == "lad-teacher-sst2" and real.teacher.path == "artifacts/teachers/minilm_l6/sst2"


def test_competing_load_counts_niced_work_only_where_nice_protects(tmp_path, monkeypatch):
    from lad.core import runtime

    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "stat").write_text("1 (x) R")
    for pid, state, nice in ((101, "R", 0), (102, "R", 19), (103, "S", 0), (104, "R", 5)):
        rest = [state] + ["0"] * 15 + [str(nice)] + ["0"] * 5  # state is field 3, nice field 19
        (proc / str(pid)).mkdir()
        (proc / str(pid) / "stat").write_text(f"{pid} (python (x)) " + " ".join(rest))
    autogroup = tmp_path / "autogroup"
    monkeypatch.setattr(runtime, "AUTOGROUP", autogroup)
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (3.0, 3.0, 3.0))
    autogroup.write_text("0\n")  # nice works: the nice-19 process does not compete, sleeping ones neither
    assert runtime.competing_load(samples=1, proc=proc) == 2
    autogroup.write_text("1\n")  # autogroup: nice does not protect across sessions, every runnable process counts
    assert runtime.competing_load(samples=1, proc=proc) == 3.0


def test_auto_threads_use_the_free_cores_split_between_local_processes(monkeypatch):
    from lad.core.runtime import auto_threads, set_threads
    from lad.run.checks import validate_common

    assert auto_threads(cores=8, load=0.2, local_world=1) == 8       # idle machine: every core
    assert auto_threads(cores=8, load=0.2, local_world=2) == 4       # torchrun: split per process
    assert auto_threads(cores=8, load=5.4, local_world=1) == 3       # busy: what is left
    assert auto_threads(cores=2, load=15.0, local_world=1) == 1      # oversubscribed: one thread
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr("lad.core.runtime.auto_threads", lambda: 1)
        assert set_threads("auto") == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's explicit choice wins over auto
        torch.set_num_threads(2)
        assert set_threads("auto") == 2
        assert set_threads(None) == 2 and set_threads(1) == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match="trainer.num_threads must be an integer >= 1 or auto or null"):
        validate_common(compose("distil", ["trainer.num_threads=many"]))


def test_write_text_replaces_whole_or_not_at_all(tmp_path):
    """Pages, exports, metrics and submissions are written through lad.core.fileio: a failed write keeps
    the old file and leaves no temporary file beside it."""
    from lad.core.fileio import write_json, write_text

    path = tmp_path / "new" / "page.md"
    write_text(path, "old\n")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would create it, not mkstemp's 0600
    path.chmod(0o640)
    with pytest.raises(TypeError):
        write_text(path, b"not text")  # fails inside the write
    assert path.read_text() == "old\n" and sorted(p.name for p in path.parent.iterdir()) == ["page.md"]
    write_json(path, {"b": 1, "a": 0.5})
    text = path.read_text()
    assert path.stat().st_mode & 0o777 == 0o640  # a replaced file keeps its mode
    assert json.loads(text) == {"a": 0.5, "b": 1} and text.index('"a"') < text.index('"b"')


@pytest.mark.parametrize("kind", ["linear", "constant_with_warmup"])
def test_lr_scheduler_type_shapes_the_logged_learning_rate(tmp_path, tiny_teacher, tiny_glue, recorder, kind):
    from lad.run.pipeline import run

    cfg = distil_cfg(tmp_path, tiny_teacher, tiny_glue, "trainer.max_steps=10", "trainer.log_every=1",
                     "optim.lr=1e-3", "optim.warmup_ratio=0.3", f"optim.lr_scheduler_type={kind}",
                     "trainer.eval_every=10")
    run(cfg)
    lrs = [m["train/lr"] for _, m in recorder.metrics if "train/lr" in m]
    assert len(lrs) == 10
    # every parameter group's LR is logged, by the group's name: the gates' follow the same shape
    gate_lrs = [m["train/lr_gate"] for _, m in recorder.metrics if "train/lr" in m]
    assert gate_lrs == pytest.approx([lr * float(cfg.optim.gate_lr) / 1e-3 for lr in lrs])
    # logged after each step: the LR the next step uses; Hugging Face's warm-up is step / 3
    assert lrs[0] == pytest.approx(1e-3 / 3) and lrs[1] == pytest.approx(2e-3 / 3)
    after = lrs[2:]
    if kind == "linear":  # decays from the peak (step 3) towards 0 at the last step
        assert after[0] == pytest.approx(1e-3) and all(a > b for a, b in zip(after, after[1:]))
        assert after[-1] < 0.2e-3
    else:
        assert after == pytest.approx([1e-3] * len(after))
    assert recorder.params["optim.lr_scheduler_type"] == kind


def test_schedules_are_hugging_faces():
    """optim.lr_scheduler_type=<name> builds exactly transformers.get_scheduler(<name>)."""
    from transformers import get_scheduler

    from lad.run.schedules import SCHEDULES, build

    for kind in SCHEDULES:
        ours = build(kind, torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 3, 10)
        ref = get_scheduler(kind, torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0),
                            num_warmup_steps=3, num_training_steps=10)
        lrs = []
        for _ in range(10):
            lrs.append((ours.get_last_lr()[0], ref.get_last_lr()[0]))
            ours.optimizer.step(), ours.step(), ref.optimizer.step(), ref.step()
        assert [a for a, _ in lrs] == [b for _, b in lrs], kind
    # Hugging Face's linear warm-up starts at 0 (step / warmup), not at 1 / warmup
    sched = build("linear", torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 2, 10)
    assert sched.get_last_lr() == [0.0]
    with pytest.raises(ConfigError, match="optim.lr_scheduler_type must be one of linear, constant_with_warmup"):
        build("cosine_restarts", None, 1, 2)
