"""Per-architecture adapter table: where an encoder family keeps its parts.

Students are built by copying parts of a teacher (embeddings, chosen layers, head), the
distiller and the teacher cache call models with the inputs they accept, and gates are sized
from the teacher's depth and width. Those are the only places that need to know a family's
layout, and they ask here: one :class:`Arch` row per Hugging Face ``model_type``. Supporting
another family is one more row in :data:`ARCHS` (no if-chains elsewhere).

Paths are dotted attribute paths. ``layers`` and ``shared`` are relative to the base model
(``model.<base_model_prefix>``), ``head`` is relative to the sequence classifier itself, since
poolers live in the base model for BERT but beside it for DeBERTa-v2 and DistilBERT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lad.core.errors import ConfigError


@dataclass(frozen=True)
class Arch:
    """Layout of one encoder family (see the module docstring for what the paths are relative to)."""

    layers: str = "encoder.layer"
    # parts below the layers that a same-width student copies with the embeddings (missing ones skipped)
    shared: tuple[str, ...] = ("embeddings",)
    # pooler/classifier modules a same-width student copies (missing or None ones skipped)
    head: tuple[str, ...] = ("classifier",)
    # whether forward() takes token_type_ids at all (the config must also have type_vocab_size > 1)
    token_type_ids: bool = True
    # config field names of the four size hyper-parameters
    fields: dict[str, str] = field(default_factory=lambda: dict(STANDARD_FIELDS))


STANDARD_FIELDS = {
    "num_layers": "num_hidden_layers", "hidden_size": "hidden_size",
    "intermediate_size": "intermediate_size", "num_heads": "num_attention_heads",
}

ARCHS: dict[str, Arch] = {
    "bert": Arch(head=("bert.pooler", "classifier")),
    "roberta": Arch(),                   # no pooler: RobertaClassificationHead (dense + out_proj)
    "xlm-roberta": Arch(),
    "electra": Arch(shared=("embeddings", "embeddings_project")),  # projection when embedding_size != hidden
    "deberta-v2": Arch(shared=("embeddings", "encoder.rel_embeddings", "encoder.LayerNorm", "encoder.conv"),
                       head=("pooler", "classifier")),
    "distilbert": Arch(layers="transformer.layer", head=("pre_classifier", "classifier"),
                       token_type_ids=False,
                       fields={"num_layers": "n_layers", "hidden_size": "dim",
                               "intermediate_size": "hidden_dim", "num_heads": "n_heads"}),
}


def arch_of(model_or_config: Any) -> Arch:
    """The :class:`Arch` of a model or config; ConfigError naming the supported families otherwise."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHS:
        raise ConfigError(
            f"model type '{model_type}' is not supported (supported encoder families: "
            f"{', '.join(sorted(ARCHS))}; add a row to lad.models.arch.ARCHS for another one)"
        )
    return ARCHS[model_type]


def _get(root: Any, path: str) -> Any:
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def base_model(model: Any) -> Any:
    """The encoder under the classification head (``model.bert``, ``model.distilbert``, ...); a bare
    encoder (``AutoModel``) is its own base."""
    return getattr(model, model.base_model_prefix, model)


def layers(model: Any):
    """The ``nn.ModuleList`` of transformer blocks."""
    found = _get(base_model(model), arch_of(model).layers)
    if found is None:  # pragma: no cover - a row of ARCHS that does not match its models
        raise ConfigError(f"{type(model).__name__} has no '{arch_of(model).layers}' layers")
    return found


def shared_modules(model: Any) -> dict[str, Any]:
    """Embeddings and the other width-bound parts below the layers, by path (present ones only)."""
    base = base_model(model)
    return {p: m for p in arch_of(model).shared if (m := _get(base, p)) is not None}


def head_modules(model: Any) -> dict[str, Any]:
    """Pooler / classifier modules of a sequence classifier, by path (present ones only)."""
    return {p: m for p in arch_of(model).head if (m := _get(model, p)) is not None}


def encoder_head_modules(encoder: Any) -> dict[str, Any]:
    """The head parts a bare pre-trained encoder has (BERT's pooler), keyed by their path in the
    sequence classifier (``bert.pooler``), so they load into a student's :func:`head_modules`."""
    prefix = encoder.base_model_prefix + "."
    return {p: m for p in arch_of(encoder).head
            if p.startswith(prefix) and (m := _get(encoder, p[len(prefix):])) is not None}


def size(config: Any, what: str) -> int:
    """``num_layers``, ``hidden_size``, ``intermediate_size`` or ``num_heads`` of a config."""
    return int(getattr(config, arch_of(config).fields[what]))


def num_layers(model_or_config: Any) -> int:
    """Number of transformer blocks (``num_hidden_layers``; DistilBERT ``n_layers``)."""
    return size(getattr(model_or_config, "config", model_or_config), "num_layers")


def hidden_size(model_or_config: Any) -> int:
    """Width of the hidden states (``hidden_size``; DistilBERT ``dim``)."""
    return size(getattr(model_or_config, "config", model_or_config), "hidden_size")


def set_size(config: Any, what: str, value: int) -> None:
    """Set one of the size fields of ``config`` by its family-neutral name."""
    setattr(config, arch_of(config).fields[what], int(value))


def uses_token_type_ids(model_or_config: Any) -> bool:
    """True when the model has segment embeddings to feed (BERT, ELECTRA; not RoBERTa, DistilBERT)."""
    config = getattr(model_or_config, "config", model_or_config)
    return arch_of(config).token_type_ids and int(getattr(config, "type_vocab_size", 0) or 0) > 1


def forward_inputs(model: Any, batch: dict) -> dict:
    """The keyword inputs ``model`` accepts from a collated batch (token types only where used)."""
    out = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if batch.get("token_type_ids") is not None and uses_token_type_ids(model):
        out["token_type_ids"] = batch["token_type_ids"]
    return out
