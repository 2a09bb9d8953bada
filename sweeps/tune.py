"""Tune every headline method with the same protocol before the results grid (issue 38, item 6).

    python sweeps/tune.py                            # every method of sweeps/conf/tuning.yaml
    python sweeps/tune.py --methods kd pkd --dry-run # the plan and the half-budget step counts
    python sweeps/tune.py --storage sqlite:////work/results/tuning.db -- paths.artifacts=/work/results/artifacts

The protocol is results/preregistration.yaml ``tuning``: one Optuna TPE study per method (the
sampler of trial k seeded ``sampler_seed`` + k), ``trials`` trials, each trial training the method once on every tuning task
(seed ``seed``, ``budget_fraction`` of the task's headline budget, its runs side by side) and
scoring the mean of their best dev main metrics. The search space of each method is
sweeps/conf/tuning.yaml. Re-running resumes: finished trials are kept; a trial left RUNNING by an
interrupted driver is marked failed and its parameters are tried again. On a fresh machine (an
empty ``--storage``) the study starts from the finished trials of its committed record, and since
each trial's sampler seed depends only on the history, it draws what it would have drawn.
``--code DIR`` trains the trials with another checkout's distil.py (the grid's pinned worktree).

Every finished study is written to ``results/tuning/<method>.json`` (each trial's parameters, per-task
scores, objective, state and commit) and the best setting of each method to ``results/tuning/best.yaml``,
which ``sweeps/grid.py`` passes to every headline run of that method. Trial runs are recorded in MLflow
with ``mlflow.purpose=tuning`` (not exported to results/runs.jsonl).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from lad.core.fileio import write_text
from sweeps.teachers import main_score

REPO = Path(__file__).resolve().parent.parent
PREREGISTRATION = REPO / "results" / "preregistration.yaml"
SPACES = REPO / "sweeps" / "conf" / "tuning.yaml"
RECORDS = REPO / "results" / "tuning"
BATCH_SIZE = 32


def load_protocol(path: Path = PREREGISTRATION) -> dict:
    prereg = yaml.safe_load(Path(path).read_text())
    return {**prereg["tuning"], "budgets": prereg["budgets"]}


def load_spaces(path: Path = SPACES) -> dict:
    return yaml.safe_load(Path(path).read_text())["methods"]


def train_examples(task: str, data_dir: str = "auto") -> list:
    """The task's training examples, read as training reads them."""
    from omegaconf import OmegaConf

    from lad.data.glue import resolve_data_dir
    from lad.data.sources import read_split
    from lad.data.tasks import TaskSpec

    spec = TaskSpec.from_config(OmegaConf.load(REPO / "conf" / "task" / f"{task}.yaml"))
    return read_split(spec, resolve_data_dir(data_dir), "train")


def train_size(task: str, data_dir: str = "auto") -> int:
    return len(train_examples(task, data_dir))


def budget_steps(n_train: int, epochs: float, fraction: float, batch_size: int = BATCH_SIZE) -> int:
    """Optimisation steps of ``fraction`` of an ``epochs``-epoch run (at least 1)."""
    return max(1, int(round(fraction * epochs * math.ceil(n_train / batch_size))))


def sample(trial, space: dict) -> dict:
    """The trial's values for ``space`` (Optuna's define-by-run API)."""
    out = {}
    for key, rng in space.items():
        out[key] = trial.suggest_float(key, float(rng["low"]), float(rng["high"]), log=bool(rng.get("log", False)))
    return out


def overrides_for(method: dict, params: dict) -> list[str]:
    """distil.py overrides of a method at ``params`` (soft_weight ties hard_weight = 1 - soft_weight)."""
    out = list(method["overrides"])
    for key, value in params.items():
        out.append(f"{key}={value:.6g}")
        if key == "loss.soft_weight":
            out.append(f"loss.hard_weight={1.0 - value:.6g}")
    return out


def run_trial(number: int, name: str, method: dict, params: dict, protocol: dict, steps: dict,
              args) -> dict[str, float | None]:
    """Train the method on every tuning task side by side; the best dev score of each (None: failed)."""
    procs = {}
    for task in protocol["tasks"]:
        run_dir = Path(args.output_root) / "tuning" / name / f"trial-{number}" / task
        log_path = run_dir.parent / f"{task}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(Path(args.code) / "distil.py"), f"task={task}", "student=3layer",
               *overrides_for(method, params), f"seed={protocol['seed']}", f"trainer.max_steps={steps[task]}",
               "trainer.predict_test=false", "trainer.progress=false", "trainer.measure_inference=false",
               "trainer.num_threads=1", "mlflow.purpose=tuning", "mlflow.log_model=false",
               f"hydra.run.dir={run_dir}", *args.overrides]
        env = {**os.environ, "PYTHONPATH": str(args.code)}  # that checkout's lad/, not this one's
        procs[task] = (subprocess.Popen(cmd, cwd=args.code, env=env, stdout=log_path.open("w"),
                                        stderr=subprocess.STDOUT), run_dir)
    scores = {}
    for task, (proc, run_dir) in procs.items():
        ok = proc.wait() == 0 and (run_dir / "metrics.json").is_file()
        scores[task] = main_score(run_dir) if ok else None
    return scores


def git_commit(code: Path = REPO) -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=code, capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def study_record(study, name: str, protocol: dict, steps: dict) -> dict:
    trials = []
    for t in study.trials:
        trials.append({"number": t.number, "state": t.state.name, "params": t.params, "value": t.value,
                       "scores": t.user_attrs.get("scores"), "commit": t.user_attrs.get("commit"),
                       "seconds": t.user_attrs.get("seconds")})
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    best = max(done, key=lambda t: t.value) if done else None
    return {"method": name, "study": study.study_name, "sampler": "TPESampler", "sampler_seed": protocol["sampler_seed"],
            "tasks": protocol["tasks"], "seed": protocol["seed"], "budget_fraction": protocol["budget_fraction"],
            "steps": steps, "objective": "mean best dev main metric over the tasks", "trials": trials,
            "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params}}


def finished_trials(record: Path) -> int:
    """COMPLETE trials of a study record (results/tuning/<method>.json); 0 when it is absent or unreadable."""
    try:
        return sum(t.get("state") == "COMPLETE" for t in json.loads(Path(record).read_text())["trials"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 0


def write_best(records_dir: Path, spaces: dict) -> Path:
    """results/tuning/best.yaml: the overrides of each tuned method's best trial."""
    best = {}
    for name, method in spaces.items():
        path = records_dir / f"{name}.json"
        if path.is_file():
            rec = json.loads(path.read_text())
            if rec.get("best"):
                best[name] = {"trial": rec["best"]["number"], "objective": rec["best"]["value"],
                              "overrides": overrides_for(method, rec["best"]["params"])}
    text = ("# Written by sweeps/tune.py from results/tuning/<method>.json: each method's best trial "
            "(do not edit).\n" + yaml.safe_dump(best, sort_keys=True))
    write_text(records_dir / "best.yaml", text)
    return records_dir / "best.yaml"


def restore_trials(study, method: dict, record_path: Path) -> int:
    """Copy the finished trials of a committed record into an empty study (a fresh machine's storage).

    The record (results/tuning/<method>.json) is what survives a machine: its COMPLETE and FAIL trials are
    added with their parameters, value and attributes, so the study goes on from the same history
    (TPE then samples from it as it would have). Returns how many trials were restored."""
    import optuna

    if study.trials or not record_path.is_file():
        return 0
    record = json.loads(record_path.read_text())
    distributions = {key: optuna.distributions.FloatDistribution(float(r["low"]), float(r["high"]),
                                                                 log=bool(r.get("log", False)))
                     for key, r in method["space"].items()}
    restored = 0
    for t in sorted(record.get("trials", []), key=lambda t: t["number"]):
        # failed trials too: they count in the history (and in the per-trial sampler seed)
        if t.get("state") not in ("COMPLETE", "FAIL") or set(t.get("params", {})) != set(distributions):
            continue
        attrs = {k: t.get(k) for k in ("scores", "commit", "seconds") if t.get(k) is not None}
        state = optuna.trial.TrialState[t["state"]]
        study.add_trial(optuna.trial.create_trial(
            params=t["params"], distributions=distributions, state=state,
            value=t["value"] if state == optuna.trial.TrialState.COMPLETE else None,
            user_attrs={**attrs, "restored_from": t["number"]}))
        restored += 1
    return restored


def tune_method(name: str, method: dict, protocol: dict, steps: dict, args) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=f"tune-{name}", storage=args.storage,
                                direction="maximize", load_if_exists=True)
    restored = restore_trials(study, method, Path(args.records) / f"{name}.json")
    if restored:
        print(f"[tune] {name}: {restored} trial(s) restored from {args.records}/{name}.json", flush=True)
    for stale in [t for t in study.trials if t.state.name == "RUNNING"]:  # left by an interrupted driver
        study._storage.set_trial_state_values(stale._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(stale.params)
        print(f"[tune] {name}: trial {stale.number} was interrupted; its parameters run again", flush=True)
    finished = lambda: sum(t.state.name == "COMPLETE" for t in study.trials)  # noqa: E731
    durations = []
    while finished() < int(protocol["trials"]):
        # the sampler is seeded per trial (sampler seed + trials so far): the next point depends only on
        # the study's history, so a study restored on another machine draws what it would have drawn
        study.sampler = optuna.samplers.TPESampler(seed=int(protocol["sampler_seed"]) + len(study.trials))
        trial = study.ask()
        params = sample(trial, method["space"])
        left = int(protocol["trials"]) - finished()
        eta = f", about {left * sum(durations) / len(durations) / 60:.0f} min left" if durations else ""
        print(f"[tune] {name}: trial {trial.number} ({finished() + 1}/{protocol['trials']}{eta}): "
              + " ".join(overrides_for(method, params)[len(method["overrides"]):]), flush=True)
        t0 = time.time()
        scores = run_trial(trial.number, name, method, params, protocol, steps, args)
        durations.append(time.time() - t0)
        trial.set_user_attr("scores", scores)
        trial.set_user_attr("commit", git_commit(Path(args.code)))
        trial.set_user_attr("seconds", round(durations[-1], 1))
        if any(v is None for v in scores.values()):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            print(f"[tune] {name}: trial {trial.number} failed ({scores}); see its logs", flush=True)
        else:
            value = sum(scores.values()) / len(scores)
            study.tell(trial, value)
            print(f"[tune] {name}: trial {trial.number} = {value:.4f} {scores}", flush=True)
        record = study_record(study, name, protocol, steps)
        write_text(Path(args.records) / f"{name}.json", json.dumps(record, indent=1, sort_keys=True) + "\n")
    record = study_record(study, name, protocol, steps)
    write_text(Path(args.records) / f"{name}.json", json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=None, help="methods to tune (default: all of tuning.yaml)")
    parser.add_argument("--storage", default="sqlite:///sweeps/tuning.db", help="Optuna storage of the studies")
    parser.add_argument("--records", default=str(RECORDS), help="where the study records and best.yaml go")
    parser.add_argument("--output-root", default="outputs", help="trial run folders: <root>/tuning/<method>/...")
    parser.add_argument("--code", default=str(REPO), help="checkout whose distil.py trains the trials "
                                                         "(default: this one; the grid passes its pinned worktree)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("overrides", nargs="*", help="extra distil.py overrides for every trial run")
    args = parser.parse_args(argv)
    if not (Path(args.code) / "distil.py").is_file():
        print(f"error: --code {args.code}: not a LAD checkout (no distil.py)", file=sys.stderr)
        return 2
    protocol, spaces = load_protocol(), load_spaces()
    names = args.methods or list(spaces)
    unknown = [m for m in names if m not in spaces]
    if unknown:
        print(f"error: unknown method(s) {', '.join(unknown)} (known: {', '.join(spaces)})", file=sys.stderr)
        return 2
    steps = {t: budget_steps(train_size(t), float(protocol["budgets"][t]), float(protocol["budget_fraction"]))
             for t in protocol["tasks"]}
    print(f"[tune] protocol: {protocol['trials']} TPE trials per method (sampler seed {protocol['sampler_seed']}), "
          f"seed {protocol['seed']}, tasks {', '.join(f'{t} ({s} steps)' for t, s in steps.items())}", flush=True)
    for name in names:
        print(f"[tune] {name}: {' '.join(spaces[name]['overrides'])}; searches {', '.join(spaces[name]['space'])}",
              flush=True)
    if args.dry_run:
        return 0
    for name in names:
        record = tune_method(name, spaces[name], protocol, steps, args)
        print(f"[tune] {name}: best {record['best']}", flush=True)
    print(f"[tune] wrote {write_best(Path(args.records), spaces)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
