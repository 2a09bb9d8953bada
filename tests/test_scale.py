"""Scale-out on real engines: a PostgreSQL server (Optuna storage, MLflow backend store) shared by
several worker processes, the submitit launcher, and torchrun across two "nodes" on loopback.

The PostgreSQL tests start a throw-away server (tests/postgres.py); ``make test`` installs the
Debian package first. Workers get the password the way libpq clients usually do (``PGPASSWORD``),
so it is in no URL, command line or config; every file and output is grepped for it anyway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, save_tiny_model
from postgres import UNAVAILABLE_MARK, PostgresServer, bin_dir, free_port

# generous: each test takes about a minute on an idle 2-core machine, many on a busy one
TIMEOUT_S = int(os.environ.get("LAD_SCALE_TIMEOUT_S", "900"))
pytestmark = pytest.mark.timeout(TIMEOUT_S)


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def pg() -> PostgresServer:
    found = bin_dir()
    if found is None:
        if UNAVAILABLE_MARK.exists():
            pytest.skip(f"PostgreSQL cannot be installed here: {UNAVAILABLE_MARK.read_text().strip()}")
        pytest.fail("PostgreSQL server not installed: run `make postgres` (part of `make test`)")
    pytest.importorskip("psycopg", reason="psycopg missing: run `make install`")
    server = PostgresServer(found)
    try:
        server.start()
    except Exception:
        server.stop()
        raise
    yield server
    server.stop()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("scale-teacher") / "sst2", num_layers=4)


@pytest.fixture(scope="module")
def mlflow_server(pg, tmp_path_factory):
    """One ``mlflow server`` (PostgreSQL backend store, local artifact folder) for this module."""
    root = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(pg.url(pg.new_database("mlflow")), root / "artifacts", root / "server.log")
    yield server
    server.stop()
    assert pg.password not in server.log.read_text()


def _env(pg: PostgresServer | None = None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("HYDRA_FULL_ERROR", None)
    if pg is not None:
        env["PGPASSWORD"] = pg.password
    return env


def _tiny(tmp: Path, teacher: Path, glue: Path, tracking_uri: str) -> list[str]:
    """distil.py overrides for a 2-step run of a 2-layer student on the tiny SST-2 files. An ``mlflow server``
    keeps the artifacts (null: its proxied store); a file store keeps them under ``tmp``, never in the checkout."""
    artifacts = "null" if tracking_uri.startswith("http") else str(tmp / "mlartifacts")
    return ["task=sst2", "teacher=local", f"teacher.path={teacher}", "student=2layer",
            f"data.data_dir={glue}", f"paths.cache={tmp / 'cache'}", f"mlflow.tracking_uri={tracking_uri}",
            f"mlflow.artifact_location={artifacts}", f"paths.artifacts={tmp / 'artifacts'}",
            f"paths.output_root={tmp / 'outputs'}", "mlflow.log_model=false", "mlflow.register_teacher=false",
            "trainer.progress=false", "optim.batch_size=32", "trainer.max_steps=2", "trainer.eval_every=2",
            "trainer.ckpt_every=0", "trainer.predict_test=false", "trainer.num_threads=1", "data.bucket=false",
            "cache.enabled=false"]


def _run_together(cmds: list[list[str]], env: dict, cwd: Path = REPO, timeout: int = TIMEOUT_S - 60) -> list:
    procs = [subprocess.Popen(c, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            outs.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    finally:  # a timeout (ours or pytest's) leaves no worker behind
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return outs


def _assert_secret_nowhere(secret: str, texts: list[str], roots: list[Path]) -> None:
    for text in texts:
        assert secret not in text
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), f"password written to {path}"


def _finished_trials(url: str, name: str):
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    # every trial recorded once: numbers 0..N-1 without gaps, none left RUNNING or failed
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert [t.state for t in trials] == [TrialState.COMPLETE] * len(trials), [t.state for t in trials]
    # no two workers evaluated the same point (each worker's sampler has its own seed)
    points = {tuple(sorted(t.params.items())) for t in trials}
    assert len(points) == len(trials)
    return trials


def _same_params(trial, run) -> bool:
    return all(abs(float(run.data.params[k]) - v) <= 1e-9 * max(1.0, abs(v)) for k, v in trial.params.items())


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a PostgreSQL backend store and a local artifact folder."""

    def __init__(self, backend_uri: str, artifacts: Path, log: Path) -> None:
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = log
        mlflow_bin = Path(sys.executable).parent / "mlflow"
        self._out = open(log, "w")
        self.proc = subprocess.Popen(
            [str(mlflow_bin), "server", "--backend-store-uri", backend_uri, "--artifacts-destination",
             str(artifacts), "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=self._out, stderr=subprocess.STDOUT, env=_env(), cwd=log.parent)
        deadline = time.time() + 600  # seconds: schema migrations on a busy machine are slow
        while time.time() < deadline:
            assert self.proc.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise AssertionError(f"mlflow server did not start: {log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


# ---------------------------------------------------------------------------- PostgreSQL: Optuna
def test_server_takes_password_logins_only_on_loopback(pg) -> None:
    import psycopg

    db = pg.new_database("auth")
    with psycopg.connect(host="127.0.0.1", port=pg.port, user=pg.user, password=pg.password, dbname=db) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
        assert conn.execute("SELECT current_user").fetchone()[0] == pg.user
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host="127.0.0.1", port=pg.port, user=pg.user, password="wrong", dbname=db)


def test_advisory_lock_keeps_concurrent_workers_at_n_trials_on_postgres(pg) -> None:
    """Four workers (own storages and connections) reserve trials at once: exactly n_trials exist.

    The PostgreSQL counterpart of the SQLite lock-file test in test_sweeper.py; without the lock
    each extra worker could overshoot by up to n_jobs trials.
    """
    import optuna

    from lad.search import studies

    url = pg.url(pg.new_database("race"))
    lock = studies.lock_path(url)
    assert isinstance(lock, studies.AdvisoryLock)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with studies.study_lock(lock):  # schema and study creation, as the sweeper does
                storage = studies.open_storage(url, 60, None)
                study = studies.open_study(storage, "race", ["maximize"], None)
            barrier.wait()
            for _ in range(3):  # 2 trials at a time, never beyond a study total of 5
                studies.reserve_trials(study, lock, 2, 5, lambda _n: study.ask())
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    numbers = [t.number for t in optuna.load_study(study_name="race", storage=url).trials]
    assert sorted(numbers) == [0, 1, 2, 3, 4]


def test_bad_postgres_login_is_one_line_without_the_password(pg, tmp_path) -> None:
    from lad.core.errors import StudyError
    from lad.search import studies

    url = pg.url(pg.new_database("bad")).replace(pg.password, pg.password + "x")
    with pytest.raises(StudyError, match="cannot open Optuna storage") as info:
        with studies.study_lock(studies.lock_path(url)):
            pass
    assert pg.password not in str(info.value) and "\n" not in str(info.value)
    assert "password authentication failed" in str(info.value)


def test_two_sweeper_workers_share_a_postgres_study_and_an_mlflow_server(pg, mlflow_server, teacher, tiny_glue,
                                                                         tmp_path) -> None:
    """Two ``distil.py -m hparams_search=lad_optuna`` workers on one PostgreSQL study, logging to an
    ``mlflow server`` whose backend store is PostgreSQL: every trial runs once, has one MLflow run
    under its worker's sweep parent, artifacts reach the server, and the password is nowhere."""
    from mlflow.tracking import MlflowClient

    study_db = pg.new_database("optuna")
    study_url = pg.url(study_db, with_password=False)  # the workers read the password from PGPASSWORD
    n_trials = 2
    cmds = [[sys.executable, "distil.py", "-m", "hparams_search=lad_optuna",
             f"hydra.sweeper.storage={study_url}", "hydra.sweeper.study_name=scale",
             f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweep.dir={tmp_path / f'sweep-{w}'}",
             *_tiny(tmp_path, teacher, tiny_glue, mlflow_server.uri), "mlflow.experiment=scale-sweeper"]
            for w in "ab"]
    procs = _run_together(cmds, _env(pg))
    for p in procs:
        assert p.returncode == 0, p.stderr[-4000:]
    trials = _finished_trials(pg.url(study_db), "scale")
    assert len(trials) >= n_trials
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    exp = client.get_experiment_by_name("scale-sweeper")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("lad.kind") == "sweep"}
    children = [r for r in runs if r.info.run_id not in parents]
    # one FINISHED MLflow run per trial, each under the sweep parent of the worker that ran it
    assert len(children) == len(trials)
    for trial in trials:
        assert len([r for r in children if _same_params(trial, r)]) == 1, (trial.number, trial.params)
    sweep_dirs = {str(tmp_path / "sweep-a"), str(tmp_path / "sweep-b")}
    for run in children:
        assert run.info.status == "FINISHED"
        parent = parents[run.data.tags["mlflow.parentRunId"]]
        assert parent.data.tags["lad.sweep_dir"] in sweep_dirs
        # artifacts went through the server into its artifact folder
        assert client.list_artifacts(run.info.run_id, "")
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert len({p.data.tags["lad.sweep_dir"] for p in parents.values()}) == len(parents)
    assert all(p.info.status == "FINISHED" for p in parents.values())
    _assert_secret_nowhere(pg.password, [p.stdout + p.stderr for p in procs], [tmp_path, mlflow_server.log.parent])
    for run in runs:
        assert all(pg.password not in str(v) for v in {**run.data.params, **run.data.tags}.values())


def test_two_search_workers_share_a_postgres_study(pg, mlflow_server, teacher, tiny_glue, tmp_path) -> None:
    """Two ``sweeps/search.py`` workers started together on one PostgreSQL study: distinct trials,
    each run once with one MLflow run, all under one parent run; the password is nowhere."""
    from mlflow.tracking import MlflowClient

    study_db = pg.new_database("search")
    tracking = mlflow_server.uri
    n_trials = 2
    cmds = [[sys.executable, "sweeps/search.py", f"n_trials={n_trials}",
             f"search.storage={pg.url(study_db, with_password=False)}", "search.study_name=scale-search",
             "search.pruner=none", "search.plots=false", f"hydra.run.dir={tmp_path / f'search-{w}'}",
             *_tiny(tmp_path, teacher, tiny_glue, tracking), "mlflow.experiment=scale-search"] for w in "ab"]
    procs = _run_together(cmds, _env(pg))
    for p in procs:
        assert p.returncode == 0, p.stderr[-4000:]
    trials = _finished_trials(pg.url(study_db), "scale-search")
    assert len(trials) >= n_trials
    ran = [json.loads((tmp_path / f"search-{w}" / "search.json").read_text())["ran_now"] for w in "ab"]
    assert sum(ran) == len(trials)
    client = MlflowClient(tracking_uri=tracking)
    runs = client.search_runs([client.get_experiment_by_name("scale-search").experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("lad.kind") == "sweep"]
    assert len(parents) == 1 and parents[0].data.tags["lad.sweep_dir"] == "search:scale-search"
    children = [r for r in runs if r.data.tags.get("lad.kind") != "sweep"]
    assert len(children) == len(trials)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    for trial in trials:
        assert len([r for r in children if _same_params(trial, r)]) == 1, (trial.number, trial.params)
    _assert_secret_nowhere(pg.password, [p.stdout + p.stderr for p in procs], [tmp_path, mlflow_server.log.parent])


# ---------------------------------------------------------------------------- cluster launcher
def test_submitit_local_launcher_runs_a_two_job_multirun(teacher, tiny_glue, tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    sweep = tmp_path / "sweep"
    tracking = f"sqlite:///{tmp_path / 'mlruns.db'}"
    proc = subprocess.run(
        [sys.executable, "distil.py", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
         "hydra.launcher.cpus_per_task=1", f"hydra.sweep.dir={sweep}", "seed=1,2",
         *_tiny(tmp_path, teacher, tiny_glue, tracking)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S - 60)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # each job ran in its own submitit process, logged under .submitit/<job id>/
    logs = sorted(sweep.glob(".submitit/*/*_log.out"))
    assert len(logs) == 2, sorted(p.name for p in sweep.rglob("*"))
    seeds = sorted(json.loads((sweep / str(n) / "metrics.json").read_text())["steps"] for n in (0, 1))
    assert seeds == [2, 2]
    for n, seed in ((0, 1), (1, 2)):
        assert f"seed={seed}" in (sweep / str(n) / ".hydra" / "overrides.yaml").read_text()
    client = MlflowClient(tracking_uri=tracking)
    runs = client.search_runs([client.get_experiment_by_name("lad-sst2").experiment_id])
    parents = [r for r in runs if r.data.tags.get("lad.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("lad.kind") != "sweep"]
    assert len(parents) == 1 and len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.data.params["seed"] for r in children} == {"1", "2"}


def test_slurm_preset_sets_the_documented_sbatch_keys() -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from lad.core.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="distil", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher)
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher["partition"] == "gpu"
    assert launcher["timeout_min"] == 240 and launcher["gpus_per_task"] == 1 and launcher["tasks_per_node"] == 1
    # keys the preset does not set keep the plugin's defaults
    assert launcher["max_num_timeout"] == 0 and launcher["additional_parameters"] == {}


# ---------------------------------------------------------------------------- multi-node torchrun
@pytest.mark.slow
def test_torchrun_two_nodes_on_loopback_with_c10d_rendezvous(teacher, tiny_glue, tmp_path) -> None:
    """Two torchrun agents (``--nnodes=2 --nproc-per-node=1``) meet at a c10d endpoint on 127.0.0.1,
    as two machines would: one run, recorded once, by global rank 0."""
    from mlflow.tracking import MlflowClient

    port = free_port()
    torchrun = Path(sys.executable).parent / "torchrun"
    tracking = f"sqlite:///{tmp_path / 'mlruns.db'}"
    args = [*_tiny(tmp_path, teacher, tiny_glue, tracking), f"output_dir={tmp_path / 'run'}",
            f"hydra.run.dir={tmp_path / 'run'}"]
    cmds = [[str(torchrun), "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
             f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=lad-test", "--max-restarts=0", "distil.py", *args]
            for _ in range(2)]
    env = {**_env(), "GLOO_SOCKET_IFNAME": "lo"}
    procs = _run_together(cmds, env)
    for p in procs:
        assert p.returncode == 0, p.stderr[-4000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 2
    assert sum(p.stdout.count("[lad] distil sst2: best dev") for p in procs) == 1
    client = MlflowClient(tracking_uri=tracking)
    runs = client.search_runs([client.get_experiment_by_name("lad-sst2").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
