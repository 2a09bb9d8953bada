"""In-process Optuna search: trials share the loaded teacher, report to Optuna, prune, resume."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import REPO, compose


def search_args(tmp: Path, teacher: Path, glue: Path, n_trials: int | str, *extra: str) -> list[str]:
    return [
        "task=sst2", "teacher=local", f"teacher.path={teacher}", "student=2layer",
        f"data.data_dir={glue}", f"paths.cache={tmp / 'cache'}", f"output_dir={tmp / 'search'}",
        f"search.storage=sqlite:///{tmp / 'optuna.db'}", "mlflow=off", "trainer.progress=false",
        "optim.batch_size=16", "trainer.max_steps=4", "trainer.eval_every=2", f"n_trials={n_trials}",
        "search.plots=false", *extra]


def search_cfg(tmp: Path, teacher: Path, glue: Path, n_trials: int, *extra: str):
    return compose("search", search_args(tmp, teacher, glue, n_trials, *extra))


def search(tmp: Path, teacher: Path, glue: Path, n_trials: int | str, *extra: str) -> float:
    """``python sweeps/search.py <args>`` in this process: the config and the overrides trials compose from."""
    from lad.search.inprocess import search_entry

    args = search_args(tmp, teacher, glue, n_trials, *extra)
    return search_entry(compose("search", args), args)


def _study(tmp: Path, name="lad-inproc-sst2-2layer-lad-lad-local-s4"):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp / 'optuna.db'}")


def test_search_runs_trials_reuses_the_teacher_and_resumes(tmp_path, tiny_teacher, tiny_glue, monkeypatch, capsys):
    import lad.models.teacher as teacher_mod
    loads = {"n": 0}
    real = teacher_mod.load_teacher

    def counting(*a, **k):
        loads["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr("lad.models.load_teacher", counting)
    best = search(tmp_path, tiny_teacher, tiny_glue, 2)
    out = capsys.readouterr().out
    # an estimate before the first trial, then each trial with the run's progress and an ETA
    assert ("[search] study lad-inproc-sst2-2layer-lad-lad-local-s4: 0 trial(s) stored, this run adds up to 2 "
            "(n_trials=2, max_trials=30)") in out
    assert "no estimate until the first trial finishes" in out
    assert "| 1/2 this run" in out and "ETA" in out and "| 2/2 this run" in out
    study = _study(tmp_path)
    assert len(study.trials) == 2 and loads["n"] == 1
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert best == pytest.approx(study.best_value)
    assert set(study.best_params) == {"loss.temperature", "loss.soft_weight", "loss.hidden_weight",
                                      "optim.gate_lr", "optim.lr"}
    # every trial reported the dev score at each evaluation
    assert all(sorted(t.intermediate_values) == [2, 4] for t in study.trials)
    best_yaml = OmegaConf.load(tmp_path / "search" / "best_sst2.yaml")
    assert "++loss.tie_hard_soft=true" in best_yaml.overrides and best_yaml.value == pytest.approx(best)
    # n_trials is what one run adds, as the Hydra sweeper's: the same command again resumes the study
    # with 2 more; max_trials caps the study's total (and says so)
    search(tmp_path, tiny_teacher, tiny_glue, 2)
    assert len(_study(tmp_path).trials) == 4
    search(tmp_path, tiny_teacher, tiny_glue, 3, "max_trials=5")
    out = capsys.readouterr().out
    assert "4 trial(s) stored, this run adds up to 1 (n_trials=3, max_trials=5); estimate " in out
    assert "[search] max_trials=5 is the study's total: raise it to add more" in out
    search(tmp_path, tiny_teacher, tiny_glue, "null", "max_trials=5")  # resumes up to the total: nothing left
    assert "5 trial(s) stored, this run adds up to 0 (n_trials=null, max_trials=5)" in capsys.readouterr().out
    numbers = [t.number for t in _study(tmp_path).trials]
    assert numbers == [0, 1, 2, 3, 4]


def test_pruner_stops_trials_at_an_evaluation(tmp_path, tiny_teacher, tiny_glue, monkeypatch):
    import optuna

    monkeypatch.setattr("lad.search.inprocess.make_pruner", lambda cfg: optuna.pruners.ThresholdPruner(upper=-1.0))
    search(tmp_path, tiny_teacher, tiny_glue, 2)
    trials = _study(tmp_path).trials
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    assert all(list(t.intermediate_values) == [2] for t in trials)  # stopped at the first eval


def test_prune_on_loss_reports_minus_the_dev_loss(tmp_path, tiny_teacher, tiny_glue):
    import json

    search(tmp_path, tiny_teacher, tiny_glue, 1, "search.prune_on=loss")
    trial = _study(tmp_path).trials[0]
    history = json.loads((tmp_path / "search" / "trial-000" / "metrics.json").read_text())["history"]
    assert [h["step"] for h in history] == sorted(trial.intermediate_values) == [2, 4]
    for h in history:
        assert h["loss"] > 0 and trial.intermediate_values[h["step"]] == pytest.approx(-h["loss"])
    assert trial.value == pytest.approx(max(h["accuracy"] for h in history))  # the objective stays the metric
    # the study remembers what its trials report: resuming it with the metric would mix the two scales
    from lad.core.errors import ConfigError

    with pytest.raises(ConfigError, match="was run with search.prune_on=loss"):
        search(tmp_path, tiny_teacher, tiny_glue, 2)
    assert len(_study(tmp_path).trials) == 1


def _task(name: str):
    from lad.data.tasks import TaskSpec

    return TaskSpec.from_config(compose("distil", [f"task={name}"]).task)


def test_prune_value_averages_the_eval_splits():
    from lad.search.pruning import prune_value

    mnli = _task("mnli")
    metrics = {"accuracy_m": 0.7, "accuracy_mm": 0.6, "loss_m": 0.5, "loss_mm": 0.7}
    assert prune_value(metrics, mnli, "metric") == 0.7
    assert prune_value(metrics, mnli, "loss") == pytest.approx(-0.6)
    assert prune_value(metrics, mnli, "accuracy") == pytest.approx(0.65)
    # MRPC logs f1, accuracy and their mean: "f1" must not pick up "f1_acc_mean"
    mrpc = _task("mrpc")
    metrics = {"f1": 0.81, "accuracy": 0.68, "f1_acc_mean": 0.745, "loss": 0.6}
    assert prune_value(metrics, mrpc, "metric") == 0.81
    assert prune_value(metrics, mrpc, "f1") == 0.81
    assert prune_value(metrics, mrpc, "accuracy") == 0.68
    assert prune_value(metrics, mrpc, "f1_acc_mean") == 0.745


def test_prune_keys_are_the_metrics_the_task_logs():
    from lad.search.pruning import prune_keys

    assert prune_keys(_task("mrpc")) == ("metric", "loss", "f1", "accuracy", "f1_acc_mean")
    assert prune_keys(_task("stsb")) == ("metric", "loss", "pearson", "spearman", "corr_mean")
    assert prune_keys(_task("cola")) == ("metric", "loss", "mcc")


def test_prune_on_a_metric_reports_it_and_keeps_every_evaluation(tmp_path, tiny_teacher, tiny_glue):
    import json

    search(tmp_path, tiny_teacher, tiny_glue, 1, "search.prune_on=accuracy")
    trial = _study(tmp_path).trials[0]
    history = json.loads((tmp_path / "search" / "trial-000" / "metrics.json").read_text())["history"]
    assert sorted(trial.intermediate_values) == [h["step"] for h in history] == [2, 4]
    for h in history:
        assert trial.intermediate_values[h["step"]] == pytest.approx(h["accuracy"])
        # the trial keeps all dev metrics of each evaluation, whatever it reported
        kept = trial.user_attrs[f"dev@{h['step']}"]
        assert kept == pytest.approx({k: v for k, v in h.items() if k != "step" and not k.startswith("gate/")})
        assert set(kept) >= {"accuracy", "loss"}


def test_best_overrides_are_complete_and_self_contained():
    """search.yaml's own settings, the search's overrides (an experiment included, never folded into
    an ``override /experiment`` of a file of its own) and the trial's values; no search keys."""
    from lad.core.config import CONF_DIR
    from lad.search.results import best_overrides
    from lad.search.trials import load_space

    base = ["task=rte", "experiment=reference_rte", "search.pruner=none", "n_trials=3", "trainer.eval_every=5",
            "++search.params.gate='choice(lad,mean)'"]
    space = load_space(str(CONF_DIR / "hparams_search" / "lad_optuna.yaml"), {"gate": "choice(lad,mean)"})
    params = {"loss.temperature": 4.5, "loss.soft_weight": 0.5, "loss.hidden_weight": 10.0, "optim.gate_lr": 1e-5,
              "optim.lr": 2e-4, "gate": "mean"}
    got = best_overrides(base, space, params)
    assert got[:4] == ["++loss.tie_hard_soft=true", "trainer.eval_every=5", "++trainer.ckpt_every=0",
                       "++trainer.predict_test=false"]
    assert {"task=rte", "experiment=reference_rte", "gate=mean", "loss.temperature=4.5", "optim.lr=0.0002"} <= set(got)
    assert not [o for o in got if o.split("=")[0].lstrip("+").startswith(("search", "n_trials", "hydra"))]


def test_unknown_pruner_is_a_config_error(tmp_path, tiny_teacher, tiny_glue):
    from lad.core.errors import ConfigError

    with pytest.raises(ConfigError, match="search.pruner must be one of"):
        search(tmp_path, tiny_teacher, tiny_glue, 1, "search.pruner=bogus")
    with pytest.raises(ConfigError, match="search.prune_on must be one of metric, loss, accuracy for task sst2"):
        search(tmp_path, tiny_teacher, tiny_glue, 1, "search.prune_on=f1")
    with pytest.raises(ConfigError, match=r"search.params.gate: no option 'meen' in conf/gate/ \(options: attention, lad"):
        search(tmp_path, tiny_teacher, tiny_glue, 1, "++search.params.gate='choice(lad,meen)'")
    with pytest.raises(ConfigError, match=r"teacher.path .*nowhere does not exist: fine-tune one first"):
        search(tmp_path, tmp_path / "nowhere", tiny_glue, 1)
    assert not (tmp_path / "optuna.db").exists()  # all rejected before a study is created


def test_search_script_takes_command_line_sweeps_and_reports_a_bad_choice(tmp_path, tiny_teacher, tiny_glue):
    """``python sweeps/search.py`` runs as documented (no path set-up); a command-line sweep joins
    the search space, and a group choice that does not exist is one error line, exit status 2."""
    args = search_args(tmp_path, tiny_teacher, tiny_glue, 1)
    proc = subprocess.run([sys.executable, str(REPO / "sweeps" / "search.py"), *args, "gate=choice(lad,meen)"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: search.params.gate: no option 'meen' in conf/gate/ "
                      "(options: attention, lad, lad_reverse, mean, none)"], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "optuna.db").exists()


@pytest.mark.slow
def test_two_worker_processes_share_one_study(tmp_path, tiny_teacher, tiny_glue):
    args = [sys.executable, "sweeps/search.py", "task=sst2", "teacher=local", f"teacher.path={tiny_teacher}",
            "student=2layer", f"data.data_dir={tiny_glue}", f"paths.cache={tmp_path / 'cache'}",
            f"search.storage=sqlite:///{tmp_path / 'optuna.db'}", "mlflow=off", "trainer.progress=false",
            "optim.batch_size=16", "trainer.max_steps=2", "trainer.eval_every=2", "max_trials=6",
            "search.plots=false"]
    workers = [subprocess.Popen(args + [f"paths.output_root={tmp_path / f'w{i}'}"], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [w.communicate(timeout=600) for w in workers]
    for w, (_, err) in zip(workers, outs):
        assert w.returncode == 0, err[-3000:]
    trials = _study(tmp_path, "lad-inproc-sst2-2layer-lad-lad-local-s2").trials  # the budget names the study
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state.name == "COMPLETE" for t in trials)
    ran = [sum(1 for line in out.splitlines() if line.startswith("[search] trial")) for out, _ in outs]
    assert sum(ran) == 6


def test_kd_space_and_halving_pruner(tmp_path, tiny_teacher, tiny_glue):
    """search.space=kd_optuna searches only KD's knobs; halving's first rung sits at the first evaluation."""
    import optuna

    from lad.search.pruning import make_pruner

    cfg = search_cfg(tmp_path, tiny_teacher, tiny_glue, 2, "search.space=kd_optuna", "loss=kd", "gate=none",
                     "search.pruner=halving", "search.reduction_factor=2")
    pruner = make_pruner(cfg.search)
    assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)
    assert (pruner._min_resource, pruner._reduction_factor) == (2, 2)  # min_resource = trainer.eval_every
    search(tmp_path, tiny_teacher, tiny_glue, 2, "search.space=kd_optuna", "loss=kd", "gate=none",
           "search.pruner=halving", "search.reduction_factor=2")
    study = _study(tmp_path, "lad-inproc-sst2-2layer-none-kd-local-s4")
    assert len(study.trials) == 2
    assert all(set(t.params) == {"loss.temperature", "loss.soft_weight", "optim.lr"} for t in study.trials)


def test_bad_min_resource_is_a_config_error(tmp_path, tiny_teacher, tiny_glue):
    from lad.core.errors import ConfigError
    from lad.search.pruning import make_pruner

    cfg = search_cfg(tmp_path, tiny_teacher, tiny_glue, 1, "search.pruner=hyperband", "search.min_resource=0")
    with pytest.raises(ConfigError, match="search.min_resource must be >= 1 or auto"):
        make_pruner(cfg.search)


def test_median_warmup_counts_evaluations_not_steps(tmp_path, tiny_teacher, tiny_glue):
    from lad.search.pruning import make_pruner

    # trials report at steps 2, 4, ...: warmup_evals=1 protects the report at step 2 only
    pruner = make_pruner(search_cfg(tmp_path, tiny_teacher, tiny_glue, 1, "search.warmup_evals=1").search)
    assert pruner._n_warmup_steps == 3
    assert make_pruner(search_cfg(tmp_path, tiny_teacher, tiny_glue, 1, "search.warmup_evals=0").search)._n_warmup_steps == 0


def test_group_choices_are_searched_and_the_best_file_reproduces_the_score(tmp_path, tiny_teacher, tiny_glue):
    """Trials are composed by Hydra: gate=... and loss=... select their group files; the written
    best_<task>.yaml carries the teacher and the budget, and running it gives the recorded score."""
    from omegaconf import OmegaConf

    from lad.run.pipeline import run
    from lad.search.trials import sweep_arguments_as_params

    # as typed after `python sweeps/search.py`: command-line sweeps join the search space
    extra = sweep_arguments_as_params(["gate=choice(mean)", "loss=choice(kd)", "search.pruner=none"])
    assert extra[0] == "++search.params.gate='choice(mean)'"
    best = search(tmp_path, tiny_teacher, tiny_glue, 1, *extra)
    trial = _study(tmp_path).trials[0]
    assert trial.params["gate"] == "mean" and trial.params["loss"] == "kd"
    used = OmegaConf.load(tmp_path / "search" / "trial-000" / "config.yaml")
    assert used.gate.name == "mean" and used.loss.name == "kd"  # the group files, not plain strings
    assert used.loss.temperature == pytest.approx(trial.params["loss.temperature"])

    record = OmegaConf.load(tmp_path / "search" / "best_sst2.yaml")
    assert record.value == pytest.approx(best) and record.command.startswith("python distil.py ")
    assert {"teacher=local", f"teacher.path={tiny_teacher}", "trainer.max_steps=4", "trainer.eval_every=2",
            "optim.batch_size=16", f"data.data_dir={tiny_glue}", "gate=mean", "loss=kd",
            "++loss.tie_hard_soft=true"} <= set(record.overrides)
    # the printed command as typed: its overrides, composed by distil.py, score what the trial scored
    argv = shlex.split(record.command)
    assert argv[:2] == ["python", "distil.py"] and argv[2:] == list(record.overrides)
    cfg = compose("distil", [*argv[2:], f"output_dir={tmp_path / 'rerun'}", f"paths.cache={tmp_path / 'cache'}"])
    assert cfg.gate.name == "mean" and cfg.loss.name == "kd" and cfg.teacher.name == "local"
    assert run(cfg) == pytest.approx(best, abs=1e-6)


def test_each_trial_run_is_named_by_its_trial_number(tmp_path, tiny_teacher, tiny_glue, monkeypatch):
    """The MLflow run of trial N is called '<method> <task> trial=N' (lad.tracking.run_record.display_name)."""
    from lad.search.inprocess import search_entry
    from lad.tracking.run_record import display_name

    seen = []

    def fake_run(cfg, overrides=None, sweep_dir=None, memo=None, on_eval=None, trial=None):
        seen.append((trial, cfg.mlflow.run_name, display_name(cfg, overrides, trial)))
        return 0.5 + 0.1 * trial

    monkeypatch.setattr("lad.run.pipeline.run", fake_run)
    search_entry(search_cfg(tmp_path, tiny_teacher, tiny_glue, 2))
    assert [(t, name) for t, name, _ in seen] == [(0, None), (1, None)]  # no run_name set: named per trial
    assert [display.split()[-1] for _, _, display in seen] == ["trial=0", "trial=1"]
    assert all(display.startswith("lad/") for _, _, display in seen)
