"""Tests for lad.method.gates: LAD highway gates and the baseline aggregators."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lad.core.errors import ConfigError
from lad.method.gates import (
    Aggregator,
    AttentionGates,
    DirectGates,
    HighwayGates,
    MeanGates,
    build_gate,
)
from lad.method.losses import Objective, hidden_mse
from lad.testing import evaluate

CONF = Path(__file__).resolve().parents[1] / "conf"
B, T, D, L = 2, 5, 8, 4


def _hidden(num_layers: int = L, batch: int = B, seq: int = T, dim: int = D, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, seq, dim, generator=gen) for _ in range(num_layers)]


def _mask(lengths: list[int], seq: int = T) -> torch.Tensor:
    return (torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]).long()


def _lad(reverse: bool = False, norm: str = "per_token", num_layers: int = L, seed: int = 0) -> HighwayGates:
    torch.manual_seed(seed)
    return HighwayGates(num_layers=num_layers, hidden_size=D, reverse=reverse, norm=norm)


# --------------------------------------------------------------------------- LAD gates


def test_lad_first_target_is_first_layer_exactly():
    hs = _hidden()
    gate = _lad()
    out = gate(hs, _mask([5, 3]), [1, 2, 4])
    assert torch.equal(out[0], hs[0])
    assert not torch.allclose(out[1], hs[1])


def test_lad_reverse_top_target_is_top_layer_exactly():
    hs = _hidden()
    gate = _lad(reverse=True)
    out = gate(hs, _mask([5, 3]), [1, 4])
    assert torch.equal(out[1], hs[L - 1])
    assert not torch.allclose(out[0], hs[0])


def test_lad_recurrence_matches_hand_loop():
    hs = _hidden(num_layers=3)
    gate = _lad(num_layers=3)
    with torch.no_grad():  # make gates and norms non-trivial
        for ln in gate.norms:
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.uniform_(-0.3, 0.3)
    out = gate(hs, _mask([5, 5]), [1, 2, 3])

    def layer_norm(x, w, b, eps):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + eps) * w + b

    expected = [hs[0]]
    for l in (1, 2):
        W, b = gate.proj[l - 1].weight, gate.proj[l - 1].bias
        ln = gate.norms[l - 1]
        prev = expected[-1]
        g = 1.0 / (1.0 + torch.exp(-(prev @ W.T + b)))
        expected.append(layer_norm(g * hs[l] + (1 - g) * prev, ln.weight, ln.bias, ln.eps))
    for got, exp in zip(out, expected):
        torch.testing.assert_close(got, exp, atol=1e-5, rtol=1e-5)


def test_lad_reverse_recurrence_matches_hand_loop():
    hs = _hidden(num_layers=3)
    gate = _lad(reverse=True, num_layers=3)
    out = gate(hs, None, [1, 2, 3])
    a3 = hs[2]
    g = torch.sigmoid(gate.proj[0](a3))
    a2 = gate.norms[0](g * hs[1] + (1 - g) * a3)
    g = torch.sigmoid(gate.proj[1](a2))
    a1 = gate.norms[1](g * hs[0] + (1 - g) * a2)
    for got, exp in zip(out, [a1, a2, a3]):
        torch.testing.assert_close(got, exp)


def test_lad_init_xavier_weights_zero_bias_own_layernorms():
    torch.manual_seed(0)
    dim = 64  # large enough for a stable std estimate
    gate = HighwayGates(num_layers=L, hidden_size=dim, bias_init="zeros")
    assert len(gate.proj) == L - 1 and len(gate.norms) == L - 1
    bound = (6.0 / (dim + dim)) ** 0.5  # Xavier uniform: U(-bound, bound), std = bound / sqrt(3)
    for lin in gate.proj:
        assert lin.weight.shape == (dim, dim)
        assert lin.weight.abs().max() <= bound
        # torch's default Linear init would give std = 1/sqrt(3 * dim), ~0.58x this
        assert lin.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.1)
        assert torch.count_nonzero(lin.bias) == 0
    assert len({id(n) for n in gate.norms}) == L - 1
    assert gate.trainable_parameters() and not DirectGates().trainable_parameters()


def _pad_with_garbage(hs: list[torch.Tensor], extra: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(123)
    return [torch.cat([h, 50 * torch.randn(h.shape[0], extra, h.shape[2], generator=gen)], dim=1) for h in hs]


def test_per_token_norm_invariant_to_extra_padding():
    hs = _hidden()
    mask = _mask([5, 3])
    gate = _lad(norm="per_token")
    out = gate(hs, mask, [2, 3, 4])
    padded = _pad_with_garbage(hs, extra=4)
    out_p = gate(padded, _mask([5, 3], seq=T + 4), [2, 3, 4])
    for a, b in zip(out, out_p):
        torch.testing.assert_close(a[0], b[0, :5], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a[1, :3], b[1, :3], atol=1e-5, rtol=1e-5)


def test_per_sequence_norm_depends_on_padding():
    """Reference behaviour: statistics over the whole padded [T, d] block."""
    hs = _hidden()
    gate = _lad(norm="per_sequence")
    out = gate(hs, _mask([5, 5]), [4])[0]
    out_p = gate(_pad_with_garbage(hs, extra=4), _mask([5, 5], seq=T + 4), [4])[0]
    assert (out - out_p[:, :T]).abs().max() > 1e-2
    # each example's block is normalised (affine is identity at init)
    assert out[0].mean().abs() < 1e-5
    assert abs(out[0].var(unbiased=False).item() - 1.0) < 1e-3


def test_invalid_norm_raises_config_error_listing_choices():
    with pytest.raises(ConfigError, match="per_token.*per_sequence"):
        HighwayGates(num_layers=3, hidden_size=D, norm="batch")
    with pytest.raises(ConfigError, match="per_token"):
        build_gate({"name": "lad", "_target_": "lad.method.gates.HighwayGates", "norm": "bogus"}, 3, D)


def test_layer_map_out_of_range_is_config_error():
    with pytest.raises(ConfigError, match="1-based"):
        DirectGates()(_hidden(), None, [0, 2])
    with pytest.raises(ConfigError):
        _lad()(_hidden(), None, [5])


def test_wrong_number_of_teacher_layers_rejected():
    with pytest.raises(ValueError, match="4 teacher layers"):
        _lad()(_hidden(num_layers=3), None, [1])


def test_gate_values_recorded_per_layer():
    gate = _lad()
    hs, mask = _hidden(), _mask([5, 2])
    targets = gate(hs, mask, [2, 3])
    gv = gate.gate_values
    assert gv.shape == (L,) and not gv.requires_grad
    assert gv[0] == 1.0
    assert torch.isnan(gv[3])  # layer 4 not needed for layer_map [2, 3]
    # the recorded value is the mean gate over real tokens only, computed from the aggregate below
    m = mask.bool()
    with torch.no_grad():
        g2 = torch.sigmoid(gate.proj[0](hs[0]))
        g3 = torch.sigmoid(gate.proj[1](targets[0]))
    assert gv[1].item() == pytest.approx(g2[m].mean().item(), abs=1e-6)
    assert gv[2].item() == pytest.approx(g3[m].mean().item(), abs=1e-6)
    assert abs(g2[m].mean().item() - g2.mean().item()) > 1e-4  # padding would change it: the check can fail


# --------------------------------------------------------------------------- baselines


def test_none_returns_mapped_teacher_layers():
    hs = _hidden()
    out = build_gate({"name": "none", "_target_": "lad.method.gates.DirectGates"}, L, D)(hs, _mask([5, 3]), [2, 4])
    assert out[0] is hs[1] and out[1] is hs[3]


def test_mean_returns_cumulative_means():
    hs = _hidden()
    out = MeanGates(num_layers=L, hidden_size=D)(hs, None, [1, 2, 4])
    torch.testing.assert_close(out[0], hs[0])
    torch.testing.assert_close(out[1], (hs[0] + hs[1]) / 2)
    torch.testing.assert_close(out[2], (hs[0] + hs[1] + hs[2] + hs[3]) / 4)


def test_attention_weights_sum_to_one_and_target_is_convex_combination():
    hs = _hidden()
    students = _hidden(num_layers=2, seed=7)
    gate = AttentionGates(num_layers=L, hidden_size=D)
    assert gate.needs_student_hidden
    alpha = gate.weights(hs, students)
    assert alpha.shape == (2, B, T, L)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(2, B, T))
    out = gate(hs, _mask([5, 3]), [2, 4], students)
    stacked = torch.stack(hs, dim=-2)  # [B, T, L, d]
    for k in range(2):
        manual = (alpha[k].unsqueeze(-1) * stacked).sum(-2)
        torch.testing.assert_close(out[k], manual)
        # convex combination: inside the per-coordinate min/max envelope of the layers
        assert torch.all(out[k] <= stacked.max(-2).values + 1e-5)
        assert torch.all(out[k] >= stacked.min(-2).values - 1e-5)
    assert gate.gate_values.shape == (2, L)
    torch.testing.assert_close(gate.gate_values.sum(-1), torch.ones(2))


def test_attention_target_equals_layer_when_all_layers_equal():
    h = _hidden(num_layers=1)[0]
    hs = [h.clone() for _ in range(L)]
    out = AttentionGates(num_layers=L, hidden_size=D)(hs, None, [1, 3], _hidden(num_layers=2, seed=3))
    for o in out:
        torch.testing.assert_close(o, h)


def test_attention_requires_student_hidden():
    with pytest.raises(ValueError, match="student_hidden"):
        AttentionGates()(_hidden(), None, [1])


# --------------------------------------------------------------------------- gradients


def test_gate_params_train_through_hidden_mse_only():
    torch.manual_seed(0)
    hs = _hidden()
    mask = _mask([5, 3])
    layer_map = [2, 4]
    gate = _lad()
    student = [torch.randn(B, T, D, requires_grad=True) for _ in layer_map]
    s_logits = torch.randn(B, 3, requires_grad=True)
    t_logits = torch.randn(B, 3)
    labels = torch.tensor([0, 2])

    targets = gate(hs, mask, layer_map)
    logit_only = Objective(hard_weight=0.5, soft_weight=0.5, hidden_weight=0.0, pkd_weight=0.0,
                           temperature=10.0, is_regression=False)
    total, _ = evaluate(logit_only, s_logits, labels, t_logits, student, targets, mask)
    total.backward()
    for p in gate.parameters():
        assert p.grad is None or torch.count_nonzero(p.grad) == 0

    gate.zero_grad(set_to_none=True)
    targets = gate(hs, mask, layer_map)
    hidden_mse(student, targets, mask).backward()
    for lin in gate.proj:
        assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
        assert lin.bias.grad is not None and lin.bias.grad.abs().sum() > 0
    for ln in gate.norms:
        assert ln.weight.grad is not None and ln.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- configs


def test_build_needs_a_target_and_passes_the_teacher_shape():
    with pytest.raises(ConfigError, match="gate config 'lad' has no _target_"):
        build_gate({"name": "lad"}, L, D)
    with pytest.raises(ConfigError, match="gate config must be a mapping, got str"):
        build_gate("lad", L, D)
    gate = build_gate({"name": "lad", "_target_": "lad.method.gates.HighwayGates"}, num_layers=3, hidden_size=D)
    assert isinstance(gate, HighwayGates) and gate.num_layers == 3 and gate.hidden_size == D


def test_build_rejects_non_gate_target():
    with pytest.raises(ConfigError):
        build_gate({"name": "x", "_target_": "collections.OrderedDict"}, L, D)


@pytest.mark.parametrize("path", sorted((CONF / "gate").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_gate_config_builds_and_runs(path):
    from conftest import compose

    cfg = compose("distil", [f"gate={path.stem}"]).gate  # as composed (lad_reverse inherits lad)
    assert cfg.name == path.stem
    gate = build_gate(cfg, L, D)
    assert isinstance(gate, Aggregator) and type(gate).__name__ == cfg._target_.rsplit(".", 1)[1]
    students = _hidden(num_layers=2, seed=5)
    out = gate(_hidden(), _mask([5, 3]), [2, 4], students if gate.needs_student_hidden else None)
    assert len(out) == 2 and all(o.shape == (B, T, D) for o in out)
    if cfg.name.startswith("lad"):
        assert gate.reverse == (cfg.name == "lad_reverse") and gate.norm == "per_token"


def test_all_expected_gate_configs_exist():
    assert {p.stem for p in (CONF / "gate").glob("*.yaml")} >= {"lad", "lad_reverse", "none", "mean", "attention"}
