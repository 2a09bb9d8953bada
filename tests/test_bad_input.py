"""Bad-input matrix: each user mistake ends the real entry point with ONE clear error line.

Every case runs ``distil.py`` / ``train_teacher.py`` as a subprocess (the way users run them) and
checks: exit status != 0, no traceback (unless ``HYDRA_FULL_ERROR=1``), one ``error: ...`` line on
stderr matching the case's pattern (Hydra's own message for unknown config options), and that
nothing was written or overwritten (a pre-existing run dir, its ``.hydra/`` and log included, is
byte-identical; a fresh one is not left behind). The error must come before training: every command
caps training at 2 steps, so a check that fired too late would show as a successful exit.

The cases (``lad/testing/bad_input_cases.py``) are also the source of docs/troubleshooting.md
(``python scripts/troubleshooting.py``): keep ``symptom`` (what the user sees), ``cause`` and ``fix``
readable.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import REPO
from lad.testing.bad_input import Case, Outcome, Sandbox, closed_port, run_case, run_entry
from lad.testing.bad_input_cases import CASES

PARALLEL = 2  # concurrent subprocesses (2 cores); each spends most of its time importing torch


@pytest.fixture(scope="session")
def small_vocab_teacher(tmp_path_factory) -> Path:
    """A teacher whose config says vocab_size=100 next to the 30522-token MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from conftest import minilm_dir

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=37, max_position_embeddings=128, num_labels=2)
    path = tmp_path_factory.mktemp("small_vocab") / "teacher"
    BertForSequenceClassification(cfg).save_pretrained(path, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(minilm_dir())).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory, tiny_glue, tiny_teacher, small_vocab_teacher) -> dict[str, Outcome]:
    """Run every selected case at once (a few at a time): most of each run is interpreter start-up."""
    wanted = {item.callspec.params["case"].id for item in request.session.items
              if item.module is request.module and hasattr(item, "callspec") and "case" in item.callspec.params}
    cases = [c for c in CASES if c.id in wanted]

    def one(case: Case) -> Outcome:
        root = tmp_path_factory.mktemp(case.id)
        return run_case(case, Sandbox(root, tiny_glue, tiny_teacher, small_vocab_teacher))

    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        return dict(zip([c.id for c in cases], pool.map(one, cases)))


def _param(case: Case):
    marks = [pytest.mark.xfail(strict=True, reason=case.known_defect)] if case.known_defect else []
    return pytest.param(case, id=case.id, marks=marks)


# --------------------------------------------------------------------------- tests
def test_case_table_is_complete_and_consistent():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) >= 15
    for case in CASES:
        assert re.search(case.expect, case.symptom), f"{case.id}: symptom does not match its own pattern"
        assert case.cause.strip() and case.fix.strip(), case.id


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input_gives_one_clear_error_and_writes_nothing(case: Case, outcomes: dict[str, Outcome]):
    outcome = outcomes[case.id]
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    proc = outcome.proc
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"exit 0: the mistake was not caught\n{out[-3000:]}"
    assert "Traceback" not in out, out[-3000:]
    if case.hydra:
        assert re.search(case.expect, proc.stderr, re.MULTILINE), proc.stderr[-3000:]
    else:
        assert proc.returncode == 2, out[-3000:]
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), \
            f"stderr should hold exactly one error line:\n{proc.stderr[-3000:]}"
        assert re.search(case.expect, lines[0]), lines[0]
    changed = sorted(set(outcome.after.items()) ^ set(outcome.before.items()))
    assert outcome.after == outcome.before, f"files written or changed: {changed}"


def test_hydra_full_error_shows_the_traceback(tmp_path, tiny_glue, tiny_teacher):
    sandbox = Sandbox(tmp_path, tiny_glue, tiny_teacher, tmp_path)
    proc, _ = run_entry(sandbox.distil("optim.lr=-1"), env_extra={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ConfigError: optim.lr must be > 0" in proc.stderr


def test_unreachable_mlflow_server_fails_fast(monkeypatch):
    """One retry and a short timeout (set by lad.tracking.tracker.connect): seconds, not minutes."""
    from omegaconf import OmegaConf

    from lad.core.errors import LADError
    from lad.tracking.store import connect

    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    saved = dict(os.environ)
    uri = f"http://127.0.0.1:{closed_port()}"
    t0 = time.monotonic()
    try:
        with pytest.raises(LADError, match=f"cannot reach the MLflow tracking store {re.escape(uri)}"):
            connect(OmegaConf.create({"tracking_uri": uri}))
    finally:
        os.environ.clear()
        os.environ.update(saved)
        import mlflow

        mlflow.set_tracking_uri(None)
    assert time.monotonic() - t0 < 30


def test_troubleshooting_doc_is_generated_from_this_table():
    """docs/troubleshooting.md is rendered from CASES; re-run scripts/troubleshooting.py after edits."""
    proc = subprocess.run([sys.executable, "scripts/troubleshooting.py", "--check"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = (REPO / "docs" / "troubleshooting.md").read_text()
    assert all(f"`{' '.join(c.symptom.split())}`".replace("|", "\\|") in doc for c in CASES)
