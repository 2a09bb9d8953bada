"""scripts/fetch_glue.py: the TSV files it writes are the ones LAD's readers expect, and offline it
stops with one error line (no download, no ``datasets`` needed for either)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import fetch_glue  # noqa: E402


def _rows(n, labels, pair=False):
    return [{"idx": i, "text_a": f"first\ttext {i}", "text_b": f"second {i}" if pair else None,
             "label": labels[i % len(labels)]} for i in range(n)]


@pytest.mark.parametrize("name,pair,hf_names,hf_labels", [
    ("sst2", False, ["negative", "positive"], [0, 1]),
    ("cola", False, ["unacceptable", "acceptable"], [1, 0]),  # header-less train/dev files
    ("mnli", True, ["entailment", "neutral", "contradiction"], [0, 1, 2]),  # labels by name, 2 dev splits
    ("stsb", True, None, [4.25, 0.0]),
])
def test_written_files_read_back_through_the_task_config(tmp_path, name, pair, hf_names, hf_labels):
    from lad.data.glue import read_split

    task = fetch_glue.load_task(name)
    labels = [fetch_glue.label_text(task, v, hf_names) for v in hf_labels]
    for split in task.split_names:
        unlabelled = not task.split(split).labeled
        rows = _rows(5, [None] if unlabelled else labels, pair)
        fetch_glue.write_split(task, split, rows, tmp_path)
        got = read_split(task, tmp_path, split)
        assert [ex.text_a for ex in got] == [f"first text {i}" for i in range(5)]  # the tab became a space
        assert [ex.text_b for ex in got] == ([f"second {i}" for i in range(5)] if pair else [None] * 5)
        if not unlabelled:
            expected = [task.labels.index(t) if not task.is_regression else float(t) for t in labels]
            assert [ex.label for ex in got] == [expected[i % len(expected)] for i in range(5)]
    if name == "mnli":  # the Hub's class 1 is 'neutral', which is class 2 in conf/task/mnli.yaml
        assert fetch_glue.label_text(task, 1, hf_names) == "neutral" and task.labels.index("neutral") == 2
    assert fetch_glue.label_text(task, -1, hf_names) is None or task.is_regression


def _run(env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "scripts/fetch_glue.py", "--tasks", "rte", "--out", "unused"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_offline_is_one_error_line_and_exit_2():
    proc = _run({"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: HF_HUB_OFFLINE is set") and proc.stderr.count("\n") == 1


def test_unreachable_hub_is_one_error_line_and_exit_2():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = _run({"HF_ENDPOINT": f"http://127.0.0.1:{port}"})
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cannot reach the Hugging Face Hub") and proc.stderr.count("\n") == 1
    assert not (REPO / "unused").exists()


def test_hub_backbone_offline_names_why(monkeypatch, tmp_path):
    """A Hub id that is not cached: one ConfigError saying whether the user or the network made it offline."""
    from lad.core.errors import ConfigError
    from lad.models.hub import looks_like_path, resolve_pretrained

    assert not looks_like_path("bert-base-uncased") and not looks_like_path("google/bert_uncased_L-2_H-128_A-2")
    assert looks_like_path(str(tmp_path)) and looks_like_path("./models/x") and looks_like_path("a/b/c")
    assert resolve_pretrained(str(tmp_path), "teacher.backbone") == tmp_path  # a directory is used as is
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"^teacher.backbone=lad-tests/none: not a local directory and not in "
                                          r"the Hugging Face cache \(HF_HUB_OFFLINE is set\)"):
        resolve_pretrained("lad-tests/none", "teacher.backbone")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("lad.models.hub.hub_reachable", lambda timeout=2.0: False)
    monkeypatch.setattr("lad.models.hub.go_offline", lambda: None)  # keep this test process online
    with pytest.raises(ConfigError, match=r"\(the Hub is unreachable\)"):
        resolve_pretrained("lad-tests/none", "teacher.backbone")
