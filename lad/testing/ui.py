"""Helpers to drive the MLflow UI in headless Chromium (used by tests/test_ui.py and
scripts/ui_screenshot.py); the server they look at is :mod:`lad.testing.ui_server`.

The browser is Debian's ``chromium`` + ``chromium-driver`` driven by Selenium; install
them with ``scripts/install_browser.sh`` (other paths: ``LAD_CHROMIUM``/``LAD_CHROMEDRIVER``).  Nothing here downloads anything: the driver
binary is given explicitly, so selenium-manager is never consulted.

MLflow's UI is a React single-page app, so every check waits for *visible text*
(run names, parameter names) rather than relying on CSS classes.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lad.testing.ui_server import Store

CHROMIUM = os.environ.get("LAD_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LAD_CHROMEDRIVER", "/usr/bin/chromedriver")
# seconds to wait for a page (MLflow's app shows "Loading..." for minutes on an overloaded machine)
UI_TIMEOUT = float(os.environ.get("LAD_UI_TIMEOUT", "180"))
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


# --------------------------------------------------------------------------- browser


def browser_unavailable_reason() -> str | None:
    """Why the headless browser cannot be used here, or None when it can."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        return f"{' and '.join(missing)} not found; run scripts/install_browser.sh"
    try:
        import selenium.webdriver  # noqa: F401
    except ImportError:
        return "python package 'selenium' not installed; run scripts/install_browser.sh"
    return None


def make_driver(user_data_dir: Path, width: int = 1600, height: int = 1000) -> Any:
    """A headless Chromium WebDriver with a fresh profile in ``user_data_dir``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={user_data_dir}")
    opts.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(UI_TIMEOUT)
    return driver


def body_text(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def wait_for_texts(driver: Any, texts: Sequence[str], timeout: float = 45.0) -> str:
    """Wait until every string in ``texts`` is visible on the page; return the page text."""
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(drv: Any) -> str | bool:
        try:
            text = body_text(drv)
        except WebDriverException:
            return False
        return text if all(t in text for t in texts) else False

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(ready)
    except TimeoutException:
        text = body_text(driver)
        missing = [t for t in texts if t not in text]
        raise AssertionError(
            f"MLflow UI at {driver.current_url} did not show {missing} within {timeout:.0f}s; "
            f"page text starts with: {text[:600]!r}"
        ) from None


def _xpath_literal(text: str) -> str:
    if "'" not in text:
        return f"'{text}'"
    return 'concat("' + '", "\'", "'.join(text.split("'")) + '")'


def click_text(driver: Any, text: str, within: str = "", tag: str = "*", timeout: float = 15.0) -> None:
    """Click the element ``tag`` (under XPath ``within``) whose visible text is ``text``.

    With ``tag="*"`` the innermost such element is clicked.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    lit = _xpath_literal(text)
    innermost = f" and not(*[normalize-space()={lit}])" if tag == "*" else ""
    xpath = f"{within}//{tag}[normalize-space()={lit}{innermost}]"
    WebDriverWait(driver, timeout).until(ec.element_to_be_clickable((By.XPATH, xpath))).click()


def dismiss_assistant(driver: Any) -> bool:
    """Close the 'MLflow Assistant' side panel if it is open (it auto-opens on first load)."""
    from selenium.webdriver.common.by import By

    if "MLflow Assistant" not in body_text(driver):
        return False
    for button in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
        if button.is_displayed():
            button.click()
            time.sleep(0.5)
            return True
    return False


# --------------------------------------------------------------------------- MLflow pages


def experiment_url(base_url: str, experiment_id: str) -> str:
    return f"{base_url}/#/experiments/{experiment_id}/runs"


def compare_url(base_url: str, experiment_id: str, run_ids: Sequence[str]) -> str:
    """MLflow's compare view: ``#/compare-runs?runs=[...]&experiments=[...]``."""
    runs = urllib.parse.quote(json.dumps(list(run_ids)))
    exps = urllib.parse.quote(json.dumps([experiment_id]))
    return f"{base_url}/#/compare-runs?runs={runs}&experiments={exps}"


def column_ids(driver: Any) -> list[str]:
    """The runs table's leaf columns (their grid ``col-id``), left to right as drawn (pinned first)."""
    script = """
    const cells = [...document.querySelectorAll('.ag-header-cell[col-id]')].filter(c => c.offsetParent !== null);
    return cells.map(c => [c.getBoundingClientRect().left, c.getAttribute('col-id')]).sort((a, b) => a[0] - b[0]);
    """
    return [col for _, col in _in_page(driver, script)]


def _in_page(driver: Any, script: str, *args: Any, attempts: int = 5) -> Any:
    """Run ``script`` in the page, again when the grid re-renders under it (a JavaScript error)."""
    from selenium.common.exceptions import JavascriptException

    for attempt in range(attempts):
        try:
            return driver.execute_script(script, *args)
        except JavascriptException:
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)
    return None


def view_columns_lead(columns: Sequence[str]) -> bool:
    """True when the table's columns after the run name (and MLflow's pinned Created column) start with
    LAD's view: the best dev metric, then ``lad.tracking.run_record.VIEW_PARAMS`` in order (those drawn)."""
    from lad.tracking.run_record import RUN_NAME_COLUMN, VIEW_PARAMS, column_key

    data = [c for c in columns if c.startswith(("metrics.", "params.", "attributes.")) and c != RUN_NAME_COLUMN]
    want = [column_key("params", name) for name in VIEW_PARAMS]
    shown = data[1:1 + len(want)]  # the grid draws only the columns that fit the window
    return len(shown) >= 3 and data[0].startswith("metrics.`best/") and shown == want[:len(shown)]


_CUT_SCRIPT = """
const out = [];
for (const cell of document.querySelectorAll(arguments[0])) {
  const edge = cell.getBoundingClientRect().right;
  const walk = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
  for (let node = walk.nextNode(); node; node = walk.nextNode()) {
    const owner = node.parentElement;
    if (!node.textContent.trim() || owner.offsetParent === null || getComputedStyle(owner).visibility !== 'visible') {
      continue;
    }
    const range = document.createRange();
    range.selectNodeContents(node);
    const box = range.getBoundingClientRect();
    if (box.width > 0 && box.right > edge + 1) {
      out.push(node.textContent.trim());
    }
  }
}
return out;
"""


def cut_texts(driver: Any, column: str) -> list[str]:
    """Texts of the runs table's cells and header in ``column`` (a ``col-id``) that do not fit their
    cell: visible text laid out past the cell's right edge (the grid cuts it or ends it with "…")."""
    selector = f'[col-id="{column}"].ag-cell, [col-id="{column}"].ag-header-cell'
    return list(_in_page(driver, _CUT_SCRIPT, selector))


def rows_in_order(driver: Any) -> list[str]:
    """Run ids of the runs table's rows, top to bottom (the grid's ``row-index``)."""
    script = """
    const seen = {};
    for (const r of document.querySelectorAll("[role='row'][row-id][row-index]")) {
      seen[r.getAttribute('row-id')] = Number(r.getAttribute('row-index'));
    }
    return Object.entries(seen).sort((a, b) => a[1] - b[1]).map(e => e[0]);
    """
    return list(_in_page(driver, script))


def park_pointer(driver: Any) -> None:
    """Drop keyboard focus and move the mouse to the page corner (no hover effects)."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    driver.execute_script("document.activeElement && document.activeElement.blur()")
    actions = ActionBuilder(driver)
    actions.pointer_action.move_to_location(1, 1)
    actions.perform()


def run_rows(driver: Any) -> dict[str, str]:
    """Visible text of each runs-table row, keyed by run id (the grid's ``row-id``).

    The grid renders pinned and scrolling cells as separate row elements; their
    texts are joined with `` | ``.
    """
    from selenium.webdriver.common.by import By

    rows: dict[str, list[str]] = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "[role='row'][row-id]"):
        text = row.text.strip().replace("\n", " | ")
        if text:
            rows.setdefault(row.get_attribute("row-id"), []).append(text)
    return {rid: " | ".join(parts) for rid, parts in rows.items()}


def wait_for_run_rows(driver: Any, expected: dict[str, Sequence[str]], timeout: float = 30.0) -> dict[str, str]:
    """Wait until each run id's row shows all of its expected strings."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(drv: Any) -> dict[str, str] | bool:
        rows = run_rows(drv)
        ok = all(all(s in rows.get(rid, "") for s in want) for rid, want in expected.items())
        return rows if ok else False

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(ready)
    except TimeoutException:
        raise AssertionError(
            f"runs table rows never matched {expected}; last rows: {run_rows(driver)}"
        ) from None


def show_runs_page(driver: Any, base_url: str, store: Store, expected: dict[str, Sequence[str]],
                   view: bool = True) -> dict[str, str]:
    """Open the experiment's runs table as a user does: through LAD's saved view (the link
    ``make ui`` prints, ``lad.tracking.run_record.runs_view_url``), or with ``view=False`` the bare
    experiment page (MLflow's own default columns). Nothing is clicked into place.

    Returns the rows' text by run id once each run's row shows its ``expected[name]`` strings.
    """
    from lad.tracking.run_record import runs_view_url

    url = runs_view_url(base_url, store.experiment_id) if view else experiment_url(base_url, store.experiment_id)
    driver.get(url)
    wait_for_texts(driver, [store.experiment_name, *store.run_ids], timeout=UI_TIMEOUT)
    dismiss_assistant(driver)  # MLflow's assistant panel opens by itself on a first visit
    park_pointer(driver)
    want = {store.run_ids[name]: [name, *strings] for name, strings in expected.items()}
    return wait_for_run_rows(driver, want)


def show_run_page(driver: Any, base_url: str, store: Store, name: str, texts: Sequence[str]) -> str:
    """Open one run's overview page and wait for ``texts`` (e.g. its description) to show."""
    driver.get(f"{base_url}/#/experiments/{store.experiment_id}/runs/{store.run_ids[name]}")
    text = wait_for_texts(driver, [name, *texts], timeout=UI_TIMEOUT)
    dismiss_assistant(driver)
    park_pointer(driver)
    return text


def show_experiment_description(driver: Any, base_url: str, store: Store, texts: Sequence[str]) -> str:
    """Open the experiment page and show its description (MLflow may fold it behind a toggle)."""
    from selenium.common.exceptions import TimeoutException

    driver.get(experiment_url(base_url, store.experiment_id))
    wait_for_texts(driver, [store.experiment_name], timeout=UI_TIMEOUT)
    dismiss_assistant(driver)
    try:
        return wait_for_texts(driver, texts, timeout=8)
    except AssertionError:
        pass
    for label in ("About this experiment", "Description", "Show more", "Expand"):
        try:
            click_text(driver, label, timeout=3)
        except TimeoutException:
            continue
        try:
            return wait_for_texts(driver, texts, timeout=8)
        except AssertionError:
            continue
    return wait_for_texts(driver, texts, timeout=5)


def show_compare_page(driver: Any, base_url: str, store: Store, names: Sequence[str],
                      texts: Sequence[str] = ()) -> str:
    """Open the compare view for the runs called ``names``; return the page text."""
    driver.get(compare_url(base_url, store.experiment_id, [store.run_ids[n] for n in names]))
    text = wait_for_texts(driver, [f"Comparing {len(names)} Runs", *names, "Parameters", *texts], timeout=UI_TIMEOUT)
    dismiss_assistant(driver)
    park_pointer(driver)
    return text


def wait_for_plot(driver: Any, timeout: float = 30.0) -> bool:
    """Wait for the compare view's (lazily loaded) Plotly chart to be drawn."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def drawn(drv: Any) -> bool:
        return any(el.is_displayed() for el in drv.find_elements(By.CSS_SELECTOR, ".js-plotly-plot svg.main-svg"))

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.25).until(drawn)
    except TimeoutException:
        return False
    time.sleep(1.0)  # let the lines' transition finish
    return True
