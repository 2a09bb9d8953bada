"""Loading teacher backbones (for fine-tuning) and fine-tuned teachers (for distillation)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from lad.config import setup_environment
from lad.errors import ConfigError
from lad.hub import resolve_pretrained

log = logging.getLogger(__name__)


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def check_model_dir(path: str | Path, what: str) -> Path:
    """A local Hugging Face checkpoint directory, or a ConfigError naming what is wrong."""
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise ConfigError(f"{what} {p} does not exist")
    if not p.is_dir() or not (p / "config.json").is_file():
        raise ConfigError(f"{what} {p} is not a model directory (no config.json)")
    weights = list(p.glob("*.safetensors")) + list(p.glob("pytorch_model*.bin"))
    if not weights:
        raise ConfigError(f"{what} {p} has no weights (*.safetensors)")
    return p


def load_tokenizer(model_dir: str | Path):
    setup_environment()
    _quiet_transformers()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load a tokenizer from {model_dir}: {exc}".splitlines()[0]) from exc


def check_vocab(model_dir: Path, what: str) -> None:
    """ConfigError when the directory's tokenizer yields ids its model has no embedding for.

    A tokenizer larger than ``vocab_size`` means tokenizer and weights come from different
    models (training would crash with an index error); a smaller one is fine (padded vocab).
    """
    try:
        vocab_size = json.loads((model_dir / "config.json").read_text()).get("vocab_size")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what} {model_dir}: unreadable config.json ({exc})".splitlines()[0]) from exc
    if not isinstance(vocab_size, int):
        return
    n_tokens = len(load_tokenizer(model_dir))
    if n_tokens > vocab_size:
        raise ConfigError(
            f"{what} {model_dir}: its tokenizer has {n_tokens} tokens but the model's vocab_size is "
            f"{vocab_size}: tokenizer and weights do not belong together (save the model's own tokenizer there)"
        )


def _label_kwargs(task) -> dict:
    if task.is_regression:
        return {"num_labels": 1, "problem_type": "regression"}
    labels = list(task.labels)
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)},
        "problem_type": "single_label_classification",
    }


def load_backbone(path: str | Path, task):
    """A pretrained encoder with a fresh classification head sized for ``task``."""
    setup_environment()
    _quiet_transformers()
    from transformers import AutoModelForSequenceClassification

    model_dir = check_model_dir(resolve_pretrained(str(path), "teacher.backbone"), "teacher.backbone")
    check_vocab(model_dir, "teacher.backbone")
    # a backbone that already has a head of another size (e.g. an MNLI model for RTE) gets a new one
    return AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), ignore_mismatched_sizes=True, **_label_kwargs(task))


def resolve_teacher_dir(teacher_cfg: DictConfig) -> Path:
    """Local directory of the fine-tuned teacher named by the ``teacher`` config group."""
    if teacher_cfg.source == "mlflow":
        from lad.tracking import download_model

        return download_model(str(teacher_cfg.uri))
    if teacher_cfg.source != "path":
        raise ConfigError(f"teacher.source must be 'path' or 'mlflow', got {teacher_cfg.source!r}")
    path = Path(str(teacher_cfg.path)).expanduser()
    if not path.exists():
        raise ConfigError(
            f"teacher.path {path} does not exist: fine-tune one first "
            f"(python train_teacher.py task=... teacher={teacher_cfg.name}) or set teacher.path"
        )
    return check_model_dir(path, "teacher.path")


def load_teacher(teacher_cfg: DictConfig, task):
    """The fine-tuned teacher classifier (frozen, eval mode) and its directory."""
    setup_environment()
    _quiet_transformers()
    from transformers import AutoConfig, AutoModelForSequenceClassification

    model_dir = resolve_teacher_dir(teacher_cfg)
    expected = 1 if task.is_regression else len(task.labels)
    try:  # transformers leaves num_labels/id2label out of config.json when there are 2 (the default)
        found = AutoConfig.from_pretrained(str(model_dir)).num_labels
    except (OSError, ValueError) as exc:
        raise ConfigError(f"teacher {model_dir}: unreadable config.json ({exc})".splitlines()[0]) from exc
    if found != expected:
        raise ConfigError(
            f"teacher {model_dir} has {found} labels but task {task.name} needs {expected}: "
            "was it fine-tuned on another task?"
        )
    check_vocab(model_dir, "teacher")
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model, model_dir
