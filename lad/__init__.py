"""LAD: Layer-wise Adaptive Distillation for BERT-style models."""

__version__ = "0.1.0"
