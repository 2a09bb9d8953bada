"""The encoders a run trains: pre-trained backbones by path or Hub id (``hub``), fine-tuned teachers
from a folder or an MLflow URI (``teacher``, ``from_mlflow``), students built from a teacher or a
backbone (``student``), and the per-architecture table of where an encoder keeps its parts
(``arch``)."""

from lad.models.student import build_student, layer_map
from lad.models.teacher import load_backbone, load_teacher, load_tokenizer

__all__ = ["build_student", "layer_map", "load_backbone", "load_teacher", "load_tokenizer"]
