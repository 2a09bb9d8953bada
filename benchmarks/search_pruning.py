"""Pruned vs unpruned in-process Optuna search, same trials budget, in one run (not a test).

    python benchmarks/search_pruning.py --task mrpc --trials 12 --steps 160 --eval-every 20 --pruner median \
        --out results/search/search-160-seed1.md seed=1 search.startup_trials=3 search.warmup_evals=1 \
        search.prune_on=accuracy trainer.num_threads=1

Runs the same study twice on the real fine-tuned MiniLM teacher (artifacts/teachers/minilm_l6/<task>):
once with a pruner (``--pruner``: median, halving or hyperband; ``search.*`` overrides tune it)
and once without, same sampler seed, same number of trials, and writes a page (``--out``): wall
time of each, best dev score of each, the wall time at which the pruned search first reached the
unpruned search's best score (the target is <= 50 % of the unpruned wall time), when the unpruned
search itself got there, and how well each dev signal at each evaluation ranked the final scores.
Next to the page, a ``.json`` file keeps every trial's reports, dev metrics and duration and each
search's timeline, so that other pruners can be replayed offline on the same trial pairs.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from lad.fileio import write_text

REPO = Path(__file__).resolve().parent.parent


def search_args(task: str, n_trials: int, steps: int, eval_every: int, pruner: str, label: str, tmp: Path,
                extra) -> list[str]:
    """The ``sweeps/search.py`` overrides of one benchmark search."""
    return [f"task={task}", "student=3layer", f"n_trials={n_trials}", f"search.pruner={pruner}",
            f"search.storage=sqlite:///{tmp / 'optuna.db'}", f"search.study_name=bench-{label}",
            f"output_dir={tmp / label}", "mlflow=off", "trainer.progress=false", "search.plots=false",
            f"trainer.max_steps={steps}", f"trainer.eval_every={eval_every}", *extra]


def search_cfg(task: str, n_trials: int, steps: int, eval_every: int, pruner: str, label: str, tmp: Path,
               extra):
    from lad.search import compose_search

    return compose_search(search_args(task, n_trials, steps, eval_every, pruner, label, tmp, extra))


def build_parser() -> argparse.ArgumentParser:
    """The command line (also parsed back from a page's JSON by ``search_replay.py``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="rte")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--pruner", default="median", choices=("median", "halving", "hyperband"))
    parser.add_argument("--out", default=str(REPO / "results" / "search" / "search.md"))
    parser.add_argument("overrides", nargs="*", help="extra distil overrides for every trial")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    import optuna
    import torch

    from lad.config import setup_environment
    from lad.search import compose_search, run_search

    setup_environment()
    results = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for label, pruner in (("none", "none"), ("pruned", args.pruner)):
            overrides = search_args(args.task, args.trials, args.steps, args.eval_every, pruner, label, tmp,
                                    args.overrides)
            cfg = compose_search(overrides)
            t0 = time.time()
            summary = run_search(cfg, tmp / label, overrides)
            study = optuna.load_study(study_name=f"bench-{label}", storage=f"sqlite:///{tmp / 'optuna.db'}")
            done = sorted((t for t in study.trials if t.datetime_complete), key=lambda t: t.datetime_complete)
            timeline, best = [], float("-inf")
            for t in done:
                if t.state.name == "COMPLETE":
                    best = max(best, t.value)
                timeline.append(((t.datetime_complete.timestamp() - t0), best))
            trials = {t.number: t for t in study.trials}
            results[label] = {"summary": summary, "wall_s": time.time() - t0, "timeline": timeline,
                              "trials": trials, "prune_on": cfg.search.prune_on}

    base, pruned = results["none"], results["pruned"]
    target = base["summary"]["best_value"]
    reached = first_reached(pruned["timeline"], target)
    ratio = reached / base["wall_s"] if reached is not None else None
    met = ratio is not None and ratio <= 0.5
    own = first_reached(base["timeline"], target)  # when the unpruned search itself got there
    command = ("python benchmarks/search_pruning.py "
               + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                          (("task", args.task), ("trials", args.trials), ("steps", args.steps),
                           ("eval_every", args.eval_every), ("pruner", args.pruner)))
               + (" " + " ".join(args.overrides) if args.overrides else ""))
    lines = [
        "# Pruned vs unpruned search",
        "",
        f"Generated by `{command}` — do not edit by hand.",
        "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}. "
        f"Task {args.task}, 3-layer student of the fine-tuned MiniLM teacher, {args.trials} trials of "
        f"{args.steps} steps (dev evaluation every {args.eval_every} steps), TPE with the same seed. "
        f"At each evaluation a trial reports "
        + _reported(pruned["prune_on"]) + " to the pruner; the study maximises the dev score.",
        "",
        "| search | wall time (s) | trials complete / pruned / failed | best dev score |",
        "|---|---:|---|---:|",
    ]
    for name, res in (("no pruning", base), (f"{args.pruner} pruner", pruned)):
        st = res["summary"]["states"]
        bv = res["summary"]["best_value"]
        lines.append(f"| {name} | {res['wall_s']:.0f} | {st.get('COMPLETE', 0)} / {st.get('PRUNED', 0)} / "
                     f"{st.get('FAIL', 0)} | {'n/a' if bv is None else f'{bv:.4f}'} |")
    lines += ["", "Trial by trial (TPE's first random trials draw the same parameters in both searches, and a "
              "trial's training is deterministic on CPU, so a pair with the same parameters is the same run, "
              "stopped early or not):", "",
              "| trial | same parameters | no pruning | " + f"{args.pruner} pruner |", "|---:|---|---:|---|"]
    for number in sorted(base["trials"]):
        a, b = base["trials"][number], pruned["trials"].get(number)
        lines.append(f"| {number} | {'yes' if b is not None and a.params == b.params else 'no'} | "
                     f"{_outcome(a)} | {_outcome(b)} |")
    lines += ["",
              f"The pruned search first reached the unpruned search's best score ({target}) after "
              + (f"{reached:.0f} s = {ratio:.0%} of the unpruned wall time." if reached is not None
                 else "— it never reached it within its trials."),
              "",
              f"Target (≤ 50 % of the unpruned wall time): **{'met' if met else 'not met'}**.",
              "",
              "For context, from the same run: the unpruned search itself reached that score after "
              + (f"{own:.0f} s = {own / base['wall_s']:.0%} of its wall time" if own is not None else "—")
              + f", and the pruned search ran all its {args.trials} trials in "
              f"{pruned['wall_s'] / base['wall_s']:.0%} of the unpruned wall time (best "
              + ("n/a" if pruned["summary"]["best_value"] is None else f"{pruned['summary']['best_value']:.4f}")
              + "). A target met only because the best trial came early, before the pruner stopped "
              "anything, says little about the pruner.",
              "", *signal_lines(base["trials"]),
              "Raw results:",
              "",
              "```json",
              json.dumps({k: {"wall_s": round(v["wall_s"], 1), "best": v["summary"]["best_value"],
                              "best_params": v["summary"]["best_params"], "states": v["summary"]["states"]}
                          for k, v in results.items()}, indent=1, sort_keys=True, default=str),
              "```", ""]
    # every trial's reports, dev metrics and duration, so that other pruners can be replayed on these pairs
    write_text(Path(args.out).with_suffix(".json"), json.dumps({
        "command": command, "wall_s": {k: round(v["wall_s"], 1) for k, v in results.items()},
        "timeline": {k: [[round(s, 1), b] for s, b in v["timeline"]] for k, v in results.items()},
        "trials": {k: [_trial_record(t) for _, t in sorted(v["trials"].items())]
                   for k, v in results.items()}}, indent=1, sort_keys=True) + "\n")
    write_text(Path(args.out), "\n".join(lines))
    print("\n".join(lines))
    return 0


def first_reached(timeline: list, target) -> float | None:
    """Seconds after its start at which a search's best complete score first reached ``target``."""
    return next((s for s, b in timeline if target is not None and b >= target), None)


def _reported(prune_on: str) -> str:
    return {"metric": "its dev score", "loss": "minus its dev loss"}.get(prune_on, f"its dev {prune_on}")


def signal_lines(trials: dict) -> list[str]:
    """How well each dev signal at each evaluation ranks the unpruned trials' final scores: Spearman's
    rho over the complete trials between the signal at that step (minus the loss, so higher is better
    everywhere) and the trial's objective. A pruner deciding at step s on a signal with a low rho
    there is deciding on noise."""
    from scipy import stats

    from lad.search import dev_curves

    done = [t for t in trials.values() if t.state.name == "COMPLETE" and dev_curves(t)]
    if len(done) < 3:
        return []
    curves = [dev_curves(t) for t in done]
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    names = sorted(set.intersection(*(set(c[s]) for c in curves for s in steps)))
    finals = [t.value for t in done]
    lines = ["How well each dev signal ranks the unpruned trials' final scores (Spearman's rho between the "
             f"signal at a step and the final score, over the {len(done)} unpruned trials; loss negated; "
             "— where the signal is constant):", "",
             "| signal | " + " | ".join(f"step {s}" for s in steps) + " |",
             "|---|" + "---:|" * len(steps)]
    for name in names:
        sign = -1.0 if name.startswith("loss") else 1.0
        cells = []
        for step in steps:
            xs = [sign * c[step][name] for c in curves]
            rho = stats.spearmanr(xs, finals)[0] if len(set(xs)) > 1 and len(set(finals)) > 1 else float("nan")
            cells.append("—" if rho != rho else f"{rho:+.2f}")
        lines.append(f"| {'-' if sign < 0 else ''}{name} | " + " | ".join(cells) + " |")
    return lines + [""]


def _trial_record(trial) -> dict:
    from lad.search import dev_curves

    took = (trial.datetime_complete - trial.datetime_start).total_seconds() if trial.datetime_complete else None
    return {"number": trial.number, "state": trial.state.name, "value": trial.value, "params": trial.params,
            "reports": {str(k): v for k, v in sorted(trial.intermediate_values.items())},
            "dev": {str(k): v for k, v in sorted(dev_curves(trial).items())}, "duration_s": took}


def _outcome(trial) -> str:
    if trial is None:
        return "—"
    if trial.state.name == "COMPLETE":
        return f"{trial.value:.4f}"
    if trial.state.name == "PRUNED":
        return f"pruned at step {max(trial.intermediate_values, default=0)}"
    return trial.state.name.lower()


if __name__ == "__main__":
    sys.exit(main())
