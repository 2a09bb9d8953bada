"""The documentation layout a newcomer relies on: a short README whose links work, a small docs/."""

from __future__ import annotations

import re
import subprocess

from conftest import REPO

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_readme_is_short_and_its_links_resolve():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    targets = [t for t in LINK.findall(text) if not t.startswith(("http://", "https://"))]
    assert "docs/index.md" in targets and "docs/architecture.md" in targets and "docs/extending.md" in targets
    assert [t for t in targets if not (REPO / t).exists()] == []


def test_docs_has_at_most_ten_top_level_files_and_the_recordings_live_under_results():
    files = [p.name for p in (REPO / "docs").iterdir() if p.is_file()]
    assert len(files) <= 10 and {"index.md", "architecture.md", "extending.md"} <= set(files)
    assert not list((REPO / "docs").glob("search*"))
    from benchmarks import search_pruning  # the search benchmark records its data under results/

    assert search_pruning.RECORDS == REPO / "results" / "search"
    page = (REPO / "docs" / "benchmarks" / "search.md").read_text()
    missing = [t for t in LINK.findall(page) if not (REPO / "docs" / "benchmarks" / t).resolve().exists()]
    assert missing == []


def test_no_path_hacks_outside_tests():
    """sweeps/, benchmarks/, scripts/ and the entry scripts import the installed lad and each other from
    the checkout (its root on the path: ``make install``): no ``sys.path`` edits outside tests/ (a script
    that needs a test helper imports lad.testing)."""
    hacks = re.compile(r"sys\.path\.(insert|append|extend)|sys\.path\s*[+]?=")
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()  # the project's code, not .venv or run outputs
    assert "lad/search/inprocess.py" in tracked
    found = [name for name in tracked if not name.startswith("tests/") and hacks.search((REPO / name).read_text())]
    assert found == []


def test_the_docs_index_lists_every_page():
    index = (REPO / "docs" / "index.md").read_text()
    linked = {t for t in LINK.findall(index)}
    # the top-level pages and the benchmark pages (docs/results/ holds results.md's per-task pages)
    found = [*(REPO / "docs").glob("*.md"), *(REPO / "docs" / "benchmarks").glob("*.md")]
    pages = {str(p.relative_to(REPO / "docs")) for p in found if p.name != "index.md"}
    assert pages - linked == set()


def test_documented_sweeps_reach_the_trial_counts_they_ask_for():
    """In both search paths n_trials caps one run and the study stops at max_trials (20 in the search
    files, 30 in conf/search.yaml): a documented ``n_trials=N`` above that total would stop short, silently."""
    from omegaconf import OmegaConf

    from doc_commands import PAGES, shown_commands
    from lad.core.config import load_with_bases

    checked = 0
    for command in [c for page in PAGES for c in shown_commands(page)]:
        args = dict(a.split("=", 1) for a in command.argv if "=" in a and not a.startswith("-"))
        if "hparams_search" in args and "hydra.sweeper.n_trials" in args:
            asked, total = args["hydra.sweeper.n_trials"], args.get("hydra.sweeper.max_trials") or load_with_bases(
                REPO / "conf" / "hparams_search" / f"{args['hparams_search']}.yaml").hydra.sweeper.max_trials
        elif any(a.endswith("sweeps/search.py") for a in command.argv) and "n_trials" in args:
            asked = args["n_trials"]
            total = args.get("max_trials") or OmegaConf.load(REPO / "conf" / "search.yaml").max_trials
        else:
            continue
        checked += 1
        assert total in (None, "null") or int(asked) <= int(total), f"{command.page}:{command.line}: {command.text}"
    assert checked, "no documented command sets n_trials"
