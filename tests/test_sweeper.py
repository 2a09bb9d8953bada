"""Tests of the LAD Optuna sweeper plugin (hydra/sweeper=lad_optuna).

End-to-end tests run a tiny standalone Hydra app in a subprocess, with the
study stored in a SQLite file under tmp_path, then inspect the study with Optuna.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("hydra_plugins.lad_optuna_sweeper") is None:  # before `pip install -e .`
    sys.path.insert(0, str(REPO))

from lad.core.errors import StudyError  # noqa: E402
from lad.search import studies as sweeper_study  # noqa: E402
from lad.search.space import parse_search_space  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)

APP = textwrap.dedent(
    """
    import os, time
    from pathlib import Path
    import hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(version_base=None, config_path="conf", config_name="config")
    def main(cfg) -> float:
        num = HydraConfig.get().job.num
        if cfg.marker_dir:
            Path(cfg.marker_dir, f"{num}-{os.getpid()}").touch()
        time.sleep(cfg.sleep)
        if num in cfg.fail_on or "all" in cfg.fail_on:
            raise RuntimeError(f"boom in job {num}")
        return -(cfg.x - 2.0) ** 2 - 0.01 * cfg.n

    if __name__ == "__main__":
        main()
    """
)

CONFIG = "x: 0.0\nn: 1\nc: a\nsleep: 0.0\nfail_on: []\nmarker_dir: null\n"


@pytest.fixture()
def app(tmp_path: Path) -> Path:
    """Directory holding app.py and conf/config.yaml."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(CONFIG)
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def _cmd(app: Path, *overrides: str, study: str = "s", n_trials: int = 2) -> list[str]:
    """The project's settings (conf/hparams_search/*.yaml): a study total, maximise, one job per batch,
    failures recorded and the sweep goes on."""
    return [
        sys.executable, str(app / "app.py"), "-m",
        "hydra/sweeper=lad_optuna",
        f"hydra.sweeper.storage=sqlite:///{app}/db/optuna.db",
        f"hydra.sweeper.study_name={study}",
        "hydra.sweeper.n_trials=null",
        f"hydra.sweeper.max_trials={n_trials}",
        "hydra.sweeper.direction=maximize",
        "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.max_failure_rate=1.0",
        "hydra.sweeper.sampler.seed=123",
        f"hydra.sweep.dir={app}/multirun",
        "x=interval(0, 4)",
        "n=range(1, 4)",
        "c=choice(a, b)",
        *overrides,
    ]  # fmt: skip


def _run(app: Path, *overrides: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _cmd(app, *overrides, **kwargs),  # type: ignore[arg-type]
        cwd=app, env=_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _study(app: Path, name: str = "s") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{app}/db/optuna.db")


def _states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


# --- search space (in process) -------------------------------------------------


def test_search_space_maps_hydra_sweeps_to_optuna_distributions() -> None:
    space = parse_search_space(
        {"a": "interval(1, 20)", "b": "tag(log, interval(1e-7, 1e-4))", "fixed": 3},
        ["c=range(2, 10, 4)", "d=choice(x, 1, 2.5)", "e=tag(int, interval(1.5, 9))", "+f=z,w", "g=7", "a=interval(2, 3)",
         "h=range(0.0, 1.0, 0.25)"],
    )  # fmt: skip
    d = space.distributions
    assert d["a"] == FloatDistribution(2.0, 3.0)  # command line wins over params
    assert d["b"] == FloatDistribution(1e-7, 1e-4, log=True)
    assert d["c"] == IntDistribution(2, 10, step=4)  # 2, 6, 10: the end is included (upstream)
    assert d["d"] == CategoricalDistribution(["x", 1, 2.5])
    assert d["e"] == IntDistribution(2, 9)  # project addition: tag(int, ...) rounds inwards
    assert d["f"] == CategoricalDistribution(["z", "w"])
    assert d["h"] == FloatDistribution(0.0, 1.0, step=0.25)
    assert space.fixed == ["fixed=3", "g=7"]
    overrides = space.overrides_for({"a": 2.5, "b": 1e-5, "c": 6, "d": 2.5, "e": 4, "f": "w", "h": 0.5})
    assert overrides == ["fixed=3", "g=7", "a=2.5", "b=1e-05", "c=6", "d=2.5", "e=4", "+f=w", "h=0.5"]
    assert list(d) == ["a", "b", "c", "d", "e", "f", "h"]


@pytest.mark.parametrize(
    ("sweep", "expected"),
    [
        ("int(interval(1, 5))", IntDistribution(1, 5)),  # upstream: integer bounds -> integer distribution
        ("tag(log, int(interval(1, 64)))", IntDistribution(1, 64, log=True)),
        ("interval(1, 5)", FloatDistribution(1.0, 5.0)),  # Hydra's interval() has float bounds
        ("range(1, 3)", IntDistribution(1, 3)),  # upstream: 1, 2 and 3
        ("range(1, 3, step=2)", IntDistribution(1, 3, step=2)),
        ("range(0.5, 1.5, 0.5)", FloatDistribution(0.5, 1.5, step=0.5)),
        ("shuffle(range(1, 4))", CategoricalDistribution([1, 2, 3])),  # upstream: Python's range values
        ("choice(lad, mean)", CategoricalDistribution(["lad", "mean"])),
    ],
)
def test_search_space_has_upstream_meanings(sweep: str, expected: object) -> None:
    got = parse_search_space({}, [f"k={sweep}"]).distributions["k"]
    if isinstance(expected, CategoricalDistribution):  # shuffle() shuffles the choices
        assert isinstance(got, CategoricalDistribution) and sorted(map(str, got.choices)) == sorted(
            map(str, expected.choices))
    else:
        assert got == expected


def test_search_space_flattens_nested_params_and_lists_grid_values() -> None:
    space = parse_search_space({"loss": {"temperature": "range(1, 3)"}, "gate": "choice(lad, mean)"})
    assert space.distributions == {"loss.temperature": IntDistribution(1, 3),
                                   "gate": CategoricalDistribution(["lad", "mean"])}
    assert space.grid() == {"loss.temperature": [1, 2, 3], "gate": ["lad", "mean"]}
    assert space.overrides_for({"loss.temperature": 2, "gate": "mean", "extra": 0.5}) == [
        "loss.temperature=2", "gate=mean", "extra=0.5"]  # extra: from a custom_search_space function
    with pytest.raises(StudyError, match="grid sampler needs discrete values for 'x'"):
        parse_search_space({"x": "interval(0, 1)"}).grid()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("x=tag(foo, interval(0, 1))", "unknown tag"),
        ("x=range(5, 1)", "empty range"),
        ("x=range(1, 5, step=-1)", "needs a positive step"),
        ("x=interval(3, 1)", "invalid search range for 'x'"),
        ("x=tag(log, choice(1, 2))", "need interval() or range()"),
        ("x=tag(log, range(0.0, 1.0, 0.5))", "tag(log) cannot be used"),
    ],
)
def test_search_space_rejects_bad_sweeps(override: str, message: str) -> None:
    with pytest.raises(StudyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_search_space({}, [override])


def test_existing_study_with_other_direction_is_rejected(tmp_path: Path) -> None:
    storage = sweeper_study.open_storage(f"sqlite:///{tmp_path}/sub/o.db", 60, None)  # creates sub/
    sweeper_study.open_study(storage, "s", ["maximize"], None)
    assert sweeper_study.open_study(storage, "s", ["maximize"], None).direction.name == "MAXIMIZE"
    with pytest.raises(StudyError, match="already exists with direction maximize, not minimize"):
        sweeper_study.open_study(storage, "s", ["minimize"], None)


def test_lad_search_config_defines_the_lad_search_space() -> None:
    from lad.core.config import load_with_bases

    base = OmegaConf.load(REPO / "conf" / "hparams_search" / "default.yaml")  # what the searches share
    assert {"override /hydra/sweeper": "lad_optuna"} in list(base.defaults)
    assert list(OmegaConf.load(REPO / "conf" / "hparams_search" / "lad_optuna.yaml").defaults) == ["default", "_self_"]
    cfg = load_with_bases(REPO / "conf" / "hparams_search" / "lad_optuna.yaml")
    assert cfg.loss.tie_hard_soft is True
    sweeper = cfg.hydra.sweeper
    # upstream keys set to the project's meanings: a study total, maximise, failures recorded
    assert sweeper.direction == "maximize" and sweeper.n_trials is None and sweeper.max_trials == 20
    assert sweeper.n_jobs == 1 and sweeper.max_failure_rate == 1.0
    assert "_target_" not in sweeper.sampler  # from the hydra/sweeper/sampler group (tpe)
    raw = OmegaConf.to_container(sweeper)  # not resolved: ${hydra.runtime.cwd}, ${seed}
    assert raw["sampler"]["seed"] is not None
    assert raw["storage"].startswith("sqlite:///")
    space = parse_search_space(OmegaConf.to_container(sweeper.params), [])
    assert space.distributions == {
        "loss.temperature": FloatDistribution(1.0, 20.0),
        "loss.soft_weight": FloatDistribution(0.1, 0.9),
        "loss.hidden_weight": FloatDistribution(1.0, 2000.0, log=True),
        "optim.gate_lr": FloatDistribution(1e-7, 1e-4, log=True),
        "optim.lr": FloatDistribution(1e-5, 1e-3, log=True),
    }


def test_lad_search_config_composes_with_distil_config() -> None:
    from hydra import compose, initialize_config_dir

    from lad.core.config import register_resolvers

    register_resolvers()  # ${lad_budget:} as distil.py has it
    with initialize_config_dir(version_base=None, config_dir=str(REPO / "conf")):
        cfg = compose("distil", overrides=["hparams_search=lad_optuna"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.lad_optuna_sweeper.sweeper.LadOptunaSweeper"
    assert cfg.loss.tie_hard_soft is True
    for key in cfg.hydra.sweeper.params:  # every searched key exists in the composed config
        assert isinstance(OmegaConf.select(cfg, key, throw_on_missing=True), (int, float)), key
    # the study is named and recorded with the teacher and the training budget (issue 23)
    assert cfg.hydra.sweeper.study_name == "lad-rte-3layer-lad-minilm_l6-e3"
    assert cfg.hydra.sweeper.study_attrs == {"teacher": "minilm_l6", "epochs": 3, "max_steps": -1,
                                             "max_train_samples": None}
    with initialize_config_dir(version_base=None, config_dir=str(REPO / "conf")):
        capped = compose("distil", overrides=["hparams_search=kd_optuna", "trainer.max_steps=200",
                                              "data.max_train_samples=500"], return_hydra_config=True)
    assert capped.hydra.sweeper.study_name == "kd-rte-3layer-minilm_l6-s200-n500"


def _race_for_trials(db: Path, name: str, lock: Path | None, n_trials: int) -> list[int]:
    """Two threads (own storages, same SQLite file) reserve trials at the same moment."""
    url = f"sqlite:///{db}"
    optuna.create_study(storage=url, study_name=name)
    barrier = threading.Barrier(2)

    def slow_ask(study: optuna.Study) -> optuna.Trial:
        time.sleep(0.2)  # widen the window between counting and creating
        return study.ask()

    def worker() -> None:
        study = optuna.load_study(study_name=name, storage=sweeper_study.open_storage(url, 60, None))
        barrier.wait()
        while sweeper_study.reserve_trials(study, lock, 1, n_trials, lambda _n: slow_ask(study)):
            pass

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return [t.number for t in optuna.load_study(study_name=name, storage=url).trials]


def test_trial_reservation_lock_keeps_concurrent_workers_at_n_trials(tmp_path: Path) -> None:
    db = tmp_path / "optuna.db"
    assert _race_for_trials(db, "locked", sweeper_study.lock_path(f"sqlite:///{db}"), 3) == [0, 1, 2]
    # Control: the same race without the lock overshoots, so the assertion above is meaningful.
    assert len(_race_for_trials(db, "unlocked", None, 1)) == 2


# --- end to end (subprocess) ---------------------------------------------------


def test_sweep_runs_trials_and_resumes_the_stored_study(app: Path) -> None:
    first = _run(app, n_trials=2)
    assert first.returncode == 0, first.stderr
    study = _study(app)
    assert _states(study) == ["COMPLETE", "COMPLETE"]
    before = [(t.number, t.params, t.value) for t in study.trials]
    assert all(t.value == pytest.approx(-((t.params["x"] - 2) ** 2) - 0.01 * t.params["n"]) for t in study.trials)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert sorted(p.name for p in (app / "multirun").iterdir() if p.is_dir()) == ["0", "1"]

    again = _run(app, n_trials=2)  # target already reached: nothing new
    assert again.returncode == 0, again.stderr
    assert len(_study(app).trials) == 2

    more = _run(app, n_trials=4)  # resume: 2 more, earlier trials untouched
    assert more.returncode == 0, more.stderr
    study = _study(app)
    assert _states(study) == ["COMPLETE"] * 4
    assert [(t.number, t.params, t.value) for t in study.trials[:2]] == before
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert study.trials[2].params != study.trials[0].params  # seeded sampler does not replay
    results = OmegaConf.load(app / "multirun" / "optimization_results.yaml")
    assert results.n_trials == 4 and results.best_value == pytest.approx(study.best_value)


def test_failing_job_is_recorded_as_fail_and_sweep_continues(app: Path) -> None:
    proc = _run(app, "fail_on=[1]", n_trials=3)
    assert proc.returncode == 0, proc.stderr
    trials = _study(app).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["error"] == "RuntimeError: boom in job 1"


def test_sweep_where_every_job_fails_exits_nonzero(app: Path) -> None:
    proc = _run(app, "fail_on=[all]", n_trials=2)
    assert proc.returncode != 0
    assert "all 2 trial(s) of this sweep failed; first: trial 0: RuntimeError: boom in job 0" in proc.stderr
    assert _states(_study(app)) == ["FAIL", "FAIL"]


def test_malformed_storage_url_gives_one_clear_line(app: Path) -> None:
    url = "bogus://nowhere/db"
    cmd = [a for a in _cmd(app) if not a.startswith("hydra.sweeper.storage=")]
    proc = subprocess.run(
        [*cmd, f"hydra.sweeper.storage={url}"], cwd=app, env=_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "cannot open Optuna storage" in line]
    assert len(lines) == 1 and url in lines[0], proc.stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [("not a url", "'not a url'"), ("mysql://u:secret@h:xx/d", "'mysql://u:***@h:xx/d'")],
)
def test_unparsable_storage_url_is_reported_without_password(url: str, shown: str) -> None:
    with pytest.raises(StudyError, match="cannot open Optuna storage") as info:
        sweeper_study.lock_path(url)
        sweeper_study.open_storage(url, 60, None)
    assert shown in str(info.value) and "secret" not in str(info.value)
    assert "\n" not in str(info.value)


def test_two_workers_share_one_study_without_losing_or_duplicating_trials(app: Path) -> None:
    markers = app / "markers"
    markers.mkdir()
    args = ("sleep=0.3", f"marker_dir={markers}")
    workers = [
        subprocess.Popen(
            _cmd(app, *args, n_trials=6), cwd=app, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=60) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = _study(app).trials
    assert [t.number for t in trials] == list(range(6))  # exactly n_trials in total
    assert all(t.state == TrialState.COMPLETE for t in trials)
    ran = sorted(int(p.name.split("-")[0]) for p in markers.iterdir())
    assert ran == list(range(6))  # each trial's job ran exactly once; job.num == trial number
    pids = {p.name.split("-")[1] for p in markers.iterdir()}
    assert pids == {str(w.pid) for w in workers}  # both workers took trials
    assert {t.user_attrs["worker"].rsplit(":", 1)[1] for t in trials} == pids


def _default_signals() -> None:
    """Child starts with SIGINT unblocked and at its default action, whatever the test runner's
    own signal state is (an ignored or blocked SIGINT is inherited across fork/exec)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _start_long_job(app: Path, *overrides: str) -> subprocess.Popen[str]:
    """Start a one-trial sweep whose job sleeps; return once the job is running."""
    markers = app / "markers"
    markers.mkdir()
    proc = subprocess.Popen(
        _cmd(app, "sleep=300", f"marker_dir={markers}", *overrides, n_trials=1),
        cwd=app, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_signals,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not any(markers.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "job did not start"
        time.sleep(0.05)
    assert _states(_study(app)) == ["RUNNING"]
    return proc


def test_stale_trial_of_killed_worker_is_failed_and_does_not_block(app: Path) -> None:
    beat = ("hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=2")
    proc = _start_long_job(app, *beat)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.communicate(timeout=10)
    assert _states(_study(app)) == ["RUNNING"]
    time.sleep(3.2)  # let the heartbeat expire (grace 2 s; SQLite clock has 1 s resolution)
    rerun = _run(app, *beat, n_trials=2)
    assert rerun.returncode == 0, rerun.stderr
    assert _states(_study(app)) == ["FAIL", "COMPLETE"]  # the stale trial counts as finished


def test_interrupted_sweep_marks_its_trial_failed(app: Path) -> None:
    proc = _start_long_job(app)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)  # the job sleeps 300 s: only the interrupt can end it this soon
    assert proc.returncode != 0
    trial = _study(app).trials[0]
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["error"].startswith("sweep aborted: KeyboardInterrupt")


def test_optuna4_sqlalchemy2_and_mlflow_import_together() -> None:
    code = textwrap.dedent(
        """
        import optuna, sqlalchemy, mlflow
        import mlflow.store.tracking.sqlalchemy_store
        import hydra_plugins.lad_optuna_sweeper.sweeper
        import hydra_plugins.lad_optuna_sweeper._impl
        s = optuna.create_study(storage="sqlite://")
        print(optuna.__version__, sqlalchemy.__version__, mlflow.__version__)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    versions = proc.stdout.split()
    assert int(versions[0].split(".")[0]) >= 4  # optuna
    assert int(versions[1].split(".")[0]) >= 2  # SQLAlchemy
    assert versions[2]  # mlflow imported


# --- upstream hydra-optuna-sweeper 1.3 meanings (end to end) ---------------------------------

UPSTREAM = textwrap.dedent(
    """
    # an upstream-style config: nothing of this project's additions
    defaults:
      - config
      - override hydra/sweeper: lad_optuna
      - override hydra/sweeper/sampler: random
      - _self_
    hydra:
      sweeper:
        storage: sqlite:///{db}
        study_name: up
        n_trials: 3
        n_jobs: 1
        sampler:
          seed: 7
        params:
          n: int(interval(1, 5))
          x: range(1, 3)
    """
)


def _upstream(app: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    (app / "conf" / "upstream.yaml").write_text(UPSTREAM.format(db=app / "db" / "optuna.db"))
    cmd = [sys.executable, str(app / "app.py"), "-m", "--config-name=upstream", f"hydra.sweep.dir={app}/multirun",
           *overrides]
    return subprocess.run(cmd, cwd=app, env=_env(), capture_output=True, text=True, timeout=120)


def test_upstream_style_config_runs_with_upstream_meanings(app: Path) -> None:
    first = _upstream(app)
    assert first.returncode == 0, first.stderr
    assert "RandomSampler" in first.stderr + first.stdout  # the sampler group was applied
    again = _upstream(app)  # n_trials is what a run adds: the resumed study grows to 6
    assert again.returncode == 0, again.stderr
    study = _study(app, "up")
    assert [t.number for t in study.trials] == list(range(6))
    assert study.direction == optuna.study.StudyDirection.MINIMIZE  # upstream's default direction
    for t in study.trials:
        assert t.distributions["n"] == IntDistribution(1, 5)  # int(interval()) is an integer distribution
        assert t.distributions["x"] == IntDistribution(1, 3)  # range() includes its end
        assert isinstance(t.params["n"], int) and t.params["x"] in (1, 2, 3)
        assert t.value == pytest.approx(-((t.params["x"] - 2) ** 2) - 0.01 * t.params["n"])
    assert study.best_value == min(t.value for t in study.trials)


def test_grid_sampler_group_covers_the_grid_once(app: Path) -> None:
    proc = _upstream(app, "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=10", "c=choice(a, b)", "n=1")
    assert proc.returncode == 0, proc.stderr
    trials = _study(app, "up").trials
    combos = sorted((t.params["x"], t.params["c"]) for t in trials)
    assert len(trials) == 3 * 2  # as upstream: n_trials is capped at the grid's size ...
    assert combos == sorted((x, c) for x in (1, 2, 3) for c in "ab")  # ... and every point runs once


def test_max_failure_rate_ends_the_sweep_as_upstream(app: Path) -> None:
    proc = _upstream(app, "fail_on=[1]")  # upstream default 0.0: the first failed batch ends the sweep
    assert proc.returncode == 1
    assert "1 of 1 trial(s) in a batch failed (max_failure_rate=0.0)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _states(_study(app, "up")) == ["COMPLETE", "FAIL"]


def test_max_failure_rate_tolerates_its_share_of_a_batch(app: Path) -> None:
    proc = _upstream(app, "fail_on=[0,2]", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=4",
                     "hydra.sweeper.max_failure_rate=0.5")
    assert proc.returncode == 0, proc.stderr  # one failure in each batch of two: 0.5 is not above 0.5
    assert _states(_study(app, "up")) == ["FAIL", "COMPLETE", "FAIL", "COMPLETE"]


def test_multi_objective_direction_list(app: Path) -> None:
    (app / "mo.py").write_text(APP.replace("return -(cfg.x - 2.0) ** 2 - 0.01 * cfg.n",
                                           "return [float(cfg.x), -float(cfg.n)]"))
    (app / "conf" / "upstream.yaml").write_text(UPSTREAM.format(db=app / "db" / "optuna.db"))
    cmd = [sys.executable, str(app / "mo.py"), "-m", "--config-name=upstream", f"hydra.sweep.dir={app}/multirun",
           "hydra.sweeper.direction=[minimize,maximize]"]
    proc = subprocess.run(cmd, cwd=app, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    study = _study(app, "up")
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    assert all(t.values == [t.params["x"], -t.params["n"]] for t in study.trials)
    results = OmegaConf.load(app / "multirun" / "optimization_results.yaml")
    assert {s["number"] for s in results.solutions} == {t.number for t in study.best_trials}


def test_custom_search_space_function_adds_parameters(app: Path) -> None:
    (app / "space_ext.py").write_text(textwrap.dedent(
        """
        def extend(cfg, trial):
            assert cfg.hydra.sweeper.study_name == "up"  # the whole config, as upstream
            trial.suggest_float("sleep", 0.0, 0.01)
        """))
    proc = _upstream(app, "hydra.sweeper.custom_search_space=space_ext.extend", "hydra.sweeper.n_trials=2")
    assert proc.returncode == 0, proc.stderr
    trials = _study(app, "up").trials
    assert all(0.0 <= t.params["sleep"] <= 0.01 and set(t.params) == {"n", "x", "sleep"} for t in trials)
    # the suggested value reached the job as an override
    job = OmegaConf.load(app / "multirun" / "0" / ".hydra" / "overrides.yaml")
    assert f"sleep={trials[0].params['sleep']!r}" in list(job)


def test_study_attrs_refuse_a_resume_with_another_budget(app: Path) -> None:
    ok = _run(app, "+hydra.sweeper.study_attrs.max_steps=10", n_trials=1)
    assert ok.returncode == 0, ok.stderr
    assert _study(app).user_attrs == {"max_steps": 10}
    other = _run(app, "+hydra.sweeper.study_attrs.max_steps=20", n_trials=2)
    assert other.returncode == 1 and "Traceback" not in other.stderr
    assert "study 's' was run with max_steps=10, not 20" in other.stderr
    assert len(_study(app).trials) == 1


@pytest.mark.parametrize(
    ("name", "cls"),
    [("tpe", "TPESampler"), ("random", "RandomSampler"), ("cmaes", "CmaEsSampler"), ("nsgaii", "NSGAIISampler"),
     ("motpe", "TPESampler"), ("gp", "GPSampler"), ("qmc", "QMCSampler"), ("grid", "GridSampler")],
)
def test_sampler_group_builds_each_optuna_sampler(name: str, cls: str) -> None:
    from hydra import compose, initialize_config_dir

    from hydra_plugins.lad_optuna_sweeper._study import is_grid, sampler_factory

    with initialize_config_dir(version_base=None, config_dir=str(REPO / "conf")):
        cfg = compose("distil", [f"hydra/sweeper=lad_optuna", f"hydra/sweeper/sampler={name}",
                                 "hydra.sweeper.sampler.seed=3"], return_hydra_config=True)
    sampler_cfg = OmegaConf.to_container(cfg.hydra.sweeper.sampler)
    grid = (lambda: {"x": [1, 2]}) if is_grid(sampler_cfg) else None
    sampler = sampler_factory(sampler_cfg, grid)(0)
    assert type(sampler).__name__ == cls
    assert cfg.hydra.sweeper.direction == "minimize" and cfg.hydra.sweeper.n_trials == 20  # upstream defaults
