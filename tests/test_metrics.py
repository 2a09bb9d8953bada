"""GLUE metrics against hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from lad.core.errors import ConfigError
from lad.data.tasks import TaskSpec
from lad.data.metrics import (compute_metrics, compute_split_metrics, dev_loss, main_score,
                         predictions_from_logits)

TASK_DIR = Path(__file__).resolve().parents[1] / "conf" / "task"


def task(name: str) -> TaskSpec:
    return TaskSpec.from_config(OmegaConf.load(TASK_DIR / f"{name}.yaml"))


def test_accuracy():
    # 4 of 5 correct
    m = compute_metrics(task("rte"), np.array([0, 1, 1, 0, 1]), np.array([0, 1, 0, 0, 1]))
    assert m == {"accuracy": pytest.approx(4 / 5)}
    assert main_score(task("rte"), m) == pytest.approx(0.8)


def test_f1_and_accuracy():
    labels = np.array([1, 1, 1, 0, 0, 0])
    preds = np.array([1, 1, 0, 1, 1, 0])
    # TP=2 (rows 0,1), FN=1 (row 2), FP=2 (rows 3,4), TN=1 (row 5)
    precision, recall = 2 / 4, 2 / 3
    f1 = 2 * precision * recall / (precision + recall)          # = 4/7
    assert f1 == pytest.approx(4 / 7)
    m = compute_metrics(task("mrpc"), preds, labels)
    assert m["f1"] == pytest.approx(4 / 7)
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["f1_acc_mean"] == pytest.approx((4 / 7 + 1 / 2) / 2)   # = 15/28
    assert main_score(task("mrpc"), m) == pytest.approx(4 / 7)       # MRPC main metric: F1


def test_matthews_from_confusion_matrix():
    # TP=3, FN=1, FP=1, TN=5
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    preds = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0])
    tp, tn, fp, fn = 3, 5, 1, 1
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert mcc == pytest.approx(14 / 24)
    m = compute_metrics(task("cola"), preds, labels)
    assert m == {"mcc": pytest.approx(7 / 12)}
    # a constant predictor has no correlation
    assert compute_metrics(task("cola"), np.zeros(10, int), labels)["mcc"] == 0.0


def test_pearson_and_spearman():
    preds = np.array([1.0, 2.0, 3.0, 4.0])
    labels = np.array([2.0, 5.0, 4.0, 9.0])
    # Pearson: centred preds [-1.5,-0.5,0.5,1.5], centred labels [-3,0,-1,4]
    # cov sum = 4.5 + 0 - 0.5 + 6 = 10; sum sq = 5 and 26  ->  r = 10 / sqrt(130)
    # Spearman: ranks [1,2,3,4] vs [1,3,2,4]; d = [0,-1,1,0]; rho = 1 - 6*2 / (4*15) = 0.8
    m = compute_metrics(task("stsb"), preds, labels)
    assert m["pearson"] == pytest.approx(10 / math.sqrt(130))
    assert m["spearman"] == pytest.approx(0.8)
    assert m["corr_mean"] == pytest.approx((10 / math.sqrt(130) + 0.8) / 2)
    assert main_score(task("stsb"), m) == pytest.approx(0.8)


def test_constant_regression_predictions_score_zero():
    m = compute_metrics(task("stsb"), np.full(4, 2.5), np.array([2.0, 5.0, 4.0, 9.0]))
    assert m == {"pearson": 0.0, "spearman": 0.0, "corr_mean": 0.0}


def test_logits_are_reduced_to_predictions():
    logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.0, 0.5]])
    assert predictions_from_logits(task("rte"), logits).tolist() == [1, 0, 1]
    assert compute_metrics(task("rte"), logits, np.array([1, 1, 1]))["accuracy"] == pytest.approx(2 / 3)
    assert predictions_from_logits(task("stsb"), np.array([[1.5], [2.0]])).tolist() == [1.5, 2.0]


def test_dev_loss_is_cross_entropy_or_squared_error():
    # softmax([0, 0]) = 1/2; softmax([ln 3, 0]) = 3/4, 1/4 (large offsets must not overflow)
    logits = np.array([[0.0, 0.0], [math.log(3.0) + 1000.0, 1000.0]])
    expected = (math.log(2.0) - math.log(0.25)) / 2
    assert dev_loss(task("rte"), logits, np.array([1, 1])) == pytest.approx(expected)
    assert dev_loss(task("rte"), logits, np.array([0, 0])) == pytest.approx((math.log(2.0) - math.log(0.75)) / 2)
    assert dev_loss(task("stsb"), np.array([[1.0], [3.0]]), np.array([2.0, 5.0])) == pytest.approx((1 + 4) / 2)


def test_mnli_split_suffixes_and_main_metric():
    spec = task("mnli")
    metrics = compute_split_metrics(spec, {
        "dev_matched": (np.array([0, 1, 2, 2]), np.array([0, 1, 2, 0])),    # 3/4
        "dev_mismatched": (np.array([2, 2]), np.array([2, 1])),             # 1/2
    })
    assert metrics == {"accuracy_m": pytest.approx(0.75), "accuracy_mm": pytest.approx(0.5)}
    assert main_score(spec, metrics) == pytest.approx(0.75)
    with pytest.raises(ConfigError, match="accuracy_m"):
        main_score(spec, {"accuracy": 1.0})


def test_unlabelled_or_mismatched_inputs_rejected():
    with pytest.raises(ValueError, match="unlabelled"):
        compute_metrics(task("rte"), np.array([0, 1]), np.array([0, -100]))
    with pytest.raises(ValueError, match="unlabelled"):
        compute_metrics(task("stsb"), np.array([0.0, 1.0]), np.array([1.0, np.nan]))
    with pytest.raises(ValueError):
        compute_metrics(task("rte"), np.array([0, 1, 1]), np.array([0, 1]))
