"""Every encoder family of lad.models.arch as teacher and student: tiny random configs, no downloads.

The MiniLM WordPiece tokenizer serves every family (vocab_size and pad id 0 set to match it), and
the data is a custom sentence-pair CSV task, so token type ids of 1 reach the models: families
without segment embeddings (RoBERTa, XLM-R, DistilBERT, DeBERTa-v2 with type_vocab_size 0) must
not be fed them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from conftest import FILL, NEG, POS, compose, minilm_dir
from lad.models import arch

VOCAB = 30522  # the MiniLM tokenizer's
SIZES = {"vocab_size": VOCAB, "pad_token_id": 0, "max_position_embeddings": 130}


def _bert_like(cls_name: str, **extra):
    def make(layers: int, hidden: int):
        import transformers

        return getattr(transformers, cls_name)(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=37,
            **SIZES, **extra)
    return make


def _distilbert(layers: int, hidden: int):
    from transformers import DistilBertConfig

    return DistilBertConfig(dim=hidden, n_layers=layers, n_heads=4, hidden_dim=37, **SIZES)


FAMILIES = {
    "bert": _bert_like("BertConfig"),
    "roberta": _bert_like("RobertaConfig", type_vocab_size=1),
    "xlm-roberta": _bert_like("XLMRobertaConfig", type_vocab_size=1),
    "electra": _bert_like("ElectraConfig", embedding_size=16),        # with embeddings_project
    "deberta-v2": _bert_like("DebertaV2Config", relative_attention=True, position_buckets=16,
                             pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm"),
    "distilbert": _distilbert,
}


def tiny_classifier(family: str, layers: int = 4, hidden: int = 32, labels=("neg", "pos"), seed: int = 0):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    cfg = FAMILIES[family](layers, hidden)
    cfg.num_labels = len(labels)
    cfg.id2label = dict(enumerate(labels))
    cfg.label2id = {name: i for i, name in enumerate(labels)}
    return AutoModelForSequenceClassification.from_config(cfg).eval()


def save_backbone(family: str, path: Path) -> Path:
    from transformers import AutoTokenizer

    model = tiny_classifier(family)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(minilm_dir())).save_pretrained(path)
    return path


def write_pair_csv(path: Path, n: int, seed: int) -> Path:
    """A sentence-pair CSV (premise, hypothesis, label) with a learnable word signal."""
    import csv

    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["premise", "hypothesis", "label"])
        for i in range(n):
            label = ("neg", "pos")[i % 2]
            words = [rng.choice(FILL) for _ in range(rng.randint(3, 8))]
            words.insert(rng.randrange(len(words) + 1), rng.choice(POS if label == "pos" else NEG))
            out.writerow([" ".join(words), ", ".join(rng.choice(FILL) for _ in range(3)), label])
    return path


def batch(n: int = 3, length: int = 9) -> dict:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, VOCAB, (n, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0
    types = torch.zeros_like(ids)
    types[:, length // 2:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


# ------------------------------------------------------------------------- the adapter table
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_student_copies_mapped_layers_embeddings_and_head(family, tmp_path):
    """Layer k of a 2-layer student is teacher layer 2k; reloading the saved student gives the same logits."""
    from omegaconf import OmegaConf
    from transformers import AutoModelForSequenceClassification

    from lad.models.student import build_student

    assert set(FAMILIES) == set(arch.ARCHS)  # one test row per table row
    teacher = tiny_classifier(family)
    scfg = OmegaConf.create(dict(name="2layer", num_layers=2, hidden_size=None, intermediate_size=None,
                                 num_attention_heads=None, init_layers=True, init_embeddings=True,
                                 init_classifier=True))
    student, mapping = build_student(teacher, scfg)
    student.eval()
    assert mapping == [2, 4] and arch.num_layers(student) == 2 and len(arch.layers(student)) == 2
    assert arch.hidden_size(student) == 32
    for k, m in enumerate(mapping):
        s_state, t_state = arch.layers(student)[k].state_dict(), arch.layers(teacher)[m - 1].state_dict()
        assert all(torch.equal(s_state[n], t_state[n]) for n in t_state)
    for parts in (arch.shared_modules, arch.head_modules):
        t_parts, s_parts = parts(teacher), parts(student)
        assert t_parts and t_parts.keys() == s_parts.keys()
        for name, module in t_parts.items():
            assert all(torch.equal(v, s_parts[name].state_dict()[k]) for k, v in module.state_dict().items())

    inputs = arch.forward_inputs(student, batch())
    assert ("token_type_ids" in inputs) == (family in ("bert", "electra"))
    out = student(**inputs, output_hidden_states=True)
    assert len(out.hidden_states) == 3 and out.hidden_states[-1].shape[-1] == arch.hidden_size(student)
    student.save_pretrained(tmp_path, safe_serialization=True)
    reloaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path)).eval()
    assert type(reloaded) is type(student)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, student(**inputs).logits)


def test_unknown_family_is_one_config_error():
    from transformers import GPT2Config

    from lad.core.errors import ConfigError

    with pytest.raises(ConfigError, match="model type 'gpt2' is not supported.*distilbert"):
        arch.num_layers(GPT2Config())


def test_narrower_distilbert_student_sets_its_own_config_fields():
    from omegaconf import OmegaConf

    from lad.models.student import student_config

    cfg = student_config(FAMILIES["distilbert"](4, 32), OmegaConf.create(dict(
        num_layers=2, hidden_size=16, intermediate_size=None, num_attention_heads=2)))
    assert (cfg.n_layers, cfg.dim, cfg.hidden_dim, cfg.n_heads) == (2, 16, 64, 2)


# ------------------------------------------------------------------------- teacher + LAD student
@pytest.fixture(scope="module")
def pair_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pairs")
    return {"train": write_pair_csv(root / "train.csv", 24, 0), "dev": write_pair_csv(root / "dev.csv", 12, 1)}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_teacher_then_lad_student(family, pair_data, tmp_path):
    """Teacher fine-tuned 2 steps, LAD student distilled 2 steps (teacher cache on), both reload."""
    from transformers import AutoModelForSequenceClassification

    from lad.data.features import load_features
    from lad.data.metrics import compute_metrics
    from lad.data.sources import with_labels
    from lad.data.tasks import TaskSpec
    from lad.models import load_tokenizer
    from lad.run.evaluation import predict_logits
    from lad.run.pipeline import run

    backbone = save_backbone(family, tmp_path / "backbone")
    common = ["task=custom", f"data.train_file={pair_data['train']}", f"data.dev_file={pair_data['dev']}",
              "task.text_a=premise", "task.text_b=hypothesis", "task.max_seq_length=32",
              "teacher=local", f"teacher.path={tmp_path / 'teacher'}", "mlflow=off", "trainer.max_steps=2",
              "trainer.progress=false", "optim.batch_size=8", f"paths.cache={tmp_path / 'cache'}",
              "trainer.num_threads=1", "device=cpu"]
    run(compose("train_teacher", [*common, f"teacher.backbone={backbone}",
                                  f"output_dir={tmp_path / 'teacher_run'}"]))
    teacher = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "teacher"))
    assert teacher.config.model_type == family and teacher.config.id2label == {0: "neg", 1: "pos"}

    cfg = compose("distil", [*common, "student=2layer", "gate=lad", "loss=lad",
                             f"output_dir={tmp_path / 'student_run'}"])
    run(cfg)
    out = tmp_path / "student_run"
    student = AutoModelForSequenceClassification.from_pretrained(str(out / "model"))
    assert student.config.model_type == family and arch.num_layers(student) == 2
    assert student.config.id2label == {0: "neg", 1: "pos"}
    gate_cfg = json.loads((out / "gates" / "gate_config.json").read_text())
    assert (gate_cfg["num_layers"], gate_cfg["hidden_size"]) == (4, 32)
    # the reloaded student reproduces the dev score recorded for the step it was saved at
    task = with_labels(TaskSpec.from_config(cfg.task), None)
    feats = load_features(task, None, "dev", load_tokenizer(out / "model"), 32, None)
    logits = predict_logits(student.eval(), feats, 16, torch.device("cpu"))
    recorded = json.loads((out / "metrics.json").read_text())["best"]["accuracy"]
    assert compute_metrics(task, logits, feats.labels)["accuracy"] == pytest.approx(recorded)
