"""How much of a recorded search's ranking is training noise: chosen trials rerun with other seeds (not a test).

    python benchmarks/search_noise.py results/search/search-160-seed1.json --trials best,median,worst \
        --seeds 11 12 13 --workers 2 --out results/search/search-noise-mrpc-seed1.md

The input is a ``.json`` written by ``benchmarks/search_pruning.py``. Its unpruned search ran every
trial with the same training seed, so two trials differ only by their hyperparameters, and the search
calls the one with the highest dev score "the best". Here the chosen trials of that search (``best``,
``median``, ``worst`` by recorded score, or trial numbers) are trained again with the same budget and
parameters, once with the recorded seed (which must reproduce the recorded score: training is
deterministic on CPU) and once with each ``--seeds`` value (data order, dropout and the student's
fresh weights change; nothing else). If one configuration's score moves between seeds about as much
as the recorded trials differ from each other, the search's best is a draw of that noise, and no
pruner can be expected to find it early except by luck.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmarks.search_pruning import REPO, search_args
from benchmarks.search_replay import Recorded
from lad.fileio import write_text

_MEMO: dict = {}  # per worker process: the teacher, tokenizer and features, loaded once


def load_recording(path: Path) -> tuple[argparse.Namespace, list[dict]]:
    """The recorded command's settings and its unpruned search's complete trials."""
    rec = Recorded.load(Path(path))
    if len(rec.trials) < 2:
        raise ValueError(f"{path}: its unpruned search has fewer than two complete trials")
    return rec.args, rec.trials


def recorded_seed(args: argparse.Namespace) -> int:
    """The training seed of the recorded searches (the config's default when the command set none)."""
    seeds = [o.split("=", 1)[1] for o in args.overrides if o.startswith("seed=")]
    if seeds:
        return int(seeds[-1])
    from hydra import compose, initialize_config_dir

    from lad.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return int(compose("search").seed)


def by_score(trials: list[dict]) -> list[dict]:
    """Trials from the highest recorded score down (ties: lower trial number first)."""
    return sorted(trials, key=lambda t: (-t["value"], t["number"]))


def pick(trials: list[dict], spec: str) -> list[dict]:
    """Trials named by rank of recorded score (best / median / worst) or by number, in the given order."""
    ranked = by_score(trials)
    by_number = {t["number"]: t for t in trials}
    chosen = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if item in ("best", "median", "worst"):
            t = {"best": ranked[0], "median": ranked[(len(ranked) - 1) // 2], "worst": ranked[-1]}[item]
        elif item.isdigit() and int(item) in by_number:
            t = by_number[int(item)]
        else:
            raise ValueError(f"--trials: {item!r} is not best, median, worst or a complete trial's number "
                             f"({', '.join(str(n) for n in sorted(by_number))})")
        if t not in chosen:
            chosen.append(t)
    if not chosen:
        raise ValueError("--trials names no trial")
    return chosen


def _train(job: tuple) -> float:
    """One rerun (in a worker process): the recorded search config, the trial's parameters, a seed."""
    args, number, params, seed, tmp = job
    from lad.config import setup_environment
    from lad.pipeline import run
    from lad.search import compose_search, load_space, trial_config

    setup_environment()
    overrides = [o for o in args.overrides if not o.startswith("seed=")] + [f"seed={seed}"]
    base = search_args(args.task, 1, args.steps, args.eval_every, "none", "noise", Path(tmp), overrides)
    cfg = compose_search(base)
    space = load_space(str(cfg.search.space_file))
    trial_overrides = space.overrides_for(params)
    tcfg = trial_config(base, trial_overrides, Path(tmp) / f"seed{seed}", number)
    return float(run(tcfg, overrides=trial_overrides, memo=_MEMO))


def shown_path(path: Path) -> str:
    """``path`` as the page's command shows it: relative to the repository when inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


def spread(values: list[float]) -> str:
    return f"{statistics.stdev(values):.4f}" if len(values) > 1 else "—"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recording", help="a .json written by benchmarks/search_pruning.py")
    parser.add_argument("--trials", default="best,median,worst")
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", default=str(REPO / "results" / "search" / "search-noise.md"))
    args = parser.parse_args(argv)
    try:
        rec, trials = load_recording(Path(args.recording))
        chosen = pick(trials, args.trials)
        if args.workers < 1:
            raise ValueError("--workers must be >= 1")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seed0 = recorded_seed(rec)
    command = (f"python benchmarks/search_noise.py {shown_path(Path(args.recording))} --trials {args.trials} "
               f"--seeds {' '.join(map(str, args.seeds))} --workers {args.workers}")  # before the long part
    seeds = [seed0] + [s for s in dict.fromkeys(args.seeds) if s != seed0]

    import multiprocessing

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(rec, t["number"], t["params"], s, tmp) for t in chosen for s in seeds]
        if args.workers == 1:
            values = [_train(job) for job in jobs]
        else:
            with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                values = list(pool.map(_train, jobs))
    scores = {t["number"]: values[i * len(seeds):(i + 1) * len(seeds)] for i, t in enumerate(chosen)}

    recorded = [t["value"] for t in trials]
    rank = {t["number"]: i for i, t in enumerate(by_score(trials), start=1)}
    reproduced = all(abs(scores[t["number"]][0] - t["value"]) < 1e-9 for t in chosen)
    new = {n: v[1:] for n, v in scores.items()}
    seed_sd = statistics.mean(statistics.stdev(v) for v in new.values()) if len(seeds) > 2 else None
    means = {n: statistics.mean(v) for n, v in new.items()} if len(seeds) > 1 else {}
    lines = [
        "# Training noise behind a search's ranking",
        "",
        f"Generated by `{command}` — do not edit by hand.",
        "",
        f"Machine: {platform.machine()}, torch {torch.__version__}. Recording: `{Path(args.recording).name}` "
        f"(`{rec.task}`, {len(trials)} complete unpruned trials of {rec.steps} steps, dev evaluation every "
        f"{rec.eval_every} steps, recorded training seed {seed0}). Each chosen trial's parameters trained again: "
        f"once with seed {seed0} (must give the recorded score) and once with each other seed. The score is "
        "what the search maximises (the task's main dev metric, best over the trial's evaluations).",
        "",
        "| trial | rank in the search | recorded score | " + " | ".join(f"seed {s}" for s in seeds)
        + " | mean of the other seeds | sd of the other seeds |",
        "|---:|---:|---:|" + "---:|" * len(seeds) + "---:|---:|",
    ]
    for t in chosen:
        n = t["number"]
        tail = f"{means[n]:.4f} | {spread(new[n])}" if n in means else "— | —"
        lines.append(f"| {n} | {rank[n]} of {len(trials)} | {t['value']:.4f} | "
                     + " | ".join(f"{v:.4f}" for v in scores[n]) + f" | {tail} |")
    lines += ["", f"Reruns with the recorded seed reproduce the recorded scores: **{'yes' if reproduced else 'no'}**.",
              "", f"Across the search's {len(trials)} trials (one seed, different parameters) the recorded scores "
              f"range from {min(recorded):.4f} to {max(recorded):.4f} (sd {statistics.stdev(recorded):.4f})."]
    if seed_sd is not None:
        best_n, worst_n = chosen[0]["number"], chosen[-1]["number"]
        lines.append(f"With the parameters fixed and the seed changed, one configuration's score has an sd of "
                     f"{seed_sd:.4f} (mean over the chosen trials) = {seed_sd / statistics.stdev(recorded):.0%} "
                     "of the across-trial sd.")
        if best_n != worst_n:
            lines.append(f"On the other seeds, trial {best_n} (rank {rank[best_n]}) scores {means[best_n]:.4f} "
                         f"on average and trial {worst_n} (rank {rank[worst_n]}) {means[worst_n]:.4f}: a gap of "
                         f"{means[best_n] - means[worst_n]:+.4f}, against {chosen[0]['value'] - chosen[-1]['value']:+.4f} "
                         "in the search.")
    lines += ["", "Raw results:", "", "```json",
              json.dumps({str(n): {"params": next(t["params"] for t in chosen if t["number"] == n),
                                   "recorded": next(t["value"] for t in chosen if t["number"] == n),
                                   "scores": dict(zip(map(str, seeds), v))} for n, v in scores.items()},
                         indent=1, sort_keys=True), "```", ""]
    write_text(Path(args.out), "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
