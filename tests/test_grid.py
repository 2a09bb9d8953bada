"""sweeps/grid.py: the pre-registered grid as jobs of resumable drivers, priced from the benchmark."""

import json

import yaml

from sweeps import grid


def _bench(tmp_path):
    path = tmp_path / "performance.json"
    path.write_text(json.dumps({"results": [{"task": "mrpc", "mean_len": 50.0, "rows": {"c": {"examples_per_s": 50.0}}},
                                            {"task": "rte", "mean_len": 65.0, "rows": {"c": {"examples_per_s": 40.0}}}]}))
    return path


def test_headline_is_every_primary_method_on_every_task_with_its_tuned_setting(tmp_path, monkeypatch):
    best = tmp_path / "best.yaml"
    best.write_text(yaml.safe_dump({"lad": {"overrides": ["gate=lad", "loss=lad", "optim.lr=0.0003", "optim.gate_lr=2e-06"]},
                                    "kd": {"overrides": ["gate=none", "loss=kd", "optim.lr=0.0001"]}}))
    monkeypatch.setattr(grid, "BEST", best)
    prereg = grid.load_prereg()
    jobs = grid.plan(prereg, tmp_path / "store", ["headline"])
    assert len(jobs) == len(prereg["tasks"]) * 4
    assert {j.name.split()[1] for j in jobs} == {"lad", "kd", "pkd", "lad-frozen"}
    lad_rte = next(j for j in jobs if j.name == "rte lad")
    text = " ".join(lad_rte.cmd)
    assert "methods=['lad']" in text and "students=['3layer']" in text and "seeds=[1,2,3,4,5]" in text
    assert "'optim.lr=0.0003'" in text and "'optim.gate_lr=2e-06'" in text and "'gate=lad'" not in text
    assert f"mlflow.tracking_uri=sqlite:///{tmp_path}/store/mlruns.db" in text and "'trainer.num_threads=1'" in text
    pkd = " ".join(next(j for j in jobs if j.name == "rte pkd").cmd)
    assert "optim.lr" not in pkd  # not tuned yet: the defaults, never another method's setting
    sst2 = next(j for j in jobs if j.name == "sst2 lad")
    assert "budget.epochs=1" in sst2.cmd and len(sst2.runs) == 5


def test_every_stage_is_priced_from_the_benchmark_and_the_plan_prints_hours(tmp_path, capsys):
    assert grid.main(["plan", "--benchmark", str(_bench(tmp_path)), "--store", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    for stage in grid.STAGES:
        assert f"[grid] {stage}: " in out
    assert "CPU-h" in out and "h wall at 2 lanes" in out


def test_bad_lanes_and_a_missing_benchmark_are_one_error_line(tmp_path, capsys):
    assert grid.main(["plan", "--lanes", "0"]) == 2
    assert grid.main(["plan", "--benchmark", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: --lanes must be >= 1" and err[1].startswith("error: no benchmark at")
