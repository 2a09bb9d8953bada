"""Loading teacher backbones (for fine-tuning) and fine-tuned teachers (for distillation)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from lad.config import setup_environment
from lad.errors import ConfigError

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

    model_dir = check_model_dir(path, "teacher.backbone")
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
        config = AutoConfig.from_pretrained(str(model_dir))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"teacher {model_dir}: unreadable config.json ({exc})".splitlines()[0]) from exc
    found = config.num_labels
    if found != expected:
        raise ConfigError(
            f"teacher {model_dir} has {found} labels but task {task.name} needs {expected}: "
            "was it fine-tuned on another task?"
        )
    names = [str(config.id2label[i]) for i in range(found)] if not task.is_regression else []
    if names and names != [f"LABEL_{i}" for i in range(found)] and tuple(names) != task.labels:
        raise ConfigError(
            f"teacher {model_dir} was fine-tuned with labels [{', '.join(names)}] but task {task.name} "
            f"has [{', '.join(task.labels)}]: set task.labels to the teacher's order or use the same data"
        )
    check_vocab(model_dir, "teacher")
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model, model_dir


# ----------------------------------------------------------------------------- provenance
TEACHER_META = "lad_teacher.json"


def write_teacher_meta(model_dir: Path, backbone: str, teacher_name: str, task_name: str) -> None:
    """Record, next to a fine-tuned teacher, which pre-trained backbone it was fine-tuned from."""
    meta = {"backbone": str(backbone), "teacher": str(teacher_name), "task": str(task_name)}
    (Path(model_dir) / TEACHER_META).write_text(json.dumps(meta, indent=2) + "\n")


def read_teacher_meta(model_dir: Path) -> dict:
    path = Path(model_dir) / TEACHER_META
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"teacher {model_dir}: unreadable {TEACHER_META} ({exc})".splitlines()[0]) from exc
    return meta if isinstance(meta, dict) else {}


def _is_local(spec: str) -> bool:
    return spec.startswith(("/", ".", "~")) or Path(spec).expanduser().exists()


def resolve_pretrained(student_cfg: DictConfig, teacher_cfg: DictConfig, teacher_dir: Path) -> str:
    """The pre-trained backbone a ``student.init_from=pretrained`` student starts from.

    In order: ``student.backbone`` when set; the backbone the teacher directory recorded at
    fine-tuning time (``lad_teacher.json``), if it is a hub id or still exists on this machine;
    the teacher group's ``teacher.backbone`` when the recorded teacher name matches (or nothing
    was recorded). Otherwise a one-line error.
    """
    from omegaconf import OmegaConf

    explicit = student_cfg.get("backbone")
    if explicit:
        return str(explicit)
    meta = read_teacher_meta(teacher_dir)
    recorded = str(meta.get("backbone") or "")
    if recorded and (not _is_local(recorded) or Path(recorded).expanduser().exists()):
        return recorded
    configured = None if OmegaConf.is_missing(teacher_cfg, "backbone") else teacher_cfg.get("backbone")
    if configured and meta.get("teacher") in (None, teacher_cfg.get("name")):
        if recorded:
            log.info("teacher %s was fine-tuned from %s, which is not here; using teacher.backbone=%s",
                     teacher_dir, recorded, configured)
        return str(configured)
    where = f"recorded backbone {recorded} does not exist here" if recorded else f"no {TEACHER_META} in it"
    raise ConfigError(f"student.init_from=pretrained: cannot tell which pre-trained model teacher {teacher_dir} "
                      f"was fine-tuned from ({where}); pass student.backbone=<path or hub id>")


def load_pretrained_encoder(spec: str):
    """A pre-trained encoder (no task head) from a local directory or a hub id."""
    setup_environment()
    _quiet_transformers()
    from transformers import AutoModel

    if _is_local(spec):
        spec = str(check_model_dir(spec, "student.backbone"))
    try:
        return AutoModel.from_pretrained(spec)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the pre-trained backbone {spec}: {exc}".splitlines()[0]) from exc
