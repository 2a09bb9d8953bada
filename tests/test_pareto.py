"""Accuracy-speed searches: multi-objective sweeper studies (directions list, resume, two workers),
the objectives a job returns, the shape-keyed speed cache, the pick rules on a synthetic front, and
``distil.py -m hparams_search=lad_pareto`` end to end with ``python -m lad.search.pareto pick``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from lad.run import objectives

from lad.search import pareto

from lad.core.errors import ConfigError
from lad.deploy import speed
from lad.search.pareto import Row, Rule, non_dominated, parse_rule, pick
from test_sweeper import APP, _cmd, _env, _study, app  # noqa: F401 - the toy app fixture

REPO = Path(__file__).resolve().parents[1]

MO_RETURN = "return [-(cfg.x - 2.0) ** 2, float(cfg.n)]"  # maximise closeness to 2, minimise n


def _mo_cmd(app: Path, n_trials: int, *overrides: str) -> list[str]:
    (app / "mo.py").write_text(APP.replace("return -(cfg.x - 2.0) ** 2 - 0.01 * cfg.n", MO_RETURN))
    cmd = _cmd(app, "hydra.sweeper.direction=[maximize,minimize]", "hydra/sweeper/sampler=nsgaii",
               "hydra.sweeper.sampler.population_size=2", *overrides, n_trials=n_trials)
    cmd[1] = str(app / "mo.py")
    return cmd


def _mo_run(app: Path, n_trials: int, *overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_mo_cmd(app, n_trials, *overrides), cwd=app, env=_env(), capture_output=True, text=True,
                          timeout=120)


def _expected(t) -> list[float]:
    return [-((t.params["x"] - 2.0) ** 2), float(t.params["n"])]


# --- sweeper: several objectives ------------------------------------------------------------------


def test_multi_objective_sweep_with_nsgaii_resumes_and_keeps_failures_off_the_front(app: Path) -> None:
    first = _mo_run(app, 3, "fail_on=[1]")
    assert first.returncode == 0, first.stderr
    study = _study(app)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert "Sampler optuna.samplers.NSGAIISampler" in first.stdout
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    before = [(t.number, t.params, t.values) for t in study.trials]

    more = _mo_run(app, 5)  # resume: the same study, 2 more trials, the first 3 untouched
    assert more.returncode == 0, more.stderr
    study = _study(app)
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert [(t.number, t.params, t.values) for t in study.trials[:3]] == before
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 4 and all(t.values == pytest.approx(_expected(t)) for t in done)
    front = {t.number for t in study.best_trials}
    assert 1 not in front  # the failed trial never reaches the front
    results = OmegaConf.load(app / "multirun" / "optimization_results.yaml")
    assert results.direction == ["maximize", "minimize"]
    assert {s["number"] for s in results.solutions} == front
    assert "Trial 3 finished with value [" in more.stdout
    # every trial records its run directory (lad.search.pareto exports the pick from there)
    assert all(Path(t.user_attrs["output_dir"]) == app / "multirun" / str(t.number) for t in study.trials)


def test_multi_objective_job_returning_one_value_fails_its_trial(app: Path) -> None:
    (app / "one.py").write_text(APP)
    cmd = _cmd(app, "hydra.sweeper.direction=[maximize,minimize]", n_trials=1)
    cmd[1] = str(app / "one.py")
    proc = subprocess.run(cmd, cwd=app, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    trial = _study(app).trials[0]
    assert trial.state == TrialState.FAIL
    assert "the objective must be a list of 2 numbers" in trial.user_attrs["error"]


def test_two_workers_share_one_multi_objective_study(app: Path) -> None:
    markers = app / "markers"
    markers.mkdir()
    workers = [subprocess.Popen(_mo_cmd(app, 6, "sleep=0.3", f"marker_dir={markers}"), cwd=app, env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=120) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = _study(app).trials
    assert [t.number for t in trials] == list(range(6))  # exactly max_trials, none lost or doubled
    assert all(t.state == TrialState.COMPLETE and t.values == pytest.approx(_expected(t)) for t in trials)
    assert sorted(int(p.name.split("-")[0]) for p in markers.iterdir()) == list(range(6))
    assert {p.name.split("-")[1] for p in markers.iterdir()} == {str(w.pid) for w in workers}


def test_nsgaii_sampler_group_has_upstreams_keys() -> None:
    from hydra.core.config_store import ConfigStore

    import hydra_plugins.lad_optuna_sweeper.config  # noqa: F401 - registers the group

    node = ConfigStore.instance().load("hydra/sweeper/sampler/nsgaii.yaml").node
    assert OmegaConf.to_container(node) == {
        "_target_": "optuna.samplers.NSGAIISampler", "seed": None, "population_size": 50, "mutation_prob": None,
        "crossover_prob": 0.9, "swapping_prob": 0.5, "constraints_func": None}
    from hydra.utils import instantiate

    sampler = instantiate(node, population_size=4)
    assert isinstance(sampler, optuna.samplers.NSGAIISampler)


# --- what a job returns ------------------------------------------------------------------------------


def test_objectives_default_to_the_dev_metric_and_list_both_for_pareto(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"objectives": ["metric"]})
    assert objectives.job_value(cfg, 0.8, tmp_path) == 0.8  # a number, as single-objective sweepers expect
    assert objectives.job_value(OmegaConf.create({}), 0.8, tmp_path) == 0.8
    (tmp_path / "metrics.json").write_text(json.dumps({"speed": {"value": 12.5}}))
    both = OmegaConf.create({"objectives": ["metric", "speed"], "speed": {"measure": "flops"}})
    assert objectives.job_value(both, 0.8, tmp_path) == [0.8, 12.5]
    assert objectives.directions(both) == ["maximize", "minimize"]


@pytest.mark.parametrize(("cfg", "message"), [
    ({"objectives": ["metric", "sped"]}, "objectives must be a list of distinct names"),
    ({"objectives": []}, "objectives must be a list of distinct names"),
    ({"objectives": ["metric", "metric"]}, "objectives must be a list of distinct names"),
    ({"objectives": ["metric", "speed"], "speed": {"measure": "walltime"}}, "speed.measure must be one of"),
    ({"objectives": ["metric", "speed"], "speed": {"rounds": 0}}, "speed.rounds must be an integer >= 1"),
])
def test_bad_objectives_are_one_config_error(cfg: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        objectives.names(OmegaConf.create(cfg))


def test_lad_pareto_config_composes_two_objectives_and_the_searched_student() -> None:
    from conftest import compose

    cfg = compose("distil", ["hparams_search=lad_pareto", "task=sst2"])
    assert list(cfg.objectives) == ["metric", "speed"] and cfg.speed.measure == "flops"
    from lad.search.space import parse_search_space

    space = parse_search_space(OmegaConf.to_container(OmegaConf.load(
        REPO / "conf" / "hparams_search" / "lad_pareto.yaml").hydra.sweeper.params))
    assert set(space.distributions) == {"student", "student.hidden_size", "loss.temperature", "loss.soft_weight",
                                        "loss.hidden_weight", "optim.gate_lr", "optim.lr"}
    assert set(space.distributions["student"].choices) == {"2layer", "3layer", "4layer", "6layer"}
    assert all((REPO / "conf" / "student" / f"{c}.yaml").is_file() for c in space.distributions["student"].choices)


# --- speed: measured once per shape -------------------------------------------------------------------


class _Feats:
    def __init__(self, lengths):
        import numpy as np

        self.lengths = np.asarray(lengths)

    def __len__(self) -> int:
        return len(self.lengths)


def test_a_shape_is_measured_once_and_reused(tmp_path: Path, monkeypatch) -> None:
    from conftest import save_tiny_model

    calls = []
    monkeypatch.setitem(speed.MEASURES, "flops", lambda runner, feats, s: calls.append(1) or 7.0)
    monkeypatch.setattr("lad.deploy.inference.load_cpu_model", lambda d: None)
    monkeypatch.setattr("lad.deploy.inference.torch_runner", lambda m: None)
    a = save_tiny_model(tmp_path / "a", num_layers=2, seed=0)
    b = save_tiny_model(tmp_path / "b", num_layers=2, seed=1)  # other weights, same shape
    c = save_tiny_model(tmp_path / "c", num_layers=3)
    settings = {"measure": "flops", "cache": str(tmp_path / "speed.json")}
    feats = _Feats([5, 9, 12])
    first = speed.measure_model_dir(a, feats, settings)
    second = speed.measure_model_dir(b, feats, settings)
    assert (first["cached"], second["cached"], len(calls)) == (False, True, 1)
    assert speed.measure_model_dir(c, feats, settings)["cached"] is False and len(calls) == 2
    assert speed.measure_model_dir(a, _Feats([20, 21]), settings)["cached"] is False  # another length
    stored = json.loads((tmp_path / "speed.json").read_text())
    assert {v["shape"]["num_hidden_layers"] for v in stored.values()} == {2, 3}


def test_flops_grow_with_depth_and_are_deterministic(tmp_path: Path) -> None:
    from conftest import save_tiny_model

    from lad.data.features import Features

    import numpy as np

    ids = [np.arange(101, 101 + n, dtype=np.int64) for n in (6, 8, 10)]
    feats = Features(input_ids=ids, token_type_ids=[np.zeros_like(x) for x in ids],
                     labels=np.array([0, 1, 0]), guids=["a", "b", "c"], pad_id=0)
    two = speed.measure_model_dir(save_tiny_model(tmp_path / "two", num_layers=2), feats, {"measure": "flops"})
    four = speed.measure_model_dir(save_tiny_model(tmp_path / "four", num_layers=4), feats, {"measure": "flops"})
    again = speed.measure_model_dir(tmp_path / "four", feats, {"measure": "flops"})
    assert two["seq_len"] == 8 and 0 < two["value"] < four["value"] == again["value"]


# --- the pick -----------------------------------------------------------------------------------------

FRONT = [Row(0, 0.80, 10.0), Row(1, 0.86, 20.0), Row(2, 0.895, 35.0), Row(3, 0.91, 60.0), Row(4, 0.84, 30.0)]


def test_front_is_the_non_dominated_rows() -> None:
    assert [r.number for r in non_dominated(FRONT)] == [0, 1, 2, 3]  # trial 4 is beaten by trial 1


@pytest.mark.parametrize(("rule", "teacher", "expected"), [
    ("fastest within 1.0 point of teacher", 0.90, 2),       # 0.895 >= 0.89: the fastest such
    ("Fastest within 2 points of the teacher", 0.90, 2),
    ("fastest within 5 points of teacher", 0.90, 1),
    ("fastest within 0 points of teacher", 0.91, 3),
    ("best under 20 ms", None, 1),                            # the best score at speed <= 20
    ("best score below 59.9", None, 2),
])
def test_pick_rule_on_a_synthetic_front(rule: str, teacher: float | None, expected: int) -> None:
    assert pick(non_dominated(FRONT), parse_rule(rule), teacher).number == expected


def test_pick_rule_that_no_trial_meets_names_the_nearest_miss() -> None:
    with pytest.raises(ConfigError, match=r"no trial is within 0.5 point\(s\) of the teacher's 0.9200; the best is "
                                          r"trial 3 at 0.9100 \(-1.00 points\)"):
        pick(FRONT, Rule("within", 0.5), 0.92)
    with pytest.raises(ConfigError, match="the fastest is trial 0 at 10"):
        pick(FRONT, Rule("under", 5), None)
    with pytest.raises(ConfigError, match="pass --teacher-score"):
        pick(FRONT, Rule("within", 1.0), None)
    with pytest.raises(ConfigError, match="expected 'fastest within"):
        parse_rule("smallest model please")


# --- end to end: distil.py -m hparams_search=lad_pareto, resume, pick and export ----------------------


def _tiny(tmp: Path, teacher: Path, glue: Path) -> list[str]:
    return ["task=sst2", "teacher=local", f"teacher.path={teacher}", f"data.data_dir={glue}",
            f"paths.cache={tmp / 'cache'}", f"paths.output_root={tmp / 'out'}",
            f"mlflow.tracking_uri=sqlite:///{tmp / 'mlruns.db'}", f"mlflow.artifact_location={tmp / 'mlart'}",
            "mlflow.log_model=false", "mlflow.register_teacher=false", "trainer.progress=false",
            "optim.batch_size=32", "trainer.max_steps=2", "trainer.eval_every=2", "trainer.ckpt_every=0",
            "trainer.predict_test=false", "trainer.num_threads=1", "data.bucket=false", "cache.enabled=false",
            f"hydra.sweeper.storage=sqlite:///{tmp / 'db' / 'pareto.db'}", f"hydra.sweep.dir={tmp / 'sweep'}",
            "student=choice(2layer,3layer)", "student.hidden_size=null,16"]


def _proc_env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           "TOKENIZERS_PARALLELISM": "false"}
    env.pop("HYDRA_FULL_ERROR", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def test_lad_pareto_sweep_resumes_and_its_pick_is_exported(tmp_path: Path, tiny_glue: Path,
                                                           tiny_teacher: Path) -> None:
    import shutil

    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_teacher, teacher)
    (teacher / "metrics.json").write_text(json.dumps({"main_metric": "accuracy", "best": {"accuracy": 0.75}}))
    base = [sys.executable, "distil.py", "-m", "hparams_search=lad_pareto", *_tiny(tmp_path, teacher, tiny_glue)]
    env = _proc_env()
    first = subprocess.run([*base, "hydra.sweeper.max_trials=2"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    name = "pareto-sst2-lad-flops-local-s2"
    storage = f"sqlite:///{tmp_path / 'db' / 'pareto.db'}"
    study = optuna.load_study(study_name=name, storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    second = subprocess.run([*base, "hydra.sweeper.max_trials=3"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)  # resume: one more trial in the same study
    assert second.returncode == 0, second.stderr[-3000:]
    study = optuna.load_study(study_name=name, storage=storage)
    assert len(study.trials) == 3 and all(t.state == TrialState.COMPLETE for t in study.trials)
    for t in study.trials:
        metrics = json.loads((Path(t.user_attrs["output_dir"]) / "metrics.json").read_text())
        assert t.values == [pytest.approx(metrics["best"]["accuracy"]), pytest.approx(metrics["speed"]["value"])]
        assert metrics["speed"]["teacher_score"] == 0.75 and metrics["speed"]["trivial_score"] == 0.5
        assert metrics["speed"]["value"] < metrics["speed"]["teacher"]  # a smaller student costs less
    cache = json.loads((tmp_path / "cache" / "speed.json").read_text())
    shapes = {(t.params["student"], t.params["student.hidden_size"]) for t in study.trials}
    assert len(cache) == len(shapes) + 1  # one measurement per student shape, plus the teacher's

    pick = subprocess.run([sys.executable, "-m", "lad.search.pareto", "pick", "--study", name, "--storage", storage,
                           "--rule", "fastest within 30 points of teacher", "--latency-runs", "3"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert pick.returncode == 0, pick.stdout + pick.stderr[-3000:]
    chosen = min(study.best_trials, key=lambda t: (t.values[1], -t.values[0]))
    assert f"[lad.pareto] pick (fastest within 30 point(s) of the teacher): trial {chosen.number}: " \
           f"dev accuracy {chosen.values[0]:.4f} (teacher 0.7500" in pick.stdout
    assert "x faster)" in pick.stdout
    exported = Path(pick.stdout.split("exported model (", 1)[1].split("): ", 1)[1].splitlines()[0])
    assert exported.is_file() and exported.parent == Path(chosen.user_attrs["output_dir"]) / "export"
    front_json = json.loads((tmp_path / "db" / f"{name}.front.json").read_text())
    assert front_json["pick"] == chosen.number
    assert (tmp_path / "db" / f"{name}.front.png").stat().st_size > 0
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.`{pareto.TAG}` = '{name}'")
    assert len(runs) == 1
    arts = mlflow.MlflowClient().list_artifacts(runs.iloc[0].run_id)
    assert {a.path for a in arts} == {f"{name}.front.png", f"{name}.front.json"}

    bad = subprocess.run([sys.executable, "-m", "lad.search.pareto", "pick", "--study", name, "--storage", storage,
                          "--max-latency-ms", "20"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: --max-latency-ms needs a study with speed.measure=latency; this one measures flops "
        "(MFLOPs/example): use --max-speed"]


# --- in-process search (sweeps/search.py) with two objectives ---------------------------------------


def test_in_process_search_with_two_objectives_turns_pruning_off(tmp_path: Path, tiny_teacher: Path,
                                                                  tiny_glue: Path, caplog) -> None:
    from test_search import search

    space = tmp_path / "space.yaml"
    space.write_text("hydra:\n  sweeper:\n    params:\n      student: choice(2layer, 3layer)\n"
                     "      student.hidden_size: null,16\n      optim.lr: tag(log, interval(1e-5, 1e-3))\n")
    with caplog.at_level("WARNING", logger="lad.search"):
        search(tmp_path, tiny_teacher, tiny_glue, 3, "objectives=[metric,speed]", f"search.space_file={space}",
               "search.plots=true", "search.pruner=median")
    notes = [r.getMessage() for r in caplog.records if "prune" in r.getMessage()]
    assert notes == ["search.pruner=median is off: Optuna cannot prune multi-objective trials; every trial "
                     "trains its full budget"]
    names = optuna.study.get_all_study_names(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.load_study(study_name=names[0], storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert len(study.trials) == 3
    for t in study.trials:
        metrics = json.loads((Path(t.user_attrs["output_dir"]) / "metrics.json").read_text())
        assert t.state == TrialState.COMPLETE and not t.intermediate_values
        assert t.values == [pytest.approx(metrics["best"]["accuracy"]), pytest.approx(metrics["speed"]["value"])]
    summary = json.loads((tmp_path / "search" / "search.json").read_text())
    assert {s["number"] for s in summary["solutions"]} == {t.number for t in study.best_trials}
    assert (tmp_path / "search" / "pareto.front.png").is_file()
    assert json.loads((tmp_path / "search" / "pareto.front.json").read_text())["front"] == sorted(
        (t.number for t in study.best_trials), key=lambda n: (study.trials[n].values[1], n))


# --- the docs page, generated from a recorded study -----------------------------------------------------


def test_pareto_page_is_generated_from_a_recorded_study(tmp_path: Path) -> None:
    from optuna.distributions import CategoricalDistribution

    from scripts.pareto_page import main as page_main

    storage = f"sqlite:///{tmp_path / 'pareto.db'}"
    study = optuna.create_study(study_name="p", storage=storage, directions=["maximize", "minimize"])
    study.set_user_attr("epochs", 1)
    study.set_user_attr("max_train_samples", 3000)
    dist = {"student": CategoricalDistribution(["2layer", "3layer", "4layer", "6layer"])}
    rows = [("2layer", 0.51, 5.0), ("2layer", 0.85, 10.0), ("3layer", 0.895, 15.0), ("4layer", 0.90, 20.0),
            ("6layer", 0.88, 30.0)]
    for i, (student, score, cost) in enumerate(rows):
        run = tmp_path / f"run{i}"
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"main_metric": "accuracy", "speed": {
            "measure": "flops", "unit": "MFLOPs/example", "value": cost, "teacher": 60.0, "teacher_score": 0.90,
            "trivial_score": 0.51}}))
        study.add_trial(optuna.trial.create_trial(params={"student": student}, distributions=dist,
                                                  values=[score, cost], user_attrs={"output_dir": str(run)}))
    study.add_trial(optuna.trial.create_trial(params={"student": "2layer"}, distributions=dist,
                                              state=TrialState.FAIL))
    (tmp_path / "run2" / "export").mkdir()
    (tmp_path / "run2" / "export" / "deploy.json").write_text(json.dumps({"metric": "accuracy", "machine": "cpu",
        "threads": 1, "backends": {"onnxruntime-int8": {"score": 0.894, "latency_ms_p50": 3.2,
                                                        "throughput_examples_per_s": 410.0, "size_mb": 20.0}}}))
    out = tmp_path / "docs" / "pareto.md"
    assert page_main(["--study", "p", "--storage", storage, "--out", str(out)]) == 0
    text = out.read_text()
    assert "5 finished trial(s), 4 on the Pareto front" in text  # the 6-layer trial is dominated, FAIL excluded
    assert "| 2 (pick) | 0.8950 | 15 | 4.00 | student=3layer |" in text
    assert "Budget of every trial: epochs 1, max_train_samples 3000." in text
    assert "Teacher: dev accuracy 0.9000, flops 60; trivial baseline 0.5100." in text
    assert "1 trial(s) on the front score no better than the trivial baseline" in text
    assert "| onnxruntime-int8 | 0.8940 | 3.20 | 410.0 | 20.0 |" in text
    assert (tmp_path / "docs" / "pareto.png").stat().st_size > 0


def test_sweeper_directions_that_do_not_fit_the_objectives_fail_each_trial_with_one_line(tmp_path: Path) -> None:
    teacher = tmp_path / "none"  # no teacher: without the check the trial would fail on that instead
    proc = subprocess.run(
        [sys.executable, "distil.py", "-m", "hparams_search=lad_pareto", "task=sst2", "teacher=local",
         f"teacher.path={teacher}", "objectives=[speed,metric]", "hydra.sweeper.max_trials=1",
         f"hydra.sweeper.storage=sqlite:///{tmp_path / 'p.db'}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
         f"paths.output_root={tmp_path / 'out'}", "mlflow=off"],
        cwd=REPO, env=_proc_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    study = optuna.load_study(study_name=optuna.study.get_all_study_names(f"sqlite:///{tmp_path / 'p.db'}")[0],
                              storage=f"sqlite:///{tmp_path / 'p.db'}")
    assert study.trials[0].user_attrs["error"] == (
        "ConfigError: hydra.sweeper.direction is ['maximize', 'minimize'] but objectives ['speed', 'metric'] "
        "need ['minimize', 'maximize'] (one direction per objective, in the same order)")
