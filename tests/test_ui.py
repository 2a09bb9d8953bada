"""End-to-end check of the MLflow UI over a store of LAD runs, in headless Chromium.

Starts ``mlflow ui`` (127.0.0.1, one worker) on a temporary SQLite store holding three
fake ``lad-rte`` runs, then checks in the browser that the runs table lists the runs
with their params/metrics and that the compare view of two runs shows their values.
Skipped, with the reason, when chromium/chromedriver/selenium are missing
(install them with ``scripts/install_browser.sh``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ui_helpers as ui  # noqa: E402

pytestmark = pytest.mark.e2e

COMPARED = ("rte-lad-T2", "rte-none-T4")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def browser_ready() -> None:
    reason = ui.browser_unavailable_reason()
    if reason:
        pytest.skip(f"headless browser unavailable: {reason}")


@pytest.fixture(scope="module")
def mlflow_site(tmp_path_factory: pytest.TempPathFactory, browser_ready: None):
    """(base_url, seeded store, tmp dir) for a running ``mlflow ui`` over 3 demo runs."""
    pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow_ui")
    backend = f"sqlite:///{root / 'mlruns.db'}"
    artifacts = root / "mlartifacts"
    artifacts.mkdir()
    store = ui.seed_store(backend, artifacts)
    with ui.mlflow_server(backend, artifacts, root / "server.log") as url:
        yield url, store, root


@pytest.fixture()
def driver(mlflow_site, tmp_path: Path):
    drv = ui.make_driver(tmp_path / "chromium-profile")
    try:
        yield drv
    finally:
        drv.quit()


def test_server_binds_loopback_with_one_worker(tmp_path: Path) -> None:
    cmd = ui.mlflow_ui_command("sqlite:///x.db", tmp_path / "art", 5123)
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


def test_runs_table_and_compare_view(mlflow_site, driver, tmp_path: Path) -> None:
    url, store, _ = mlflow_site
    assert set(store.run_ids) == {r.name for r in ui.DEMO_RUNS}

    rows = ui.show_runs_page(driver, url, store)
    # Each run's own row carries its gate, temperature and final dev accuracy.
    lad_row = rows[store.run_ids["rte-lad-T2"]]
    assert "lad" in lad_row and "2.0" in lad_row and "0.7112" in lad_row
    assert "0.6715" not in lad_row  # the other run's accuracy is in its own row
    page = ui.body_text(driver)
    for column in ("dev/accuracy", "gate.name", "loss.temperature"):
        assert column in page
    assert "3 matching runs" in page
    runs_png = tmp_path / "runs.png"
    assert driver.save_screenshot(str(runs_png))
    assert runs_png.read_bytes()[:8] == PNG_MAGIC

    text = ui.show_compare_page(driver, url, store, COMPARED)
    assert "Comparing 2 Runs from 1 Experiment" in text
    assert "rte-attention-T1" not in text  # only the two selected runs
    for rid in (store.run_ids[n] for n in COMPARED):
        assert rid in text
    params = text[text.index("Parameters", text.index("Run details")):]
    assert "gate.name lad none" in params
    assert "loss.temperature 2.0 4.0" in params
    metrics = params[params.index("Metrics"):]
    assert "dev/accuracy" in metrics and "0.711" in metrics and "0.672" in metrics
    assert ui.wait_for_plot(driver), "parallel-coordinates plot of the two runs never rendered"
    compare_png = tmp_path / "compare.png"
    assert driver.save_screenshot(str(compare_png))
    assert compare_png.stat().st_size > 20_000  # a rendered page, not a blank one
