"""The Results v3 grid, as pre-registered in results/preregistration.yaml (issue 38): price it, then run it.

    python sweeps/grid.py plan                       # every stage, its runs and the estimated hours
    python sweeps/grid.py run --stages teachers tuning headline
    python sweeps/grid.py run --store /work/results  # MLflow store, teachers, caches and run folders there
    python sweeps/grid.py run --code /work/pin       # entry points from a worktree at headline_commit

Stages, in order: ``teachers`` (sweeps/teachers.py: the learning-rate grids, SST-2's full epoch),
``tuning`` (sweeps/tune.py: the same protocol for every headline method), ``headline`` (the
primary methods x tasks x seeds, 3-layer students, each method with its tuned setting from
results/tuning/best.yaml), ``exploratory`` (ce and the direct map on every task, 2-layer students on
the tuning tasks, the reference recipe on RTE). Every run is a subprocess of a resumable driver
(sweeps/ablation.py skips the cells already recorded in the store or the export, sweeps/tune.py
the finished trials, sweeps/teachers.py the published teachers), so ``run`` can be interrupted and
started again any number of times. Two jobs run side by side (``--lanes``), each with one thread:
the grid owns the machine's cores, and everything else beside it should run under ``nice -n 19``.

Across machines: the MLflow store and the teachers' weights live outside git, so a fresh machine
retrains the teachers of the tasks that still have work (a task whose learning-rate grid is already
in results/runs.jsonl retrains only the chosen rate) and the drivers skip every run the committed
export holds. The teachers stage trains those the tuning needs; a headline or exploratory block's
teacher is trained when a lane first reaches its task, so a session trains only the teachers of the
tasks it gets to. A teacher
retrained elsewhere is not the same teacher, so the paired comparisons run in *seed blocks*: one
job trains every method of one (task, seed) cell in a row, on the teacher of that session. To end a
session between blocks, ``touch <store>/logs/grid/DRAIN``: the running blocks finish and no new job
starts (the next ``run`` removes the file); a block cut short anyway runs again whole next time.
Each stage is planned when it starts (the headline reads the best.yaml that tuning just wrote,
and refuses to start while a method's tuning is unfinished). The training code comes from
``--code`` (a worktree at the pre-registered ``headline_commit``; ``run`` refuses another commit
for the tuning, headline and exploratory stages): its sweeps/ablation.py and entry points run,
reading this checkout's export; this checkout's sweeps/tune.py runs the trials with ``--code``'s
distil.py and keeps the study records in this checkout's results/tuning/ (committed: a fresh
machine's study starts from the trials they hold).

The estimate prices every run from measured training speed and each task's training-set size, plus
a fixed start-up and evaluation cost per run. The speed of a task is the median examples/s of its
grid cells already recorded at the pinned commit (the grid's own runs: 2 single-thread lanes on a
quiet machine), else the step-time benchmark's (docs/benchmarks/performance.json, measured on a quiet
machine: the new-default LAD row at 1 thread), else that of the measured task of the nearest mean
text length scaled by length.
"""

from __future__ import annotations

import argparse
import json
import math
import os
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
EXPORT = REPO / "results" / "runs.jsonl"
STAGES = ("teachers", "tuning", "headline", "exploratory")
LAZY_TEACHERS = ("headline", "exploratory")  # their blocks train their task's teacher on first reach
RUN_OVERHEAD_S = 60.0            # start-up, tokenisation, teacher cache, evaluations of one run (estimate)
TEACHER_COST = 2.0               # a 6-layer teacher step costs about twice a 3-layer student's


@dataclass
class Job:
    stage: str
    name: str
    cmds: list[list[str]]                                               # run one after the other
    runs: list[tuple[str, float, float]] = field(default_factory=list)  # (task, epochs, cost factor)
    teacher: Job | None = None  # trained (or found) before the first job of its task starts
    speed: float | None = None  # training examples/s its own recorded runs reached (prices it instead of the factor)


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
             extra: list[str], store: Path | None, log_dir: str, code: Path = REPO) -> list[str]:
    uri = [f"mlflow.tracking_uri=sqlite:///{store}/mlruns.db"] if store else []
    rest = [o for o in store_overrides(store) if not o.startswith("mlflow.tracking_uri=")]
    return [sys.executable, str(code / "sweeps" / "ablation.py"), f"task={task}", f"methods={hydra_list(methods)}",
            f"students={hydra_list(students)}", f"seeds=[{','.join(str(s) for s in seeds)}]",
            f"budget.epochs={epochs:g}", f"extra={hydra_list(extra + rest)}", f"log_dir={log_dir}", *uri]


def recorded_lr_choice(records: list[dict], task: str, lrs: list[float]) -> float | None:
    """The rate sweeps/teachers.py chose for ``task`` when the export holds its whole learning-rate grid.

    A grid teacher trains under ``<artifacts>/teacher_lr/<lr>/``; the choice is the best dev score
    (ties: the first rate listed), the rule of ``sweeps.teachers.publish_best``. None while a rate is
    missing (the grid then runs in full)."""
    best: dict[float, float] = {}
    for rec in records:
        params = rec.get("params", {})
        if rec.get("entry") != "train_teacher" or rec.get("task") != task or rec.get("status") != "FINISHED":
            continue
        if "/teacher_lr/" not in str(params.get("teacher.path", "")):
            continue
        try:
            lr = float(params["optim.lr"])
            score = float(rec["metrics"][f"best/{rec['main_metric']}"])
        except (KeyError, TypeError, ValueError):
            continue
        best[lr] = max(score, best.get(lr, float("-inf")))
    if not lrs or any(float(f"{lr:g}") not in best for lr in lrs):
        return None
    return max(lrs, key=lambda lr: best[float(f"{lr:g}")])


def primary_methods(prereg: dict) -> list[str]:
    """The headline arms: every method of the primary family, in order of first mention."""
    return list(dict.fromkeys(m for pair in prereg["primary"] for m in pair))


def load_best() -> dict:
    """results/tuning/best.yaml ({} before any study finished)."""
    return (yaml.safe_load(BEST.read_text()) if BEST.is_file() else {}) or {}


def unfinished_tuning(prereg: dict) -> list[str]:
    """Primary methods whose study has not finished the pre-registered trials (best.yaml, records)."""
    from sweeps.tune import finished_trials

    best = load_best()
    return [m for m in primary_methods(prereg)
            if m not in best or finished_trials(BEST.parent / f"{m}.json") < int(prereg["tuning"]["trials"])]


def grid_points(prereg: dict, stages: list[str]) -> set[tuple]:
    """(task, method, student, seed) of every distil run the headline and exploratory stages hold."""
    points = set()
    primary = primary_methods(prereg)
    ex = prereg["exploratory"]
    for task in prereg["tasks"]:
        for seed in prereg["seeds"]:
            if "headline" in stages:
                points |= {(task, m, prereg["student"], seed) for m in primary}
            if "exploratory" in stages:
                points |= {(task, m, prereg["student"], seed) for m in ex["methods"]}
                if task in ex["two_layer"]["tasks"]:
                    points |= {(task, m, "2layer", seed) for m in ex["two_layer"]["methods"]}
    if "exploratory" in stages and (default := reference_default(ex["reference"])):
        task, student = default
        points |= {(task, "lad", student, int(seed)) for seed in ex["reference"]["seeds"]}
    return points


def reference_default(ref: dict) -> tuple[str, str] | None:
    """(task, student) of the project recipe run beside the reference row (``default_student``), or None."""
    student = ref.get("default_student")
    return (str(ref["experiment"]).removeprefix("reference_"), str(student)) if student else None


def recorded_points(prereg: dict, records: list[dict]) -> set[tuple]:
    """(task, method, student, seed) of the grid cells the export holds from the pinned commit."""
    from sweeps.kinds import cell_key, is_grid_cell

    pinned = str(prereg["headline_commit"])
    return {cell_key(r) for r in records if is_grid_cell(r)
            and str(r.get("tags", {}).get("mlflow.source.git.commit", "")) == pinned}


def tasks_with_work(prereg: dict, records: list[dict], stages: list[str]) -> list[str]:
    """Tasks that still need a teacher on this machine: the tuning tasks while a study is unfinished,
    and every task with a grid point the export lacks (a run of the pinned commit)."""
    need = set(prereg["tuning"]["tasks"]) if "tuning" in stages and unfinished_tuning(prereg) else set()
    need |= {p[0] for p in grid_points(prereg, stages) - recorded_points(prereg, records)}
    return [t for t in prereg["tasks"] if t in need]


def teacher_job(prereg: dict, task: str, store: Path | None, code: Path, records: list[dict]) -> Job:
    """sweeps/teachers.py for one task: its lr grid, or only the rate the export records as chosen."""
    from sweeps.teachers import DEFAULT_LR_GRID

    artifacts = str(store / "artifacts") if store else "artifacts"
    extra = [o for o in store_overrides(store) if not o.startswith("paths.artifacts=")]
    lrs = DEFAULT_LR_GRID.get(task, [])
    chosen = recorded_lr_choice(records, task, lrs)
    grid = [] if chosen is None else ["--lr-grid", f"{task}={chosen:g}"]
    n = 1 if chosen is not None or not lrs else len(lrs)
    return Job("teachers", f"teacher {task}", [[
        sys.executable, str(code / "sweeps" / "teachers.py"), "--tasks", task, "--artifacts", artifacts,
        *grid, "--", *extra]], [(task, float(prereg["budgets"][task]), TEACHER_COST)] * n)


def plan(prereg: dict, store: Path | None, stages: list[str], code: Path = REPO,
         records: list[dict] | None = None, wanted: list[str] | None = None) -> list[Job]:
    """The jobs of ``stages``; ``code`` is the tree whose drivers and entry points run.

    Headline and exploratory jobs are seed blocks: every method of one (task, seed) in a row. The
    teachers stage trains only the teachers that the ``wanted`` stages (default: ``stages``) still need."""
    from sweeps.tune import load_spaces

    spaces = load_spaces()
    best = load_best()
    tasks, seeds, budgets = prereg["tasks"], prereg["seeds"], prereg["budgets"]
    log_dir = str((store or REPO) / "logs" / "ablation")
    recorded = recorded_points(prereg, records or [])
    jobs: list[Job | None] = []

    def block(stage: str, task: str, seed: int, methods: list[str], student: str, factor: float,
              extra_of) -> Job | None:
        name = f"{task} seed {seed}" + ("" if student == prereg["student"] else f" {student}")
        # the committed runs count as done on any machine: a block the export holds whole is not planned (nor
        # priced, nor does it train its task's teacher); a block it holds only part of (a session ended inside
        # it) runs again whole, on this session's teacher: its methods must share one teacher
        # (the store still skips what this machine itself recorded, and the page takes the latest run per seed)
        have = sum((task, m, student, seed) in recorded for m in methods)
        if have == len(methods):
            return None
        export = [f"export={EXPORT}"] if have in (0, len(methods)) else []
        cmds = [ablation(task, [m], [student], [seed], budgets[task], extra_of(m), store, log_dir, code) + export
                for m in methods]
        return Job(stage, name, cmds, [(task, float(budgets[task]), factor)] * len(methods))

    if "teachers" in stages:
        for task in tasks_with_work(prereg, records or [], wanted or stages):
            jobs.append(teacher_job(prereg, task, store, code, records or []))
    if "tuning" in stages:
        t = prereg["tuning"]
        extra = store_overrides(store)
        for method in spaces:
            # a trial trains its tuning tasks side by side: one tuning job fills the lanes of len(tasks) jobs
            jobs.append(Job("tuning", f"tune {method}", [[
                sys.executable, str(REPO / "sweeps" / "tune.py"), "--methods", method, "--code", str(code),
                "--storage", f"sqlite:///{(store or REPO / 'sweeps')}/tuning.db", "--records", str(BEST.parent),
                "--output-root", str((store or REPO) / "outputs"), "--", *extra]],
                [(task, float(budgets[task]) * float(t["budget_fraction"]), 1.0)
                 for _ in range(int(t["trials"])) for task in t["tasks"]]))
    primary = primary_methods(prereg)
    if "headline" in stages:
        for task in tasks:
            for seed in seeds:
                jobs.append(block("headline", task, seed, primary, prereg["student"], 1.0,
                                  lambda m: tuned(m, spaces, best)))
    if "exploratory" in stages:
        ex = prereg["exploratory"]

        def explore_extra(method: str) -> list[str]:
            # the direct map keeps lad's tuned setting (it has no gates); ce keeps kd's learning rate only
            base, keep = ("lad", ("optim.lr=", "loss.")) if method.startswith("lad") else ("kd", ("optim.lr=",))
            return [o for o in tuned(base, spaces, best) if o.startswith(keep)]

        for task in tasks:
            for seed in seeds:
                jobs.append(block("exploratory", task, seed, list(ex["methods"]), prereg["student"], 1.0,
                                  explore_extra))
        two = ex["two_layer"]
        for task in two["tasks"]:
            for seed in seeds:
                jobs.append(block("exploratory", task, seed, list(two["methods"]), "2layer", 0.7,
                                  lambda m: tuned(m, spaces, best)))
        jobs += reference_jobs(ex["reference"], store, records or [])
        if default := reference_default(ex["reference"]):  # the project recipe (conf defaults) for that student
            task, student = default
            for seed in ex["reference"]["seeds"]:
                jobs.append(block("exploratory", task, int(seed), ["lad"], student, 2.0, lambda m: []))
    return [j for j in jobs if j is not None]  # None: a block the export holds whole


def reference_jobs(ref: dict, store: Path | None, records: list[dict]) -> list[Job]:
    """The reference recipe's row: ``experiment=reference_<task>`` for both entry points, its own teacher
    (the reference teacher recipe) and one student per seed the export lacks.

    They run this checkout's code, not the pinned one: the recipe's teacher part and its batching and
    evaluation cadence landed after the pinned commit, and the row is exploratory (never in the headline;
    the page names its commit). Its teacher lives in its own artifacts folder, so it never replaces the
    task's grid teacher, and is trained once per machine."""
    from statistics import median

    from sweeps.kinds import is_grid_cell
    from sweeps.reporting.model import experiment_of

    exp, teacher = str(ref["experiment"]), str(ref["teacher"])
    task = exp.removeprefix("reference_")
    own = [r for r in records if is_grid_cell(r) and experiment_of(r) == exp]
    done = {r.get("seed") for r in own}
    # its student (another depth, the teacher run online) trains at a speed of its own: price it from its runs
    speeds = [float(v) for r in own if (v := r.get("metrics", {}).get("train_examples_per_s"))]
    seeds = [int(s) for s in ref["seeds"] if int(s) not in done]
    if not seeds:
        return []
    artifacts = (store / "reference-artifacts") if store else REPO / "artifacts" / "reference"
    common = [f"experiment={exp}", f"teacher={teacher}", "mlflow.purpose=results", "trainer.progress=false",
              "trainer.predict_test=false",
              *[o for o in store_overrides(store) if not o.startswith("paths.artifacts=")], f"paths.artifacts={artifacts}"]
    trained = (artifacts / "teachers" / teacher / task / "config.json").is_file()
    teacher_run = Job("exploratory", f"{exp} teacher",
                      [] if trained else [[sys.executable, str(REPO / "train_teacher.py"), *common]])
    return [Job("exploratory", f"{exp} seed {seed}",
                [[sys.executable, str(REPO / "distil.py"), *common, f"seed={seed}", "trainer.resume=true"]],
                [(task, 10.0, 4.0)], teacher=teacher_run, speed=median(speeds) if speeds else None)
            for seed in seeds]


# ----------------------------------------------------------------------------- pricing
def throughput(benchmark: Path = BENCHMARK) -> dict[str, tuple[float, float]]:
    """task -> (examples/s of the new-default LAD cached row, mean example length in tokens)."""
    data = json.loads(Path(benchmark).read_text())
    return {r["task"]: (r["rows"]["c"]["examples_per_s"], r["mean_len"]) for r in data["results"] if "c" in r["rows"]}


def recorded_throughput(records: list[dict], pinned: str) -> dict[str, tuple[float, None]]:
    """task -> (median training examples/s, None) of the grid cells recorded at the pinned commit: the grid's
    own runs (2 single-thread lanes on a quiet machine), which price the rest of a task better than a
    benchmark of two tasks extrapolated by length."""
    from statistics import median

    from sweeps.kinds import is_grid_cell

    speeds: dict[str, list[float]] = {}
    for r in records:
        ex_s = r.get("metrics", {}).get("train_examples_per_s")
        if is_grid_cell(r) and ex_s and str(r.get("tags", {}).get("mlflow.source.git.commit", "")) == pinned:
            speeds.setdefault(r["task"], []).append(float(ex_s))
    return {task: (median(v), None) for task, v in speeds.items()}


def machine_note(benchmark: Path = BENCHMARK) -> str | None:
    """A warning when the benchmark was measured on a CPU of other instruction sets than this one's."""
    from lad.core.runtime import cpu_info

    info = json.loads(Path(benchmark).read_text()).get("info", {})
    here = cpu_info()
    isa = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in here["flags"])
    if not info.get("isa") or info.get("isa") == isa:
        return None
    return (f"[grid] note: priced from a benchmark of another CPU ({info.get('cpu')}: {info['isa']}); this one has "
            f"{isa or 'none of avx2/avx512'}: the estimate is off until `python benchmarks/step_time.py --threads 1` "
            "runs here (the ETA while running is rescaled by the jobs already finished)")


def mean_chars(task: str) -> tuple[int, float]:
    """(training examples, mean characters of their texts) from the task's train file."""
    from sweeps.tune import train_examples

    examples = train_examples(task)
    chars = [len(e.text_a) + len(e.text_b or "") for e in examples]
    return len(examples), sum(chars) / max(1, len(chars))


def price(jobs: list[Job], measured: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Estimated CPU seconds per job: examples / (examples/s at the task's length) + overhead per run; a job
    whose own runs were recorded (``Job.speed``: the reference recipe) is priced from their speed."""
    sizes = {t: mean_chars(t) for t in sorted({task for j in jobs for task, _, _ in j.runs})}
    ref_chars = {t: sizes[t][1] if t in sizes else mean_chars(t)[1] for t in measured}

    def unmeasured(chars: float) -> float:
        # examples/s scaled by 1 / length (chars as the proxy for tokens) from the measured task of the
        # nearest length: the scaling overstates the speed of short texts (padding and per-example costs)
        near = min(measured, key=lambda t: abs(ref_chars[t] - chars))
        return measured[near][0] * ref_chars[near] / chars

    out = {}
    for job in jobs:
        total = 0.0
        for task, epochs, factor in job.runs:
            n, chars = sizes[task]
            if job.speed:
                total += epochs * n / job.speed + RUN_OVERHEAD_S
                continue
            ex_s = measured[task][0] if task in measured else unmeasured(chars)
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
def tree_commit(code: Path) -> str | None:
    """HEAD of the worktree ``code`` when it has no uncommitted change to a tracked file, else None."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=code, capture_output=True, text=True)
    clean = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=code, capture_output=True)
    return head.stdout.strip() if head.returncode == 0 and clean.returncode == 0 else None


def script_env(cmd: list[str]) -> dict[str, str]:
    """The environment of a job command: its script's checkout first on the import path (a pinned
    worktree's sweeps/ablation.py imports that worktree's lad/, not the installed one)."""
    script = Path(cmd[1])
    root = script.parent if script.parent.name != "sweeps" else script.parent.parent
    return {**os.environ, "PYTHONPATH": str(root)}


def say(line: str) -> None:
    """One progress line from a lane, written whole (print writes text and newline apart: lanes interleave)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


DRAIN = "DRAIN"  # touch <store>/logs/grid/DRAIN: the running jobs finish, no new one starts (a session's end)
SKIPPED_BELOW = 0.1  # a job done in under this share of its priced time was recorded already (its driver skipped it)


def account(progress: dict, priced: float, lane_seconds: float) -> None:
    """Book a finished job: its priced seconds leave the estimate, and a job that really trained
    rescales the rest by lane-seconds taken per priced second. A job its driver skipped (work recorded
    on an earlier machine) took seconds: counting it would shrink the ETA to nothing."""
    progress["left"] -= priced
    if lane_seconds >= SKIPPED_BELOW * priced:
        progress["real"] += lane_seconds
        progress["priced"] += priced
        progress["scale"] = progress["real"] / max(progress["priced"], 1.0)


def run_jobs(jobs: list[Job], costs: dict[str, float], lanes: int, log_dir: Path, code: Path,
             progress: dict) -> list[str]:
    """Run ``jobs`` on ``lanes`` workers (a job's commands one after the other); the names that failed.

    A job with a ``teacher`` starts once that teacher is trained: the first lane to reach a task
    trains its teacher; a free lane takes a job whose teacher is ready, else trains the next task's
    teacher, else waits. A session thus trains only the teachers of the tasks it reaches. A lane that
    trained a teacher goes back to the queue in its order (the job it reached the teacher for keeps its
    place): a headline block whose teacher became ready meanwhile goes before an exploratory one."""
    failed: list[str] = []
    queue = list(jobs)
    order = {id(j): i for i, j in enumerate(jobs)}
    state: dict[str, str] = {}  # teacher name -> "training" | "ready" | "failed"
    cond = threading.Condition()

    def take() -> tuple[Job | None, Job | None]:  # (job, teacher to train first); called holding cond
        while True:
            if (log_dir / DRAIN).exists() and queue:
                say(f"[grid] {log_dir / DRAIN} exists: no new job starts ({len(queue)} left for the next run)")
                queue.clear()
            for job in [j for j in queue if j.teacher is not None and state.get(j.teacher.name) == "failed"]:
                queue.remove(job)
                failed.append(job.name)
            if not queue:
                return None, None
            for job in queue:
                if job.teacher is None or state.get(job.teacher.name) == "ready":
                    queue.remove(job)
                    return job, None
            for job in queue:
                if job.teacher.name not in state:
                    state[job.teacher.name] = "training"
                    queue.remove(job)
                    return job, job.teacher
            cond.wait()

    def execute(job: Job) -> bool:
        log = log_dir / f"{job.stage}-{job.name.replace(' ', '_')}.log"
        with log.open("a") as out:
            codes = [subprocess.run(cmd, cwd=code, env=script_env(cmd), stdout=out,
                                    stderr=subprocess.STDOUT).returncode
                     for cmd in job.cmds]  # a block's methods in a row: they share this session's teacher
        say(f"[grid] {'FAILED' if any(codes) else 'done'} {job.name} "
            f"({(time.time() - progress['t0']) / 3600:.2f} h since start; log {log})")
        return not any(codes)

    def worker() -> None:
        while True:
            with cond:
                job, teacher = take()
                if job is None:
                    return
                eta = progress["left"] * progress["scale"] / progress["lanes"] / 3600
            if teacher is not None:
                say(f"[grid] start {teacher.name} (for {job.name})")
                ok = execute(teacher)
                with cond:
                    state[teacher.name] = "ready" if ok else "failed"
                    if ok:
                        queue.insert(next((k for k, j in enumerate(queue) if order[id(j)] > order[id(job)]),
                                          len(queue)), job)
                    else:
                        failed.extend([teacher.name, job.name])
                    cond.notify_all()
                continue
            say(f"[grid] start {job.name} (about {eta:.1f} h of the grid left at most)")
            t_job = time.time()
            ok = execute(job)
            with cond:
                account(progress, costs[job.name], (time.time() - t_job) * progress["lanes"] / lanes)
                if not ok:
                    failed.append(job.name)

    threads = [threading.Thread(target=worker) for _ in range(lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failed


def run(prereg: dict, store: Path | None, stages: list[str], code: Path, lanes: int, measured: dict,
        records: list[dict], log_dir: Path) -> int:
    """Run the stages in order, each planned when it starts; the next one starts when it is done."""
    log_dir.mkdir(parents=True, exist_ok=True)
    if (log_dir / DRAIN).exists():
        (log_dir / DRAIN).unlink()  # left by the run it stopped
    estimate = price(plan(prereg, store, stages, code, records), measured)
    progress = {"left": sum(estimate.values()), "lanes": lanes, "t0": time.time(), "real": 0.0, "priced": 0.0,
                "scale": 1.0}
    failed: list[str] = []
    eager = [s for s in STAGES if s in stages and s not in LAZY_TEACHERS]
    lazy = [s for s in STAGES if s in stages and s in LAZY_TEACHERS]
    # the eager stages one after the other; then the lazy ones as one queue (headline blocks first), so a
    # lane never idles while the other trains the teacher the remaining headline blocks wait for
    for group in [[s] for s in eager] + ([lazy] if lazy else []):
        if group == lazy:
            waiting = unfinished_tuning(prereg)
            if waiting:
                print(f"[grid] {' and '.join(group)} {'waits' if len(group) == 1 else 'wait'} for tuning: {', '.join(waiting)} not finished "
                      f"({BEST.parent}); run the tuning stage first", file=sys.stderr)
                return 1
        # the teachers stage trains what tuning needs; a headline or exploratory block trains its
        # task's teacher when a lane first reaches that task (teacher_job: skipped when published)
        jobs = [j for stage in group for j in plan(prereg, store, [stage], code, records, eager)]
        if group == lazy:
            teachers: dict[str, Job] = {}
            for job in [j for j in jobs if j.teacher is None]:  # the reference row brings its own
                task = job.runs[0][0]
                job.teacher = teachers.setdefault(task, teacher_job(prereg, task, store, code, records))
        costs = price(jobs, measured)
        # a tuning trial trains its tasks side by side, so fewer tuning jobs fill the lanes
        width = max(1, lanes // len(prereg["tuning"]["tasks"])) if group == ["tuning"] else lanes
        failed += run_jobs(jobs, costs, width, log_dir, code, progress)
    if failed:
        print(f"[grid] failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("plan", "run"))
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--store", default=None, help="folder for the MLflow store, teachers, caches and runs "
                                                      "(default: the repository's own)")
    parser.add_argument("--code", default=str(REPO), help="worktree whose drivers and entry points run "
                                                         "(default: this checkout)")
    parser.add_argument("--export", default=str(EXPORT), help="committed runs (teachers' recorded lr grids)")
    parser.add_argument("--lanes", type=int, default=2, help="jobs side by side (default 2, one thread each)")
    parser.add_argument("--benchmark", default=str(BENCHMARK), help="step-time benchmark JSON for the estimate")
    args = parser.parse_args(argv)
    if args.lanes < 1:
        print("error: --lanes must be >= 1", file=sys.stderr)
        return 2
    code = Path(args.code).resolve()
    if not (code / "distil.py").is_file():
        print(f"error: --code {args.code}: not a LAD checkout (no distil.py)", file=sys.stderr)
        return 2
    if not Path(args.benchmark).is_file():
        print(f"error: no benchmark at {args.benchmark} (run python benchmarks/step_time.py --threads 1)",
              file=sys.stderr)
        return 2
    prereg = load_prereg()
    pinned = prereg["headline_commit"]
    if args.action == "run" and set(args.stages) - {"teachers"} and tree_commit(code) != pinned:
        print(f"error: --code {code} is not a clean checkout of headline_commit {pinned[:7]} "
              f"(results/preregistration.yaml); make one with: git worktree add --detach <dir> {pinned[:7]}",
              file=sys.stderr)
        return 2
    from sweeps.export import read_export

    store = Path(args.store).resolve() if args.store else None
    records = read_export(Path(args.export))
    measured = {**throughput(Path(args.benchmark)), **recorded_throughput(records, pinned)}
    jobs = plan(prereg, store, args.stages, code, records)
    costs = price(jobs, measured)
    print_plan(jobs, costs, args.lanes)
    if (note := machine_note(Path(args.benchmark))) is not None:
        print(note)
    if args.action == "plan":
        for job in jobs:
            print(f"[grid] {job.stage:11s} {job.name:28s} ~{costs[job.name] / 60:5.0f} CPU-min  "
                  + " && ".join(" ".join(cmd[1:]) for cmd in job.cmds))
        return 0
    return run(prereg, store, args.stages, code, args.lanes, measured, records, (store or REPO) / "logs" / "grid")


if __name__ == "__main__":
    sys.exit(main())
