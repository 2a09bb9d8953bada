"""GLUE metrics: accuracy, F1/accuracy, Matthews correlation, Pearson/Spearman."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy import special, stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from lad.core.errors import ConfigError
from lad.data.tasks import METRIC_KEYS, TaskSpec


def predictions_from_logits(task: TaskSpec, logits: np.ndarray) -> np.ndarray:
    """Class ids (argmax) for classification, the squeezed score for regression."""
    logits = np.asarray(logits)
    if task.is_regression:
        return logits.reshape(len(logits), -1)[:, 0].astype(np.float64)
    return logits.argmax(axis=-1) if logits.ndim == 2 else logits.astype(np.int64)


def dev_loss(task: TaskSpec, logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean loss of the student's own objective on labelled data (``dev/loss`` in MLflow, like
    Hugging Face's ``eval_loss``): cross-entropy for classification, squared error for regression."""
    logits = np.asarray(logits, dtype=np.float64)
    if task.is_regression:
        preds = logits.reshape(len(logits), -1)[:, 0]
        return float(np.mean((preds - np.asarray(labels, dtype=np.float64).reshape(-1)) ** 2))
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    log_probs = special.log_softmax(logits, axis=-1)
    return float(-np.mean(log_probs[np.arange(len(labels)), labels]))


def _correlation(fn, preds: np.ndarray, labels: np.ndarray) -> float:
    """Correlation, defined as 0.0 when either side is constant (scipy would give NaN)."""
    if np.ptp(preds) == 0 or np.ptp(labels) == 0:
        return 0.0
    value = float(fn(preds, labels)[0])
    return 0.0 if math.isnan(value) else value


def metric_family(metric: str, preds: np.ndarray, labels: np.ndarray, num_labels: int = 2) -> dict[str, float]:
    """Metrics of one family (see :data:`lad.data.tasks.METRIC_KEYS`) on aligned arrays.

    F1 is the F1 of class 1 for two classes (GLUE) and the macro average over classes for more.
    """
    if metric == "accuracy":
        return {"accuracy": float(accuracy_score(labels, preds))}
    if metric == "f1_acc":
        average = {"pos_label": 1, "average": "binary"} if num_labels <= 2 else {
            "average": "macro", "labels": list(range(num_labels))}
        f1 = float(f1_score(labels, preds, zero_division=0, **average))
        acc = float(accuracy_score(labels, preds))
        return {"f1": f1, "accuracy": acc, "f1_acc_mean": (f1 + acc) / 2}
    if metric == "matthews":
        return {"mcc": float(matthews_corrcoef(labels, preds))}
    if metric == "pearson_spearman":
        p = _correlation(stats.pearsonr, preds, labels)
        s = _correlation(stats.spearmanr, preds, labels)
        return {"pearson": p, "spearman": s, "corr_mean": (p + s) / 2}
    raise ConfigError(f"unknown metric '{metric}' (choose from {', '.join(METRIC_KEYS)})")


def compute_metrics(task: TaskSpec, preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Metrics for one eval split; ``preds`` are class ids (2-D logits are arg-maxed) or scores."""
    preds = predictions_from_logits(task, preds)
    labels = np.asarray(labels)
    if task.is_regression:
        labels = labels.astype(np.float64).reshape(-1)
        unlabelled = not np.all(np.isfinite(labels))
    else:
        labels = labels.astype(np.int64).reshape(-1)
        unlabelled = bool(np.any(labels < 0))
    if len(preds) != len(labels):
        raise ValueError(f"{len(preds)} predictions but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("cannot compute metrics on an empty split")
    if unlabelled:
        raise ValueError("labels contain unlabelled entries (-100/NaN): cannot score a test split")
    return metric_family(task.metric, preds, labels, num_labels=task.num_labels)


def compute_split_metrics(
    task: TaskSpec, results: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, float]:
    """Metrics of several eval splits ``{split: (preds, labels)}``, keys suffixed per split (MNLI _m/_mm)."""
    out: dict[str, float] = {}
    for split, (preds, labels) in results.items():
        suffix = task.split(split).metric_suffix
        out.update({k + suffix: v for k, v in compute_metrics(task, preds, labels).items()})
    return out


def main_score(task: TaskSpec, metrics: Mapping[str, float]) -> float:
    """The task's ``main_metric`` value from a metrics dict."""
    if task.main_metric not in metrics:
        raise ConfigError(
            f"main_metric '{task.main_metric}' of task '{task.name}' not in metrics "
            f"({', '.join(sorted(metrics))})"
        )
    return float(metrics[task.main_metric])


def constant_baseline(task, labels_by_split: dict[str, list]) -> dict:
    """Best constant prediction on the labelled eval splits ``{split: labels}`` (the trivial baseline of
    ``sweeps/baselines.py`` and of the speed objective's figure): the class that scores best, or the
    mean for a regression; ``score`` is the task's main metric."""

    def scored(value) -> dict:
        return compute_split_metrics(task, {s: (np.full(len(y), value, dtype=np.float64 if task.is_regression
                                                        else np.int64), np.asarray(y))
                                            for s, y in labels_by_split.items()})

    if task.is_regression:
        mean = float(np.mean(np.concatenate([np.asarray(y, dtype=np.float64) for y in labels_by_split.values()])))
        metrics, constant = scored(mean), f"mean {mean:.4f}"
    else:
        best = max(range(task.num_labels), key=lambda c: (main_score(task, scored(c)), -c))
        metrics, constant = scored(best), f"class {task.label_name(best)}"
    return {"main_metric": task.main_metric, "score": main_score(task, metrics), "constant": constant,
            "dev_examples": sum(len(y) for y in labels_by_split.values()),
            "metrics": {k: metrics[k] for k in sorted(metrics)}}
