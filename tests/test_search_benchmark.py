"""benchmarks/search_pruning.py: best-so-far at equal time from recordings, the page, the live driver."""

from __future__ import annotations

import json
import shutil

import pytest

from benchmarks.search_pruning import best_so_far, curves, main, paired_budgets


def trial(end: float, state: str = "COMPLETE", value=None) -> dict:
    return {"state": state, "value": value, "end_cpu_s": end, "end_wall_s": 2 * end}


SETUP = {"task": "mrpc", "trials": 4, "max_trials": 12, "steps": 80, "eval_every": 20, "pruner": "median",
         "overrides": [], "teacher": {"path": "t", "metric": "f1", "score": 0.875}}


def recordings() -> dict:
    """Two seeds. Seed 1: the unpruned search takes 40 s; the pruned one's last trial ends after 40 s
    (outside every budget). Seed 2: no trial of either arm has ended at 25 % (25 s)."""
    return {
        1: {"none": {"trials": [trial(10, value=0.80), trial(20, value=0.82), trial(30, value=0.81),
                                trial(40, value=0.85)]},
            "pruned": {"trials": [trial(10, value=0.79), trial(12, "PRUNED"), trial(14, "PRUNED"),
                                  trial(24, value=0.84), trial(38, value=0.83), trial(44, value=0.90)]}},
        2: {"none": {"trials": [trial(50, value=0.70), trial(100, value=0.75)]},
            "pruned": {"trials": [trial(30, value=0.72), trial(60, value=0.78)]}},
    }


def test_best_so_far_counts_complete_trials_ended_by_the_budget():
    trials = recordings()[1]["pruned"]["trials"]
    assert best_so_far(trials, 9.9) is None
    assert best_so_far(trials, 10) == 0.79
    assert best_so_far(trials, 20) == 0.79  # pruned trials carry no value
    assert best_so_far(trials, 40) == 0.84  # the 0.90 trial ended after the budget
    assert best_so_far(trials, 22, clock="wall") == 0.79  # wall clock: ends at 20, 24, 28, ...


def test_paired_budgets_hand_computed():
    rows = {r["budget"]: r for r in paired_budgets(recordings())}
    # seed 1 budgets 10 / 20 / 40 s: unpruned 0.80 / 0.82 / 0.85, pruned 0.79 / 0.79 / 0.84
    # seed 2 budgets 25 / 50 / 100 s: unpruned — / 0.70 / 0.75, pruned — / 0.72 / 0.78
    assert rows[0.25]["seeds"][1] == {"limit_s": 10, "none": 0.80, "pruned": 0.79, "diff": pytest.approx(-0.01)}
    assert rows[0.25]["seeds"][2]["diff"] is None
    assert (rows[0.25]["n"], rows[0.25]["missing"], rows[0.25]["worse"]) == (1, 1, 1)
    assert rows[0.25]["mean"] == pytest.approx(-0.01) and rows[0.25]["sd"] == 0.0
    assert rows[0.5]["mean"] == pytest.approx((-0.03 + 0.02) / 2)
    assert (rows[0.5]["better"], rows[0.5]["worse"], rows[0.5]["tied"]) == (1, 1, 0)
    assert rows[1.0]["mean"] == pytest.approx(0.01)
    assert rows[1.0]["sd"] == pytest.approx(0.04 / 2 ** 0.5)  # stdev of -0.01 and +0.03
    assert (rows[1.0]["min"], rows[1.0]["max"]) == (pytest.approx(-0.01), pytest.approx(0.03))


def test_curves_are_best_so_far_on_fractions_of_the_unpruned_time():
    data = curves(recordings(), points=5)  # 0, 25, 50, 75, 100 %
    assert data["grid"] == [0, 0.25, 0.5, 0.75, 1.0]
    assert data["none"] == [[None, 0.80, 0.82, 0.82, 0.85], [None, None, 0.70, 0.70, 0.75]]
    assert data["pruned"] == [[None, 0.79, 0.79, 0.84, 0.84], [None, None, 0.72, 0.78, 0.78]]


def test_report_writes_the_page_and_figure_from_recordings(tmp_path):
    for seed, pair in recordings().items():
        for arm, rec in pair.items():
            (tmp_path / f"seed{seed}-{arm}.json").write_text(json.dumps({"seed": seed, "arm": arm, "setup": SETUP,
                                                                          **rec}))
    (tmp_path / "seed3-none.json").write_text(json.dumps({"seed": 3, "arm": "none", "setup": SETUP,
                                                          "trials": [trial(5, value=0.9)]}))  # unpaired: left out
    page = tmp_path / "docs" / "search.md"
    assert main(["report", str(tmp_path), "--page", str(page)]) == 0
    text = page.read_text()
    assert page.with_suffix(".png").stat().st_size > 1000 and "![best-so-far vs time](search.png)" in text
    from sweeps.baselines import read_baselines

    majority = f"{read_baselines()['mrpc']['score']:.4f}"  # the trivial baseline and the teacher in every row
    assert f"Always predicting the majority class: {majority}" in text and "the teacher: 0.8750" in text
    assert (f"| 100% | {majority} | 0.8750 | 0.8000 | 0.8100 | +0.0100 | 0.0283 | -0.0100 | +0.0300 | 1 / 0 / 1 | 1.000 "
            "| no consistent difference |") in text
    assert f"| 25% | {majority} | 0.8750 | 0.8000 | 0.7900 | -0.0100 |" in text and "(1 seed(s) without a complete trial in an arm)" in text
    assert "| 1 | 0.8000 → 0.7900 | 0.8200 → 0.7900 | 0.8500 → 0.8400 | 4 / 2 |" in text
    assert "| 25% |" in text and "too few seeds with a complete trial in both arms" in text
    assert "Pruning does not reliably help here" in text and "2 seeds" in text
    # spread of the unpruned trials: 0.70-0.85; sds 0.0216 (seed 1: .80 .82 .81 .85) and 0.0354 (seed 2)
    assert "complete trials score from 0.7000 to 0.8500 (standard deviation within a search, mean over seeds: 0.0285)" in text
    assert "binomial standard error" not in text  # MRPC's main metric is F1
    assert f"Generated by `python benchmarks/search_pruning.py report {tmp_path}" in text
    assert ("python benchmarks/search_pruning.py run --task mrpc --trials 4 --max-trials 12 --steps 80 "
            "--eval-every 20 --pruner median --seeds 1 2   #") in text


def test_bad_input_is_one_error_line(tmp_path, capsys):
    for argv in (["report", str(tmp_path)],  # nothing recorded
                 ["run", "--out", str(tmp_path), "--trials", "4", "--max-trials", "2"],
                 ["run", "--out", str(tmp_path), "trainer.nope=1"],
                 ["run", "--out", str(tmp_path), f"paths.artifacts={tmp_path}"]):  # no teacher there
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, (argv, err)
    assert not list(tmp_path.glob("*.json"))


def test_run_records_both_arms_and_resumes(tmp_path, tiny_teacher, tiny_glue, capsys):
    """The live driver on the tiny teacher: the pruned arm stops at the unpruned arm's CPU time; the
    teacher's dev score is recorded with the searches."""
    teacher_dir = tmp_path / "teacher"
    shutil.copytree(tiny_teacher, teacher_dir)
    (teacher_dir / "metrics.json").write_text(json.dumps({"main_metric": "accuracy", "best": {"accuracy": 0.625}}))
    args = ["run", "--seeds", "1", "--task", "sst2", "--trials", "2", "--max-trials", "3", "--steps", "4",
            "--eval-every", "2", "--out", str(tmp_path / "rec"), "teacher=local", f"teacher.path={teacher_dir}",
            f"data.data_dir={tiny_glue}", f"paths.cache={tmp_path / 'cache'}", "student=2layer",
            "optim.batch_size=16", "search.startup_trials=1"]
    assert main(args) == 0
    none = json.loads((tmp_path / "rec" / "seed1-none.json").read_text())
    pruned = json.loads((tmp_path / "rec" / "seed1-pruned.json").read_text())
    assert [t["number"] for t in none["trials"]] == [0, 1] and none["pruner"] == "none"
    assert none["setup"]["teacher"] == {"path": str(teacher_dir), "metric": "accuracy", "score": 0.625}
    assert all(t["state"] == "COMPLETE" and set(t["reports"]) == {"2", "4"} for t in none["trials"])
    ends = [t["end_cpu_s"] for t in pruned["trials"]]
    assert ends == sorted(ends) and pruned["limit_cpu_s"] == none["trials"][-1]["end_cpu_s"]
    # it stops at the first trial ending past the budget (or at --max-trials)
    assert all(e < pruned["limit_cpu_s"] for e in ends[:-1]) and (ends[-1] >= pruned["limit_cpu_s"] or len(ends) == 3)
    # trials follow each other (a cold first trial may use the whole budget alone)
    starts = [t["start_cpu_s"] for t in pruned["trials"]]
    assert starts[0] == 0 and starts[1:] == ends[:-1]
    capsys.readouterr()
    assert main(args) == 0  # resumed: both recorded, nothing runs
    assert capsys.readouterr().out.count("skipped") == 2


def test_dev_noise_is_the_binomial_error_of_an_accuracy_at_the_teachers_level():
    from benchmarks.search_pruning import dev_noise

    base = {"sst2": {"main_metric": "accuracy", "dev_examples": 872}, "mrpc": {"main_metric": "f1", "dev_examples": 408}}
    assert "872 dev examples" in dev_noise({"task": "sst2"}, base, 0.88)
    assert "error of 0.0110." in dev_noise({"task": "sst2"}, base, 0.88)  # sqrt(0.88 * 0.12 / 872)
    assert dev_noise({"task": "mrpc"}, base, 0.85) == "" and dev_noise({"task": "sst2"}, base, None) == ""


def test_verdict_names_ties_and_one_sided_results():
    from benchmarks.search_pruning import diff_summary, verdict

    assert verdict(diff_summary([0.0, 0.0, 0.0])) == "tied on all 3 seeds"
    assert verdict(diff_summary([0.01, 0.02, 0.01])) == "pruned ahead on all 3 seeds"
    assert verdict(diff_summary([-0.01, -0.02])) == "unpruned ahead on all 2 seeds"
    assert verdict(diff_summary([0.01, 0.0, -0.01])) == "no consistent difference"
    assert verdict(diff_summary([0.01, None])) == "too few seeds with a complete trial in both arms"
