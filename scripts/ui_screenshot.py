#!/usr/bin/env python
"""Regenerate the README screenshots of the MLflow UI (docs/img/mlflow-*.png) from real runs.

Reads an experiment of a real MLflow store (default: the demo's ``demo-lad-sst2`` in
``mlruns.db``; ``make screenshots`` runs the demo and two baselines first), starts ``mlflow ui``
on a free 127.0.0.1 port (one worker) and opens, in headless Chromium, the pages a user opens:
the runs table through the link ``make ui`` prints (the experiment's saved view ``LAD: dev metric and key params``) and the
compare view of two student runs. Nothing is clicked into place; the script checks the pages show
the runs' names, the dev metric first and the key params, and saves:

    <out-dir>/mlflow-runs.png     the runs table in LAD's view: names, best dev metric, key params, Dataset
    <out-dir>/mlflow-compare.png  compare view of two students

Needs chromium + chromedriver + selenium: ``scripts/install_browser.sh``.
Usage: .venv/bin/python scripts/ui_screenshot.py [--tracking-uri sqlite:///mlruns.db]
       [--experiment demo-lad-sst2] [--out-dir docs/img]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from lad.testing import ui, ui_server

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlruns.db")
    parser.add_argument("--artifacts", type=Path, default=REPO / "mlartifacts", help="default artifact root")
    parser.add_argument("--experiment", default="demo-lad-sst2")
    parser.add_argument("--out-dir", type=Path, default=REPO / "docs" / "img")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--runs-height", type=int, default=640)
    parser.add_argument("--compare-height", type=int, default=1500)
    return parser.parse_args(argv)


def students(store: ui_server.Store) -> list[str]:
    """Names of the store's student runs (not teachers), newest first."""
    return [name for name in reversed(list(store.run_ids)) if not name.startswith("teacher/")]


def capture(args: argparse.Namespace) -> list[Path]:
    """Serve, browse and screenshot; return the PNG paths written."""
    store = ui_server.load_store(args.tracking_uri, args.experiment)
    pair = students(store)[:2]
    if len(pair) < 2:
        raise LookupError(f"experiment {args.experiment!r} needs two finished student runs (has: "
                          f"{', '.join(store.run_ids) or 'none'}); run make demo and a baseline first")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lad-mlflow-ui-") as tmp:
        root = Path(tmp)
        with ui_server.mlflow_server(args.tracking_uri, args.artifacts, root / "server.log") as url:
            print(f"mlflow ui at {url}", flush=True)
            driver = ui.make_driver(root / "chromium-profile", args.width, args.runs_height)
            try:
                ui.show_runs_page(driver, url, store, {name: [] for name in pair})
                columns = ui.column_ids(driver)
                if not ui.view_columns_lead(columns):
                    raise RuntimeError(f"the runs table does not start with the dev metric and key params: {columns}")
                runs_png = args.out_dir / "mlflow-runs.png"
                driver.save_screenshot(str(runs_png))

                driver.set_window_size(args.width, args.compare_height)
                ui.show_compare_page(driver, url, store, pair, ["gate.name", "loss.name"])
                if not ui.wait_for_plot(driver):
                    raise RuntimeError("the compare view's parallel-coordinates plot never rendered")
                compare_png = args.out_dir / "mlflow-compare.png"
                driver.save_screenshot(str(compare_png))
            finally:
                driver.quit()
    return [runs_png, compare_png]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = ui.browser_unavailable_reason()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    start = time.monotonic()
    try:
        paths = capture(args)
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
    print(f"done in {time.monotonic() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
