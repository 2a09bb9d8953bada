"""Tests for lad.method.losses: loss terms against hand computations, and the Objective."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from lad.core.errors import ConfigError
from lad.method.losses import Objective, hard_loss, hidden_mse, pkd_loss, soft_loss
from lad.testing import Inputs, evaluate

CONF = Path(__file__).resolve().parents[1] / "conf"

S_LOGITS = [[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0]]
T_LOGITS = [[2.0, 0.0, 1.0], [0.5, 0.5, 0.0]]


def _softmax(row: list[float], temp: float) -> list[float]:
    exps = [math.exp(v / temp) for v in row]
    z = sum(exps)
    return [e / z for e in exps]


def _hand_kd(s_rows, t_rows, temp: float) -> float:
    """T^2 * mean over rows of sum_c p_t log(p_t / p_s)."""
    kls = []
    for s, t in zip(s_rows, t_rows):
        ps, pt = _softmax(s, temp), _softmax(t, temp)
        kls.append(sum(b * math.log(b / a) for a, b in zip(ps, pt)))
    return temp * temp * sum(kls) / len(kls)


# --------------------------------------------------------------------------- soft / hard


@pytest.mark.parametrize("temp", [1.0, 2.0, 10.0])
def test_kd_matches_hand_computation(temp):
    got = soft_loss(torch.tensor(S_LOGITS), torch.tensor(T_LOGITS), temp, is_regression=False)
    assert got.item() == pytest.approx(_hand_kd(S_LOGITS, T_LOGITS, temp), rel=1e-5)


def test_kd_zero_when_logits_equal():
    logits = torch.tensor(S_LOGITS)
    assert soft_loss(logits, logits.clone(), 10.0, False).item() == pytest.approx(0.0, abs=1e-7)
    assert soft_loss(torch.tensor(S_LOGITS), torch.tensor(T_LOGITS), 10.0, False).item() > 0


def test_kd_t_squared_scaling():
    s, t = torch.tensor(S_LOGITS), torch.tensor(T_LOGITS)
    temp = 4.0
    plain_kl = _hand_kd(S_LOGITS, T_LOGITS, temp) / temp**2  # KL at T without scaling
    assert soft_loss(s, t, temp, False).item() == pytest.approx(16.0 * plain_kl, rel=1e-5)
    # T^2 keeps the soft-target gradient on the same scale across temperatures
    grads = []
    for temp in (5.0, 50.0):
        s_var = s.clone().requires_grad_(True)
        soft_loss(s_var, t, temp, False).backward()
        grads.append(s_var.grad.abs().sum().item())
    assert grads[1] == pytest.approx(grads[0], rel=0.2)


def test_kd_direction_is_teacher_to_student():
    """KL(p_t || p_s), not KL(p_s || p_t)."""
    s, t = [[3.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]
    got = soft_loss(torch.tensor(s), torch.tensor(t), 1.0, False).item()
    ps, pt = _softmax(s[0], 1.0), _softmax(t[0], 1.0)
    reverse = sum(a * math.log(a / b) for a, b in zip(ps, pt))
    assert got == pytest.approx(_hand_kd(s, t, 1.0), rel=1e-6)
    assert abs(got - reverse) > 1e-3


def test_soft_loss_does_not_backprop_into_teacher():
    t = torch.tensor(T_LOGITS, requires_grad=True)
    s = torch.tensor(S_LOGITS, requires_grad=True)
    soft_loss(s, t, 2.0, False).backward()
    assert t.grad is None and s.grad is not None


def test_hard_loss_cross_entropy():
    logits, labels = torch.tensor(S_LOGITS), torch.tensor([1, 2])
    expected = np.mean([-math.log(_softmax(S_LOGITS[0], 1.0)[1]), -math.log(_softmax(S_LOGITS[1], 1.0)[2])])
    assert hard_loss(logits, labels, is_regression=False).item() == pytest.approx(expected, rel=1e-6)


def test_regression_paths_use_mse():
    s = torch.tensor([[1.0], [2.5], [0.0]])
    labels = torch.tensor([1.5, 2.0, 1.0])
    teacher = torch.tensor([[0.0], [3.0], [0.5]])
    assert hard_loss(s, labels, True).item() == pytest.approx((0.25 + 0.25 + 1.0) / 3)
    # regression soft loss: plain MSE to the teacher, no temperature
    assert soft_loss(s, teacher, 10.0, True).item() == pytest.approx((1.0 + 0.25 + 0.25) / 3)


# --------------------------------------------------------------------------- hidden / pkd


def test_hidden_mse_matches_hand_computation_over_real_tokens():
    gen = torch.Generator().manual_seed(0)
    student = [torch.randn(2, 4, 3, generator=gen) for _ in range(2)]
    targets = [torch.randn(2, 4, 3, generator=gen) for _ in range(2)]
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    got = hidden_mse(student, targets, mask).item()
    per_layer = []
    for s, t in zip(student, targets):
        s, t = s.numpy(), t.numpy()
        sq = [((s[b, i] - t[b, i]) ** 2) for b in range(2) for i in range(4) if mask[b, i]]
        per_layer.append(np.concatenate(sq).mean())
    assert got == pytest.approx(float(np.mean(per_layer)), rel=1e-5)


def test_hidden_mse_ignores_padded_positions():
    gen = torch.Generator().manual_seed(1)
    student = [torch.randn(2, 4, 3, generator=gen)]
    targets = [torch.randn(2, 4, 3, generator=gen)]
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    base = hidden_mse(student, targets, mask)
    pad = (mask == 0).unsqueeze(-1)
    garbage_s = [torch.where(pad, 1e3 * torch.randn(2, 4, 3, generator=gen), student[0])]
    garbage_t = [torch.where(pad, -1e3 * torch.ones(2, 4, 3), targets[0])]
    torch.testing.assert_close(hidden_mse(garbage_s, garbage_t, mask), base)
    # but real tokens do matter
    bumped = [student[0].clone()]
    bumped[0][0, 0] += 1.0
    assert hidden_mse(bumped, targets, mask).item() != pytest.approx(base.item())


def test_hidden_mse_shape_mismatch_rejected():
    with pytest.raises(ValueError):
        hidden_mse([torch.zeros(1, 2, 3)], [torch.zeros(1, 2, 4)], None)
    with pytest.raises(ValueError):
        hidden_mse([torch.zeros(1, 2, 3)], [], None)


def test_pkd_matches_hand_computation():
    s_cls = [torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[0.0, 2.0], [1.0, 1.0]])]
    t_cls = [torch.tensor([[4.0, 3.0], [0.0, 5.0]]), torch.tensor([[0.0, 1.0], [-1.0, -1.0]])]

    def unit(v):
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]

    per_layer = []
    for s, t in zip(s_cls, t_cls):
        dists = []
        for sv, tv in zip(s.tolist(), t.tolist()):
            a, b = unit(sv), unit(tv)
            dists.append(sum((x - y) ** 2 for x, y in zip(a, b)))
        per_layer.append(sum(dists) / len(dists))
    # layer 1: ((0.6-0.8)^2+(0.8-0.6)^2 = 0.08, (1-0)^2+(0-1)^2 = 2) -> 1.04; layer 2: (0, 4) -> 2
    assert per_layer == pytest.approx([1.04, 2.0])
    assert pkd_loss(s_cls, t_cls).item() == pytest.approx(sum(per_layer) / 2, rel=1e-6)
    # scale invariant
    assert pkd_loss([5 * s for s in s_cls], t_cls).item() == pytest.approx(1.52, rel=1e-6)


# --------------------------------------------------------------------------- Objective


def _batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return dict(
        s_logits=torch.randn(2, 3, generator=gen, requires_grad=True),
        labels=torch.tensor([0, 2]),
        t_logits=torch.randn(2, 3, generator=gen),
        s_hidden=[torch.randn(2, 4, 5, generator=gen) for _ in range(2)],
        targets=[torch.randn(2, 4, 5, generator=gen) for _ in range(2)],
        mask=torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]),
        t_hidden=[torch.randn(2, 4, 5, generator=gen) for _ in range(3)],
        layer_map=[2, 3],
    )


def test_objective_parts_and_weighted_total():
    obj = Objective(hard_weight=0.3, soft_weight=0.7, hidden_weight=20.0, pkd_weight=5.0,
                    temperature=3.0, is_regression=False)
    b = _batch()
    total, parts = evaluate(obj, **b)
    assert set(parts) == {"hard", "soft", "hidden", "pkd"}
    assert all(isinstance(v, float) for v in parts.values())
    assert parts["hard"] == pytest.approx(hard_loss(b["s_logits"], b["labels"], False).item(), rel=1e-6)
    assert parts["soft"] == pytest.approx(soft_loss(b["s_logits"], b["t_logits"], 3.0, False).item(), rel=1e-6)
    assert parts["hidden"] == pytest.approx(hidden_mse(b["s_hidden"], b["targets"], b["mask"]).item(), rel=1e-6)
    # Patient-KD: [CLS] of the intermediate student layers (all but the last) vs their mapped teacher layers
    pkd_ref = pkd_loss([b["s_hidden"][0][:, 0]], [b["t_hidden"][1][:, 0]])
    assert parts["pkd"] == pytest.approx(pkd_ref.item(), rel=1e-6)
    weighted = 0.3 * parts["hard"] + 0.7 * parts["soft"] + 20.0 * parts["hidden"] + 5.0 * parts["pkd"]
    assert total.item() == pytest.approx(weighted, rel=1e-5)
    total.backward()
    assert b["s_logits"].grad is not None


def test_objective_skips_disabled_terms_and_needs_no_teacher_for_ce():
    ce = Objective(hard_weight=1.0, soft_weight=0.0, hidden_weight=0.0, pkd_weight=0.0,
                   temperature=1.0, is_regression=False)
    assert not ce.needs_teacher and not ce.student_needs
    b = _batch()
    total, parts = evaluate(ce, b["s_logits"], b["labels"])
    assert parts["soft"] == parts["hidden"] == parts["pkd"] == 0.0
    assert total.item() == pytest.approx(parts["hard"], rel=1e-6)

    lad = Objective(hard_weight=0.5, soft_weight=0.5, hidden_weight=1000.0, pkd_weight=0.0,
                    temperature=10.0, is_regression=False)
    assert lad.needs_teacher and lad.student_needs == {"hidden"} and lad.uses_gate and "cls" not in lad.teacher_needs
    pkd = Objective(hard_weight=0.5, soft_weight=0.5, hidden_weight=0.0, pkd_weight=100.0,
                    temperature=10.0, is_regression=False)
    assert pkd.student_needs == {"hidden"} and "cls" in pkd.teacher_needs and not pkd.uses_gate
    with pytest.raises(AttributeError, match="t_logits"):
        evaluate(lad, b["s_logits"], b["labels"])


def test_inputs_not_given_are_missing_attributes():
    inputs = Inputs(s_logits=torch.zeros(1, 2), labels=None)
    assert hasattr(inputs, "s_logits") and not hasattr(inputs, "labels") and not hasattr(inputs, "t_logits")
    assert getattr(inputs, "t_hidden", "absent") == "absent"


def test_objective_regression():
    obj = Objective(hard_weight=0.5, soft_weight=0.5, hidden_weight=0.0, pkd_weight=0.0,
                    temperature=10.0, is_regression=True)
    s = torch.tensor([[1.0], [2.0]])
    total, parts = evaluate(obj, s, torch.tensor([0.0, 2.0]), torch.tensor([[1.0], [0.0]]))
    assert parts["hard"] == pytest.approx(0.5)
    assert parts["soft"] == pytest.approx(2.0)
    assert total.item() == pytest.approx(1.25)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"hidden_weight": -1.0}, "hidden_weight"),
        ({"hard_weight": 0.0, "soft_weight": 0.0}, "all zero"),
        ({"soft_weight": "x"}, "soft_weight"),
        ({"extra_weight": 1.0}, "unknown"),
    ],
)
def test_objective_config_validation(overrides, match):
    cfg = {"name": "kd", "hard_weight": 0.5, "soft_weight": 0.5, "hidden_weight": 0.0, "pkd_weight": 0.0,
           "temperature": 10.0, **overrides}
    with pytest.raises(ConfigError, match=match):
        Objective.from_config(OmegaConf.create(cfg), is_regression=False)


def test_objective_config_missing_key():
    with pytest.raises(ConfigError, match="temperature"):
        Objective.from_config({"hard_weight": 1.0, "soft_weight": 0, "hidden_weight": 0, "pkd_weight": 0}, False)


EXPECTED = {
    "lad": (0.5, 0.5, 1000.0, 0.0, 10.0),
    "kd": (0.5, 0.5, 0.0, 0.0, 10.0),
    "pkd": (0.5, 0.5, 0.0, 100.0, 10.0),
    "ce": (1.0, 0.0, 0.0, 0.0, 1.0),
}


@pytest.mark.parametrize("path", sorted((CONF / "loss").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_loss_config_builds(path):
    from lad.core.config import load_with_bases

    cfg = load_with_bases(path)
    assert cfg.name == path.stem
    obj = Objective.from_config(cfg, is_regression=False)
    if cfg.name in EXPECTED:
        w = obj.weights
        assert (w["hard"], w["soft"], w["hidden"], w["pkd"], obj.options["temperature"]) == EXPECTED[cfg.name]
        total, parts = evaluate(obj, **_batch())
        assert torch.isfinite(total) and set(parts) == {"hard", "soft", "hidden", "pkd"}
    assert obj.needs_teacher == (cfg.name != "ce")
    assert set(obj.weights) == {k[:-len("_weight")] for k in cfg if k.endswith("_weight")}


def test_all_expected_loss_configs_exist():
    assert {p.stem for p in (CONF / "loss").glob("*.yaml")} >= set(EXPECTED)
