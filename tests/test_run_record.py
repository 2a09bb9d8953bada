"""Names, descriptions, plots and the ablation table that LAD gives its MLflow runs (lad.tracking.run_record)."""

from __future__ import annotations

from types import SimpleNamespace

from omegaconf import OmegaConf

from lad.tracking import run_record

PNG = b"\x89PNG\r\n\x1a\n"


def _cfg(**kw):
    base = {"task": {"name": "rte"}, "seed": 42, "teacher": {"name": "minilm_l6"},
            "student": {"name": "3layer"}, "gate": {"name": "lad"}, "loss": {"name": "lad"}}
    base.update(kw)
    return OmegaConf.create(base)


def test_names_say_method_task_and_seed_or_trial():
    assert run_record.display_name(_cfg()) == "lad/3layer rte seed=42"
    kd = _cfg(task={"name": "mrpc"}, gate={"name": "none"}, loss={"name": "kd"})
    assert run_record.display_name(kd, ["task=mrpc", "loss=kd", "loss.temperature=4"], trial=7) == "kd/3layer mrpc trial=7"
    teacher = OmegaConf.create({"task": {"name": "sst2"}, "seed": 1, "teacher": {"name": "minilm_l6"}})
    assert run_record.display_name(teacher) == "teacher/minilm_l6 sst2 seed=1"


def test_jobs_of_a_multirun_differ_by_their_training_overrides_only():
    over = ["task=rte", "seed=42", "loss.temperature=4", "+optim.foo=1", "trainer.num_threads=1",
            "mlflow.tracking_uri=x", "paths.output_root=o", "device=cpu", "experiment=demo"]
    assert run_record.display_name(_cfg(), over) == "lad/3layer rte seed=42 loss.temperature=4 optim.foo=1"
    long = run_record.display_name(_cfg(), [f"optim.x{i}=0.123456789" for i in range(20)])
    assert len(long) == run_record.MAX_NAME and long.endswith("…")


def test_description_holds_the_command_and_its_launcher_without_secrets():
    text = run_record.description("distil", ["task=rte", "seed=1", "mlflow.tracking_uri=postgresql://u:pw@h/db"],
                                  in_sweep=True, argv=["distil.py", "-m", "task=rte", "seed=1,2"])
    assert text.startswith("Command: `python distil.py task=rte seed=1 mlflow.tracking_uri=postgresql://u:***@h/db`")
    assert "A job of the multirun `python distil.py -m task=rte seed=1,2`" in text and "pw" not in text
    trial = run_record.description("distil", ["loss.temperature=3.5"], trial=7, argv=["sweeps/search.py", "task=rte"])
    assert trial == "Optuna trial 7 of `python sweeps/search.py task=rte`\n\nTrial overrides: `loss.temperature=3.5`"
    assert run_record.command_line("distil", ["data.data_dir=my dir"]) == "python distil.py 'data.data_dir=my dir'"


def test_plots_are_pngs_and_absent_without_data(tmp_path):
    history = [{"step": 10, "accuracy": 0.6}, {"step": 20, "accuracy": 0.7, "loss": 0.5}]
    curve = run_record.learning_curve_png(history, "accuracy", tmp_path / "c.png", "x")
    assert curve.read_bytes()[:8] == PNG
    assert run_record.learning_curve_png(history, "mcc", tmp_path / "n.png", "x") is None
    gates = run_record.gates_png({2: 0.4, 3: 0.6}, tmp_path / "g.png", "x")
    assert gates.read_bytes()[:8] == PNG and run_record.gates_png({}, tmp_path / "e.png", "x") is None


def _run(method, score, metric="accuracy", **budget):
    params = {"task.main_metric": metric, "trainer.epochs": "3", "trainer.max_steps": "-1", **budget}
    data = SimpleNamespace(tags={"lad.method": method} if method else {}, params=params,
                           metrics={f"best/{metric}": score} if score is not None else {})
    return SimpleNamespace(data=data)


def test_ablation_table_averages_each_method_and_budget_and_skips_runs_without_a_score():
    runs = [_run("lad/3layer", 0.70), _run("lad/3layer", 0.80), _run("kd/3layer", 0.72), _run("teacher", 0.9),
            _run("kd/3layer", None), _run(None, 0.99),
            _run("lad/3layer", 0.60, **{"trainer.max_steps": "8", "data.max_train_samples": "320"})]
    assert run_record.ablation_table(runs).splitlines() == [
        "| method | budget | runs | mean dev accuracy | best |", "|---|---|---:|---:|---:|",
        "| lad/3layer | 3 epochs | 2 | 0.7500 | 0.8000 |", "| kd/3layer | 3 epochs | 1 | 0.7200 | 0.7200 |",
        "| teacher | 3 epochs | 1 | 0.9000 | 0.9000 |", "| lad/3layer | 8 steps, 320 examples | 1 | 0.6000 | 0.6000 |"]
    assert run_record.ablation_table([]) == ""


def test_jobs_of_an_optuna_sweeper_are_trials_and_other_jobs_are_not(monkeypatch):
    """lad.run.cli reads the trial number (Hydra's job num) only from Optuna sweepers."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from lad.run import cli

    def context(target, mode=RunMode.MULTIRUN):
        hc = OmegaConf.create({"overrides": {"task": ["task=rte", "seed=1"]}, "sweep": {"dir": "multirun/x"},
                               "sweeper": {"_target_": target}, "job": {"num": 7}, "mode": mode})
        monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: hc))
        return cli._hydra_context()

    assert context("hydra_plugins.lad_optuna_sweeper.sweeper.LadOptunaSweeper") == (
        ["task=rte", "seed=1"], "multirun/x", 7)
    assert context("hydra._internal.core_plugins.basic_sweeper.BasicSweeper")[2] is None
    assert context("hydra_plugins.lad_optuna_sweeper.sweeper.LadOptunaSweeper", RunMode.RUN)[1:] == (None, None)
