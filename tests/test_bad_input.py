"""Bad-input matrix: each user mistake ends the real entry point with ONE clear error line.

Every case runs ``distil.py`` / ``train_teacher.py`` as a subprocess (the way users run them) and is
judged by ``lad.testing.bad_input.judge`` (the probe's judge too): exit status != 0, no traceback
(unless ``HYDRA_FULL_ERROR=1``), exit status 2 and one ``error: ...`` line on stderr matching the
case's pattern (Hydra's own message for unknown config options), no planted password anywhere, and
nothing written or overwritten in the case's sandbox (a pre-existing run dir, its ``.hydra/`` and log
included, is byte-identical; a fresh one is not left behind). The error must come before training:
every command caps training at 2 steps, so a check that fired too late would show as a successful exit.

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
from lad.testing.bad_input import Case, Outcome, Sandbox, closed_port, explain, judge, run_case, run_entry
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
    flags = judge(case, outcome)
    assert not flags, explain(flags, outcome)


def _ended(rc: int, stderr: str = "", stdout: str = "", changed: tuple = (), leaked: bool = False) -> Outcome:
    return Outcome(rc, stdout, stderr, 0.0, list(changed), leaked)


def test_judge_flags_each_way_a_command_can_end_wrong():
    user = Case("u", lambda s: [], r"^error: bad x")
    hydra = Case("h", lambda s: [], r"Could not find", kind="hydra")
    ok = Case("o", lambda s: [], r"falling back", kind="ok")
    assert judge(user, _ended(2, "error: bad x\n")) == []
    assert judge(user, _ended(0)) == ["RAN"]
    assert judge(user, _ended(1, "error: bad x\n")) == ["EXIT=1"]
    assert judge(user, _ended(2, "warning: w\nerror: bad x\n")) == ["LINES=2"]
    assert judge(user, _ended(2, "error: other\n")) == ["MESSAGE"]
    assert judge(user, _ended(1, "Traceback (most recent call last):\nValueError\n")) == \
        ["TRACEBACK", "EXIT=1", "LINES=2"]
    assert judge(user, _ended(2, "error: bad x\n", changed=("run/x",), leaked=True)) == ["LEAK", "CHANGED"]
    assert judge(hydra, _ended(1, "Could not find 'task/nope'\n")) == []
    assert judge(hydra, _ended(1, "Key 'x' is not in struct\n")) == ["MESSAGE"]
    assert judge(ok, _ended(0, stdout="[lad][WARNING] - teacher cache: falling back\n")) == []
    assert judge(ok, _ended(0)) == ["MESSAGE"]
    assert judge(ok, _ended(1, "error: x\n")) == ["FAILED"]


def test_run_case_watches_what_it_is_told_and_finds_the_planted_password(tmp_path):
    """The tests watch the whole sandbox; the probe only a run directory that existed before."""
    from lad.testing.bad_input import EXISTING_RUN_DIR, SECRET

    writes = Case("w", lambda s: ["-c", f"import pathlib; p = pathlib.Path({str(s.run_dir)!r}); "
                                        "p.mkdir(exist_ok=True); (p / 'new').write_text('x')"])
    fresh = Sandbox(tmp_path / "a", tmp_path, tmp_path)
    assert run_case(writes, fresh).changed == ["run", "run/new"]
    assert run_case(writes, Sandbox(tmp_path / "b", tmp_path, tmp_path), EXISTING_RUN_DIR).changed == []
    earlier = Sandbox(tmp_path / "c", tmp_path, tmp_path)
    (earlier.run_dir / "old").mkdir(parents=True)
    assert run_case(writes, earlier, EXISTING_RUN_DIR).changed == ["new"]
    prints = Case("p", lambda s: ["-c", f"print('http://u:{SECRET}@h')"])
    assert run_case(prints, Sandbox(tmp_path / "d", tmp_path, tmp_path)).leaked


def test_the_probe_uses_this_harness_and_its_cases_are_well_formed():
    from lad.testing.bad_input import FLAGS
    from lad.testing.probe_cases import cases

    probe = cases()
    ids = [c.id for c in probe]
    assert len(ids) == len(set(ids)) >= 200
    assert {c.kind for c in probe} == {"user", "hydra", "ok"} and {c.round for c in probe} == {1, 2, 3}
    proc = subprocess.run([sys.executable, "scripts/probe_inputs.py", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "--case ID" in proc.stdout and all(flag in proc.stdout for flag in FLAGS)
    proc = subprocess.run([sys.executable, "scripts/probe_inputs.py", "--case", "no:such_case"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no such case: no:such_case" in proc.stderr


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
