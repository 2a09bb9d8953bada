"""Loss terms as a registry: a term registered from outside the package trains and is logged; a term
over a new kind of input (module outputs captured by forward hooks) is one class; TinyBERT's
attention-map term (the extension added as one module + one config)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, save_tiny_model
from lad.core.errors import ConfigError
from lad.method.distiller import Distiller
from lad.method.loss_terms import TERMS, Capture, LossTerm, register
from lad.method.loss_terms.tinybert_attn import attention_mse
from lad.method.losses import Objective
from lad.models.student import build_student
from test_pipeline import _student_cfg, distil_cfg, recorder  # noqa: F401  (fixture re-used)

SEEN: list[float] = []
FFN_SEEN: list[tuple[int, int]] = []


@register("probe")
class Probe(LossTerm):
    """A term defined in this test module: the mean squared student logit, remembered per step."""

    options = {"probe_scale": 1.0}

    def __call__(self, inputs):
        value = self.probe_scale * inputs.s_logits.float().pow(2).mean()
        SEEN.append(float(value.detach()))
        return value


def test_a_term_registered_in_a_test_module_trains_and_reaches_the_logged_loss(
        tmp_path, tiny_teacher, tiny_glue, recorder):  # noqa: F811
    from lad.run.pipeline import run

    SEEN.clear()
    cfg = distil_cfg(tmp_path, tiny_teacher, tiny_glue, "loss=kd", "gate=none", "+loss.probe_weight=3.0",
                     "+loss.probe_scale=2.0", "trainer.max_steps=3", "trainer.log_every=1",
                     "trainer.eval_every=3", "trainer.predict_test=false")
    run(cfg)
    train = [m for _, m in recorder.metrics if "train/loss" in m]
    assert len(train) == 3 and len(SEEN) == 3
    for logged, value in zip(train, SEEN):
        assert logged["train/probe"] == pytest.approx(value, rel=1e-6)
        expected = 0.5 * logged["train/hard"] + 0.5 * logged["train/soft"] + 3.0 * value
        assert logged["train/loss"] == pytest.approx(expected, rel=1e-5)
    assert recorder.params["loss.probe_weight"] == "3.0"  # flat key, recorded like the built-in ones
    assert all(v > 0 for v in SEEN)


@register("ffn_probe")
class FFNMatch(LossTerm):
    """A term over an input no built-in term reads: the FFN activations (each layer's
    ``intermediate`` output) of every student layer against those of its mapped teacher layer."""

    captures = {"s_ffn": Capture("student", "*.encoder.layer.*.intermediate"),
                "t_ffn": Capture("teacher", "*.encoder.layer.*.intermediate")}

    def __call__(self, inputs):
        student, teacher = inputs.captured["s_ffn"], inputs.captured["t_ffn"]
        FFN_SEEN.append((len(student), len(teacher)))
        pairs = [(s.float() - teacher[m - 1].float()).pow(2).mean() for s, m in zip(student, inputs.layer_map)]
        return sum(pairs) / len(pairs)


def test_a_term_over_module_outputs_captured_by_hooks_trains(tmp_path, tiny_teacher, tiny_glue, recorder):  # noqa: F811
    from lad.run.pipeline import run

    FFN_SEEN.clear()
    cfg = distil_cfg(tmp_path, tiny_teacher, tiny_glue, "loss=kd", "gate=none", "+loss.ffn_probe_weight=1.0",
                     "trainer.max_steps=2", "trainer.log_every=1", "trainer.eval_every=2", "trainer.predict_test=false")
    run(cfg)
    train = [m for _, m in recorder.metrics if "train/loss" in m]
    # 2 student layers and 4 teacher layers captured per step, during training steps only (not evaluation)
    assert len(train) == 2 and FFN_SEEN == [(2, 4), (2, 4)]
    assert all(m["train/ffn_probe"] > 0 for m in train)


def test_captured_teacher_outputs_keep_the_online_teacher_and_reach_the_student(tmp_path):
    from lad.method.teacher_cache import required_content

    module = _attn_module(tmp_path, loss={"hard_weight": 0.5, "soft_weight": 0.5, "temperature": 2.0,
                                          "ffn_probe_weight": 1.0})
    need, reason = required_content(module)
    assert need is None and "captured during the forward pass" in reason
    loss, parts = module.training_step(_batch())
    loss.backward()
    ffn = module.student.bert.encoder.layer[0].intermediate.dense.weight
    assert parts["ffn_probe"] > 0 and ffn.grad is not None and ffn.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match=r"^loss term input 't_ffn': no teacher module matches '\*\.no_such_module'"):
        _attn_module(tmp_path / "b", loss={"hard_weight": 1.0, "ffn_nowhere_weight": 1.0})


@register("ffn_nowhere")
class FFNNowhere(FFNMatch):
    captures = {**FFNMatch.captures, "t_ffn": Capture("teacher", "*.no_such_module")}


def test_registry_rejects_a_second_class_under_a_taken_name_and_unknown_keys():
    with pytest.raises(ValueError, match="already registered"):
        register("soft")(type("Other", (LossTerm,), {}))
    with pytest.raises(ConfigError, match="unknown loss config keys: nosuch_weight"):
        Objective(hard_weight=1.0, nosuch_weight=1.0)
    assert list(TERMS)[:4] == ["hard", "soft", "hidden", "pkd"]  # the order the objective sums them


# --------------------------------------------------------------------------- TinyBERT attention maps
def test_attention_mse_averages_over_heads_and_real_token_pairs():
    s = torch.full((2, 2, 3, 3), 0.25)
    t = torch.full((2, 2, 3, 3), 0.25)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    t[0, 1, 0, 1] = 0.75   # real pair of example 0, head 1: squared error 0.25
    t[0, 0, 2, 2] = 9.0    # a padded position of example 0: ignored
    # real pairs: 4 (example 0) + 9 (example 1), per head -> mean over 2 heads * 13 pairs
    assert attention_mse([s], [t], mask).item() == pytest.approx(0.25 / (2 * 13))
    assert attention_mse([s, s], [t, s], mask).item() == pytest.approx(0.25 / (2 * 13) / 2)
    with pytest.raises(ValueError, match="num_attention_heads"):
        attention_mse([s], [t[:, :1]], mask)


def _attn_module(tmp_path, heads=4, loss=None):
    from transformers import AutoModelForSequenceClassification

    teacher = AutoModelForSequenceClassification.from_pretrained(
        save_tiny_model(tmp_path / "t", num_layers=4, dropout=0.0)).eval()
    student, mapping = build_student(teacher, _student_cfg(2, num_attention_heads=heads))
    spec = OmegaConf.load(REPO / "conf" / "loss" / "tinybert_attn.yaml") if loss is None else OmegaConf.create(loss)
    objective = Objective.from_config(spec, False)
    return Distiller(student, objective, teacher=teacher, gate=None, layer_map=mapping, teacher_hidden_size=32)


def _batch():
    ids = torch.randint(1000, 2000, (3, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "labels": torch.tensor([0, 1, 1])}


def test_tinybert_attention_term_matches_the_mapped_teacher_layers_and_trains_attention(tmp_path):
    module = _attn_module(tmp_path)
    assert module.objective.teacher_needs == {"logits", "attentions"}
    batch = _batch()
    loss, parts = module.training_step(batch)
    assert set(parts) == {"hard", "soft", "tinybert_attn"} and parts["tinybert_attn"] > 0
    with torch.no_grad():  # the same value from the models' own attention maps
        s = module.student(**{k: batch[k] for k in ("input_ids", "attention_mask")}, output_attentions=True)
        t = module.teacher(**{k: batch[k] for k in ("input_ids", "attention_mask")}, output_attentions=True)
    expected = attention_mse(s.attentions, [t.attentions[m - 1] for m in module.layer_map], batch["attention_mask"])
    assert parts["tinybert_attn"] == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    query = module.student.bert.encoder.layer[0].attention.self.query.weight
    assert query.grad is not None and query.grad.abs().sum() > 0


def test_tinybert_attention_term_keeps_the_online_teacher_and_needs_equal_head_counts(tmp_path):
    from lad.method.teacher_cache import required_content

    module = _attn_module(tmp_path)
    need, reason = required_content(module)
    assert need is None and "attention maps" in reason
    with pytest.raises(ConfigError, match="set student.num_attention_heads=4"):
        _attn_module(tmp_path / "b", heads=2)


def test_any_term_weight_is_type_checked_before_work():
    from lad.core.schema import validate

    validate(OmegaConf.create({"loss": {"tinybert_attn_weight": 2.0, "hard_weight": 0.5}}))
    with pytest.raises(ConfigError, match=r"^loss\.tinybert_attn_weight must be a number >= 0, got -1"):
        validate(OmegaConf.create({"loss": {"tinybert_attn_weight": -1}}))
