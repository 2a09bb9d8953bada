"""sweeps/tune.py: one protocol for every method, resumable, records and best settings written."""

import json

import optuna
import pytest
import yaml

from sweeps import tune

PROTOCOL = {"tasks": ["mrpc", "rte"], "trials": 3, "budget_fraction": 0.5, "sampler_seed": 0, "seed": 0,
            "budgets": {"mrpc": 3, "rte": 3}}
SPACE = {"overrides": ["gate=none", "loss=kd"],
         "space": {"optim.lr": {"low": 1e-5, "high": 1e-3, "log": True}, "loss.soft_weight": {"low": 0.1, "high": 0.9}}}


def _args(tmp_path):
    class Args:
        storage = f"sqlite:///{tmp_path}/tuning.db"
        records = str(tmp_path / "records")
        output_root = str(tmp_path / "out")
        code = str(tmp_path)
        overrides: list = []
    return Args()


def test_budget_steps_are_the_fraction_of_the_headline_budget():
    assert tune.budget_steps(3668, 3, 0.5) == 172  # MRPC: 115 steps an epoch
    assert tune.budget_steps(10, 1, 0.01) == 1


def test_soft_weight_ties_the_hard_weight_and_every_value_is_an_override():
    out = tune.overrides_for(SPACE, {"optim.lr": 2.5e-4, "loss.soft_weight": 0.3})
    assert out == ["gate=none", "loss=kd", "optim.lr=0.00025", "loss.soft_weight=0.3", "loss.hard_weight=0.7"]


def test_same_sampler_seed_same_trials_and_the_objective_is_the_task_mean(tmp_path, monkeypatch):
    seen = []

    def fake_run(number, name, method, params, protocol, steps, args):
        seen.append((name, dict(params)))
        return {"mrpc": params["optim.lr"] * 1000, "rte": 0.5}

    monkeypatch.setattr(tune, "run_trial", fake_run)
    steps = {"mrpc": 172, "rte": 117}
    rec = tune.tune_method("kd", SPACE, PROTOCOL, steps, _args(tmp_path))
    assert [t["state"] for t in rec["trials"]] == ["COMPLETE"] * 3
    best = max(rec["trials"], key=lambda t: t["value"])
    assert rec["best"]["number"] == best["number"]
    assert best["value"] == pytest.approx((best["params"]["optim.lr"] * 1000 + 0.5) / 2)
    # a second method with the same protocol draws the same first points (same sampler seed)
    rec2 = tune.tune_method("kd-again", SPACE, PROTOCOL, steps, _args(tmp_path))
    assert [t["params"] for t in rec2["trials"]] == [t["params"] for t in rec["trials"]]
    stored = json.loads((tmp_path / "records" / "kd.json").read_text())
    assert stored["sampler_seed"] == 0 and stored["steps"] == steps and len(stored["trials"]) == 3
    best_yaml = yaml.safe_load(tune.write_best(tmp_path / "records", {"kd": SPACE}).read_text())
    assert best_yaml["kd"]["overrides"][:2] == ["gate=none", "loss=kd"] and best_yaml["kd"]["trial"] == best["number"]


def test_an_interrupted_trial_runs_again_with_its_parameters_and_a_failed_run_fails_the_trial(tmp_path, monkeypatch):
    args = _args(tmp_path)
    study = optuna.create_study(study_name="tune-kd", storage=args.storage, direction="maximize")
    stale = study.ask({"optim.lr": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True),
                       "loss.soft_weight": optuna.distributions.FloatDistribution(0.1, 0.9)})
    calls = []

    def fake_run(number, name, method, params, protocol, steps, args):
        calls.append(dict(params))
        return {"mrpc": None, "rte": 0.5} if len(calls) == 2 else {"mrpc": 0.8, "rte": 0.5}

    monkeypatch.setattr(tune, "run_trial", fake_run)
    rec = tune.tune_method("kd", SPACE, {**PROTOCOL, "trials": 2}, {"mrpc": 1, "rte": 1}, args)
    assert calls[0] == stale.params  # the interrupted point first
    states = [t["state"] for t in rec["trials"]]
    assert states.count("FAIL") == 2 and states.count("COMPLETE") == 2  # the stale one + the failed run


def test_unknown_method_is_one_error_line(capsys):
    assert tune.main(["--methods", "distilbert", "--dry-run"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown method(s) distilbert")


def test_a_fresh_machine_goes_on_from_the_committed_record(tmp_path, monkeypatch):
    """The storage is lost with the machine; the record's finished trials seed the new study."""
    monkeypatch.setattr(tune, "run_trial", lambda number, name, method, params, *a: {"mrpc": params["optim.lr"] * 1000,
                                                                                      "rte": 0.5})
    steps = {"mrpc": 1, "rte": 1}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole = tune.tune_method("kd", SPACE, PROTOCOL, steps, _args(tmp_path / "a"))
    first = _args(tmp_path / "b")
    tune.tune_method("kd", SPACE, {**PROTOCOL, "trials": 2}, steps, first)
    record = json.loads((tmp_path / "b" / "records" / "kd.json").read_text())
    (tmp_path / "b" / "tuning.db").unlink()                      # a new machine: the record only
    calls = []
    monkeypatch.setattr(tune, "run_trial", lambda number, name, method, params, *a: calls.append(params) or
                        {"mrpc": params["optim.lr"] * 1000, "rte": 0.5})
    resumed = tune.tune_method("kd", SPACE, PROTOCOL, steps, first)
    assert len(calls) == 1 and [t["state"] for t in resumed["trials"]] == ["COMPLETE"] * 3
    assert [t["params"] for t in resumed["trials"][:2]] == [t["params"] for t in record["trials"]]
    assert [t["value"] for t in resumed["trials"][:2]] == [t["value"] for t in record["trials"]]
    # the same history gives the seeded sampler's same next point as an uninterrupted study
    assert resumed["trials"][2]["params"] == pytest.approx(whole["trials"][2]["params"])
    # a study that already has trials is never given the record's again
    assert tune.restore_trials(optuna.load_study(study_name="tune-kd", storage=first.storage), SPACE,
                               tmp_path / "b" / "records" / "kd.json") == 0


def test_code_without_distil_py_is_one_error_line(tmp_path, capsys):
    assert tune.main(["--code", str(tmp_path), "--dry-run"]) == 2
    assert capsys.readouterr().err == f"error: --code {tmp_path}: not a LAD checkout (no distil.py)\n"
