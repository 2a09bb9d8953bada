#!/usr/bin/env python
"""Regenerate the README screenshots of the MLflow UI (docs/img/mlflow-*.png).

Seeds a throw-away SQLite store with three demo ``lad-rte`` runs, starts ``mlflow ui``
on a free 127.0.0.1 port (one worker), opens the runs table and the compare view of two
runs in headless Chromium, checks they show the runs' params/metrics, and saves:

    <out-dir>/mlflow-runs.png     experiment page: runs with gate.name, loss.temperature, dev/accuracy
    <out-dir>/mlflow-compare.png  compare view of rte-lad-T2 vs rte-none-T4

Needs chromium + chromedriver + selenium: ``scripts/install_browser.sh``.
Usage: .venv/bin/python scripts/ui_screenshot.py [--out-dir docs/img]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from scripts.testhelpers import load

REPO = Path(__file__).resolve().parents[1]
ui = load("ui_helpers")

COMPARED = ("rte-lad-T2", "rte-none-T4")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=REPO / "docs" / "img")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--runs-height", type=int, default=600)
    parser.add_argument("--compare-height", type=int, default=1700)
    return parser.parse_args(argv)


def capture(out_dir: Path, width: int, runs_height: int, compare_height: int) -> list[Path]:
    """Seed, serve, browse and screenshot; return the PNG paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lad-mlflow-ui-") as tmp:
        root = Path(tmp)
        backend = f"sqlite:///{root / 'mlruns.db'}"
        artifacts = root / "mlartifacts"
        artifacts.mkdir()
        store = ui.seed_store(backend, artifacts)
        with ui.mlflow_server(backend, artifacts, root / "server.log") as url:
            print(f"mlflow ui at {url}", flush=True)
            driver = ui.make_driver(root / "chromium-profile", width, runs_height)
            try:
                ui.show_runs_page(driver, url, store)
                runs_png = out_dir / "mlflow-runs.png"
                driver.save_screenshot(str(runs_png))

                driver.set_window_size(width, compare_height)
                ui.show_compare_page(driver, url, store, COMPARED)
                if not ui.wait_for_plot(driver):
                    raise RuntimeError("the compare view's parallel-coordinates plot never rendered")
                compare_png = out_dir / "mlflow-compare.png"
                driver.save_screenshot(str(compare_png))
            finally:
                driver.quit()
    return [runs_png, compare_png]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = ui.browser_unavailable_reason()
    if reason:
        print(f"ui_screenshot: {reason}", file=sys.stderr)
        return 2
    start = time.monotonic()
    for path in capture(args.out_dir, args.width, args.runs_height, args.compare_height):
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
    print(f"done in {time.monotonic() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
