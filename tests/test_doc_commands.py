"""Every command README.md and docs/*.md show runs as typed (tests/doc_commands.py finds them).

Each runs from the repository root after the README's activation (``source .venv/bin/activate``),
in document order, with tiny overrides appended (a tiny teacher backbone, a few examples and steps)
and everything it writes, the MLflow store included (MLflow stays on), in a temporary folder.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, save_tiny_model
from doc_commands import all_commands

ACTIVATE = "source .venv/bin/activate"


def _tiny(tmp: Path, backbone: Path) -> dict[str, list[str]]:
    """What each documented script gets appended: small, fast, and writing under ``tmp`` only."""
    uri = f"sqlite:///{tmp / 'mlruns.db'}"
    train = [f"teacher.backbone={backbone}", "data.max_train_samples=16", "data.max_eval_samples=16",
             "trainer.max_steps=2", "trainer.progress=false", "trainer.predict_test=false",
             "trainer.measure_inference=false", "optim.batch_size=8", "trainer.num_threads=1",
             f"paths.output_root={tmp / 'outputs'}", f"paths.artifacts={tmp / 'artifacts'}",
             f"paths.cache={tmp / 'cache'}", f"mlflow.tracking_uri={uri}", f"mlflow.artifact_location={tmp / 'art'}"]
    return {
        "train_teacher.py": train,
        "distil.py": train,
        "distil.py -m hparams_search": [*train, "hydra.sweeper.max_trials=1",
                                        f"hydra.sweeper.storage=sqlite:///{tmp / 'optuna.db'}"],
        "sweeps/search.py": [*train, "n_trials=1", "trainer.eval_every=1", "search.plots=false",
                             f"search.storage=sqlite:///{tmp / 'optuna.db'}"],
        "sweeps/ablation.py": ["dry_run=true", f"mlflow.tracking_uri={uri}", f"log_dir={tmp / 'logs'}"],
        "sweeps/export.py": ["--tracking-uri", uri, "--out", str(tmp / "runs.jsonl")],
    }


def _script(argv: list[str]) -> str:
    """The key of ``_tiny`` for a command line (``python distil.py -m hparams_search=...`` has its own)."""
    script = argv[1] if argv[0] == "python" and len(argv) > 1 else argv[0]
    if script == "distil.py" and "-m" in argv and any(a.startswith("hparams_search=") for a in argv):
        return "distil.py -m hparams_search"
    return script


def test_the_readme_says_how_to_activate_the_environment_before_its_first_command():
    readme = (REPO / "README.md").read_text()
    first_section = readme.split("## Start here", 1)[1].split("\n## ", 1)[0]
    assert ACTIVATE in first_section
    assert readme.index(ACTIVATE) < readme.index("python train_teacher.py")


def test_every_command_is_run_or_marked_illustrative():
    commands, stale = all_commands()
    assert stale == {}  # a marker that matches no command is left over from an edited page
    tiny = _tiny(Path("/tmp"), Path("/tmp"))
    unknown = [f"{c.page}:{c.line}: {c.text}" for c in commands
               if not c.text.startswith(ACTIVATE) and _script(c.argv) not in tiny]
    assert unknown == [], "add tiny overrides for these in tests/test_doc_commands.py or mark them illustrative"
    shown = {c.text for c in commands}
    assert "python distil.py -m hparams_search=lad_optuna task=rte" in shown  # the README's own examples
    assert any(c.page == "README.md" and c.text.startswith("python train_teacher.py task=custom") for c in commands)


@pytest.mark.e2e
@pytest.mark.slow
def test_every_documented_command_runs_as_typed(tmp_path):
    backbone = save_tiny_model(tmp_path / "backbone", num_layers=6)
    tiny = _tiny(tmp_path, backbone)
    commands, _ = all_commands()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns.db'}"}
    # the documented activation where the checkout has its own .venv; else this interpreter's bin/
    activate = (f"{ACTIVATE} && " if (REPO / ".venv" / "bin" / "activate").is_file()
                else f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH && ")
    failed, ran = [], set()
    for command in commands:
        if command.text.startswith(ACTIVATE) or command.text in ran:  # a page repeating a command: run once
            continue
        ran.add(command.text)
        line = command.text + " " + shlex.join(tiny[_script(command.argv)])
        out = subprocess.run(["bash", "-c", activate + line], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=900)
        print(f"[doc command] {'ok' if out.returncode == 0 else 'FAILED'} {command.page}:{command.line}: "
              f"{command.text}", flush=True)  # progress with -s: the whole set takes minutes
        if out.returncode != 0:
            failed.append(f"{command.page}:{command.line}: {command.text}\n{(out.stderr or out.stdout)[-1500:]}")
    assert failed == [], "\n\n".join(failed)
    from mlflow.tracking import MlflowClient  # MLflow was on: the runs are in the temporary store

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    entries = {r.data.tags.get("lad.entry") for e in client.search_experiments()
               for r in client.search_runs([e.experiment_id])}
    assert {"train_teacher", "distil"} <= entries
