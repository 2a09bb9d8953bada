"""Sweep drivers: export records, results report, ablation planner / resumption (no real training)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from sweeps import ablation, export, report  # noqa: E402
from sweeps.reporting import discussion, grouping, markdown, model, readme, targets  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
T0 = 1_790_000_000_000  # fixed start times (ms) keep records deterministic


# ----------------------------------------------------------------------------- fake MLflow runs
def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def add_run(client, task: str, entry: str = "distil", method: str = "lad", student: str = "3layer",
            seed: int = 1, score: float | None = 0.7, main_metric: str = "accuracy", status: str = "FINISHED",
            start: int = 0, params: dict | None = None, parent: str | None = None, overrides: str = "",
            purpose: str = "results") -> str:
    name = f"lad-{task}"
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)
    gate, loss = {"lad": ("lad", "lad"), "kd": ("none", "kd"), "pkd": ("none", "pkd"),
                  "mean": ("mean", "lad"), "teacher": (None, None)}[method]
    tags = {"lad.entry": entry, "lad.task": task, "lad.teacher": "minilm_l6", "lad.overrides": overrides,
            "lad.method": "teacher" if entry == "train_teacher" else f"{method}/{student}",
            "lad.purpose": purpose, "mlflow.source.git.commit": "abc123"}
    if parent:
        tags["mlflow.parentRunId"] = parent
    run = client.create_run(exp_id, start_time=T0 + start, tags=tags)
    p = {"seed": str(seed), "task.name": task, "task.main_metric": main_metric, "teacher.name": "minilm_l6",
         "teacher.path": f"artifacts/teachers/minilm_l6/{task}", "trainer.max_steps": "-1",
         "trainer.epochs": "3", "data.max_train_samples": "None", "optim.lr": "0.0001",
         "data.cache_dir": ".cache/lad/features", "gate._target_": "lad.method.gates.X"}
    if entry == "distil":
        layers = int(student[0])
        p.update({"gate.name": gate, "loss.name": loss, "student.name": student,
                  "student.num_layers": str(layers), "student.params": str(10_000_000 + layers * 1_000_000),
                  "teacher.params": "22713216", "loss.temperature": "10.0", "loss.hidden_weight": "1000.0"})
    p.update(params or {})
    from mlflow.entities import Metric, Param

    metrics = [Metric("train/loss", 0.5, T0, 1), Metric("dev/accuracy", 0.1, T0, 1),
               Metric("train_examples_per_s", 100.0 + seed, T0, 10), Metric("peak_rss_mb", 900.0, T0, 10)]
    if score is not None:
        metrics += [Metric(f"best/{main_metric}", score - 0.05, T0, 5), Metric(f"best/{main_metric}", score, T0, 10),
                    Metric(f"final/{main_metric}", score - 0.01, T0, 10)]
    client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, v) for k, v in p.items()])
    client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory) -> Path:
    """A migrated, empty MLflow sqlite store (creating one costs seconds: copy this instead)."""
    path = tmp_path_factory.mktemp("mlflow-empty") / "empty.db"
    _client(f"sqlite:///{path}").search_experiments()
    return path


def new_store(empty_db: Path, path: Path) -> str:
    shutil.copyfile(empty_db, path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
def store(tmp_path_factory, empty_db) -> str:
    """2 tasks x (lad, kd, pkd on 3layer + lad on 2layer) x 2 seeds, teachers, noise runs."""
    uri = new_store(empty_db, tmp_path_factory.mktemp("mlflow") / "mlruns.db")
    c = _client(uri)
    scores = {  # (task, method, student) -> per-seed scores
        ("rte", "lad", "3layer"): (0.70, 0.74), ("rte", "kd", "3layer"): (0.66, 0.68),
        ("rte", "pkd", "3layer"): (0.69, 0.69), ("rte", "lad", "2layer"): (0.62, 0.60),
        ("mrpc", "lad", "3layer"): (0.85, 0.87), ("mrpc", "kd", "3layer"): (0.88, 0.86),
        ("mrpc", "pkd", "3layer"): (0.80, 0.82), ("mrpc", "lad", "2layer"): (0.78, 0.80),
    }
    metric = {"rte": "accuracy", "mrpc": "f1"}
    for i, ((task, method, student), vals) in enumerate(sorted(scores.items())):
        for seed, val in zip((1, 2), vals):
            add_run(c, task, method=method, student=student, seed=seed, score=val, main_metric=metric[task],
                    start=10 * i + seed)
    add_run(c, "rte", entry="train_teacher", method="teacher", seed=42, score=0.80, start=-5)
    add_run(c, "mrpc", entry="train_teacher", method="teacher", seed=42, score=0.90, main_metric="f1", start=-5)
    # noise: an older run of a cell (superseded), a FAILED run, a run with another budget, a sweep child
    add_run(c, "rte", method="lad", seed=1, score=0.10, start=-100)
    add_run(c, "rte", method="lad", seed=3, score=0.99, status="FAILED", start=500)
    add_run(c, "rte", method="kd", seed=1, score=0.55, start=600, params={"trainer.max_steps": "10"})
    parent = c.create_run(c.get_experiment_by_name("lad-rte").experiment_id, tags={"lad.kind": "sweep"}).info.run_id
    for j, temp in enumerate(("2.0", "5.0", "10.0")):
        add_run(c, "rte", seed=42, score=0.6 + 0.01 * j, parent=parent, start=700 + j,
                params={"loss.temperature": temp, "loss.hidden_weight": str(10.0 ** j)})
    # a trial stopped by the pruner (exported, counted, never scored) and a plain KILLED run (dropped)
    pruned = add_run(c, "rte", seed=42, score=0.95, parent=parent, start=710, status="KILLED",
                     params={"loss.temperature": "3.0"})
    c.set_tag(pruned, "optuna.state", "PRUNED")
    add_run(c, "rte", method="kd", seed=2, score=0.97, start=720, status="KILLED")
    return uri


def _pages(out: Path) -> str:
    """The main page and every page in its folder (per task, overview), one text."""
    return out.read_text() + "".join(p.read_text() for p in sorted((out.parent / out.stem).glob("*.md")))


def _report(records, tmp: Path, name: str, **kw) -> tuple[str, str, Path]:
    out = tmp / name / "results.md"
    csv_path = tmp / name / "summary.csv"
    report.generate(records, out, csv_path, None, **kw)
    return _pages(out), csv_path.read_text(), out.parent / "img"


# ----------------------------------------------------------------------------- export
def test_export_keeps_finished_training_runs_only(store, tmp_path):
    records = export.load_mlflow_records(store)
    # grid + teachers + superseded + other budget + sweep trials + pruned trial
    assert len(records) == 16 + 2 + 1 + 1 + 3 + 1
    assert sorted(r["status"] for r in records).count("KILLED") == 1
    assert all(r["status"] == "FINISHED" or r["tags"].get("optuna.state") == "PRUNED" for r in records)
    assert {r["entry"] for r in records} == {"distil", "train_teacher"}
    path = tmp_path / "runs.jsonl"
    assert export.write_export(records, path) == len(records)
    lines = path.read_text().splitlines()
    assert lines == sorted(lines, key=lambda l: export.sort_key(json.loads(l)))
    rec = json.loads(lines[0])
    assert set(rec) == {"run_id", "experiment", "status", "entry", "task", "method", "student", "seed", "teacher",
                        "main_metric", "start_time", "tags", "params", "metrics"}
    assert "data.cache_dir" not in rec["params"] and "gate._target_" not in rec["params"]
    assert not any(k.startswith(("dev/", "train/")) for k in rec["metrics"])
    assert export.read_export(path) == records
    assert export.main(["--tracking-uri", store, "--out", str(tmp_path / "cli.jsonl")]) == 0
    # the run capped at 10 steps is not a results run (budget cut short): the export leaves it out
    assert export.read_export(tmp_path / "cli.jsonl") == [r for r in records if export.refusal(r) is None]
    assert [r["params"]["trainer.max_steps"] for r in records if export.refusal(r)] == ["10"]
    assert {r["tags"]["lad.purpose"] for r in records} == {"results"}
    lad1 = [r for r in records if (r["task"], r["method"], r["student"], r["seed"]) == ("rte", "lad", "3layer", 1)]
    assert sorted(r["metrics"]["best/accuracy"] for r in lad1) == [0.10, 0.70]  # latest value of best/ is kept
    # the learning curve: the main dev metric at every evaluation (rte: accuracy, logged at step 1)
    assert all(r["history"] == [[1, 0.1]] for r in lad1)
    assert not any("history" in r for r in records if r["task"] == "mrpc")  # f1 never logged: no key


def test_export_takes_only_results_runs_and_keeps_earlier_records(empty_db, tmp_path):
    """Smoke, test, demo and ad-hoc runs never reach the export; runs of an earlier store stay in the file."""
    uri = new_store(empty_db, tmp_path / "mlruns.db")
    c = _client(uri)
    real = add_run(c, "rte", seed=1, score=0.7)
    add_run(c, "rte", seed=2, score=0.9, purpose="smoke", params={"trainer.max_steps": "4"})
    add_run(c, "rte", seed=3, score=0.8, purpose="adhoc")
    add_run(c, "rte", seed=4, score=0.8, purpose="test")
    add_run(c, "rte", seed=5, score=0.8, purpose="demo")
    out = tmp_path / "runs.jsonl"
    earlier = export.make_record("old-run", "lad-rte", "FINISHED", T0, {"lad.entry": "distil", "lad.task": "rte",
                                 "lad.method": "kd/3layer", "lad.purpose": "results"}, {"seed": "1"}, {"best/accuracy": 0.6})
    export.write_export([earlier], out)
    assert export.main(["--tracking-uri", uri, "--out", str(out)]) == 0
    rows = export.read_export(out)
    assert sorted(r["run_id"] for r in rows) == sorted([real, "old-run"])
    assert {r["tags"].get("lad.purpose") for r in rows} == {"results"}
    assert export.main(["--tracking-uri", uri, "--out", str(out), "--purpose", "results", "smoke"]) == 0
    assert len(export.read_export(out)) == 2  # the smoke run stopped after 4 steps: never a results run


def test_export_refuses_tagged_runs_that_are_not_full_results_runs(empty_db, tmp_path):
    """A results tag is not enough: the experiment is a results experiment, the data whole, the budget full."""
    uri = new_store(empty_db, tmp_path / "mlruns.db")
    c = _client(uri)
    full = {"data.train_examples": "64", "optim.batch_size": "32"}  # 3 epochs = 6 steps
    good = add_run(c, "rte", seed=1, params=full)
    capped_ok = add_run(c, "rte", seed=2, params={**full, "trainer.max_steps": "6"})
    add_run(c, "rte", seed=3, params={**full, "trainer.max_steps": "2"})
    add_run(c, "rte", seed=4, params={**full, "data.max_train_samples": "32"})
    add_run(c, "rte", seed=5, params={**full, "data.max_eval_samples": "8"})
    other = c.create_experiment("my-notes")
    run = c.create_run(other, tags={"lad.entry": "distil", "lad.purpose": "results", "lad.method": "lad/3layer"})
    c.set_terminated(run.info.run_id, "FINISHED")
    out = tmp_path / "runs.jsonl"
    assert export.main(["--tracking-uri", uri, "--out", str(out)]) == 0
    assert sorted(r["run_id"] for r in export.read_export(out)) == sorted([good, capped_ok])
    rec = export.make_record("x", "my-notes", "FINISHED", T0, {"lad.entry": "distil"}, {}, {})
    assert "not a results experiment" in export.refusal(rec)
    # the declared budget of results/preregistration.yaml: a headline run with fewer epochs is refused
    short = export.make_record("y", "lad-rte", "FINISHED", T0, {"lad.entry": "distil", "lad.task": "rte"},
                               {"trainer.epochs": "1", "trainer.max_steps": "-1"}, {})
    assert export.refusal(short, budgets={"rte": 3}) == "trainer.epochs=1 is below the declared budget (3 epochs)"
    assert export.refusal(short, budgets={"mrpc": 3}) is None
    assert export.declared_budgets()["sst2"] == 1.0


def test_one_definition_of_a_grid_cell_and_a_sweep_trial():
    """Seed-multirun children (parent run, lad.kind=run) are cells; Optuna trials (lad.kind=trial) and
    runs recorded before the tag with a parent are trials; the ablation driver and the report agree."""
    from sweeps.kinds import is_grid_cell, is_sweep_trial

    def rec(seed, kind, parent="p1", score=0.7, status="FINISHED"):
        tags = {"lad.entry": "distil", "lad.task": "rte", "lad.method": "lad/3layer", "mlflow.parentRunId": parent}
        if kind:
            tags["lad.kind"] = kind
        return export.make_record(f"{kind}-{seed}-{parent}", "lad-rte", status, T0 + seed, tags,
                                  {"seed": str(seed), "task.main_metric": "m", "trainer.max_steps": "160"},
                                  {"best/m": score})

    seeds = [rec(1, "run"), rec(2, "run")]
    trials = [rec(1, "trial", "p2", 0.9), rec(1, "trial", "p2", 0.5)]
    legacy = rec(1, None, "p3", 0.1)
    assert [is_grid_cell(r) for r in seeds] == [True, True] and not any(map(is_sweep_trial, seeds))
    assert not any(map(is_grid_cell, [*trials, legacy])) and all(map(is_sweep_trial, [*trials, legacy]))
    assert is_grid_cell(rec(3, "run", parent=None)) and not is_grid_cell(rec(3, "run", status="FAILED"))
    rep = grouping.build_report([*seeds, *trials, legacy])
    (table,) = rep.tables
    assert [sorted(r.scores.items()) for r in table.rows] == [[(1, 0.7), (2, 0.7)]]
    assert sorted(len(g.trials) for g in rep.sweeps) == [3]
    cell = ablation.Cell("rte", "lad", "lad", "lad", "3layer", 1, ())
    planned = [ablation.PlannedCell(cell, {"trainer.max_steps": "160"}, "lad-rte", "sqlite:///x.db", Path("x"),
                                    Path("x.log"))]
    ablation.mark_done(planned, [*trials, legacy])
    assert planned[0].done_by is None
    ablation.mark_done(planned, [*trials, legacy, *seeds])
    assert planned[0].done_by == seeds[0]["run_id"]


# ----------------------------------------------------------------------------- report
def test_report_table_mean_std_and_percent_of_teacher(store, tmp_path):
    md, csv_text, img = _report(export.load_mlflow_records(store), tmp_path, "a")
    # rte lad/3layer: seeds 0.70 and 0.74 (the superseded 0.10 and the FAILED 0.99 are ignored)
    # mean 72.00, sample std sqrt(2 * 0.02**2 / 1) = 2.83; teacher 0.80 -> 72 / 80 = 90.00 %
    assert "| lad | 3layer | 13.0M | 2 | 72.00 ± 2.83 | 90.00 | -8.00 |" in md
    assert "| teacher | minilm_l6 | 22.7M | 1 | 80.00 | 100.00 | +0.00 |" in md
    assert "| kd | 3layer | 13.0M | 2 | 67.00 ± 1.41 | 83.75 | -13.00 |" in md
    assert "No trivial baseline for rte accuracy in results/baselines.json" in md  # none given
    rte = md.split("### RTE — teacher minilm_l6, epochs=3, train=full (main) — commit abc123\n")[1].split("###")[0]
    assert rte.index("| lad | 2layer") < rte.index("| lad | 3layer") < rte.index("| pkd | 3layer") < rte.index("| kd | 3layer")
    assert "### RTE — teacher minilm_l6, max_steps=10, train=full — commit abc123\n" in md  # other budget: own table
    assert "python sweeps/ablation.py task=rte 'methods=[lad,pkd,kd]' 'students=[2layer,3layer]' 'seeds=[1,2]' budget.epochs=3" in md
    assert ("rte,minilm_l6,\"epochs=3, train=full\",,1,accuracy,lad,3layer,2,1 2,0.720000,0.028284,13000000,0.800000,"
            "90.0000,101.5,,abc123\n") in csv_text  # throughput: mean of 101 and 102
    # summary: mrpc (f1) then rte in GLUE order; both tasks complete -> averaged
    assert "| method | student | mrpc | rte | avg | avg % of teacher |" in md
    assert "| lad | 3layer | 86.00 | 72.00 | 79.00 |" in md
    assert "**undecided (underpowered)** — lad (3layer) ≥ 97% of teacher" in md  # 2 tasks of 5, 2 seeds
    # sweep trials are not in the tables but in the sweep section (best T = 10.0)
    assert "| rte | lad/3layer, epochs=3, train=full | 3 + 1 | 62.00 | – | 10 |" in md  # the pruned 0.95 is no score
    assert (img / "sweep-rte.png").is_file()
    pngs = sorted(p.name for p in img.glob("*-[0-9].png"))
    assert pngs == ["mrpc-1.png", "rte-1.png", "rte-2.png"] and all(f"](../img/{p})" in md for p in pngs)
    assert not re.search(r"20\d\d-\d\d-\d\d", md)  # no dates


def test_trivial_baseline_is_the_best_constant_prediction_scored_by_the_task_metric():
    from lad.core.errors import ConfigError
    from lad.data.metrics import constant_baseline
    from sweeps.baselines import task_spec

    mrpc = constant_baseline(task_spec("mrpc"), {"dev": [1, 1, 0, 1]})  # all-positive: F1 2*0.75/1.75
    assert (mrpc["constant"], mrpc["main_metric"]) == ("class 1", "f1") and math.isclose(mrpc["score"], 6 / 7)
    rte = task_spec("rte")
    majority = constant_baseline(rte, {"dev": [1, 1, 0]})
    assert majority["constant"] == f"class {rte.label_name(1)}" and math.isclose(majority["score"], 2 / 3)
    assert constant_baseline(task_spec("cola"), {"dev": [1, 1, 0]})["score"] == 0.0  # MCC of a constant
    stsb = constant_baseline(task_spec("stsb"), {"dev": [1.0, 2.0, 4.5]})
    assert (stsb["constant"], stsb["score"], stsb["dev_examples"]) == ("mean 2.5000", 0.0, 3)
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        task_spec("nope")


def test_baselines_file_from_the_dev_file_and_one_error_line(tiny_glue, tmp_path, capsys):
    from sweeps import baselines

    out = tmp_path / "baselines.json"
    assert baselines.main(["--tasks", "sst2", "--data-dir", str(tiny_glue), "--out", str(out)]) == 0
    labels = [line.rsplit("\t", 1)[1] for line in (tiny_glue / "SST-2" / "dev.tsv").read_text().splitlines()[1:]]
    share = max(labels.count(x) for x in set(labels)) / len(labels)
    assert baselines.read_baselines(out)["sst2"]["score"] == share and "accuracy" in out.read_text()
    capsys.readouterr()
    assert baselines.main(["--tasks", "sst2", "nope", "--data-dir", str(tiny_glue), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown task 'nope'") and not (tmp_path / "x").exists()


def test_every_table_has_the_teacher_and_the_trivial_baseline(store, tmp_path):
    records = export.load_mlflow_records(store)
    base = {"rte": {"main_metric": "accuracy", "score": 0.5, "constant": "class 0"},
            "mrpc": {"main_metric": "accuracy", "score": 0.68, "constant": "class 1"}}  # not mrpc's f1: not shown
    rep = grouping.build_report(records, base)
    rte = next(t for t in rep.tables if t.task == "rte" and t.primary)
    text = "\n".join(markdown.render_table(rte, None))
    assert "| teacher | minilm_l6 | 22.7M | 1 | 80.00 | 100.00 | +0.00 |" in text
    assert "| trivial baseline | class 0 | – | – | 50.00 | 62.50 | -30.00 |" in text
    assert all("trivial baseline" in "\n".join(markdown.render_table(t, None)) for t in rep.tables if t.task == "rte")
    assert "| trivial baseline |" not in "\n".join(markdown.render_table(grouping.primary_tables(rep)["mrpc"], None))
    summary = "\n".join(markdown.render_summary(rep))
    assert "| teacher |  | 90.00 | 80.00 | 85.00 | – |" in summary and "| trivial baseline |  | – | 50.00 | – | – |" in summary
    assert "| rte | minilm_l6 | accuracy | 80.00 | 50.00 |" in "\n".join(markdown.render_teachers(rep))


def test_report_is_deterministic_and_same_from_export(store, tmp_path):
    from sweeps.reporting.prereg import read_prereg

    records = export.load_mlflow_records(store)
    prereg = read_prereg()  # the committed file, as report.main reads it
    md1, csv1, img1 = _report(records, tmp_path, "one", prereg=prereg)
    md2, csv2, img2 = _report(list(reversed(records)), tmp_path, "two", prereg=prereg)
    assert (md1, csv1) == (md2, csv2)
    assert [p.read_bytes() for p in sorted(img1.iterdir())] == [p.read_bytes() for p in sorted(img2.iterdir())]
    path = tmp_path / "runs.jsonl"
    export.write_export(records, path)
    assert report.main(["--source", "export", "--export", str(path), "--out", str(tmp_path / "three/results.md"),
                        "--csv", str(tmp_path / "three/summary.csv"), "--baselines", str(tmp_path / "none.json")]) == 0
    assert report.main(["--tracking-uri", store, "--out", str(tmp_path / "four/results.md"),
                        "--csv", str(tmp_path / "four/summary.csv"), "--no-plots",
                        "--baselines", str(tmp_path / "none.json")]) == 0  # as _report: no baselines
    assert _pages(tmp_path / "three/results.md") == md1
    assert (tmp_path / "three/summary.csv").read_text() == csv1
    assert (tmp_path / "four/summary.csv").read_text() == csv1


HEADLINE_TASKS = ("rte", "mrpc", "stsb", "cola", "sst2")
NOISY = (0.03, -0.02, 0.01, -0.035, 0.02)      # per-seed offsets: several points of seed noise
STEADY = (0.002, -0.001, 0.001, -0.002, 0.0)    # a few tenths of a point, mean 0


def _headline_records(diffs: dict, commit: str = "c0ffee1", seeds=(1, 2, 3, 4, 5), history: bool = False) -> list[dict]:
    """Teacher 0.90 and lad, kd, pkd, lad-frozen (3layer) per task; ``diffs``: task -> (lad gap over the
    others, per-seed noise of lad); the others score 0.80 on every seed."""
    recs = []
    for task in HEADLINE_TASKS:
        gap, noise = diffs[task]

        def rec(entry, method, seed, score):
            tags = {"lad.entry": entry, "lad.task": task, "lad.kind": "run", "mlflow.source.git.commit": commit,
                    "lad.method": "teacher" if method == "teacher" else f"{method}/3layer"}
            hist = [[10 * k, score * k / 3] for k in (1, 2, 3)] if history else None
            return export.make_record(f"{task}-{method}-{seed}-{commit}", f"lad-{task}", "FINISHED", T0 + seed, tags,
                                      {"seed": str(seed), "task.main_metric": "m", "trainer.max_steps": "-1",
                                       "trainer.epochs": "3", "student.num_layers": "3"}, {"best/m": score}, hist)
        recs.append(rec("train_teacher", "teacher", 42, 0.90))
        recs += [rec("distil", m, s, 0.80) for m in ("kd", "pkd", "lad-frozen", "ce") for s in seeds]
        recs += [rec("distil", "lad", s, 0.80 + gap + noise[i]) for i, s in enumerate(seeds)]
    return recs


def _page(recs, tmp_path, prereg=None) -> tuple[str, str]:
    """(main page, README block) generated from ``recs``."""
    from sweeps.reporting.prereg import Prereg
    from sweeps.reporting.readme import README_BEGIN, README_END, refresh_readme

    prereg = prereg or Prereg(headline_commit="c0ffee1")
    out = tmp_path / "docs" / "results.md"
    rep = report.generate(recs, out, tmp_path / "summary.csv", None, plots=False, prereg=prereg)
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_BEGIN}\n{README_END}\n")
    refresh_readme(readme, rep, Path("docs/results.md"))
    return out.read_text(), readme.read_text()


def _verdicts(text: str) -> list[str]:
    return re.findall(r"^- \*\*(met|not met|undecided \(underpowered\))\*\* — ", text, re.M)


def test_arms_the_primary_family_leaves_out_are_paired_against_lad_seed_by_seed(tmp_path):
    """ce (an exploratory method of the headline commit) and a reference-recipe run (another commit, its
    ``experiment=`` override) each get one line against the headline LAD of the same student, with every
    seed's two scores; the primary arms are not repeated there."""
    recs = _headline_records({t: (0.02, STEADY) for t in HEADLINE_TASKS})
    tags = {"lad.entry": "distil", "lad.task": "rte", "lad.kind": "run", "mlflow.source.git.commit": "beef123",
            "lad.method": "lad/3layer", "lad.overrides": json.dumps(["experiment=reference_rte", "seed=1"])}
    recs.append(export.make_record("rte-ref-1", "lad-rte", "FINISHED", T0 + 9, tags,
                                   {"seed": "1", "task.main_metric": "m", "trainer.max_steps": "780",
                                    "student.num_layers": "3"}, {"best/m": 0.75}))
    for method, score in (("lad", 0.70), ("kd", 0.66)):  # another student: its lad is the base, never an arm
        tags = {**tags, "lad.method": f"{method}/2layer", "lad.overrides": json.dumps(["seed=1"]),
                "mlflow.source.git.commit": "c0ffee1"}
        recs.append(export.make_record(f"rte-2layer-{method}", "lad-rte", "FINISHED", T0 + 9, tags,
                                       {"seed": "1", "task.main_metric": "m", "trainer.epochs": "3",
                                        "trainer.max_steps": "-1", "student.num_layers": "2"}, {"best/m": score}))
    _page(recs, tmp_path)
    page = (tmp_path / "docs" / "results" / "rte.md").read_text()
    section = page.split("Against LAD of the same student", 1)[1]
    assert "- **2layer**, LAD − kd: +4.00 (n=1 paired)" in section and "LAD − lad:" not in section
    ce = next(line for line in section.splitlines() if line.startswith("- **3layer**, LAD − ce:"))
    assert "(n=5 paired, p=" in ce and "1: 82.20 / 80.00, 2: 81.90 / 80.00" in ce
    assert "LAD ahead" in ce  # +2 points on every seed give or take 0.2: significant even unadjusted
    ref = next(line for line in section.splitlines() if "LAD − lad (experiment=reference_rte)" in line)
    assert "+7.20 (n=1 paired)" in ref and "Per seed (LAD / lad (experiment=reference_rte)): 1: 82.20 / 75.00" in ref
    assert "commit beef123" in ref and "fewer than 2 paired seeds" in ref
    assert "**3layer**, LAD − kd" not in section and "LAD − lad-frozen" not in section  # the primary arms
    # the recipe's table reproduces with the recipe's own entry points, not the project's drivers
    assert "python train_teacher.py experiment=reference_rte\npython distil.py -m experiment=reference_rte seed=1\n" \
        in page


def test_means_favour_lad_but_nothing_significant_is_never_met(tmp_path):
    """LAD's mean is ahead of kd and pkd on every task, by less than the seed noise: undecided, not met."""
    recs = _headline_records({t: (0.005, NOISY) for t in HEADLINE_TASKS})
    rep = grouping.build_report(recs, prereg=__import__("sweeps.reporting.prereg", fromlist=["Prereg"]).Prereg(
        headline_commit="c0ffee1"))
    comps = rep.headline.comparisons
    assert len(comps) == 15 and all(c.diff.delta > 0 for c in comps)
    assert all(not c.ahead(rep.headline.prereg) for c in comps) and all(c.diff.p_adj >= 0.05 for c in comps)
    assert targets.target_wins(rep).status == targets.UNDECIDED
    page, block = _page(recs, tmp_path)
    assert _verdicts(page)[1] == "undecided (underpowered)" and "- **met**" not in page and "- **met**" not in block
    assert _verdicts(block) == _verdicts(page)  # the README block equals the page's verdicts
    assert "| rte | lad vs kd | 5 | +0.60 [" in page and "undecided (underpowered) |" in page


def test_significant_on_three_tasks_is_met(tmp_path):
    diffs = {t: (0.03, STEADY) for t in ("rte", "mrpc", "stsb")} | {t: (0.005, NOISY) for t in ("cola", "sst2")}
    page, block = _page(_headline_records(diffs), tmp_path)
    wins = next(line for line in page.splitlines() if "ahead of kd and of pkd" in line)
    assert wins.startswith("- **met** — ") and "wins: rte, mrpc, stsb;" in wins
    assert "| rte | lad vs kd | 5 | +3.00 [" in page and "| lad ahead |" in page
    assert _verdicts(block) == _verdicts(page)
    # the ratio target is descriptive, from the means: lad ~ 0.82 / 0.90 = 91 % < 97 %
    assert _verdicts(page)[0] == "not met" and "95 % interval [" in page


def test_powered_negative_is_not_met_and_states_the_mde(tmp_path):
    page, block = _page(_headline_records({t: (0.0, STEADY) for t in HEADLINE_TASKS}), tmp_path)
    wins = next(line for line in page.splitlines() if "ahead of kd and of pkd" in line)
    assert wins.startswith("- **not met** — ") and "no effect of 1 point or more was found" in wins
    assert "MDE, points: rte vs kd 0." in wins
    assert "no difference of 1 point or more (powered)" in page
    assert _verdicts(block) == _verdicts(page)


def test_zero_spread_is_reported_as_such_and_stays_undecided(tmp_path):
    page, block = _page(_headline_records({t: (0.02, (0.0,) * 5) for t in HEADLINE_TASKS}), tmp_path)
    assert "| rte | lad vs kd | 5 | +2.00 (zero spread) | – | – | – | undecided: zero spread (every seed differs by " \
           "the same amount) |" in page
    assert "p=0" not in page and "| 0.000 |" not in page
    assert _verdicts(page)[1] == "undecided (underpowered)" and _verdicts(block) == _verdicts(page)


def test_headline_takes_only_the_pinned_commit_and_five_seeds(tmp_path):
    from sweeps.reporting.prereg import Prereg

    pinned = _headline_records({t: (0.03, STEADY) for t in HEADLINE_TASKS}, seeds=(1, 2, 3), history=True)
    old = _headline_records({t: (-0.05, STEADY) for t in HEADLINE_TASKS}, commit="0dd0dd0")
    page, block = _page(pinned + old, tmp_path, Prereg(headline_commit="c0ffee1"))
    assert "## Headline — commit c0ffee1" in page and "0dd0dd0" not in page.split("## Targets")[0]
    assert "| rte | m | 90.00 | – | 83.07 ± 0.15 (n=3 < 5) |" in page  # fewer than 5 seeds: shown, not counted
    assert "undecided (n = 3 < 5 seeds)" in page and _verdicts(page) == ["undecided (underpowered)"] * 2
    rte = (tmp_path / "docs" / "results" / "rte.md").read_text()  # the old runs stay on the task page
    assert "(main) — mixed commits: c0ffee1 (15 runs), 0dd0dd0 (10 runs)\n" in rte  # latest run per cell
    assert "exploratory" in rte and "p_adj" not in rte
    assert "![learning curves]" not in page  # plots=False
    head = grouping.build_report(pinned + old, prereg=Prereg(headline_commit="c0ffee1")).headline
    lad = head.cell("rte", "lad").mean  # curve: mean over seeds at each step
    assert head.curves["rte"]["lad"] == [(10, pytest.approx(100 * lad / 3)), (20, pytest.approx(200 * lad / 3)),
                                         (30, pytest.approx(100 * lad))]
    assert set(head.curves["rte"]) == {"lad", "kd", "ce"}  # ce, kd, lad: not pkd
    unpinned, _ = _page(pinned + old, tmp_path / "u", Prereg())
    assert "The headline commit is **not pinned yet**" in unpinned


def test_the_headline_names_each_methods_setting_once_and_leaves_housekeeping_out(tmp_path):
    recs = _headline_records({t: (0.03, STEADY) for t in HEADLINE_TASKS})
    tuned = {"lad": ["optim.gate_lr=1e-05", "optim.lr=0.001"], "kd": ["loss.temperature=4"]}
    for r in recs:
        r["tags"]["lad.overrides"] = json.dumps([f"task={r['task']}", *tuned.get(r["method"], []),
                                                 "trainer.keep_after_finish=0", "trainer.eval_every=40"])
        if r["method"] == "kd" and r["task"] == "sst2":
            r["params"]["trainer.epochs"] = "1"
    page, _ = _page(recs, tmp_path)
    head = page.split("## Headline")[1].split("## Primary")[0]
    assert "| lad | epochs=3, train=full | optim.gate_lr=1e-05 optim.lr=0.001 |" in head  # once for all tasks
    assert "| kd | rte, mrpc, stsb, cola: epochs=3, train=full; sst2: epochs=1, train=full | loss.temperature=4 |" \
        in head
    assert "| pkd | epochs=3, train=full | none |" in head
    assert "keep_after_finish" not in page and "eval_every" not in head  # they leave the trained model as it is


def test_runs_differing_only_in_housekeeping_share_one_table_whose_reproduce_is_the_latest_runs():
    """Seeds recorded with and without ``trainer.keep_after_finish=0`` trained the same model: one table of
    all seeds (not two tables with one title), its commits named, its command the latest run's."""
    recs = _headline_records({t: (0.03, STEADY) for t in HEADLINE_TASKS})
    for r in recs:
        later = r.get("seed") in (4, 5)
        r["tags"]["lad.overrides"] = json.dumps([f"task={r['task']}", *(["trainer.keep_after_finish=0"] if later else [])])
        r["start_time"] = f"2026-12-0{2 if later else 1}T00:00:00Z"
        if later:
            r["tags"][model.COMMIT_TAG] = "beefed1"
    rte = [t for t in grouping.build_report(recs).tables if t.task == "rte"]
    assert len(rte) == 1
    assert {row.method: sorted(row.scores) for row in rte[0].rows}["lad"] == [1, 2, 3, 4, 5]
    assert rte[0].extras == ["trainer.keep_after_finish=0"] and rte[0].variant == ""
    assert next(r for r in rte[0].rows if r.method == "lad").commits == {"c0ffee1": 3, "beefed1": 2}


def test_the_curves_say_which_budgets_end_before_their_plateau(tmp_path):
    """Every synthetic curve climbs a third of its final score in its last interval (rising), except mrpc's
    kd (half a point: on its plateau); stsb's runs have one evaluation each (no curve)."""
    recs = _headline_records({t: (0.03, STEADY) for t in HEADLINE_TASKS}, history=True)
    for r in recs:
        if r["task"] == "mrpc" and r["method"] == "kd":
            r["history"] = [[10, 0.70], [20, 0.795], [30, 0.80]]
        if r["task"] == "stsb" and "history" in r:
            r["history"] = r["history"][-1:]
    page, _ = _page(recs, tmp_path)
    curves = page.split("## Learning curves", 1)[1].split("\n## ", 1)[0]
    assert "| task | ce | kd | lad |" in curves
    assert "| rte | +26.67 (rising) | +26.67 (rising) | +27.67 (rising) |" in curves
    assert "| mrpc | +26.67 (rising) | +0.50 (plateau) | +27.67 (rising) |" in curves
    assert "| stsb | one evaluation | one evaluation | one evaluation |" in curves
    assert "Still rising when the budget ended: rte (ce, kd, lad); mrpc (ce, lad); cola (ce, kd, lad); " \
           "sst2 (ce, kd, lad)." in curves
    assert "One evaluation per run (no curve, the plateau is not shown): stsb (ce, kd, lad)." in curves
    assert "Every budget sits on its plateau" not in curves
    for r in recs:  # every curve flat over its last interval
        if "history" in r:
            r["history"] = [[10, 0.5], [20, r["history"][-1][1]], [30, r["history"][-1][1]]]
    flat, _ = _page(recs, tmp_path / "flat")
    assert "| rte | +0.00 (plateau) | +0.00 (plateau) | +0.00 (plateau) |" in flat
    assert "Every budget sits on its plateau." in flat and "Still rising" not in flat


def test_preregistration_file_is_read_as_declared(tmp_path, capsys):
    from sweeps.reporting.prereg import Prereg, read_prereg

    pre = read_prereg(REPO / "results" / "preregistration.yaml")
    assert pre.family_size == 15 and pre.methods == ["lad", "kd", "pkd", "lad-frozen"]
    assert (pre.alpha, pre.power, pre.smallest_effect, pre.min_tasks) == (0.05, 0.8, 1.0, 3)
    assert pre.tasks == Prereg().tasks and pre.student == "3layer"
    # a missing or broken file: one error line, exit 2, nothing written
    export.write_export([], tmp_path / "runs.jsonl")
    (tmp_path / "bad.yaml").write_text("student: 3layer\n")
    for bad in ("nope.yaml", "bad.yaml"):
        capsys.readouterr()
        assert report.main(["--source", "export", "--export", str(tmp_path / "runs.jsonl"), "--prereg",
                            str(tmp_path / bad), "--out", str(tmp_path / "out/results.md")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- ablation planner
def ablation_cfg(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "sweeps" / "conf"), version_base="1.3"):
        cfg = compose("ablation", overrides=overrides)
    return cfg


def test_grid_has_only_valid_pairs():
    cells = ablation.plan_cells(ablation_cfg([]))
    assert len(cells) == 9 * 2 * 3
    pairs = {(c.method, c.gate, c.loss) for c in cells}
    assert pairs == {("lad", "lad", "lad"), ("lad-frozen", "lad", "lad"), ("lad-nogate", "none", "lad"),
                     ("lad_reverse", "lad_reverse", "lad"), ("mean", "mean", "lad"),
                     ("attention", "attention", "lad"), ("kd", "none", "kd"), ("pkd", "none", "pkd"),
                     ("ce", "none", "ce")}
    assert all(c.gate == "none" or c.loss == "lad" for c in cells)
    # the adaptivity ablation: same gate stack and hidden loss, gates kept at their init
    frozen = [c for c in cells if c.method == "lad-frozen"]
    assert frozen and all("gate.frozen=true" in c.overrides for c in frozen)
    assert not any("gate.frozen=true" in c.overrides for c in cells if c.method != "lad-frozen")
    every = ablation.plan_cells(ablation_cfg(["methods=null", "students=[3layer]", "seeds=[1]"]))
    assert sorted(c.method for c in every) == sorted(["lad", "lad-frozen", "lad_reverse", "lad_reverse-frozen",
                                                      "mean", "attention", "lad-nogate", "kd", "pkd", "ce"])
    with pytest.raises(ablation.ConfigError, match="not valid"):
        ablation.plan_cells(ablation_cfg(["methods=[lad,bogus]"]))


@pytest.fixture()
def abl_store(tmp_path, empty_db):
    return new_store(empty_db, tmp_path / "abl.db")


def fake_runner(uri: str, calls: list):
    """Records what would run and writes the FINISHED MLflow run distil.py would have made."""
    def run(pc: ablation.PlannedCell) -> int:
        calls.append(pc)
        c = pc.cell
        add_run(_client(uri), c.task, method=c.method, student=c.student, seed=c.seed, params=pc.params,
                start=1000 + len(calls))
        return 0
    return run


def test_ablation_skips_recorded_cells_and_second_run_is_empty(tmp_path, abl_store):
    over = ["task=rte", "methods=[lad,kd]", "students=[3layer]", "seeds=[1,2]", "budget.max_steps=5",
            f"mlflow.tracking_uri={abl_store}", f"export={tmp_path / 'runs.jsonl'}", f"log_dir={tmp_path / 'logs'}"]
    cfg = ablation_cfg(over)
    planned = ablation.resolve_cells(cfg, ablation.plan_cells(cfg))
    params = {(p.cell.method, p.cell.seed): p.params for p in planned}
    assert params[("lad", 1)]["trainer.max_steps"] == "5" and params[("kd", 1)]["loss.name"] == "kd"
    c = _client(abl_store)
    add_run(c, "rte", method="lad", seed=1, params=params[("lad", 1)])                           # done in MLflow
    add_run(c, "rte", method="lad", seed=2, params=params[("lad", 2)], status="FAILED")          # not done
    add_run(c, "rte", method="kd", seed=2, params={**params[("kd", 2)], "trainer.max_steps": "7"})  # other budget
    kd1 = export.make_record("exported-kd-1", "lad-rte", "FINISHED", T0,
                             {"lad.entry": "distil", "lad.task": "rte", "lad.method": "kd/3layer"},
                             {**params[("kd", 1)], "loss.temperature": "10"}, {"best/accuracy": 0.6})  # 10 == 10.0
    export.write_export([kd1], tmp_path / "runs.jsonl")

    calls: list = []
    summary = ablation.run_ablation(cfg, runner=fake_runner(abl_store, calls))
    assert [(p.cell.method, p.cell.seed) for p in calls] == [("lad", 2), ("kd", 2)]
    assert {(p.cell.method, p.cell.seed) for p in summary.skipped} == {("lad", 1), ("kd", 1)}
    cmd = calls[1].command
    assert cmd[1].endswith("distil.py")
    for item in ("task=rte", "gate=none", "loss=kd", "student=3layer", "seed=2", "trainer.max_steps=5",
                 "trainer.progress=false", "trainer.predict_test=false", f"mlflow.tracking_uri={abl_store}"):
        assert item in cmd
    assert not any(a.startswith(("overwrite=", "trainer.resume=")) for a in cmd)  # no leftover run dir

    again: list = []
    summary = ablation.run_ablation(cfg, runner=fake_runner(abl_store, again))
    assert again == [] and len(summary.skipped) == 4 and not summary.failed


def test_ablation_failed_cell_does_not_stop_the_sweep(tmp_path, abl_store):
    cfg = ablation_cfg(["task=rte", "methods=[lad,kd]", "students=[3layer]", "seeds=[1]",
                        f"mlflow.tracking_uri={abl_store}", "export=null", f"log_dir={tmp_path}"])
    seen = []
    summary = ablation.run_ablation(cfg, runner=lambda pc: seen.append(pc.cell.method) or (1 if pc.cell.method == "lad" else 0))
    assert seen == ["lad", "kd"]
    assert [p.cell.method for p in summary.failed] == ["lad"] and [p.cell.method for p in summary.ran] == ["kd"]


def test_leftover_run_dir_is_resumed_or_replaced(tmp_path):
    assert ablation.control_overrides(tmp_path / "fresh", "resume") == ()
    (tmp_path / "crashed" / "checkpoints").mkdir(parents=True)
    assert ablation.control_overrides(tmp_path / "crashed", "resume") == ("trainer.resume=true",)
    assert ablation.control_overrides(tmp_path / "crashed", "overwrite") == ("overwrite=true",)
    (tmp_path / "finished").mkdir()
    (tmp_path / "finished" / "metrics.json").write_text("{}")
    assert ablation.control_overrides(tmp_path / "finished", "resume") == ("overwrite=true",)


def test_run_dir_matches_distil_naming():
    cfg = ablation_cfg(["task=rte", "methods=[kd]", "students=[2layer]", "seeds=[3]", "budget.max_steps=10",
                        "mlflow.tracking_uri=sqlite:////tmp/x.db", 'extra=["loss.temperature=5"]'])
    (pc,) = ablation.resolve_cells(cfg, ablation.plan_cells(cfg))
    assert pc.run_dir == REPO / "outputs/distil/rte" / (
        "gate=none,loss.temperature=5,loss=kd,seed=3,student=2layer,trainer.max_steps=10,trainer.predict_test=false")
    assert pc.params["loss.temperature"] == "5" and pc.experiment == "lad-rte"
    assert ablation.override_keys(["loss.temperature=5", "paths.output_root=/x", "teacher=bert_base",
                                   "+foo.bar=1", "trainer.eval_every=50"]) == ["loss.temperature", "trainer.eval_every"]
    assert pc.tracking_uri == "sqlite:////tmp/x.db"


def test_gate_values_are_averaged_over_seeds_into_a_table():
    from sweeps.reporting.grouping import build_report
    from sweeps.reporting.markdown import render_gates

    def rec(seed, values, steps="-1"):
        return {"entry": "distil", "status": "FINISHED", "task": "rte", "method": "lad", "student": "3layer",
                "seed": seed, "tags": {}, "params": {"trainer.max_steps": steps}, "main_metric": "m",
                "metrics": {"best/m": 0.5, **{f"gate/layer_{l:02d}": v for l, v in values.items()}}}

    # the run of another budget gets its own row (gates of different budgets are never averaged)
    report = build_report([rec(1, {1: 1.0, 2: 0.25, 3: 0.5}), rec(2, {1: 1.0, 2: 0.75, 3: 0.25}),
                           rec(1, {1: 1.0, 2: 0.0, 3: 0.0}, steps="10")])
    rows = {r.label: r for r in report.gates["rte"]}
    assert set(rows) == {"lad/3layer (epochs=?, train=full)", "lad/3layer (max_steps=10, train=full)"}
    row = rows["lad/3layer (epochs=?, train=full)"]
    assert (row.n, row.values) == (2, {1: 1.0, 2: 0.5, 3: 0.375})
    text = "\n".join(render_gates(report, {}))
    assert "| lad/3layer (epochs=?, train=full) | 2 | 1.000 | 0.500 | 0.375 |" in text
    assert "moved" not in text  # no movement recorded: no movement table


def test_gate_movement_table_per_variant():
    from sweeps.reporting.grouping import build_report
    from sweeps.reporting.markdown import render_gates

    def rec(seed, move, lr):
        return {"entry": "distil", "status": "FINISHED", "task": "mrpc", "method": "lad", "student": "3layer",
                "seed": seed, "params": {"trainer.max_steps": "-1", "trainer.epochs": "3"}, "main_metric": "m",
                "tags": {"lad.overrides": json.dumps([f"optim.gate_lr={lr}"])},
                "metrics": {"best/m": 0.5, "gate/layer_02": 0.5, "gate/move/layer_02": move}}

    report = build_report([rec(1, 0.001, "1e-6"), rec(2, 0.003, "1e-6"), rec(1, 0.2, "1e-4")])
    text = "\n".join(render_gates(report, {}))
    assert "| lad/3layer (epochs=3, train=full, optim.gate_lr=1e-6) | 2 | 0.20 |" in text  # mean 0.2 %
    assert "| lad/3layer (epochs=3, train=full, optim.gate_lr=1e-4) | 1 | 20.00 |" in text


def test_readme_headline_block_is_regenerated_in_place(tmp_path):
    from sweeps.reporting.readme import README_BEGIN, README_END, refresh_readme
    from sweeps.reporting.model import Report

    readme = tmp_path / "README.md"
    readme.write_text(f"# X\n\n{README_BEGIN}\nstale numbers\n{README_END}\n\nrest\n")
    refresh_readme(readme, grouping.build_report([]), Path("docs/results.md"))
    text = readme.read_text()
    assert "stale numbers" not in text and text.endswith(f"{README_END}\n\nrest\n")
    assert "copied from [`docs/results.md`](docs/results.md)" in text and "**undecided (underpowered)**" in text
    assert "Headline commit: **not pinned yet**" in text


# ----------------------------------------------------------------------------- variants, discussion, importance
def _rec(task, method, seed, score, overrides=(), parent=None, params=None):
    p = {"seed": str(seed), "task.main_metric": "m", "trainer.max_steps": "160", "student.num_layers": "3"}
    p.update(params or {})
    tags = {"lad.entry": "distil", "lad.task": task, "lad.method": f"{method}/3layer",
            "lad.overrides": json.dumps([f"task={task}", f"seed={seed}", *overrides])}
    if parent:
        tags["mlflow.parentRunId"] = parent
    return export.make_record(f"{task}-{method}-{seed}-{len(overrides)}-{parent}-{score}", f"lad-{task}", "FINISHED",
                              T0 + seed, tags, p, {"best/m": score})


def test_extra_overrides_make_a_separate_table_and_the_default_stays_primary():
    init_off = ("student.init_embeddings=false", "student.init_classifier=false", "trainer.eval_every=40")
    recs = [_rec("mrpc", m, s, v + 0.01 * s, ("trainer.eval_every=40",)) for m, v in (("lad", 0.80), ("ce", 0.78))
            for s in (1, 2, 3)]
    recs += [_rec("mrpc", m, s, v + 0.01 * s, init_off) for m, v in (("lad", 0.70), ("ce", 0.60)) for s in (1, 2, 3)]
    rep = grouping.build_report(recs)
    assert len(rep.tables) == 2
    prim = grouping.primary_tables(rep)["mrpc"]
    assert prim.variant == "" and prim.row("lad", "3layer").mean == pytest.approx(0.82)
    (base, var), = discussion.variant_pairs(rep)
    assert base is prim and var.variant == "student.init_classifier=false student.init_embeddings=false"
    assert var.row("ce", "3layer").mean == pytest.approx(0.62)  # init-off runs are not mixed into the default
    text = "\n".join(discussion.render_discussion(rep, "mrpc"))
    # default: lad - ce = 2 points on every seed (paired: no spread at all) -> zero spread, never p = 0
    zero = "zero spread (every seed differs by the same amount)"
    assert ("- **mrpc** (max_steps=160, train=full, main; commit unrecorded), exploratory: LAD vs ce (3layer) +2.00 "
            f"(n=3 paired, {zero}): {zero}") in text
    # every table gets its comparison, the variant too
    assert ("- **mrpc** (max_steps=160, train=full, student.init_classifier=false student.init_embeddings=false; "
            f"commit unrecorded), exploratory: LAD vs ce (3layer) +10.00 (n=3 paired, {zero}): {zero}") in text
    assert f"lad/3layer -10.00 (n=3 paired, {zero}) ({zero})" in text and "ce/3layer -18.00" in text
    assert "p=0.0" not in text and "p_adj" not in text
    assert "student.init_classifier=false student.init_embeddings=false" in markdown.render_table(var, None)[0]


def test_discussion_calls_small_differences_noise():
    recs = [_rec("rte", "lad", s, v) for s, v in ((1, 0.55), (2, 0.58), (3, 0.52))]
    recs += [_rec("rte", "kd", s, v) for s, v in ((1, 0.56), (2, 0.53), (3, 0.54))]
    recs += [_rec("rte", "ce", 1, 0.50)]
    (comp_ce, comp_kd) = sorted(discussion.comparisons(grouping.build_report(recs).tables[0]), key=lambda c: c.other)
    # per-seed differences -1, +5, -2 points: mean +0.67, far from significant
    assert comp_kd.verdict == "no significant difference" and comp_kd.diff.delta == pytest.approx(0.67, abs=0.01)
    assert comp_kd.diff.lo < 0 < comp_kd.diff.hi and comp_kd.diff.p > 0.5
    assert comp_ce.verdict == "fewer than 2 paired seeds, noise unknown" and comp_ce.diff.p is None


def test_sweep_importance_is_deterministic_and_names_the_parameter_that_matters(tmp_path):
    import random

    rng = random.Random(0)
    recs = []
    for i in range(12):
        lr, temp = 10 ** rng.uniform(-5, -3), rng.uniform(1, 20)
        score = 0.5 + 0.1 * (math.log10(lr) + 5) + 0.001 * rng.random()  # lr drives the score, T does not
        recs.append(_rec("rte", "lad", 42, score, parent="p", params={
            "optim.lr": str(lr), "loss.temperature": str(temp), "loss.hidden_weight": "1000.0"}))
    rep = grouping.build_report(recs)
    (group,) = rep.sweeps
    imp = grouping.param_importances(group)
    assert set(imp) == {"optim.lr", "loss.temperature"}  # hidden_weight did not vary
    assert imp["optim.lr"] > 0.8 and imp == grouping.param_importances(group) == group.importance
    text1, _, img = _report(recs, tmp_path, "a")
    text2, _, _ = _report(recs, tmp_path, "b")
    assert text1 == text2 and "| rte | lad/3layer, max_steps=160, train=full | 12 | optim.lr: " in text1
    assert (img / "importance-rte.png").is_file() and "![rte parameter importance](../img/importance-rte.png)" in text1


def test_readme_block_is_the_pages_verdicts_and_links_the_details(tmp_path):
    from sweeps.reporting.readme import README_BEGIN, README_END, refresh_readme

    recs = [_rec("mrpc", m, s, v + 0.01 * s) for m, v in (("lad", 0.80), ("ce", 0.78)) for s in (1, 2, 3)]
    recs += [_rec("mrpc", m, s, v + 0.01 * s, ("optim.lr=7e-4",)) for m, v in (("lad", 0.85), ("ce", 0.78))
             for s in (1, 2, 3)]
    rep = grouping.build_report(recs)
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_BEGIN}\n{README_END}\n")
    refresh_readme(readme, rep, Path("docs/results.md"))
    text = readme.read_text()
    page = "\n".join(discussion.render_discussion(rep, "mrpc"))
    assert "- **mrpc**, `optim.lr=7e-4`, exploratory: lad/3layer +5.00" in page and "+5.00" not in text
    target_lines = [line for line in targets.render_targets(rep) if line.startswith("- ")]
    assert len(target_lines) == 2 and all(line in text.splitlines() for line in target_lines)
    assert "[`docs/results.md`](docs/results.md)." in text
    assert len(text.splitlines()) <= 10


def test_variant_is_compared_with_the_table_it_extends_not_with_the_primary():
    lr, init = "optim.lr=7e-4", "student.init_embeddings=false"
    recs = []
    for extras, base in (((), 0.80), ((lr,), 0.85), ((lr, init), 0.83)):
        recs += [_rec("mrpc", m, s, base + d + 0.01 * s, extras) for m, d in (("lad", 0.0), ("ce", -0.02))
                 for s in (1, 2, 3)]
    recs += [_rec("mrpc", "kd", s, 0.80, (lr,)) for s in (1, 2, 3)]  # makes the lr table the primary
    rep = grouping.build_report(recs)
    assert grouping.primary_tables(rep)["mrpc"].variant == lr
    pairs = {var.variant: base.variant for base, var in discussion.variant_pairs(rep)}
    assert pairs == {lr: "", f"{lr} {init}": lr}
    text = "\n".join(discussion.variant_lines(rep))
    assert f"- **mrpc**, `{init}` (on top of `{lr}`), exploratory: lad/3layer -2.00 (n=3 paired, zero spread" in text
    assert f"- **mrpc**, `{lr}`, exploratory: lad/3layer +5.00 (n=3 paired, zero spread" in text


def test_primary_tables_share_one_setup_across_tasks():
    """A task whose own largest table uses another setup still takes the setup common to most tasks."""
    lr = ("optim.lr=7e-4",)
    recs = [_rec(task, m, s, 0.80 + 0.01 * s, lr) for task in ("mrpc", "stsb", "rte") for m in ("lad", "kd")
            for s in (1, 2, 3)]
    # rte also has a default-lr table with more methods: on its own it would be rte's largest table
    recs += [_rec("rte", m, s, 0.55, ()) for m in ("lad", "kd", "pkd", "ce") for s in (1, 2, 3)]
    # cola has only a default-lr table: it keeps that one
    recs += [_rec("cola", m, s, 0.20, ()) for m in ("lad", "kd") for s in (1, 2)]
    prim = grouping.primary_tables(grouping.build_report(recs))
    assert {task: t.variant for task, t in prim.items()} == {
        "mrpc": lr[0], "stsb": lr[0], "rte": lr[0], "cola": ""}


def test_discussion_sets_hand_picked_parameters_next_to_the_searched_best():
    lr = ("optim.lr=7e-4",)
    recs = [_rec("mrpc", m, s, 0.80 + 0.01 * s, lr) for m in ("lad", "kd") for s in (1, 2, 3)]
    # a 5-trial lad search whose best trial used lr 8.5e-4, and a 2-trial one that is too small to quote
    recs += [_rec("mrpc", "lad", 42, score, parent="p", params={"optim.lr": str(v)})
             for score, v in ((0.70, 1e-5), (0.83, 8.5e-4), (0.75, 1e-4), (0.72, 3e-5), (0.71, 2e-5))]
    recs += [_rec("rte", "kd", 42, score, parent="q", params={"optim.lr": str(v)}) for score, v in ((0.5, 1e-3), (0.6, 2e-5))]
    # a search that kept optim.lr fixed has nothing to say about it
    recs += [_rec("stsb", "kd", 42, 0.5 + i / 100, parent="r", params={"optim.lr": "1e-4", "loss.temperature": str(i)})
             for i in range(1, 6)]
    text = "\n".join(discussion.render_context(grouping.build_report(recs)))
    assert ("- Primary tables of mrpc set `optim.lr=7e-4` for every method; the best trial of each search "
            "(≥ 5 trials, see the sweep section) had mrpc lad/3layer: optim.lr 0.00085.") in text
    assert "rte kd" not in text and "stsb kd" not in text


def test_cross_task_average_is_not_shrunk_by_a_row_run_on_one_task():
    recs = [_rec(task, m, s, 0.50 + 0.1 * i, ()) for i, task in enumerate(("rte", "mrpc", "stsb"))
            for m in ("lad", "kd") for s in (1, 2)]
    recs += [_rec("mrpc", "mean", s, 0.9, ()) for s in (1, 2)]  # a gate variant run on mrpc only
    lines = markdown.render_summary(grouping.build_report(recs))
    assert "is present: mrpc, stsb, rte; a row missing one of them has no average." in lines[2]
    lad = next(l for l in lines if l.startswith("| lad | 3layer |"))
    mean = next(l for l in lines if l.startswith("| mean | 3layer |"))
    assert lad.split("|")[-3].strip() == "60.00"  # (50 + 60 + 70) / 3
    assert mean.split("|")[-3].strip() == "–"


def test_paired_comparison_and_holm_adjustment():
    """Paired t-test and interval as scipy computes them; Holm's step-down over the page's p-values."""
    from scipy import stats

    from sweeps.stats import holm, paired

    a = {1: 0.80, 2: 0.83, 3: 0.79, 4: 0.85}
    b = {1: 0.78, 2: 0.80, 3: 0.79, 4: 0.81, 5: 0.99}  # seed 5 has no partner: left out
    d = paired(a, b)
    diffs = [2.0, 3.0, 0.0, 4.0]
    assert d.n == 4 and d.delta == pytest.approx(2.25)
    assert d.p == pytest.approx(stats.ttest_rel([0.80, 0.83, 0.79, 0.85], [0.78, 0.80, 0.79, 0.81]).pvalue)
    half = stats.t.ppf(0.975, 3) * stats.tstd(diffs) / 2
    assert (d.lo, d.hi) == (pytest.approx(2.25 - half), pytest.approx(2.25 + half))
    # a difference far from significant on its own pairs is not called; an unpaired (Welch) test would
    # not see the pairing at all
    items = [paired(a, b), paired({1: 0.5, 2: 0.6}, {1: 0.5, 2: 0.5}), paired(a, {1: 0.7, 2: 0.8, 3: 0.8, 4: 0.7})]
    ps = [x.p for x in items]
    holm(items)
    order = sorted(range(3), key=lambda i: ps[i])
    expected, running = {}, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (3 - rank) * ps[i]))
        expected[i] = running
    assert [x.p_adj for x in items] == [pytest.approx(expected[i]) for i in range(3)]
    assert items[0].p_adj >= items[0].p


def test_zero_spread_has_no_p_value_and_holm_counts_the_declared_family():
    from sweeps.stats import ZERO_SPREAD, holm, mde, paired

    same = paired({1: 0.80, 2: 0.83, 3: 0.79}, {1: 0.78, 2: 0.81, 3: 0.77})  # +2 points on every seed
    assert same.zero_spread and same.p is None and same.lo is None and same.delta == pytest.approx(2.0)
    assert same.verdict("ahead", "behind") == ZERO_SPREAD and ZERO_SPREAD in same.text() and "p=" not in same.text()
    assert mde(same, 0.05, 0.8) is None
    identical = paired({1: 0.5, 2: 0.6}, {1: 0.5, 2: 0.6})
    assert identical.zero_spread and identical.p is None
    # Holm over a declared family of 15: three tested comparisons are still multiplied by 15, 14, 13
    items = [paired({1: 0.50, 2: 0.61, 3: 0.52}, {1: 0.50, 2: 0.50, 3: 0.50}) for _ in range(3)]
    holm(items, family_size=15)
    assert items[0].p_adj == pytest.approx(min(1.0, 15 * items[0].p))
    holm([same], family_size=15)
    assert same.p_adj is None


def test_mde_is_the_paired_t_approximation():
    from scipy import stats

    from sweeps.stats import mde, paired

    d = paired({s: 0.5 + 0.01 * s * (s % 2) for s in range(1, 6)}, {s: 0.5 for s in range(1, 6)})
    want = (stats.t.ppf(1 - 0.05 / 15 / 2, 4) + stats.t.ppf(0.8, 4)) * d.sd / math.sqrt(5)
    assert mde(d, 0.05 / 15, 0.8) == pytest.approx(want)
    assert mde(d, 0.05 / 15, 0.8) > mde(d, 0.05, 0.8)  # the stricter level needs a larger difference


def test_a_teacher_published_from_an_lr_grid_is_the_grids_best_run():
    from collections import Counter

    from sweeps.reporting.model import pick_teacher, published_from

    def teacher(lr, score, start):
        return {"entry": "train_teacher", "main_metric": "accuracy", "metrics": {"best/accuracy": score},
                "start_time": start, "run_id": str(lr),
                "params": {"teacher.path": f"/s/artifacts/teacher_lr/{lr}/teachers/minilm_l6/rte"}}

    runs = [teacher("2e-05", 0.55, "1"), teacher("0.0001", 0.59, "2"), teacher("0.0002", 0.53, "3"),
            {**teacher("x", 0.60, "0"), "params": {"teacher.path": "artifacts/teachers/minilm_l6/rte"}}]
    published = "/s/artifacts/teachers/minilm_l6/rte"
    assert published_from(runs[0]["params"]["teacher.path"], published)
    assert not published_from("artifacts/teachers/minilm_l6/rte", published)
    assert pick_teacher(runs, Counter({published: 5}))["run_id"] == "0.0001"  # not the latest (0.0002)
    assert pick_teacher(runs, Counter())["run_id"] == "0.0001"  # no student yet: the grid the newest teacher is from


def test_pairs_need_one_teacher_run_and_the_teacher_is_the_mean_of_those_used(tmp_path):
    """Every machine retrains the teachers into the same folder: a student's teacher is the latest run at
    its teacher.path that started before it; a seed whose two arms had different teacher runs is left out."""
    from sweeps.reporting.model import teacher_of
    from sweeps.reporting.prereg import Prereg

    path = "/s/artifacts/teachers/minilm_l6/rte"

    def rec(run_id, entry, method, seed, score, start):
        tags = {"lad.entry": entry, "lad.task": "rte", "lad.kind": "run", "mlflow.source.git.commit": "c0ffee1",
                "lad.method": "teacher" if method == "teacher" else f"{method}/3layer"}
        return export.make_record(run_id, "lad-rte", "FINISHED", T0 + start, tags,
                                  {"seed": str(seed), "task.main_metric": "m", "trainer.max_steps": "-1",
                                   "trainer.epochs": "3", "student.num_layers": "3", "teacher.path": path},
                                  {"best/m": score}, None)

    recs = [rec("A", "train_teacher", "teacher", 42, 0.60, 100), rec("B", "train_teacher", "teacher", 42, 0.70, 200)]
    for seed in (1, 2, 3, 4, 5):  # machine A: seeds 1-4 of lad and kd; machine B: seed 5 of lad, kd seed 5 on A
        recs.append(rec(f"lad{seed}", "distil", "lad", seed, 0.55 + 0.01 * seed, 100 + seed if seed < 5 else 205))
        recs.append(rec(f"kd{seed}", "distil", "kd", seed, 0.50 + 0.02 * seed, 110 + seed))
    assert teacher_of(recs[-2], recs)["run_id"] == "B" and teacher_of(recs[-1], recs)["run_id"] == "A"
    assert teacher_of(recs[2], recs[2:]) is None
    head = grouping.build_report(recs, prereg=Prereg(headline_commit="c0ffee1", tasks=("rte",))).headline
    lad_kd = next(c for c in head.comparisons if (c.task, c.a, c.b) == ("rte", "lad", "kd"))
    assert lad_kd.diff.n == 4 and lad_kd.unpaired == 1  # seed 5: lad on teacher B, kd on teacher A
    assert head.teachers["rte"] == pytest.approx(0.65)  # the mean of the two teacher runs the cells used
    page, _ = _page(recs, tmp_path, Prereg(headline_commit="c0ffee1", tasks=("rte",)))
    assert "different teacher runs (teachers are retrained on every machine): rte lad vs kd (1)." in page


def test_a_grid_in_progress_says_how_far_it_got(tmp_path):
    from sweeps.reporting.prereg import Prereg

    (tmp_path / "tuning").mkdir()
    (tmp_path / "tuning" / "lad.json").write_text(json.dumps({"trials": [{"state": "COMPLETE"}] * 8}))
    (tmp_path / "tuning" / "kd.json").write_text(json.dumps({"trials": [{"state": "COMPLETE"}, {"state": "FAIL"}]}))
    recs = _headline_records({t: (0.03, STEADY) for t in HEADLINE_TASKS}, seeds=(1, 2, 3))
    page, block = _page(recs, tmp_path, Prereg(headline_commit="c0ffee1", tuning_dir=str(tmp_path / "tuning")))
    assert ("Grid in progress: 60 of 100 headline runs recorded; tuning (lad 8/8, kd 1/8, pkd 0/8, lad-frozen 0/8 "
            "trials).") in page
    assert "Headline runs: commit c0ffee1. Grid in progress: 60 of 100 headline runs recorded" in block  # README too
    full, _ = _page(_headline_records({t: (0.03, STEADY) for t in HEADLINE_TASKS}), tmp_path / "f",
                    Prereg(headline_commit="c0ffee1", tuning_dir=str(tmp_path / "tuning")))
    assert "Grid in progress" not in full


def test_the_headline_says_how_far_the_methods_gates_moved_and_when_they_count_as_unmoved(tmp_path):
    recs = _headline_records({t: (0.03, STEADY) for t in HEADLINE_TASKS})
    for r in recs:  # lad's gates: 0.5 % on rte (unmoved), 4 % on the other tasks; frozen gates 0
        if r["method"] in ("lad", "lad-frozen"):
            move = 0.0 if r["method"] == "lad-frozen" else (0.005 if r["task"] == "rte" else 0.04)
            r["metrics"].update({"gate/move/layer_02": move / 2, "gate/move/layer_03": move})
    page, _ = _page(recs, tmp_path)
    line = next(x for x in page.splitlines() if x.startswith("Gate movement of the lad runs"))
    assert "rte 0.50% [0.50%, 0.50%]; mrpc 4.00% [4.00%, 4.00%]" in line
    assert "On rte the median is under 1%" in line and "compares two tuned settings" in line
    moved = [r for r in recs if r["task"] != "rte" or r["method"] != "lad"]
    page, _ = _page(moved, tmp_path / "m")
    assert "under 1%" not in next(x for x in page.splitlines() if x.startswith("Gate movement of the lad runs"))


def test_ratio_target_uses_the_gap_in_points_for_the_tasks_declared_by_difference():
    """Issue 38: for CoLA and STS-B (trivial baseline 0) the % of teacher is 100 minus the gap in points,
    not a ratio of MCCs or correlations; the other tasks keep score / teacher."""
    from types import SimpleNamespace

    from sweeps.reporting.prereg import Prereg
    from sweeps.reporting.primary import ratio_of_teacher

    cells = {"rte": {1: 0.54, 2: 0.56}, "cola": {1: 0.18, 2: 0.20}}
    pre = Prereg(tasks=("rte", "cola"), ratio_by_difference=("cola",))
    head = SimpleNamespace(prereg=pre, teachers={"rte": 0.60, "cola": 0.25},
                           cell=lambda task, method: SimpleNamespace(scores=cells[task]))
    pcts, avg, ci = ratio_of_teacher(head)
    assert math.isclose(pcts["rte"], 100 * 0.55 / 0.60) and math.isclose(pcts["cola"], 100 - 6.0)
    assert math.isclose(avg, (pcts["rte"] + pcts["cola"]) / 2) and ci[0] < avg < ci[1]
    as_ratio = ratio_of_teacher(SimpleNamespace(prereg=Prereg(tasks=("rte", "cola"), ratio_by_difference=()),
                                                teachers=head.teachers, cell=head.cell))[0]
    assert math.isclose(as_ratio["cola"], 100 * 0.19 / 0.25)
    from sweeps.reporting.prereg import read_prereg

    assert read_prereg().ratio_by_difference == ("stsb", "cola")  # the committed pre-registration


def test_a_reference_recipe_teacher_is_its_own_row_and_its_students_their_own_table():
    """Issue 33: `train_teacher.py experiment=reference_rte` recorded after the project's RTE teacher does
    not replace it in the teachers table, and the reference students form their own table (own row)."""
    def rec(run_id, entry, start, overrides, path, score, method="", seed=None):
        tags = {"lad.entry": entry, "lad.task": "rte", "lad.teacher": "minilm_l6",
                "lad.overrides": json.dumps(overrides)}
        if method:
            tags["lad.method"] = method
        params = {"task.main_metric": "accuracy", "teacher.path": path, "trainer.epochs": "3"}
        if seed is not None:
            params["seed"] = str(seed)
        return export.make_record(run_id, "lad-rte", "FINISHED", T0 + start, tags, params, {"best/accuracy": score})

    project = rec("t1", "train_teacher", 0, ["task=rte"], "/a/teachers/minilm_l6/rte", 0.60)
    ref = rec("t2", "train_teacher", 10, ["experiment=reference_rte", "teacher=minilm_l6"],
              "/ref/teachers/minilm_l6/rte", 0.62)
    students = [rec("s1", "distil", 5, ["task=rte", "seed=1"], "/a/teachers/minilm_l6/rte", 0.55, "lad/3layer", 1),
                rec("s2", "distil", 20, ["experiment=reference_rte", "teacher=minilm_l6", "seed=1"],
                    "/ref/teachers/minilm_l6/rte", 0.58, "lad/6layer", 1)]
    rep = grouping.build_report([project, ref, *students])
    assert [t["run_id"] for t in rep.teachers] == ["t1", "t2"]
    text = "\n".join(markdown.render_teachers(rep, "rte"))
    assert "| 60.00 |" in text and "`python train_teacher.py task=rte teacher=minilm_l6`" in text
    assert "| 62.00 |" in text and "`python train_teacher.py experiment=reference_rte teacher=minilm_l6`" in text
    by_rows = {tuple(r.method + "/" + r.student for r in t.rows): t for t in rep.tables}
    assert set(by_rows) == {("lad/3layer",), ("lad/6layer",)}  # one table each
    assert by_rows[("lad/6layer",)].teacher_score == 0.62 and by_rows[("lad/3layer",)].teacher_score == 0.60
    assert "experiment=reference_rte" in by_rows[("lad/6layer",)].extras
