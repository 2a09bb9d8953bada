"""benchmarks/precision.py: the bf16 accuracy check pairs seeds and applies its stated rule."""

from benchmarks import precision


def _rec(task, prec, seed, score, **params):
    return {"entry": "distil", "status": "FINISHED", "task": task, "method": "lad", "student": "3layer",
            "seed": seed, "main_metric": "accuracy", "metrics": {"best/accuracy": score},
            "params": {"trainer.precision": prec, "data.max_train_samples": "None", "trainer.max_steps": "-1", **params},
            "tags": {"lad.kind": "run", "mlflow.source.git.commit": "abc1234def"}}


def _records(deltas):
    out = []
    for task in precision.TASKS:
        for seed, d in zip((1, 2, 3), deltas):
            out += [_rec(task, "fp32", seed, 0.70 + 0.01 * seed), _rec(task, "bf16", seed, 0.70 + 0.01 * seed + d)]
    return out


def test_small_differences_around_zero_make_bf16_the_auto_choice():
    text = precision.render(precision.paired_scores(_records([0.002, -0.003, 0.001])), {"abc1234def"})
    assert text.count("**accuracy-neutral**") == len(precision.TASKS)
    assert "bf16 is accuracy-neutral on every task" in text


def test_a_consistent_loss_keeps_fp32():
    text = precision.render(precision.paired_scores(_records([-0.010, -0.012, -0.008])), set())
    assert "**not shown to be neutral**" in text and "stays fp32 on CPU" in text


def test_capped_or_subsampled_runs_are_not_part_of_the_check():
    recs = [_rec("mrpc", "bf16", 1, 0.9, **{"trainer.max_steps": "4"}),
            _rec("mrpc", "fp32", 1, 0.9, **{"data.max_train_samples": "32"})]
    assert precision.paired_scores(recs) == {}
    assert "Not enough paired runs yet" in precision.render({}, set())
