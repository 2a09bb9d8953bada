"""Loading teacher backbones (for fine-tuning) and fine-tuned teachers (for distillation)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from lad.core.config import setup_environment
from lad.core.errors import ConfigError
from lad.models.hub import looks_like_path, resolve_pretrained

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
    for file in weights:
        check_weight_file(file, what)
    if not any((p / name).is_file() for name in TOKENIZER_FILES) and not list(p.glob("*.model")):
        raise ConfigError(
            f"{what} {p} has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}): without them every word "
            "would become [UNK]; save the model's tokenizer there (tokenizer.save_pretrained(dir))")
    return p


# files from which transformers can build a tokenizer (plus sentencepiece *.model)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json")


def check_weight_file(file: Path, what: str) -> None:
    """ConfigError when a weight file is truncated or not a weight file (header and sizes checked)."""
    if file.suffix != ".safetensors":
        if file.stat().st_size == 0:
            raise ConfigError(f"{what} {file.parent}: {file.name} is empty (incomplete copy?)")
        return
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            handle.keys()
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"{what} {file.parent}: {file.name} is damaged or incomplete ({first[:120]}); "
            "copy the model folder again or fine-tune the teacher again") from None


def check_tokenizer(tokenizer, model_dir: Path, what: str) -> None:
    """ConfigError when the tokenizer turns ordinary words into [UNK] (wrong or empty vocabulary)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return
    ids = tokenizer("the movie was good and the actor was great", add_special_tokens=False)["input_ids"]
    if ids and all(i == unk for i in ids):
        raise ConfigError(
            f"{what} {model_dir}: its tokenizer maps ordinary English words to {tokenizer.unk_token}: "
            "the vocabulary does not belong to this model; save the model's own tokenizer there")


def check_label_order(config, task, model_dir: Path) -> None:
    """ConfigError when the teacher's named labels are not the task's labels in the task's order.

    A teacher may name its classes by the task's ``label_names`` or (one trained before the task
    had them) by the label values of the data files; either way its ``config`` is then given the
    task's names, so a student distilled from it exports them."""
    if task.is_regression:
        return
    id2label = getattr(config, "id2label", None) or {}
    names = [str(id2label.get(i, id2label.get(str(i), ""))) for i in range(len(id2label))]
    if names and not all(n == f"LABEL_{i}" for i, n in enumerate(names)):  # unnamed: nothing to compare
        accepted = [list(task.class_names), list(task.labels)]
        if names not in accepted:
            raise ConfigError(
                f"teacher {model_dir}: its labels are [{', '.join(names)}] but task {task.name} has "
                f"[{', '.join(task.class_names)}]"
                + ("" if list(task.class_names) == list(task.labels) else
                   f" (values [{', '.join(map(str, task.labels))}])")
                + " (in this order): its predictions would be read as the wrong classes; use a teacher "
                "fine-tuned on this task")
    kwargs = _label_kwargs(task)
    config.id2label, config.label2id = kwargs["id2label"], kwargs["label2id"]


def _load_weights(load, model_dir: Path, what: str, new_head: bool = False):
    """``load()`` (a ``from_pretrained`` with ``output_loading_info=True``) checked in full.

    A damaged file, weights that do not fit ``config.json`` (missing, left over or of another
    shape: transformers would silently start those from random values) and weights holding NaN or
    infinite values are each one ConfigError. ``new_head``: a backbone, whose task head (and
    pooler) may be missing or of another size, since fine-tuning starts them afresh.
    """
    try:
        model, info = load()
    except (OSError, ValueError, RuntimeError, EnvironmentError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{what} {model_dir}: cannot load its weights ({first[:160]})") from None
    _check_loading_info(info, model_dir, what, new_head)
    _check_finite_weights(model, model_dir, what)
    return model


FRESH_PARTS = ("classifier.", "pooler.")  # parts of a backbone that fine-tuning may start afresh


def _check_loading_info(info: dict, model_dir: Path, what: str, new_head: bool) -> None:
    def kept(keys) -> list[str]:
        names = [k[0] if isinstance(k, (tuple, list)) else str(k) for k in keys or []]
        names = [k for k in names if not k.endswith("position_ids")]  # a buffer, not a weight
        return [k for k in names if not (new_head and any(part in k for part in FRESH_PARTS))]

    problems = {"missing": kept(info.get("missing_keys")), "of another shape": kept(info.get("mismatched_keys")),
                "not used by its config": [] if new_head else kept(info.get("unexpected_keys"))}
    found = [f"{len(keys)} {kind} (e.g. {keys[0]})" for kind, keys in problems.items() if keys]
    if found:
        raise ConfigError(
            f"{what} {model_dir}: its weights do not fit its config.json ({'; '.join(found)}): the model "
            "would run with randomly initialised weights; copy the whole model folder again (config.json "
            "and weights of one model)")


def _check_finite_weights(model, model_dir: Path, what: str) -> None:
    import torch

    bad = [name for name, param in model.named_parameters() if not bool(torch.isfinite(param).all())]
    if bad:
        raise ConfigError(
            f"{what} {model_dir}: {len(bad)} weight tensor(s) hold NaN or infinite values (e.g. {bad[0]}): "
            "the checkpoint is damaged or comes from a diverged training run; use another checkpoint")


def load_tokenizer(model_dir: str | Path):
    setup_environment()
    _quiet_transformers()
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    except Exception as exc:  # noqa: BLE001 - the tokenizers library raises a bare Exception for a damaged file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot load a tokenizer from {model_dir}: {reason}") from None
    check_tokenizer(tokenizer, Path(str(model_dir)), "model")
    return tokenizer


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
    labels = list(task.class_names)
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
    return _load_weights(lambda: AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), ignore_mismatched_sizes=True, output_loading_info=True, **_label_kwargs(task)),
        model_dir, "teacher.backbone", new_head=True)


def resolve_teacher_dir(teacher_cfg: DictConfig) -> Path:
    """Local directory of the fine-tuned teacher named by the ``teacher`` config group."""
    if teacher_cfg.source == "mlflow":
        from lad.models.from_mlflow import download_model

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
    check_label_order(config, task, model_dir)
    check_vocab(model_dir, "teacher")
    model = _load_weights(lambda: AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), config=config, output_loading_info=True), model_dir, "teacher")
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model, model_dir


# ----------------------------------------------------------------------------- provenance
TEACHER_META = "lad_teacher.json"  # written beside every published teacher (``lad.run.rundir`` tells them by it)


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


def pretrained_source(student_cfg: DictConfig, teacher_cfg: DictConfig, teacher_dir: Path) -> str:
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
    if recorded and (not looks_like_path(recorded) or Path(recorded).expanduser().exists()):
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

    spec = str(check_model_dir(resolve_pretrained(spec, "student.backbone"), "student.backbone"))
    try:
        return AutoModel.from_pretrained(spec)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the pre-trained backbone {spec}: {exc}".splitlines()[0]) from exc
