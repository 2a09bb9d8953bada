"""ONNX export of saved sequence classifiers, dynamic int8 quantization, and the parity check.

Export uses ``torch.onnx.export`` with the TorchScript tracer (``dynamo=False``): it needs only the
``onnx`` package, gives dynamic batch and sequence axes through ``dynamic_axes``, and traces
transformers' BERT with the eager attention path. The dynamo exporter (the default since torch 2.9)
additionally needs ``onnxscript`` and ``torch.export`` dynamic-shape constraints, which transformers'
mask construction does not always satisfy; the traced graph gives the same logits (see the parity
check) and is what onnxruntime's quantizer expects.

Quantization is onnxruntime's dynamic int8 quantization of the MatMul weights
(``quantize_dynamic``, signed int8 weights, activations quantized per batch at run time).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lad.core.errors import ConfigError
from lad.deploy.inference import INPUT_NAMES, Runner, collate_numpy

log = logging.getLogger(__name__)

OPSET = 17
# model_type (config.json) -> the inputs its classifier takes; export is checked on these only
SUPPORTED_INPUTS: dict[str, tuple[str, ...]] = {
    "bert": INPUT_NAMES,
    "roberta": ("input_ids", "attention_mask"),
}


def model_type(model_dir: str | Path) -> str:
    try:
        return str(json.loads((Path(model_dir) / "config.json").read_text()).get("model_type", "?"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{model_dir}: unreadable config.json ({exc})".splitlines()[0]) from exc


def check_supported(model_dir: str | Path) -> tuple[str, ...]:
    """Input names of a supported architecture, or a ConfigError naming the supported ones."""
    kind = model_type(model_dir)
    if kind not in SUPPORTED_INPUTS:
        raise ConfigError(f"{model_dir}: architecture '{kind}' is not supported for ONNX export "
                          f"(supported: {', '.join(sorted(SUPPORTED_INPUTS))})")
    return SUPPORTED_INPUTS[kind]


def export_onnx(model_dir: str | Path, path: str | Path, opset: int = OPSET) -> Path:
    """Write ``model_dir``'s classifier to ``path`` (inputs int64 [batch, sequence], output ``logits``)."""
    import warnings

    import torch
    from transformers import AutoModelForSequenceClassification

    from lad.models.teacher import _quiet_transformers

    names = check_supported(model_dir)
    _quiet_transformers()
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), attn_implementation="eager")
    model.eval()

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs):
            return self.inner(**dict(zip(names, inputs))).logits

    dummy = tuple(torch.ones((2, 8), dtype=torch.long) for _ in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes["logits"] = {0: "batch"}
    path = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        torch.onnx.export(Logits(model), dummy, str(path), input_names=list(names),
                          output_names=["logits"], dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    return path


def quantize_int8(fp32_path: str | Path, int8_path: str | Path) -> Path:
    """onnxruntime dynamic int8 quantization of an exported model."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
    return Path(int8_path)


@dataclass
class Parity:
    max_abs_diff: float
    reference: np.ndarray   # logits, dataset order
    candidate: np.ndarray


def all_logits(runner: Runner, features, batch_size: int = 32) -> np.ndarray:
    """Logits of every example in dataset order (length-sorted batches, dynamic padding)."""
    from lad.data.loader import make_eval_batches

    out = None
    for idx in make_eval_batches(features, batch_size, sort_by_length=True):
        logits = runner(collate_numpy(features, idx))
        if out is None:
            out = np.zeros((len(features), logits.shape[-1]), dtype=np.float32)
        out[np.asarray(idx)] = logits
    return out


def parity(reference: Runner, candidate: Runner, features, batch_size: int = 32) -> Parity:
    ref, cand = all_logits(reference, features, batch_size), all_logits(candidate, features, batch_size)
    return Parity(float(np.max(np.abs(ref - cand))), ref, cand)
