"""sweeps/plan.py: the compute plan prices runs from measured 1-thread throughput."""

from __future__ import annotations

import pytest

from sweeps import plan as plan_mod
from sweeps.plan import PlanError, TaskData, measured_words_per_s, plan, rate_for


def _record(task, layers, rate, threads="1", entry="distil"):
    params = {"runtime.num_threads": threads}
    if layers is not None:
        params["student.num_layers"] = str(layers)
    return {"entry": entry, "task": task, "params": params, "metrics": {"train_examples_per_s": rate}}


DATA = {"a": TaskData(examples=1000, words=10.0), "b": TaskData(examples=500, words=40.0)}


def test_throughput_is_the_fastest_one_thread_run_in_words_per_second():
    records = [_record("a", 3, 10.0), _record("a", 3, 12.0), _record("a", 3, 50.0, threads="4"),
               _record("a", None, 3.0, entry="train_teacher", threads="None")]
    measured = measured_words_per_s(records, DATA)
    assert measured == {"student3": [("a", 120.0)]}  # 12 ex/s x 10 words; 4-thread and unknown-thread runs ignored
    # task b has no run: priced at a's words/s (its longer sentences make it 4x slower per example)
    assert rate_for("student3", "b", measured) == (120.0, "student3 on a")
    # a teacher (6 layers) without a measured run: the 3-layer rate x 3/6
    assert rate_for("teacher", "a", measured) == (60.0, "student3 x 3/6 on a")


def test_plan_prices_every_stage_and_budget():
    measured = {"student3": [("a", 100.0), ("b", 200.0)]}
    cfg = {"tasks": ["a", "b"], "budgets": {"two": 2}, "stages": {
        "curves": {"kind": "student", "tasks": "all", "runs_per_task": 3},
        "tuning": {"kind": "student", "tasks": ["b"], "runs_per_task": 10, "budget_fraction": 0.5},
        "teachers": {"kind": "teacher", "tasks": ["a"], "runs_per_task": 1}}}
    table = plan(cfg, DATA, measured)["two"]
    # a: 2 epochs x 1000 ex x 10 words / 100 words/s = 200 s per run; b: 2 x 500 x 40 / 200 = 200 s
    assert table["curves"] == pytest.approx(3 * (200 + 200) / 3600)
    assert table["tuning"] == pytest.approx(10 * 100 / 3600)
    assert table["teachers"] == pytest.approx(2 * 1000 * 10 / 50 / 3600)  # teacher at 100 x 3/6 words/s


def test_reference_budget_reads_the_reference_experiment_files():
    assert plan_mod.reference_epochs("rte") == 10.0 and plan_mod.reference_epochs("cola") is None
    assert plan_mod.epochs_for("reference", "cola", 3.0) == 3.0


def test_no_measured_student_run_is_one_error_line(tmp_path, capsys):
    with pytest.raises(PlanError, match="no recorded 1-thread distil run"):
        rate_for("student3", "a", {})
    assert plan_mod.main(["--export", str(tmp_path / "missing.jsonl")]) == 2
    assert capsys.readouterr().err.startswith("error: export file")
