"""End-to-end check of the MLflow UI over real LAD runs, in headless Chromium.

Trains three tiny real runs (a teacher, a LAD student and a KD student; random 4-layer BERTs on
tiny SST-2-format data) into a temporary SQLite store, starts ``mlflow ui`` (127.0.0.1, one
worker), and checks in the browser what a user comparing ablations needs: readable run names,
the Dataset column, params and metrics as columns, the run's description (the command), the
experiment's ablation table, and the compare view. Skipped, with the reason, when
chromium/chromedriver/selenium are missing (install them with ``scripts/install_browser.sh``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import compose, save_tiny_model
from lad.tracking.run_record import RUN_NAME_COLUMN

from lad.testing import ui, ui_server

pytestmark = pytest.mark.e2e

TEACHER, LAD, KD = "teacher/local sst2 seed=42", "lad/2layer sst2 seed=42", "kd/2layer sst2 seed=42"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def browser_ready() -> None:
    reason = ui.browser_unavailable_reason()
    if reason:
        pytest.skip(f"headless browser unavailable: {reason}")


def train_runs(root: Path, uri: str, data: Path) -> None:
    """A teacher and two students, trained for a few steps by lad.run.pipeline.run into ``uri``."""
    from lad.run.pipeline import run

    common = ["task=sst2", f"data.data_dir={data}", f"paths.cache={root / 'cache'}", f"mlflow.tracking_uri={uri}",
              f"mlflow.artifact_location={root / 'mlartifacts'}", "trainer.progress=false", "optim.batch_size=16",
              "trainer.max_steps=4", "trainer.eval_every=2", "trainer.num_threads=1", "device=cpu"]
    teacher = root / "teacher"
    backbone = save_tiny_model(root / "backbone", num_layers=4)
    run(compose("train_teacher", [*common, "teacher=local", f"teacher.backbone={backbone}",
                                  f"teacher.path={teacher}", f"output_dir={root / 'out_t'}"]),
        overrides=["task=sst2", "teacher=local"])
    for name, extra in (("lad", ["student=2layer"]), ("kd", ["student=2layer", "gate=none", "loss=kd"])):
        run(compose("distil", [*common, "teacher=local", f"teacher.path={teacher}", f"output_dir={root / name}",
                               *extra]), overrides=["task=sst2", *extra])


@pytest.fixture(scope="module")
def mlflow_site(tmp_path_factory: pytest.TempPathFactory, browser_ready: None, tiny_glue: Path):
    """(base_url, store) for a running ``mlflow ui`` over the three real runs."""
    root = tmp_path_factory.mktemp("mlflow_ui")
    backend = f"sqlite:///{root / 'mlruns.db'}"
    train_runs(root, backend, tiny_glue)
    store = ui_server.load_store(backend, "lad-sst2")
    with ui_server.mlflow_server(backend, root / "mlartifacts", root / "server.log") as url:
        yield url, store


@pytest.fixture()
def driver(mlflow_site, tmp_path: Path):
    drv = ui.make_driver(tmp_path / "chromium-profile")
    try:
        yield drv
    finally:
        drv.quit()


def test_server_binds_loopback_with_one_worker(tmp_path: Path) -> None:
    cmd = ui_server.mlflow_ui_command("sqlite:///x.db", tmp_path / "art", 5123)
    args = dict(zip(cmd[2::2], cmd[3::2]))
    assert cmd[1] == "ui"
    assert args["--host"] == "127.0.0.1"
    assert args["--workers"] == "1"
    assert args["--port"] == "5123"
    assert args["--backend-store-uri"] == "sqlite:///x.db"


def test_compare_url_lists_runs_and_experiment() -> None:
    url = ui.compare_url("http://127.0.0.1:1", "7", ["a1", "b2"])
    assert url == (
        "http://127.0.0.1:1/#/compare-runs?runs=%5B%22a1%22%2C%20%22b2%22%5D"
        "&experiments=%5B%227%22%5D"
    )


def test_runs_table_run_page_and_compare_view(mlflow_site, driver, tmp_path: Path) -> None:
    url, store = mlflow_site
    assert set(store.run_ids) == {TEACHER, LAD, KD}

    # MLflow's own experiment page: readable names and the Dataset column, each run in its own row
    ui.show_runs_page(driver, url, store, {LAD: ["sst2/train"], KD: ["sst2/train"]}, view=False)
    page = ui.body_text(driver)
    assert "Dataset" in page and "3 matching runs" in page

    # the link `make ui` prints (the experiment's view LAD), nothing clicked: the dev metric first, sorted
    # on, then the key params; every run name whole
    rows = ui.show_runs_page(driver, url, store, {LAD: ["2layer", "lad"], KD: ["2layer", "none", "kd"]})
    columns = ui.column_ids(driver)
    assert ui.view_columns_lead(columns), columns
    for column in (RUN_NAME_COLUMN, *[c for c in columns if c.startswith(("metrics.", "params."))]):
        assert not ui.cut_texts(driver, column), f"cut in column {column}: {ui.cut_texts(driver, column)}"
    assert " kd " not in f" {rows[store.run_ids[LAD]]} ".replace("|", " ")
    scores = {store.run_ids[name]: m["best/accuracy"] for name, m in store.metrics.items()}
    assert [scores[rid] for rid in ui.rows_in_order(driver)] == sorted(scores.values(), reverse=True)  # best first
    runs_png = tmp_path / "runs.png"
    assert driver.save_screenshot(str(runs_png)) and runs_png.read_bytes()[:8] == PNG_MAGIC

    # run page: the description holds the command that runs it again
    ui.show_run_page(driver, url, store, KD, ["python distil.py task=sst2 student=2layer gate=none loss=kd"])

    # the experiment's description holds its ablation table (method x mean dev accuracy)
    ui.show_experiment_description(driver, url, store, ["Ablation table of this experiment"])  # MLflow folds the rest

    # compare view: the two students' params side by side
    text = ui.show_compare_page(driver, url, store, (LAD, KD), ["gate.name", "loss.name"])
    assert TEACHER not in text  # only the two selected runs
    params = text[text.index("Parameters", text.index("Run details")):]
    assert "gate.name lad none" in params and "loss.name lad kd" in params
    assert ui.wait_for_plot(driver), "parallel-coordinates plot of the two runs never rendered"
