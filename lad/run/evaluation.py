"""Predictions and dev metrics of a model over tokenised features, and the test-split submission files.

The training loop calls :func:`make_evaluator`'s function at every evaluation; the same
:func:`batch_of` collates training batches, gate probes and evaluation batches.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lad.core.errors import LADError
from lad.models.arch import forward_inputs

log = logging.getLogger(__name__)


def predict_logits(model, features, batch_size: int, device):
    """Logits of a sequence classifier for every example, in the features' order."""
    import numpy as np
    import torch

    from lad.data.loader import make_eval_batches
    from lad.run.train import to_device

    model.eval()
    out = np.zeros((len(features), model.config.num_labels), dtype=np.float32)
    with torch.no_grad():
        for idx in make_eval_batches(features, batch_size, sort_by_length=True):
            batch = to_device(batch_of(features, idx), device)
            logits = model(**forward_inputs(model, batch)).logits
            out[np.asarray(idx)] = logits.float().cpu().numpy()
    return out


def batch_of(features, indices, pad_to: int | None = None) -> dict:
    """Collated batch of the given example positions: padded to the longest one, or to ``pad_to``."""
    from lad.data.loader import FeaturesDataset, collate

    data = FeaturesDataset(features)
    return collate([data[i] for i in indices], pad_id=features.pad_id, pad_to=pad_to)


def make_evaluator(module, task, eval_sets: dict, batch_size: int, device):
    from lad.data.metrics import compute_split_metrics, dev_loss, predictions_from_logits

    def evaluate() -> dict:
        results, losses = {}, {}
        for split, feats in eval_sets.items():
            logits = predict_logits(module.student, feats, batch_size, device)
            results[split] = (predictions_from_logits(task, logits), feats.labels)
            losses["loss" + task.split(split).metric_suffix] = dev_loss(task, logits, feats.labels)
        return {k: float(v) for k, v in {**compute_split_metrics(task, results), **losses}.items()}

    return evaluate


def predict_test(cfg, task, tokenizer, out_dir: Path, device) -> None:
    """GLUE submission files for the test split(s), from the best checkpoint."""
    from transformers import AutoModelForSequenceClassification

    from lad.data.features import load_features
    from lad.data.glue import submission_path, write_submission
    from lad.data.metrics import predictions_from_logits
    from lad.data.tasks import has_split, test_splits

    best = AutoModelForSequenceClassification.from_pretrained(str(out_dir / "model")).to(device)
    data_dir = cfg.data.data_dir
    for split in test_splits(task):
        if not has_split(task, split):
            continue
        try:
            feats = load_features(task, data_dir, split, tokenizer, int(task.max_seq_length),
                                  Path(str(cfg.data.cache_dir)), cfg.data.max_eval_samples)
        except LADError as exc:
            log.warning("skipping test predictions: %s", exc)
            continue
        preds = predictions_from_logits(task, predict_logits(best, feats, int(cfg.trainer.eval_batch_size), device))
        write_submission(task, split, feats.guids, preds, submission_path(task, split, out_dir / "predictions"))
