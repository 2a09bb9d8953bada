"""benchmarks/search_replay.py: Optuna's pruners replayed on a recorded unpruned search."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


COMMAND = ("python benchmarks/search_pruning.py --task mrpc --trials 4 --steps 40 --eval-every 20 --pruner median "
           "search.startup_trials=1 search.warmup_evals=0 search.prune_on=accuracy")

# (early accuracy, late accuracy, final score): trial 1 is the best but dips at the first evaluation
CURVES = [(0.70, 0.70, 0.80), (0.60, 0.80, 0.90), (0.65, 0.65, 0.78), (0.75, 0.75, 0.82)]


def _trial(number, early, late, final, state="COMPLETE", steps=(20, 40)):
    acc = {20: early, 40: late}
    dev = {str(s): {"accuracy": acc[s], "f1": final, "f1_acc_mean": (acc[s] + final) / 2, "loss": 1 - acc[s]}
           for s in steps}
    return {"number": number, "state": state, "value": final if state == "COMPLETE" else None,
            "params": {"optim.lr": 1e-4 * (number + 1)}, "reports": {k: v["accuracy"] for k, v in dev.items()},
            "dev": dev, "duration_s": 100.0 * len(steps) / 2}


def write_recorded(path: Path) -> Path:
    # what the recorded pruned search did with these settings: trials 1 and 2 stopped at step 20
    pruned = [_trial(0, *CURVES[0]), _trial(1, *CURVES[1], state="PRUNED", steps=(20,)),
              _trial(2, *CURVES[2], state="PRUNED", steps=(20,)), _trial(3, *CURVES[3])]
    path.write_text(json.dumps({"command": COMMAND, "wall_s": {"none": 400, "pruned": 300},
                                "trials": {"none": [_trial(i, *c) for i, c in enumerate(CURVES)],
                                           "pruned": pruned}}))
    return path


@pytest.fixture
def recorded(tmp_path):
    from benchmarks.search_replay import Recorded

    return Recorded.load(write_recorded(tmp_path / "search-x.json"))


def test_replay_feeds_the_recorded_dev_values_to_optunas_pruner(recorded):
    from benchmarks.search_replay import Setting, replay, unpruned_reach

    target = max(t["value"] for t in recorded.trials)
    assert target == 0.90 and [t["duration_s"] for t in recorded.trials] == [100.0] * 4
    as_recorded = Setting(recorded, [])
    assert "median on accuracy, 1 startup trials, 0 warm-up" in as_recorded.label
    # trial 0 completes; trial 1 (the best) reports 0.60 < 0.70 at step 20 and is stopped, as is trial 2;
    # a stopped trial costs the half of its duration it trained
    assert replay(recorded.trials, [0, 1, 2, 3], as_recorded, target) == (None, 300.0, {1: 20, 2: 20})
    # first in line, the best trial cannot be pruned (no complete trial to compare with); its 0.80 at
    # step 40 then stops every other trial there, at the end of its training
    assert replay(recorded.trials, [1, 0, 2, 3], as_recorded, target) == (100.0, 400.0,
                                                                                   {0: 40, 2: 40, 3: 40})
    assert unpruned_reach(recorded.trials, [0, 2, 1, 3], target) == 300.0
    # with one protected evaluation the best trial recovers by step 40 and is kept
    warm = Setting(recorded, ["search.warmup_evals=1"])
    assert replay(recorded.trials, [0, 1, 2, 3], warm, target) == (200.0, 400.0, {2: 40})


def test_tally_counts_orders_where_only_the_pruned_search_is_early_enough(recorded):
    from benchmarks.search_replay import Setting, tally

    # best trial last: the unpruned search needs all its time; with warm-up the pruner stops trial 2
    # only at its end, so nothing is saved; without warm-up the best trial itself is stopped
    orders = [[1, 0, 2, 3], [0, 2, 3, 1]]
    t = tally(recorded, Setting(recorded, ["search.warmup_evals=1"]), orders)
    assert (t["alone"], t["met"], t["late"], t["rescued"], t["lost"]) == (1, 1, 1, 0, 0)
    t = tally(recorded, Setting(recorded, []), orders)
    assert (t["alone"], t["met"], t["late"], t["rescued"], t["lost"]) == (1, 1, 1, 0, 1)
    # a search of some of the trials: its own best is the target, its own total the scale
    t = tally(recorded, Setting(recorded, []), [[2, 0]])
    assert (t["alone"], t["met"], t["lost"], t["shares"], t["totals"]) == (0, 0, 0, [1.0], [1.0])


def test_tolerance_lowers_the_target_below_the_best(recorded, tmp_path):
    from benchmarks.search_replay import Setting, tally

    # without warm-up the best trial (0.90, second in line: the unpruned search has it at half its time)
    # is stopped in this order, so the pruned search never reaches the best; with a tolerance of 0.11
    # the first trial's 0.80 is close enough, reached after a quarter of the time
    orders, as_recorded = [[0, 1, 2, 3]], Setting(recorded, [])
    t = tally(recorded, as_recorded, orders)
    assert (t["alone"], t["met"], t["lost"], t["shares"]) == (1, 0, 1, [float("inf")])
    t = tally(recorded, as_recorded, orders, tolerance=0.11)
    assert (t["alone"], t["met"], t["lost"], t["shares"]) == (1, 1, 0, [0.25])

    out = tmp_path / "replay.md"
    proc = subprocess.run([sys.executable, "benchmarks/search_replay.py", str(write_recorded(tmp_path / "s.json")),
                           "--orders", "3", "--tolerance", "0.11", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = out.read_text()
    assert "--orders 3 --seed 0 --tolerance 0.11`" in page and "best score minus 0.11, reached" in page
    assert "| unpruned reaches its best − 0.11 ≤ 50 % |" in page and "pruned search never gets there" in page
    proc = subprocess.run([sys.executable, "benchmarks/search_replay.py", str(tmp_path / "s.json"),
                           "--tolerance", "-1", "--out", str(tmp_path / "bad.md")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--tolerance must be >= 0" in proc.stderr and not (tmp_path / "bad.md").exists()


def test_replay_page_checks_itself_against_the_recorded_pruned_search(tmp_path):
    src = write_recorded(tmp_path / "search-x.json")
    out = tmp_path / "replay.md"
    proc = subprocess.run([sys.executable, "benchmarks/search_replay.py", str(src), "--orders", "6",
                           "--variant", "search.warmup_evals=0", "--variant", "search.warmup_evals=1",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = out.read_text()
    assert "--variant search.warmup_evals=1 --orders 6 --seed 0" in page
    rows = [line for line in page.splitlines() if line.startswith("| search-x (4 trials) |")]
    assert len(rows) == 2 and "0 warm-up" in rows[0] and "1 warm-up" in rows[1]
    assert all(row.count("(") >= 4 and "/6)" in row for row in rows)
    # the recorded settings, replayed in the recorded order, decide as the recorded pruned search did
    assert "as the recorded pruned search for 4 of the 4 trials" in page
    assert "took 1.00–1.00 × the duration the replay charges" in page


def test_replay_bad_inputs_are_one_line_errors(tmp_path):
    src = write_recorded(tmp_path / "search-x.json")
    bad = tmp_path / "page.md"
    bad.write_text("# not json")
    for args, start, msg in (([str(bad)], f"error: {bad}: ", "not a JSON written by benchmarks/search_pruning.py"),
                             ([str(src), "--variant", "search.prune_on=spearman"],
                              "error: search.prune_on must be one of", "for task mrpc, got 'spearman'"),
                             ([str(src), "--variant", "search.warmup_evals"], "error: --variant",
                              "expected key=value overrides")):
        proc = subprocess.run([sys.executable, "benchmarks/search_replay.py", *args, "--out",
                               str(tmp_path / "replay.md")], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and msg in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith(start), proc.stderr  # the message itself, not its repr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "replay.md").exists()


def test_variant_comma_lists_sweep_like_hydra_multirun():
    from benchmarks.search_replay import expand

    assert expand("search.warmup_evals=0,1 search.prune_on=f1") == [
        ["search.warmup_evals=0", "search.prune_on=f1"], ["search.warmup_evals=1", "search.prune_on=f1"]]
    assert len(expand("search.pruner=halving,hyperband search.min_resource=20,40,60")) == 6
    with pytest.raises(ValueError, match="expected key=value overrides, got 'search.warmup_evals'"):
        expand("search.warmup_evals")


def test_pool_replays_larger_searches_drawn_from_several_recordings(tmp_path):
    first, second = write_recorded(tmp_path / "a.json"), write_recorded(tmp_path / "b.json")
    out = tmp_path / "replay.md"
    proc = subprocess.run([sys.executable, "benchmarks/search_replay.py", str(first), str(second), "--pool", "6",
                           "--orders", "4", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = out.read_text()
    rows = [line for line in page.splitlines() if line.startswith("| pool of 2 (8 trials, searches of 6) |")]
    assert len(rows) == 1 and rows[0].count("/4)") >= 3  # shares over the 4 drawn searches
    assert "each replayed search runs 6 trials drawn from it" in page and "--pool 6" in page
    # the self-check still compares each recording with its own pruned search
    assert page.count("as the recorded pruned search for 4 of the 4 trials") == 2

    for change in ((" --steps 40", " --steps 80"), (" search.", " student.init_classifier=false search."), None):
        other = json.loads(first.read_text())
        other["command"] = other["command"].replace(*change, 1) if change else other["command"]
        second.write_text(json.dumps(other))
        args = ["--pool", "6"] if change else ["--pool", "9"]
        proc = subprocess.run([sys.executable, "benchmarks/search_replay.py", str(first), str(second), *args,
                               "--out", str(tmp_path / "bad.md")], cwd=REPO, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert ("b and a trained differently" if change else "--pool 9: the inputs hold only 8 complete trials") \
            in proc.stderr
    assert not (tmp_path / "bad.md").exists()


def test_pool_accepts_other_seeds_and_pruner_settings_and_evens_out_speed(tmp_path):
    """Recordings that differ in seed, pruner settings or thread count trained alike and pool; one run at
    half speed pools as if it had run at the other's speed (its durations are rescaled)."""
    from benchmarks.search_replay import Recorded

    first = write_recorded(tmp_path / "a.json")
    slow = json.loads(first.read_text())
    slow["command"] = slow["command"].replace("search.warmup_evals=0", "seed=9 search.warmup_evals=1 "
                                              "trainer.num_threads=1")
    for t in slow["trials"]["none"]:
        t["duration_s"] *= 2 + t["number"] / 10  # about half speed, not exactly: rescaling is by the median
    (tmp_path / "b.json").write_text(json.dumps(slow))
    a, b = Recorded.load(first), Recorded.load(tmp_path / "b.json")
    pooled = Recorded.pool([a, b])
    assert [t["number"] for t in pooled.trials] == list(range(8))
    durations = [t["duration_s"] for t in pooled.trials]
    # the pool's median trial time is the middle of the two medians (100 s and 215 s); each input keeps
    # its own spread around it
    unit = (100 + 215) / 2
    assert durations[:4] == pytest.approx([unit] * 4)
    assert durations[4:] == pytest.approx([t["duration_s"] * unit / 215 for t in b.trials])


def test_replay_is_reproducible_with_hyperband(recorded):
    """Hyperband assigns a trial to a bracket by hashing the study name with the trial number, so the
    replay's study carries the benchmark's name, not a random one: the same orders give the same page."""
    from benchmarks.search_replay import Setting, tally

    setting = Setting(recorded, ["search.pruner=hyperband", "search.min_resource=20", "search.reduction_factor=2"])
    orders = [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]] * 5
    runs = [tally(recorded, setting, orders) for _ in range(4)]
    assert all(run == runs[0] for run in runs)
