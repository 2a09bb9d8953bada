"""Building teachers and students."""

from lad.models.student import build_student, layer_map
from lad.models.teacher import load_backbone, load_teacher, load_tokenizer

__all__ = ["build_student", "layer_map", "load_backbone", "load_teacher", "load_tokenizer"]
