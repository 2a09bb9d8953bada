"""The LAD method on the production path: what trains, with which optimiser and LR, from which
initialisation, against which targets -- and a parity check against the paper's equations.

Each test here asserts behaviour that a broken implementation changes; `scripts/mutants.py`
applies such breakages one by one and checks that these tests (and the loss/gate unit tests)
catch every one.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose, save_tiny_model
from lad.method.distiller import Distiller
from lad.method.gates import HighwayGates
from lad.method.losses import Objective
from lad.models.student import build_student
from lad.testing import evaluate
from test_pipeline import distil_cfg, recorder  # noqa: F401  (fixture re-used)


def _student_cfg(num_layers, **kw):
    base = dict(name=f"{num_layers}layer", num_layers=num_layers, hidden_size=None, intermediate_size=None,
                num_attention_heads=None, init_from="teacher", backbone=None, init_layers=True,
                init_embeddings=True, init_classifier=True)
    base.update(kw)
    return OmegaConf.create(base)


def _teacher(path):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(path))
    model.eval()
    return model


def _batch(n=4, t=9, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (n, t), generator=gen)
    mask = torch.ones(n, t, dtype=torch.long)
    mask[1, 6:] = 0
    mask[3, 4:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "labels": torch.tensor([0, 1, 1, 0])}


def _lad_distiller(teacher_path, num_layers=2, gate_kw=None, loss_kw=None, **student_kw):
    teacher = _teacher(teacher_path)
    student, mapping = build_student(teacher, _student_cfg(num_layers, **student_kw))
    L, d = teacher.config.num_hidden_layers, teacher.config.hidden_size
    gate = HighwayGates(num_layers=L, hidden_size=d, **(gate_kw or {}))
    weights = dict(hard_weight=0.5, soft_weight=0.5, hidden_weight=100.0, pkd_weight=0.0, temperature=2.0)
    weights.update(loss_kw or {})
    objective = Objective(is_regression=False, **weights)
    return Distiller(student, objective, teacher=teacher, gate=gate, layer_map=mapping, teacher_hidden_size=d)


# --------------------------------------------------------------------------- gradients reach the gates
def test_production_training_step_sends_gradients_into_every_needed_gate(tmp_path):
    """Through Distiller.training_step (the path runs use), the hidden loss trains the gates:
    gates 2..max(layer_map) get non-zero gradients (targets are not detached)."""
    module = _lad_distiller(save_tiny_model(tmp_path / "t", num_layers=4))
    module.train()
    loss, parts = module.training_step(_batch())
    assert parts["hidden"] > 0
    loss.backward()
    for step, lin in enumerate(module.gate.proj):  # layer_map [2, 4] needs gates for layers 2, 3, 4
        assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0, f"gate {step + 2} got no gradient"


def test_one_step_moves_gates_by_gate_lr_and_student_by_lr(tmp_path, tiny_teacher, tiny_glue):
    """The optimisers the loop builds: the gates are in one, at optim.gate_lr, and the student
    at optim.lr. AdamW's first step moves every parameter with a gradient by about its LR."""
    from lad.run.train import build_optimizers

    module = _lad_distiller(tiny_teacher)
    cfg = OmegaConf.create({"lr": 1e-3, "gate_lr": 1e-5, "warmup_ratio": 0.0, "weight_decay": 0.0,
                            "lr_scheduler_type": "constant", "max_grad_norm": 1.0})
    optimizers, _, _ = build_optimizers(module, cfg, total_steps=10)
    gate_w = module.gate.proj[0].weight.detach().clone()
    stud_w = module.student.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
    loss, _ = module.training_step(_batch())
    loss.backward()
    for opt in optimizers:
        opt.step()
    gate_step = (module.gate.proj[0].weight.detach() - gate_w).abs().max().item()
    stud_step = (module.student.bert.encoder.layer[0].attention.self.query.weight.detach() - stud_w).abs().max().item()
    assert gate_step == pytest.approx(1e-5, rel=0.05), "gates not stepped at optim.gate_lr"
    assert stud_step == pytest.approx(1e-3, rel=0.05), "student not stepped at optim.lr"
    # the module names its groups and the optim key of each one's LR; the loop only looks them up
    assert [(g.name, g.lr_key) for g in module.param_groups()] == [("student", "lr"), ("gate", "gate_lr")]
    from lad.core.errors import ConfigError

    del cfg["gate_lr"]
    with pytest.raises(ConfigError, match=r"^optim\.gate_lr is not set: the learning rate of the gate parameters$"):
        build_optimizers(module, cfg, total_steps=10)


def test_frozen_gates_are_in_no_optimiser_and_compute_the_same_targets(tmp_path, tiny_teacher):
    torch.manual_seed(3)
    trained = _lad_distiller(tiny_teacher)
    torch.manual_seed(3)
    frozen = _lad_distiller(tiny_teacher, gate_kw={"frozen": True})
    assert [g.name for g in frozen.param_groups()] == ["student"]
    assert [g.name for g in trained.param_groups()] == ["student", "gate"]
    assert not any(p.requires_grad for p in frozen.gate.parameters())
    hs = [torch.randn(2, 5, 32) for _ in range(4)]
    for a, b in zip(trained.gate(hs, None, [2, 4]), frozen.gate(hs, None, [2, 4])):
        assert torch.equal(a, b)


def test_gate_layernorm_weights_are_not_weight_decayed(tiny_teacher):
    """Biases and every normalisation weight (BERT's LayerNorm and the gates' norms alike) are exempt."""
    from lad.run.train import no_decay_ids

    for norm in ("per_token", "per_sequence"):
        module = _lad_distiller(tiny_teacher, gate_kw={"norm": norm})
        exempt = no_decay_ids(module)
        names = {n for n, p in module.named_parameters() if id(p) in exempt}
        assert {"gate.norms.0.weight", "gate.norms.0.bias", "gate.proj.0.bias"} <= names
        assert "gate.proj.0.weight" not in names
        assert "student.bert.encoder.layer.0.output.LayerNorm.weight" in names
        assert "student.bert.encoder.layer.0.output.dense.weight" not in names


def test_per_gate_clipping_clips_each_gate_on_its_own(tiny_teacher):
    joint = _lad_distiller(tiny_teacher, gate_kw={"clip_per_gate": False})
    apart = _lad_distiller(tiny_teacher)  # the default, as the reference code
    (g_joint,) = [g for g in joint.param_groups() if g.name == "gate"]
    (g_apart,) = [g for g in apart.param_groups() if g.name == "gate"]
    assert len(g_joint.units()) == 1 and len(g_apart.units()) == 3  # 4 teacher layers -> 3 gates
    for unit, lin, norm in zip(g_apart.units(), apart.gate.proj, apart.gate.norms):
        assert {id(p) for p in unit} == {id(p) for p in [*lin.parameters(), *norm.parameters()]}


def test_gate_bias_init_options():
    torch.manual_seed(0)
    zeros = HighwayGates(num_layers=3, hidden_size=16, bias_init="zeros")
    default = HighwayGates(num_layers=3, hidden_size=16)  # the reference code's (and the config's) default
    assert all(torch.count_nonzero(lin.bias) == 0 for lin in zeros.proj)
    bound = 1 / math.sqrt(16)  # torch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    for lin in default.proj:
        assert torch.count_nonzero(lin.bias) == 16 and lin.bias.abs().max() <= bound


# --------------------------------------------------------------------------- student hidden states
def test_student_identical_to_teacher_has_zero_hidden_loss(tmp_path):
    """K = L with every weight copied: student layer k is teacher layer k, so the direct-map hidden
    term is exactly 0 -- any misalignment of student outputs and teacher layers makes it positive."""
    from lad.method.gates import DirectGates

    teacher = _teacher(save_tiny_model(tmp_path / "t", num_layers=4, dropout=0.0))
    student, mapping = build_student(teacher, _student_cfg(4))
    assert mapping == [1, 2, 3, 4]
    objective = Objective(hard_weight=0.0, soft_weight=0.0, hidden_weight=1.0, pkd_weight=0.0,
                          temperature=1.0, is_regression=False)
    module = Distiller(student, objective, teacher=teacher, gate=DirectGates(4, 32), layer_map=mapping,
                       teacher_hidden_size=32)
    module.eval()
    _, parts = module.training_step(_batch())
    assert parts["hidden"] < 1e-10
    # and the term does see a difference when there is one
    with torch.no_grad():
        module.student.bert.encoder.layer[2].output.LayerNorm.bias.add_(1.0)
    _, parts = module.training_step(_batch())
    assert parts["hidden"] > 0.1


# --------------------------------------------------------------------------- hidden positions
def test_hidden_positions_real_ignores_padding_and_all_averages_every_position():
    s = [torch.zeros(2, 4, 3)]
    t = [torch.ones(2, 4, 3)]
    t[0][0, 3] = 5.0  # a padded position of example 0
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    logits = torch.zeros(2, 2)
    real = Objective(hard_weight=0.0, soft_weight=0.0, hidden_weight=1.0, pkd_weight=0.0,
                     temperature=1.0, is_regression=False, hidden_positions="real")
    full = Objective(hard_weight=0.0, soft_weight=0.0, hidden_weight=1.0, pkd_weight=0.0,
                     temperature=1.0, is_regression=False, hidden_positions="all")
    _, p_real = evaluate(real, logits, None, s_hidden=s, targets=t, mask=mask)
    _, p_all = evaluate(full, logits, None, s_hidden=s, targets=t, mask=mask)
    assert p_real["hidden"] == pytest.approx(1.0)  # every real position has error 1
    assert p_all["hidden"] == pytest.approx((7 * 1 + 25) / 8)  # 8 positions, one of them padding (error 25)


def test_hidden_positions_all_pads_training_batches_to_max_length(tmp_path, tiny_teacher, tiny_glue, monkeypatch):
    from lad.run import evaluation, pipeline

    widths = []
    real_batch_of = evaluation.batch_of

    def spy(features, idx, pad_to=None):
        batch = real_batch_of(features, idx, pad_to)
        if pad_to is not None:  # training batches (evaluation keeps dynamic padding)
            widths.append(batch["input_ids"].shape[1])
        return batch

    monkeypatch.setattr(evaluation, "batch_of", spy)
    cfg = distil_cfg(tmp_path, tiny_teacher, tiny_glue, "trainer.max_steps=2", "trainer.eval_every=2",
                     "loss.hidden_positions=all", "task.max_seq_length=40", "trainer.predict_test=false")
    pipeline.run(cfg)
    assert len(widths) >= 2 and set(widths) == {40}


# --------------------------------------------------------------------------- init from the pre-trained backbone
def test_init_from_pretrained_takes_layers_and_pooler_from_the_backbone(tmp_path):
    from transformers import AutoModel

    teacher = _teacher(save_tiny_model(tmp_path / "t", num_layers=4, seed=0))
    backbone = AutoModel.from_pretrained(str(save_tiny_model(tmp_path / "b", num_layers=4, seed=1)))
    student, mapping = build_student(teacher, _student_cfg(2, init_from="pretrained", init_embeddings=False,
                                                          init_classifier=False), backbone)
    assert mapping == [2, 4]
    s_layers, b_layers, t_layers = student.bert.encoder.layer, backbone.encoder.layer, teacher.bert.encoder.layer
    for k, m in enumerate(mapping):
        for (name, sp), (_, bp), (_, tp) in zip(s_layers[k].named_parameters(), b_layers[m - 1].named_parameters(),
                                                t_layers[m - 1].named_parameters()):
            assert torch.equal(sp, bp), f"student layer {k + 1} {name} is not backbone layer {m}"
            assert not torch.equal(sp, tp) or torch.equal(bp, tp)
    assert torch.equal(student.bert.pooler.dense.weight, backbone.pooler.dense.weight)
    for src in (backbone.embeddings, teacher.bert.embeddings):  # reference: random embeddings
        assert not torch.equal(student.bert.embeddings.word_embeddings.weight, src.word_embeddings.weight)
    assert not torch.equal(student.classifier.weight, teacher.classifier.weight)
    # asked for, embeddings come from the backbone and the classifier from the teacher
    student, _ = build_student(teacher, _student_cfg(2, init_from="pretrained"), backbone)
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, backbone.embeddings.word_embeddings.weight)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)


def test_init_from_pretrained_finds_the_backbone_the_teacher_recorded(tmp_path, tiny_glue, recorder):
    """train_teacher.py records its backbone next to the published teacher; a distil run with
    student.init_from=pretrained starts from that backbone, not from the fine-tuned teacher."""
    from lad.run.pipeline import run

    backbone = save_tiny_model(tmp_path / "backbone", num_layers=2, seed=5)
    teacher_dir = tmp_path / "teachers" / "sst2"
    cfg = compose("train_teacher", [
        "task=sst2", "teacher=local", f"teacher.backbone={backbone}", f"teacher.path={teacher_dir}",
        f"data.data_dir={tiny_glue}", f"paths.cache={tmp_path / 'cache'}", f"output_dir={tmp_path / 'ft'}",
        "mlflow=off", "trainer.progress=false", "trainer.max_steps=2", "trainer.predict_test=false"])
    run(cfg)
    meta = json.loads((teacher_dir / "lad_teacher.json").read_text())
    assert meta["backbone"] == str(backbone) and meta["task"] == "sst2"
    cfg = distil_cfg(tmp_path, teacher_dir, tiny_glue, "student=2layer", "student.init_from=pretrained",
                     "trainer.max_steps=1", "trainer.predict_test=false", name="distil")
    run(cfg)
    assert recorder.params["student.init_source"] == str(backbone)


# --------------------------------------------------------------------------- gate movement is recorded
def test_metrics_json_records_gate_movement_and_mean_gates_per_evaluation(tmp_path, tiny_teacher, tiny_glue, capsys):
    from lad.run.pipeline import run

    cfg = distil_cfg(tmp_path, tiny_teacher, tiny_glue, "trainer.max_steps=4", "trainer.eval_every=2",
                     "optim.gate_lr=1e-2", "optim.warmup_ratio=0", "trainer.predict_test=false")
    run(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    evals = metrics["history"]
    assert [e["step"] for e in evals] == [2, 4]
    for e in evals:
        assert {"gate/move/layer_02", "gate/move/layer_03", "gate/move/layer_04"} <= set(e)
        assert {"gate/mean/layer_02", "gate/mean/layer_04"} <= set(e)
    moves = [e["gate/move/layer_02"] for e in evals]
    assert 0 < moves[0] < moves[1]  # moving away from the init, step by step
    assert metrics["gates"]["movement"]["layer_02"] == pytest.approx(moves[1])
    assert "gates hardly moved" not in capsys.readouterr().err


def test_unmoved_gates_print_one_warning_naming_gate_lr(tmp_path, tiny_teacher, tiny_glue, capsys):
    from lad.run.pipeline import run

    cfg = distil_cfg(tmp_path, tiny_teacher, tiny_glue, "trainer.max_steps=2", "trainer.eval_every=2",
                     "optim.gate_lr=1e-7", "trainer.predict_test=false")
    run(cfg)
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("warning:")]
    assert len(lines) == 1 and "optim.gate_lr" in lines[0] and "1e-07" in lines[0]


def test_frozen_gate_run_records_zero_movement_and_no_warning(tmp_path, tiny_teacher, tiny_glue, capsys):
    from lad.run.pipeline import run

    cfg = distil_cfg(tmp_path, tiny_teacher, tiny_glue, "trainer.max_steps=2", "trainer.eval_every=2",
                     "gate.frozen=true", "trainer.predict_test=false")
    run(cfg)
    gates = json.loads((tmp_path / "run" / "metrics.json").read_text())["gates"]
    assert gates["frozen"] is True and set(gates["movement"].values()) == {0.0}
    assert "warning:" not in capsys.readouterr().err


# --------------------------------------------------------------------------- parity with the paper's equations
def _paper_targets(H, params, eps):
    """LAD from the paper's equations, written out: A_1 = H_1; for l >= 2
    g_l = sigmoid(A_{l-1} W_l^T + b_l); M_l = g_l * H_l + (1 - g_l) * A_{l-1};
    A_l = (M_l - mean(M_l)) / sqrt(var(M_l) + eps) * gamma_l + beta_l, with mean and (biased)
    variance over each example's whole [T, d] block and gamma_l, beta_l of shape [T, d]."""
    A = [H[0]]
    for l in range(1, len(H)):
        W, b, gamma, beta = params[l - 1]
        g = 1.0 / (1.0 + torch.exp(-(A[-1] @ W.T + b)))
        M = g * H[l] + (1.0 - g) * A[-1]
        mu = M.mean(dim=(1, 2), keepdim=True)
        var = ((M - mu) ** 2).mean(dim=(1, 2), keepdim=True)
        A.append((M - mu) / torch.sqrt(var + eps) * gamma + beta)
    return A


def test_reference_gate_stack_and_hidden_loss_equal_the_paper_equations():
    torch.manual_seed(0)
    B, T, d, L, eps = 3, 7, 6, 4, 1e-5
    gate = HighwayGates(num_layers=L, hidden_size=d, norm="per_sequence", affine="position", max_len=T,
                        bias_init="default").double()
    with torch.no_grad():  # non-trivial affine so that its shape and placement matter
        for norm in gate.norms:
            norm.weight.copy_(torch.rand(T, d, dtype=torch.float64) + 0.5)
            norm.bias.copy_(torch.randn(T, d, dtype=torch.float64))
    H = [torch.randn(B, T, d, dtype=torch.float64) for _ in range(L)]
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, 4:] = 0  # padded positions still count under hidden_positions=all
    layer_map = [2, 4]
    S = [torch.randn(B, T, d, dtype=torch.float64) for _ in layer_map]
    params = [(lin.weight, lin.bias, n.weight, n.bias) for lin, n in zip(gate.proj, gate.norms)]
    A = _paper_targets(H, params, eps)
    targets = gate(H, mask, layer_map)
    for got, m in zip(targets, layer_map):
        assert torch.allclose(got, A[m - 1], rtol=0, atol=1e-10)
    objective = Objective(hard_weight=0.0, soft_weight=0.0, hidden_weight=1.0, pkd_weight=0.0,
                          temperature=1.0, is_regression=False, hidden_positions="all")
    total, _ = evaluate(objective, torch.zeros(B, 2, dtype=torch.float64), None, s_hidden=S, targets=targets, mask=mask)
    expected = sum(((s - A[m - 1]) ** 2).mean() for s, m in zip(S, layer_map)) / len(layer_map)
    assert abs(total.item() - expected.item()) < 1e-10


def test_position_affine_needs_fixed_padding(tmp_path, tiny_teacher, tiny_glue):
    from lad.core.errors import ConfigError
    from lad.run.pipeline import run

    cfg = distil_cfg(tmp_path, tiny_teacher, tiny_glue, "gate.norm=per_sequence", "gate.affine=position")
    with pytest.raises(ConfigError, match="loss.hidden_positions=all"):
        run(cfg)
    with pytest.raises(ConfigError, match="gate.affine=position needs gate.norm=per_sequence"):
        HighwayGates(num_layers=3, hidden_size=8, affine="position", max_len=8)


# --------------------------------------------------------------------------- the reference recipe as a config
def test_reference_experiment_sets_every_reference_choice():
    cfg = compose("distil", ["experiment=reference_mrpc", "teacher.backbone=/x"])
    assert cfg.task.name == "mrpc" and cfg.teacher.name == "bert_base" and cfg.student.num_layers == 6
    assert (cfg.student.init_from, cfg.student.init_embeddings, cfg.student.init_classifier) == ("pretrained", False, False)
    assert (cfg.gate.norm, cfg.gate.affine, cfg.gate.max_len, cfg.gate.bias_init, cfg.gate.clip_per_gate) == (
        "per_sequence", "position", 128, "default", True)
    assert cfg.loss.hidden_positions == "all"
    assert (cfg.optim.lr, cfg.optim.gate_lr, cfg.optim.warmup_ratio, cfg.optim.batch_size) == (7e-4, 5e-6, 0.1, 32)
    assert (cfg.trainer.epochs, cfg.loss.temperature, cfg.loss.hidden_weight) == (20, 10, 500)
    assert (cfg.loss.soft_weight, cfg.loss.hard_weight, cfg.seed) == (0.5, 0.5, 42)
    qqp = compose("distil", ["experiment=reference_qqp", "teacher.backbone=/x"])
    assert (qqp.optim.lr, qqp.optim.gate_lr, qqp.loss.soft_weight, qqp.loss.hard_weight) == (5e-4, 5e-7, 0.7, 0.3)


def test_every_mutant_of_the_mutation_check_still_applies():
    """scripts/mutants.py breaks the method by syntax-tree edits of named functions; each must still
    find its code exactly once (else the check would silently test nothing), and each names tests
    that exist."""
    from pathlib import Path

    from scripts import mutants

    repo = Path(mutants.REPO)
    for m in mutants.MUTANTS:
        assert mutants.check_applies(m) != mutants.mutate_source((repo / m.path).read_text(), m.function,
                                                                m.old, m.old), m.name
        for test in m.tests:
            path, _, name = test.partition("::")
            assert f"def {name.split('[')[0]}(" in (repo / path).read_text(), test
