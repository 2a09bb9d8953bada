"""What a run measures: each test fails for one class of silent change to the science.

The classes (issue 33): the teacher producing targets in train mode; the training order depending
on the method (paired seeds no longer paired); an optimiser or parameter group off its LR schedule
(warm-up included); "best dev" taken from the last evaluation; dev metrics from another split; gate
movement normalised by the current instead of the initial weights, or covering only some gate
parameters. ``scripts/mutants.py`` applies one breakage per class and checks these tests catch it.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import save_tiny_model
from test_method import _batch, _lad_distiller
from test_pipeline import distil_cfg, recorder  # noqa: F401  (fixture re-used)

FAST = ("trainer.predict_test=false", "trainer.measure_inference=false")


def _record_training_batches(monkeypatch) -> list[list[int]]:
    """Example indices of every training step, in order (Distiller.training_step is the loop's step)."""
    from lad.method.distiller import Distiller

    seen: list[list[int]] = []
    step = Distiller.training_step

    def recording(self, batch):
        seen.append(batch["index"].tolist())
        return step(self, batch)

    monkeypatch.setattr(Distiller, "training_step", recording)
    return seen


# --------------------------------------------------------------------------- the teacher's targets
def test_teacher_gives_identical_targets_twice_while_the_student_trains(tmp_path):
    """The teacher has dropout (0.1); in training mode its logits and hidden states are the same
    on every call, i.e. the module keeps it in eval mode."""
    module = _lad_distiller(save_tiny_model(tmp_path / "t", num_layers=4, dropout=0.1))
    module.train()
    assert module.student.training
    batch = _batch()
    first, second = module.teacher_outputs(batch), module.teacher_outputs(batch)
    assert torch.equal(first.logits, second.logits)
    for a, b in zip(first.hidden, second.hidden):
        assert torch.equal(a, b)
    # the same teacher in train mode gives different targets: the check above can fail
    module.teacher.train()
    assert not torch.equal(module.teacher_outputs(batch).logits, module.teacher_outputs(batch).logits)


# --------------------------------------------------------------------------- paired seeds
def test_two_methods_with_one_seed_see_the_same_example_order(tmp_path, tiny_teacher, tiny_glue, monkeypatch):
    """LAD (gates built, hidden loss) and KD (no gates) with the same seed train on the same
    batches in the same order, across an epoch boundary (96 examples / 16 = 6 batches per epoch)."""
    from lad.data.loader import make_train_batches
    from lad.run.pipeline import run

    orders = {}
    for method in (("gate=lad", "loss=lad"), ("gate=none", "loss=kd")):
        seen = _record_training_batches(monkeypatch)
        run(distil_cfg(tmp_path, tiny_teacher, tiny_glue, *method, *FAST, "trainer.max_steps=8",
                       "trainer.eval_every=8", "seed=7", name=method[1].split("=")[1]))
        orders[method[1]] = list(seen)
        monkeypatch.undo()
    assert len(orders["loss=lad"]) == 8
    assert orders["loss=lad"] == orders["loss=kd"]
    other_seed = make_train_batches(list(range(96)), 16, 8, 0, False)
    assert orders["loss=lad"][:6] != other_seed  # a seed changes the order: the check can fail


# --------------------------------------------------------------------------- learning-rate schedules
def _hf_linear(step: int, warmup: int, total: int) -> float:
    return step / warmup if step < warmup else max(0.0, (total - step) / (total - warmup))


def test_every_optimiser_and_parameter_group_follows_its_schedule_with_warmup(
        tmp_path, tiny_teacher, tiny_glue, monkeypatch):
    """At every step, each parameter group of each optimiser (student decay / no-decay, gates)
    uses its base LR times the same linear warm-up-then-decay factor."""
    from lad.method.distiller import Distiller
    from lad.run.pipeline import run
    import lad.run.train

    built, lrs = [], []
    build = lad.run.train.build_optimizers

    def capture(*args, **kwargs):
        optimizers, schedulers, clip = build(*args, **kwargs)
        built.extend(optimizers)
        return optimizers, schedulers, clip

    step = Distiller.training_step

    def recording(self, batch):
        lrs.append([[group["lr"] for group in opt.param_groups] for opt in built])
        return step(self, batch)

    monkeypatch.setattr(lad.run.train, "build_optimizers", capture)
    monkeypatch.setattr(Distiller, "training_step", recording)
    run(distil_cfg(tmp_path, tiny_teacher, tiny_glue, *FAST, "trainer.max_steps=10", "trainer.eval_every=10",
                   "optim.lr=1e-3", "optim.gate_lr=1e-2", "optim.warmup_ratio=0.3",
                   "optim.lr_scheduler_type=linear"))
    assert len(built) == 2 and len(lrs) == 10  # student, gates
    bases = [1e-3, 1e-2]
    for s, per_opt in enumerate(lrs):
        factor = _hf_linear(s, 3, 10)
        for base, groups in zip(bases, per_opt):
            assert len(groups) == 2  # weight-decayed and exempt parameters
            assert groups == pytest.approx([base * factor] * 2, abs=1e-12), f"step {s}: {per_opt}"


def test_warmup_steps_overrides_the_ratio():
    from omegaconf import OmegaConf

    from lad.run.schedules import warmup_steps

    assert warmup_steps(OmegaConf.create({"warmup_ratio": 0.1}), 385) == 38
    assert warmup_steps(OmegaConf.create({"warmup_ratio": 0.1, "warmup_steps": None}), 385) == 38
    assert warmup_steps(OmegaConf.create({"warmup_ratio": 0.1, "warmup_steps": 115}), 385) == 115


# --------------------------------------------------------------------------- best dev
def test_best_dev_is_the_best_evaluation_not_the_last(tmp_path, tiny_teacher, tiny_glue, monkeypatch):
    """Three evaluations scoring 0.5, 0.9, 0.6: the run reports (and returns) 0.9 from step 4."""
    import lad.run.evaluation
    from lad.run.pipeline import run

    scores = iter([0.5, 0.9, 0.6])
    monkeypatch.setattr(lad.run.evaluation, "make_evaluator", lambda *a, **k: (
        lambda: (lambda s: {"accuracy": s, "loss": 1.0 - s})(next(scores))))
    result = run(distil_cfg(tmp_path, tiny_teacher, tiny_glue, *FAST, "trainer.max_steps=6",
                            "trainer.eval_every=2"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [e["accuracy"] for e in metrics["history"]] == [0.5, 0.9, 0.6]
    assert metrics["best"]["accuracy"] == 0.9 and metrics["best_step"] == 4
    assert metrics["last"]["accuracy"] == 0.6
    assert result == 0.9


# --------------------------------------------------------------------------- dev metrics from dev
def test_dev_metrics_are_those_of_the_dev_split(tmp_path, tiny_teacher, tiny_glue, monkeypatch):
    """Every evaluation scores the dev examples (not the training ones), and the recorded dev loss
    and accuracy are the saved best model's on them."""
    import lad.data.features
    from lad.data.metrics import dev_loss, predictions_from_logits
    from lad.data.tasks import TaskSpec
    import lad.run.evaluation
    import lad.run.pipeline
    from transformers import AutoModelForSequenceClassification

    loaded, scored = {}, []
    load, predict = lad.data.features.load_features, lad.run.evaluation.predict_logits

    def spy_load(task, data_dir, split, *args, **kwargs):
        loaded[split] = load(task, data_dir, split, *args, **kwargs)
        return loaded[split]

    def spy_predict(model, feats, *args, **kwargs):
        scored.append(list(feats.guids))
        return predict(model, feats, *args, **kwargs)

    monkeypatch.setattr(lad.data.features, "load_features", spy_load)
    monkeypatch.setattr(lad.run.evaluation, "predict_logits", spy_predict)
    cfg = distil_cfg(tmp_path, tiny_teacher, tiny_glue, *FAST, "trainer.max_steps=4", "trainer.eval_every=2")
    lad.run.pipeline.run(cfg)
    (dev_split,) = [s for s in loaded if s != "train"]
    dev_guids = list(loaded[dev_split].guids)
    assert dev_guids != list(loaded["train"].guids)[:len(dev_guids)]
    assert scored == [dev_guids, dev_guids]  # two evaluations, both on dev
    best = json.loads((tmp_path / "run" / "metrics.json").read_text())["best"]
    task, feats = TaskSpec.from_config(cfg.task), loaded[dev_split]
    model = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "run" / "model"))
    logits = predict(model, feats, int(cfg.trainer.eval_batch_size), torch.device("cpu"))
    assert best["loss"] == pytest.approx(dev_loss(task, logits, feats.labels), rel=1e-6)
    assert best["accuracy"] == pytest.approx(float((predictions_from_logits(task, logits) == feats.labels).mean()))


# --------------------------------------------------------------------------- gate movement
def test_gate_movement_is_measured_from_the_initial_weights():
    """Tripling a gate's weights moves it by ||3W - W|| / ||W|| = 2 (not 2/3, the change over
    the current weights); every other gate stays at 0."""
    from lad.method.gates import HighwayGates

    gate = HighwayGates(num_layers=4, hidden_size=8)
    initial = {k: v.detach().clone() for k, v in gate.state_dict().items()}
    with torch.no_grad():
        gate.proj[0].weight.mul_(3.0)
    assert gate.weight_movement(initial) == pytest.approx({"layer_02": 2.0, "layer_03": 0.0, "layer_04": 0.0})


def test_gate_movement_covers_every_gate_parameter_per_kind():
    """Projection weight and bias and the norm's affine weight and bias, each pooled over the gates."""
    from lad.method.gates import HighwayGates

    gate = HighwayGates(num_layers=3, hidden_size=8, norm="per_sequence", affine="position", max_len=5)
    initial = {k: v.detach().clone() for k, v in gate.state_dict().items()}
    assert gate.movement_by_kind(initial) == {"proj_weight": 0.0, "proj_bias": 0.0,
                                             "norms_weight": 0.0, "norms_bias": 0.0}
    with torch.no_grad():
        for lin, norm in zip(gate.proj, gate.norms):
            lin.weight.mul_(3.0)          # ||3W - W|| / ||W|| = 2
            lin.bias.mul_(-1.0)           # ||-2b|| / ||b|| = 2
            norm.weight.add_(0.5)         # ones + 0.5: ||0.5|| / ||1|| = 0.5
            norm.bias.add_(0.25)          # zero-initialised: root-mean-square change 0.25
    assert gate.movement_by_kind(initial) == pytest.approx(
        {"proj_weight": 2.0, "proj_bias": 2.0, "norms_weight": 0.5, "norms_bias": 0.25})


def test_runs_record_gate_movement_per_kind(tmp_path, tiny_teacher, tiny_glue):
    from lad.run.pipeline import run

    run(distil_cfg(tmp_path, tiny_teacher, tiny_glue, *FAST, "trainer.max_steps=2", "trainer.eval_every=2",
                   "optim.gate_lr=1e-2", "optim.warmup_ratio=0"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    kinds = ("proj_weight", "proj_bias", "norms_weight", "norms_bias")
    (evaluation,) = metrics["history"]
    assert all(evaluation[f"gate/move/{k}"] > 0 for k in kinds)
    assert {"layer_02", "layer_03", "layer_04", *kinds} <= set(metrics["gates"]["movement"])


# --------------------------------------------------------------------------- the reference recipe, teacher included
REFERENCE_TEACHER = {  # IKMLab/LAD scripts/tune_<task>_teacher.sh: lr, total steps, warm-up steps, checkpoint interval
    "rte": (7e-5, 385, 115, 77), "mrpc": (7e-5, 345, 1, 115), "sst2": (2e-5, 6315, 1894, 2105),
    "qnli": (3e-5, 9822, 3274, 1000), "qqp": (2e-5, 34110, 10233, 11370), "mnli": (3e-5, 36816, 10000, 3000)}
REFERENCE_DISTIL_EVAL = {"rte": 50, "mrpc": 50, "sst2": 2000, "qnli": 1000, "qqp": 3000, "mnli": 2000}


@pytest.mark.parametrize("task", sorted(REFERENCE_TEACHER))
def test_reference_experiment_gives_train_teacher_the_reference_teacher_recipe(task):
    from conftest import compose

    cfg = compose("train_teacher", [f"experiment=reference_{task}"])
    lr, total, warmup, every = REFERENCE_TEACHER[task]
    assert (cfg.task.name, cfg.teacher.name, cfg.teacher.backbone, cfg.seed) == (task, "bert_base", "bert-base-uncased", 42)
    assert (cfg.optim.lr, cfg.optim.warmup_steps, cfg.trainer.max_steps, cfg.trainer.eval_every) == (lr, warmup, total, every)
    assert (cfg.optim.batch_size, cfg.optim.weight_decay, cfg.optim.max_grad_norm, cfg.optim.lr_scheduler_type) == (
        32, 0.01, 1.0, "linear")
    assert cfg.data.bucket is False and cfg.task.max_seq_length == 128
    assert not {"student", "gate", "loss"} & set(cfg)  # nothing of distillation leaks into a teacher run
    distil = compose("distil", [f"experiment=reference_{task}", "teacher.backbone=/x"])
    assert distil.data.bucket is False and distil.trainer.eval_every == REFERENCE_DISTIL_EVAL[task]
    assert distil.student.num_layers == 6 and distil.optim.warmup_steps is None
    assert distil.teacher.path == cfg.teacher.path  # distil.py finds the teacher train_teacher.py wrote


def test_train_teacher_cfg_job_shows_the_reference_teacher_values():
    import subprocess
    import sys

    from conftest import REPO

    out = subprocess.run([sys.executable, "train_teacher.py", "experiment=reference_rte", "--cfg", "job"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for line in ("lr: 7.0e-05", "warmup_steps: 115", "max_steps: 385", "eval_every: 77", "bucket: false",
                 "name: bert_base", "name: rte"):
        assert line in out.stdout, line


def test_reference_warmup_steps_set_the_schedule(tmp_path):
    """optim.warmup_steps (the reference teacher's 115 of 385 steps) is what the optimiser warms up over."""
    from omegaconf import OmegaConf

    from lad.run.train import build_optimizers

    module = _lad_distiller(save_tiny_model(tmp_path / "t", num_layers=4))
    cfg = OmegaConf.create({"lr": 1.0, "gate_lr": 1.0, "warmup_ratio": 0.1, "warmup_steps": 115, "weight_decay": 0.0,
                            "lr_scheduler_type": "linear", "max_grad_norm": 1.0})
    optimizers, schedulers, _ = build_optimizers(module, cfg, total_steps=385)
    for _ in range(57):
        for opt, sch in zip(optimizers, schedulers):
            opt.step()  # no gradients: leaves the weights as they are
            sch.step()
    for opt in optimizers:
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([57 / 115] * 2)


def test_reference_experiment_picks_a_6_layer_student_that_student_overrides():
    from conftest import compose

    assert compose("distil", ["experiment=reference_rte", "teacher.backbone=/x"]).student.num_layers == 6
    assert compose("distil", ["experiment=reference_rte", "student=4layer", "teacher.backbone=/x"]).student.num_layers == 4
    assert compose("distil", []).student.num_layers == 3


def test_uniform_shuffle_reaches_the_training_loop(tmp_path, tiny_teacher, tiny_glue, monkeypatch):
    """data.bucket=false (the reference's DataLoader(shuffle=True)): the loop trains on plainly
    shuffled batches, not on length buckets."""
    from lad.data.loader import make_train_batches
    from lad.run.pipeline import run

    seen = _record_training_batches(monkeypatch)
    run(distil_cfg(tmp_path, tiny_teacher, tiny_glue, *FAST, "data.bucket=false", "trainer.max_steps=6",
                   "trainer.eval_every=6", "seed=5"))
    assert seen == make_train_batches(list(range(96)), 16, 5, 0, bucket=False)
    assert seen != make_train_batches(list(range(96)), 16, 5, 0, bucket=True)
