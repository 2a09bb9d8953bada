"""The Results v3 grid, as pre-registered in results/preregistration.yaml (issue 38): price it, then run it.

    python sweeps/grid.py plan                       # every stage, its runs and the estimated hours
    python sweeps/grid.py run --stages teachers tuning headline
    python sweeps/grid.py run --store /work/results  # MLflow store, teachers, caches and run folders there

Stages, in order: ``teachers`` (sweeps/teachers.py: the learning-rate grids, SST-2's full epoch),
``tuning`` (sweeps/tune.py: the same protocol for every headline method), ``headline`` (the
primary methods x tasks x seeds, 3-layer students, each method with its tuned setting from
results/tuning/best.yaml), ``exploratory`` (ce and the direct map on every task, 2-layer students on
the tuning tasks, the reference recipe on RTE). Every run is a subprocess of a resumable driver
(sweeps/ablation.py skips the cells already recorded in the store or the export, sweeps/tune.py
the finished trials, sweeps/teachers.py the published teachers), so ``run`` can be interrupted and
started again any number of times. Two jobs run side by side (``--lanes``), each with one thread:
the grid owns the machine's cores, and everything else beside it should run under ``nice -n 19``.

The estimate prices every run from the step-time benchmark (docs/benchmarks/performance.json,
measured on a quiet machine: examples/s of the new-default LAD row at 1 thread) and each task's
training-set size and mean text length, plus a fixed start-up and evaluation cost per run.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
PREREGISTRATION = REPO / "results" / "preregistration.yaml"
BEST = REPO / "results" / "tuning" / "best.yaml"
BENCHMARK = REPO / "docs" / "benchmarks" / "performance.json"
STAGES = ("teachers", "tuning", "headline", "exploratory")
RUN_OVERHEAD_S = 60.0            # start-up, tokenisation, teacher cache, evaluations of one run (estimate)
TEACHER_COST = 2.0               # a 6-layer teacher step costs about twice a 3-layer student's


@dataclass
class Job:
    stage: str
    name: str
    cmd: list[str]
    runs: list[tuple[str, float, float]] = field(default_factory=list)  # (task, epochs, cost factor)


def load_prereg(path: Path = PREREGISTRATION) -> dict:
    return yaml.safe_load(Path(path).read_text())


# every run of the grid: one thread (2 runs side by side own the cores); a finished run keeps its
# model but not its resume checkpoints (about 70 MB instead of 280 MB a run: ~250 runs fit the disk)
RUN_SETTINGS = ["trainer.num_threads=1", "trainer.keep_after_finish=0"]


def store_overrides(store: Path | None) -> list[str]:
    if store is None:
        return list(RUN_SETTINGS)
    return [f"mlflow.tracking_uri=sqlite:///{store}/mlruns.db", f"mlflow.artifact_location={store}/mlartifacts",
            f"paths.artifacts={store}/artifacts", f"paths.output_root={store}/outputs", f"paths.cache={store}/cache",
            *RUN_SETTINGS]


def hydra_list(items: list[str]) -> str:
    return "[" + ",".join(f"'{x}'" for x in items) + "]"


def tuned(method: str, spaces: dict, best: dict) -> list[str]:
    """The tuned overrides of ``method`` without its own gate/loss choice (the ablation driver sets those)."""
    if method not in best:
        return []
    own = set(spaces.get(method, {}).get("overrides", []))
    return [o for o in best[method]["overrides"] if o not in own]


def ablation(task: str, methods: list[str], students: list[str], seeds: list[int], epochs: float,
             extra: list[str], store: Path | None, log_dir: str) -> list[str]:
    uri = [f"mlflow.tracking_uri=sqlite:///{store}/mlruns.db"] if store else []
    rest = [o for o in store_overrides(store) if not o.startswith("mlflow.tracking_uri=")]
    return [sys.executable, str(REPO / "sweeps" / "ablation.py"), f"task={task}", f"methods={hydra_list(methods)}",
            f"students={hydra_list(students)}", f"seeds=[{','.join(str(s) for s in seeds)}]",
            f"budget.epochs={epochs:g}", f"extra={hydra_list(extra + rest)}", f"log_dir={log_dir}", *uri]


def plan(prereg: dict, store: Path | None, stages: list[str]) -> list[Job]:
    from sweeps.tune import load_spaces

    spaces = load_spaces()
    best = yaml.safe_load(BEST.read_text()) if BEST.is_file() else {}
    tasks, seeds, budgets = prereg["tasks"], prereg["seeds"], prereg["budgets"]
    log_dir = str((store or REPO) / "logs" / "ablation")
    jobs: list[Job] = []
    if "teachers" in stages:
        artifacts = str(store / "artifacts") if store else "artifacts"
        extra = [o for o in store_overrides(store) if not o.startswith("paths.artifacts=")]
        from sweeps.teachers import DEFAULT_LR_GRID

        for task in tasks:
            n = len(DEFAULT_LR_GRID.get(task, [None]))
            jobs.append(Job("teachers", f"teacher {task}", [
                sys.executable, str(REPO / "sweeps" / "teachers.py"), "--tasks", task, "--artifacts", artifacts,
                "--", *extra], [(task, float(budgets[task]), TEACHER_COST)] * n))
    if "tuning" in stages:
        t = prereg["tuning"]
        extra = store_overrides(store)
        for method in spaces:
            jobs.append(Job("tuning", f"tune {method}", [
                sys.executable, str(REPO / "sweeps" / "tune.py"), "--methods", method,
                "--storage", f"sqlite:///{(store or REPO / 'sweeps')}/tuning.db",
                "--output-root", str((store or REPO) / "outputs"), "--", *extra],
                [(task, float(budgets[task]) * float(t["budget_fraction"]), 1.0)
                 for _ in range(int(t["trials"])) for task in t["tasks"]]))
    primary = list(dict.fromkeys(m for pair in prereg["primary"] for m in pair))
    if "headline" in stages:
        for task in tasks:
            for method in primary:
                jobs.append(Job("headline", f"{task} {method}", ablation(
                    task, [method], [prereg["student"]], seeds, budgets[task], tuned(method, spaces, best), store,
                    log_dir), [(task, float(budgets[task]), 1.0)] * len(seeds)))
    if "exploratory" in stages:
        ex = prereg["exploratory"]
        for task in tasks:
            for method in ex["methods"]:
                # the direct map keeps lad's tuned setting (it has no gates); ce keeps kd's learning rate only
                base, keep = ("lad", ("optim.lr=", "loss.")) if method.startswith("lad") else ("kd", ("optim.lr=",))
                extra = [o for o in tuned(base, spaces, best) if o.startswith(keep)]
                jobs.append(Job("exploratory", f"{task} {method}", ablation(
                    task, [method], [prereg["student"]], seeds, budgets[task], extra, store, log_dir),
                    [(task, float(budgets[task]), 1.0)] * len(seeds)))
        two = ex["two_layer"]
        for task in two["tasks"]:
            for method in two["methods"]:
                jobs.append(Job("exploratory", f"{task} {method} 2layer", ablation(
                    task, [method], ["2layer"], seeds, budgets[task], tuned(method, spaces, best), store, log_dir),
                    [(task, float(budgets[task]), 0.7)] * len(seeds)))
        ref = ex["reference"]
        for seed in ref["seeds"]:
            jobs.append(Job("exploratory", f"{ref['experiment']} seed {seed}", [
                sys.executable, str(REPO / "distil.py"), f"experiment={ref['experiment']}", f"teacher={ref['teacher']}",
                f"seed={seed}", "mlflow.purpose=results", "trainer.progress=false", "trainer.predict_test=false",
                "trainer.resume=true", *store_overrides(store)], [("rte", 10.0, 4.0)]))
    return jobs


# ----------------------------------------------------------------------------- pricing
def throughput(benchmark: Path = BENCHMARK) -> dict[str, tuple[float, float]]:
    """task -> (examples/s of the new-default LAD cached row, mean example length in tokens)."""
    data = json.loads(Path(benchmark).read_text())
    return {r["task"]: (r["rows"]["c"]["examples_per_s"], r["mean_len"]) for r in data["results"] if "c" in r["rows"]}


def mean_chars(task: str) -> tuple[int, float]:
    """(training examples, mean characters of their texts) from the task's train file."""
    from sweeps.tune import train_examples

    examples = train_examples(task)
    chars = [len(e.text_a) + len(e.text_b or "") for e in examples]
    return len(examples), sum(chars) / max(1, len(chars))


def price(jobs: list[Job], measured: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Estimated CPU seconds per job: examples / (examples/s at the task's length) + overhead per run."""
    sizes = {t: mean_chars(t) for t in sorted({task for j in jobs for task, _, _ in j.runs})}
    ref_chars = {t: sizes[t][1] if t in sizes else mean_chars(t)[1] for t in measured}
    # examples/s scales with 1 / length (chars as the proxy for tokens); average over the measured tasks
    per_char = sum(measured[t][0] * ref_chars[t] for t in measured) / len(measured)
    out = {}
    for job in jobs:
        total = 0.0
        for task, epochs, factor in job.runs:
            n, chars = sizes[task]
            ex_s = measured[task][0] if task in measured else per_char / chars
            total += factor * epochs * n / ex_s + RUN_OVERHEAD_S
        out[job.name] = total
    return out


def print_plan(jobs: list[Job], costs: dict[str, float], lanes: int) -> None:
    by_stage: dict[str, list[Job]] = {}
    for job in jobs:
        by_stage.setdefault(job.stage, []).append(job)
    grand = 0.0
    for stage, items in by_stage.items():
        cpu = sum(costs[j.name] for j in items)
        grand += cpu
        print(f"[grid] {stage}: {len(items)} jobs, {sum(len(j.runs) for j in items)} runs, "
              f"about {cpu / 3600:.1f} CPU-h ({cpu / 3600 / lanes:.1f} h at {lanes} side by side)")
    print(f"[grid] total: about {grand / 3600:.1f} CPU-h, {grand / 3600 / lanes:.1f} h wall at {lanes} lanes "
          "(jobs already recorded are skipped by their drivers, so a resumed grid takes less)")


# ----------------------------------------------------------------------------- running
def run(jobs: list[Job], costs: dict[str, float], lanes: int, log_dir: Path) -> int:
    """Run the jobs of each stage on ``lanes`` workers; the next stage starts when the stage is done."""
    log_dir.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    t_start = time.time()
    left = sum(costs.values())
    lock = threading.Lock()
    for stage in STAGES:
        queue = [j for j in jobs if j.stage == stage]
        if not queue:
            continue

        def worker() -> None:
            nonlocal left
            while True:
                with lock:
                    if not queue:
                        return
                    job = queue.pop(0)
                    eta = left / lanes / 3600
                print(f"[grid] start {job.name} (about {eta:.1f} h of the grid left at most)", flush=True)
                log = log_dir / f"{job.stage}-{job.name.replace(' ', '_')}.log"
                with log.open("a") as out:
                    code = subprocess.run(job.cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT).returncode
                with lock:
                    left -= costs[job.name]
                    if code != 0:
                        failed.append(job.name)
                print(f"[grid] {'done' if code == 0 else 'FAILED'} {job.name} "
                      f"({(time.time() - t_start) / 3600:.2f} h since start; log {log})", flush=True)

        threads = [threading.Thread(target=worker) for _ in range(lanes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if failed:
        print(f"[grid] failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("plan", "run"))
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--store", default=None, help="folder for the MLflow store, teachers, caches and runs "
                                                      "(default: the repository's own)")
    parser.add_argument("--lanes", type=int, default=2, help="jobs side by side (default 2, one thread each)")
    parser.add_argument("--benchmark", default=str(BENCHMARK), help="step-time benchmark JSON for the estimate")
    args = parser.parse_args(argv)
    if args.lanes < 1:
        print("error: --lanes must be >= 1", file=sys.stderr)
        return 2
    store = Path(args.store).resolve() if args.store else None
    jobs = plan(load_prereg(), store, args.stages)
    if not Path(args.benchmark).is_file():
        print(f"error: no benchmark at {args.benchmark} (run python benchmarks/step_time.py --threads 1)",
              file=sys.stderr)
        return 2
    costs = price(jobs, throughput(Path(args.benchmark)))
    print_plan(jobs, costs, args.lanes)
    if args.action == "plan":
        for job in jobs:
            print(f"[grid] {job.stage:11s} {job.name:28s} ~{costs[job.name] / 60:5.0f} CPU-min  "
                  + " ".join(job.cmd[1:]))
        return 0
    return run(jobs, costs, args.lanes, (store or REPO) / "logs" / "grid")


if __name__ == "__main__":
    sys.exit(main())
