"""sweeps/grid.py: the pre-registered grid as jobs of resumable drivers, priced from the benchmark."""

import json
import subprocess

import yaml

from sweeps import grid


def _bench(tmp_path):
    path = tmp_path / "performance.json"
    path.write_text(json.dumps({"results": [{"task": "mrpc", "mean_len": 50.0, "rows": {"c": {"examples_per_s": 50.0}}},
                                            {"task": "rte", "mean_len": 65.0, "rows": {"c": {"examples_per_s": 40.0}}}]}))
    return path


def test_headline_runs_seed_blocks_of_every_primary_method_with_its_tuned_setting(tmp_path, monkeypatch):
    best = tmp_path / "best.yaml"
    best.write_text(yaml.safe_dump({"lad": {"overrides": ["gate=lad", "loss=lad", "optim.lr=0.0003", "optim.gate_lr=2e-06"]},
                                    "kd": {"overrides": ["gate=none", "loss=kd", "optim.lr=0.0001"]}}))
    monkeypatch.setattr(grid, "BEST", best)
    prereg = grid.load_prereg()
    code = tmp_path / "pin"
    jobs = grid.plan(prereg, tmp_path / "store", ["headline"], code)
    # one job per (task, seed): its methods run in a row, on the teacher of one session
    assert len(jobs) == len(prereg["tasks"]) * len(prereg["seeds"])
    rte1 = next(j for j in jobs if j.name == "rte seed 1")
    assert [c[1] for c in rte1.cmds] == [str(code / "sweeps" / "ablation.py")] * 4
    methods = [next(a for a in c if a.startswith("methods=")) for c in rte1.cmds]
    assert methods == ["methods=['lad']", "methods=['kd']", "methods=['pkd']", "methods=['lad-frozen']"]
    lad = " ".join(rte1.cmds[0])
    assert "students=['3layer']" in lad and "seeds=[1]" in lad and "budget.epochs=3" in lad
    assert "'optim.lr=0.0003'" in lad and "'optim.gate_lr=2e-06'" in lad and "'gate=lad'" not in lad
    assert f"mlflow.tracking_uri=sqlite:///{tmp_path}/store/mlruns.db" in lad and "'trainer.num_threads=1'" in lad
    assert "optim.lr" not in " ".join(rte1.cmds[2])  # pkd not tuned here: defaults, never another method's setting
    sst2 = next(j for j in jobs if j.name == "sst2 seed 5")
    assert all("budget.epochs=1" in c for c in sst2.cmds) and len(sst2.runs) == 4


def test_a_fresh_machine_retrains_only_the_recorded_choice_of_a_teacher_lr_grid(tmp_path):
    def teacher(task, lr, score, grid=True):
        path = f"/s/artifacts/teacher_lr/{lr:g}/teachers/minilm_l6/{task}" if grid else f"/s/teachers/{task}"
        return {"entry": "train_teacher", "task": task, "status": "FINISHED", "main_metric": "accuracy",
                "params": {"optim.lr": str(lr), "teacher.path": path}, "metrics": {"best/accuracy": score}}

    lrs = [2e-5, 5e-5, 1e-4, 2e-4]
    records = [teacher("rte", 2e-5, 0.55), teacher("rte", 5e-5, 0.58), teacher("rte", 1e-4, 0.58),
               teacher("rte", 2e-4, 0.53), teacher("rte", 5e-5, 0.99, grid=False)]
    assert grid.recorded_lr_choice(records, "rte", lrs) == 5e-5      # the first of equal best scores
    assert grid.recorded_lr_choice(records[1:], "rte", lrs) is None  # a rate missing: the grid runs in full
    assert grid.recorded_lr_choice(records, "cola", lrs) is None
    jobs = grid.plan(grid.load_prereg(), tmp_path, ["teachers"], tmp_path, records, grid.STAGES)
    rte = next(j for j in jobs if j.name == "teacher rte")
    assert rte.cmds[0][rte.cmds[0].index("--lr-grid") + 1] == "rte=5e-05" and len(rte.runs) == 1
    cola = next(j for j in jobs if j.name == "teacher cola")
    assert "--lr-grid" not in cola.cmds[0] and len(cola.runs) == 4


def test_the_headline_waits_until_every_method_finished_its_tuning(tmp_path, monkeypatch, capsys):
    best = tmp_path / "tuning" / "best.yaml"
    best.parent.mkdir()
    best.write_text(yaml.safe_dump({m: {"overrides": []} for m in ("lad", "kd", "pkd", "lad-frozen")}))
    for method, done in (("lad", 8), ("kd", 8), ("pkd", 8), ("lad-frozen", 7)):
        (best.parent / f"{method}.json").write_text(json.dumps({"trials": [{"state": "COMPLETE"}] * done}))
    monkeypatch.setattr(grid, "BEST", best)
    ran = []
    monkeypatch.setattr(grid, "run_jobs", lambda jobs, *a: ran.extend(jobs) or [])
    code = grid.run(grid.load_prereg(), tmp_path, ["headline"], tmp_path, 2,
                    {"mrpc": (50.0, 50.0)}, [], tmp_path / "logs")
    assert code == 1 and ran == []
    assert "headline waits for tuning: lad-frozen not finished" in capsys.readouterr().err
    (best.parent / "lad-frozen.json").write_text(json.dumps({"trials": [{"state": "COMPLETE"}] * 8}))
    assert grid.run(grid.load_prereg(), tmp_path, ["headline"], tmp_path, 2, {"mrpc": (50.0, 50.0)}, [],
                    tmp_path / "logs") == 0
    assert len(ran) == 25
    calls = []
    monkeypatch.setattr(grid, "run_jobs", lambda jobs, *a: calls.append(jobs) or [])
    assert grid.run(grid.load_prereg(), tmp_path, ["headline", "exploratory"], tmp_path, 2,
                    {"mrpc": (50.0, 50.0)}, [], tmp_path / "logs") == 0
    # one queue, headline blocks first: a lane never idles while the other trains a teacher that the last
    # headline blocks wait for; a task's teacher is one job shared by both stages' blocks
    assert len(calls) == 1 and [j.stage for j in calls[0]] == ["headline"] * 25 + ["exploratory"] * 41
    rte = {id(j.teacher) for j in calls[0] if j.runs[0][0] == "rte" and not j.name.startswith("reference_")}
    assert len(rte) == 1
    # the reference row has its own teacher (its recipe's), one job shared by its seeds, never the grid's
    ref = {id(j.teacher) for j in calls[0] if j.name.startswith("reference_rte seed")}
    assert len(ref) == 1 and not ref & rte
    # beside the reference row, its student under the project recipe (conf defaults: no tuned override), per seed
    default = [j for j in calls[0] if j.name.endswith(" 6layer")]
    assert [j.name for j in default] == ["rte seed 1 6layer", "rte seed 2 6layer", "rte seed 3 6layer"]
    cmd = default[0].cmds[0]
    assert "methods=['lad']" in cmd and "students=['6layer']" in cmd and "budget.epochs=3" in cmd
    assert not any(o in " ".join(cmd) for o in ("optim.lr=", "loss.", "optim.gate_lr="))


def test_every_stage_is_priced_from_the_benchmark_and_the_plan_prints_hours(tmp_path, capsys):
    (tmp_path / "runs.jsonl").write_text("")  # nothing recorded yet: every stage has work (not the committed export)
    assert grid.main(["plan", "--benchmark", str(_bench(tmp_path)), "--store", str(tmp_path / "s"),
                      "--export", str(tmp_path / "runs.jsonl")]) == 0
    out = capsys.readouterr().out
    for stage in grid.STAGES:
        assert f"[grid] {stage}: " in out
    assert "CPU-h" in out and "h wall at 2 lanes" in out
    assert "[grid] note: priced from a benchmark of another CPU" not in out  # the benchmark names no ISA


def test_a_benchmark_of_another_cpu_is_said(tmp_path, monkeypatch):
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"info": {"cpu": "X", "isa": "avx2, avx512f, avx512_bf16"}, "results": []}))
    monkeypatch.setattr("lad.core.runtime.cpu_info", lambda: {"model": "Y", "flags": {"avx2"}})
    assert grid.machine_note(path).startswith("[grid] note: priced from a benchmark of another CPU (X: avx2, "
                                              "avx512f, avx512_bf16); this one has avx2:")
    monkeypatch.setattr("lad.core.runtime.cpu_info", lambda: {"model": "Y", "flags": {"avx2", "avx512f", "avx512_bf16"}})
    assert grid.machine_note(path) is None


def test_bad_lanes_and_a_missing_benchmark_are_one_error_line(tmp_path, capsys):
    assert grid.main(["plan", "--lanes", "0"]) == 2
    assert grid.main(["plan", "--benchmark", str(tmp_path / "none.json")]) == 2
    assert grid.main(["run", "--code", str(tmp_path)]) == 2
    bench = str(_bench(tmp_path))
    subprocess.run(["git", "init", "-q", str(tmp_path / "w")], check=True)
    (tmp_path / "w" / "distil.py").write_text("")
    subprocess.run(["git", "-C", str(tmp_path / "w"), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm",
                    "x", "--allow-empty"], check=True)
    assert grid.main(["run", "--code", str(tmp_path / "w"), "--benchmark", bench]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: --lanes must be >= 1" and err[1].startswith("error: no benchmark at")
    assert err[2] == f"error: --code {tmp_path}: not a LAD checkout (no distil.py)"
    assert err[3].startswith(f"error: --code {tmp_path / 'w'} is not a clean checkout of headline_commit 436e5c0")
    assert len(err) == 4


def test_a_pinned_worktree_script_imports_its_own_checkout(tmp_path):
    assert grid.script_env(["python", str(tmp_path / "pin" / "sweeps" / "ablation.py")])["PYTHONPATH"] == str(tmp_path / "pin")
    assert grid.script_env(["python", str(tmp_path / "pin" / "distil.py")])["PYTHONPATH"] == str(tmp_path / "pin")


def test_teachers_are_trained_only_for_tasks_with_work_left(tmp_path, monkeypatch):
    from sweeps import export

    best = tmp_path / "tuning" / "best.yaml"
    best.parent.mkdir()
    monkeypatch.setattr(grid, "BEST", best)
    prereg = grid.load_prereg()
    pinned = prereg["headline_commit"]

    def cell(task, method, seed, student="3layer", commit=pinned):
        tags = {"lad.entry": "distil", "lad.task": task, "lad.kind": "run", "mlflow.source.git.commit": commit,
                "lad.method": f"{method}/{student}"}
        return export.make_record(f"{task}{method}{seed}{student}{commit}", f"lad-{task}", "FINISHED", 0, tags,
                                  {"seed": str(seed), "task.main_metric": "m"}, {"best/m": 0.5}, None)

    done = [cell(t, m, s) for t in ("rte", "sst2") for m in ("lad", "kd", "pkd", "lad-frozen") for s in prereg["seeds"]]
    # tuning unfinished: its tasks need teachers; the headline of rte and sst2 is in the export
    assert grid.tasks_with_work(prereg, done, ["tuning", "headline"]) == ["rte", "mrpc", "stsb", "cola"]
    assert grid.tasks_with_work(prereg, done, ["headline"]) == ["mrpc", "stsb", "cola"]
    other = [cell("mrpc", m, s, commit="0dd0dd0") for m in ("lad", "kd", "pkd", "lad-frozen") for s in prereg["seeds"]]
    assert "mrpc" in grid.tasks_with_work(prereg, done + other, ["headline"])  # runs of another commit do not count
    assert grid.tasks_with_work(prereg, done[:-1], ["headline"]) == ["mrpc", "stsb", "cola", "sst2"]  # one missing
    jobs = grid.plan(prereg, tmp_path, ["teachers"], tmp_path, done, ["headline"])
    assert [j.name for j in jobs] == ["teacher mrpc", "teacher stsb", "teacher cola"]


def test_the_eta_is_rescaled_by_jobs_that_trained_not_by_jobs_their_drivers_skipped():
    progress = {"left": 1000.0, "real": 0.0, "priced": 0.0, "scale": 1.0}
    grid.account(progress, 100.0, 2.0)  # restored from the committed record: seconds, no training
    assert progress["left"] == 900.0 and progress["scale"] == 1.0
    grid.account(progress, 100.0, 300.0)  # trained three times slower than priced
    assert progress["left"] == 800.0 and progress["scale"] == 3.0
    grid.account(progress, 200.0, 1.0)
    assert progress["scale"] == 3.0


def test_a_block_waits_for_its_task_teacher_which_one_lane_trains_on_first_reach(tmp_path):
    """Each teacher is trained once, by the first lane that reaches its task, before any block of that
    task starts; a free lane meanwhile trains the next task's teacher; a failed teacher fails its blocks."""
    import sys as _sys

    events = tmp_path / "events"

    def cmd(tag, seconds=0.3, code=0):
        return [_sys.executable, "-c", f"import time; open({str(events)!r}, 'a').write('start {tag}\\n'); "
                f"time.sleep({seconds}); open({str(events)!r}, 'a').write('end {tag}\\n'); raise SystemExit({code})"]

    teachers = {t: grid.Job("teachers", f"teacher {t}", [cmd(f"T{t}", code=int(t == "cola"))]) for t in ("rte", "mrpc", "cola")}
    jobs = [grid.Job("headline", f"{t} seed {s}", [cmd(f"{t}{s}")], [(t, 1.0, 1.0)], teachers[t])
            for t in ("rte", "mrpc", "cola") for s in (1, 2)]
    progress = {"left": 60.0, "real": 0.0, "priced": 0.0, "scale": 1.0, "lanes": 2, "t0": 0.0}
    failed = grid.run_jobs(jobs, {j.name: 10.0 for j in jobs}, 2, tmp_path, tmp_path, progress)
    lines = events.read_text().split()
    log = [" ".join(lines[i:i + 2]) for i in range(0, len(lines), 2)]
    for t in ("rte", "mrpc"):
        assert log.count(f"start T{t}") == 1
        assert all(log.index(f"end T{t}") < log.index(f"start {t}{s}") for s in (1, 2))
    assert log.count("start Tcola") == 1 and "start cola1" not in log and "start cola2" not in log
    assert sorted(failed) == ["cola seed 1", "cola seed 2", "teacher cola"]


def test_a_lane_back_from_a_teacher_takes_the_queue_in_order_not_the_job_it_reached_the_teacher_for(tmp_path):
    """Lane 1 takes headline sst2 seed 4 (its teacher is ready at once) and lane 2, finding the sst2 teacher
    busy, trains the rte teacher for an exploratory rte block. Once that teacher is done, the headline sst2
    seed 5 goes first: the lane does not run the exploratory block it reached the teacher for."""
    import sys as _sys

    events = tmp_path / "events"

    def cmd(tag, wait_for=None, first=None):
        """Write ``first``, wait until the events hold ``wait_for``, write ``tag``: the lanes' order is forced."""
        code = f"import time, pathlib\nlog = pathlib.Path({str(events)!r})\n"
        code += f"log.open('a').write('{first}\\n')\n" if first else ""
        code += (f"t = time.time()\nwhile {wait_for!r} not in log.read_text() and time.time() - t < 120: "
                 "time.sleep(0.05)\n") if wait_for else ""
        return [_sys.executable, "-c", code + f"log.open('a').write('{tag}\\n')"]

    events.write_text("")
    sst2 = grid.Job("teachers", "teacher sst2", [cmd("Tsst2")])
    # the rte teacher ends once lane 1 runs sst2 seed 4: the sst2 teacher is ready by then
    rte = grid.Job("teachers", "teacher rte", [cmd("Trte", wait_for="start-sst2-4")])
    jobs = [grid.Job("headline", "sst2 seed 4", [cmd("sst2-4", wait_for="sst2-5", first="start-sst2-4")],
                     [("sst2", 1, 1)], sst2),
            grid.Job("headline", "sst2 seed 5", [cmd("sst2-5")], [("sst2", 1, 1)], sst2),
            grid.Job("exploratory", "rte seed 1", [cmd("rte-1")], [("rte", 1, 1)], rte)]
    progress = {"left": 30.0, "real": 0.0, "priced": 0.0, "scale": 1.0, "lanes": 2, "t0": 0.0}
    assert grid.run_jobs(jobs, {j.name: 10.0 for j in jobs}, 2, tmp_path, tmp_path, progress) == []
    log = events.read_text().split()
    assert log[:3] == ["Tsst2", "start-sst2-4", "Trte"] and sorted(log) == sorted(
        ["Tsst2", "start-sst2-4", "Trte", "sst2-5", "sst2-4", "rte-1"])
    assert log.index("sst2-5") < log.index("rte-1")  # the headline block first, on the lane the teacher freed


def test_a_block_the_export_holds_only_part_of_runs_again_whole_on_this_sessions_teacher(tmp_path, monkeypatch):
    from sweeps import export

    best = tmp_path / "best.yaml"
    best.write_text(yaml.safe_dump({}))
    monkeypatch.setattr(grid, "BEST", best)
    prereg = grid.load_prereg()

    def cell(method, seed):
        tags = {"lad.entry": "distil", "lad.task": "rte", "lad.kind": "run", "lad.method": f"{method}/3layer",
                "mlflow.source.git.commit": prereg["headline_commit"]}
        return export.make_record(f"{method}{seed}", "lad-rte", "FINISHED", 0, tags,
                                  {"seed": str(seed), "task.main_metric": "m"}, {"best/m": 0.5}, None)

    # seed 1 complete, seed 2 cut short after lad and kd (a session ended inside the block)
    records = [cell(m, 1) for m in ("lad", "kd", "pkd", "lad-frozen")] + [cell(m, 2) for m in ("lad", "kd")]
    jobs = {j.name: j for j in grid.plan(prereg, tmp_path / "store", ["headline"], tmp_path, records)}
    exported = lambda job: [any(a.startswith("export=") for a in c) for c in job.cmds]  # noqa: E731
    assert "rte seed 1" not in jobs  # held whole by the export: not planned, priced, nor a reason to train a teacher
    assert exported(jobs["rte seed 2"]) == [False] * 4  # every method again, on one teacher
    assert exported(jobs["rte seed 3"]) == [True] * 4


def test_a_drain_file_lets_running_jobs_finish_and_starts_no_new_one(tmp_path):
    import sys as _sys

    marker = tmp_path / "ran"
    touch = [_sys.executable, "-c", f"import pathlib; p = pathlib.Path({str(tmp_path / grid.DRAIN)!r}); "
             f"p.touch(); open({str(marker)!r}, 'a').write('x')"]
    jobs = [grid.Job("headline", f"rte seed {s}", [touch], [("rte", 1.0, 1.0)]) for s in (1, 2, 3)]
    progress = {"left": 30.0, "real": 0.0, "priced": 0.0, "scale": 1.0, "lanes": 1, "t0": 0.0}
    assert grid.run_jobs(jobs, {j.name: 10.0 for j in jobs}, 1, tmp_path, tmp_path, progress) == []
    assert marker.read_text() == "x"  # the first job drained the queue; the running one finished


def test_recorded_grid_runs_price_their_task_and_the_nearest_length_prices_the_rest(tmp_path):
    from sweeps import export

    pinned = grid.load_prereg()["headline_commit"]

    def cell(task, ex_s, commit=pinned, seed=1):
        tags = {"lad.entry": "distil", "lad.task": task, "lad.kind": "run", "lad.method": "lad/3layer",
                "mlflow.source.git.commit": commit}
        return export.make_record(f"{task}{ex_s}{commit}", f"lad-{task}", "FINISHED", 0, tags,
                                  {"seed": str(seed), "task.main_metric": "m"},
                                  {"best/m": 0.5, "train_examples_per_s": ex_s}, None)

    records = [cell("cola", 70.0), cell("cola", 80.0, seed=2), cell("cola", 90.0, seed=3), cell("rte", 5.0, "0dd0dd0")]
    assert grid.recorded_throughput(records, pinned) == {"cola": (80.0, None)}  # other commits do not count
    measured = {"rte": (40.0, 60.0), **grid.recorded_throughput(records, pinned)}
    job = lambda task: grid.Job("headline", task, [], [(task, 1.0, 1.0)])  # noqa: E731
    costs = grid.price([job("cola"), job("sst2"), job("mrpc")], measured)
    n = {t: grid.mean_chars(t) for t in ("cola", "sst2", "mrpc", "rte")}
    assert costs["cola"] == n["cola"][0] / 80.0 + grid.RUN_OVERHEAD_S
    # sst2 (short sentences) from cola, the measured task of the nearest length; mrpc from rte
    assert costs["sst2"] == n["sst2"][0] / (80.0 * n["cola"][1] / n["sst2"][1]) + grid.RUN_OVERHEAD_S
    assert costs["mrpc"] == n["mrpc"][0] / (40.0 * n["rte"][1] / n["mrpc"][1]) + grid.RUN_OVERHEAD_S


def test_the_reference_row_trains_its_own_teacher_once_and_only_the_seeds_the_export_lacks(tmp_path):
    from sweeps import export

    ref = grid.load_prereg()["exploratory"]["reference"]
    jobs = grid.reference_jobs(ref, tmp_path, [])
    assert [j.name for j in jobs] == [f"{ref['experiment']} seed {s}" for s in ref["seeds"]]
    teacher = jobs[0].teacher
    assert all(j.teacher is teacher for j in jobs) and teacher.name != "teacher rte"  # not the grid's teacher
    (cmd,) = teacher.cmds
    assert cmd[1] == str(grid.REPO / "train_teacher.py") and f"experiment={ref['experiment']}" in cmd
    own = f"paths.artifacts={tmp_path / 'reference-artifacts'}"
    assert own in cmd and own in jobs[0].cmds[0] and f"paths.artifacts={tmp_path}/artifacts" not in cmd
    assert jobs[0].cmds[0][1] == str(grid.REPO / "distil.py") and "seed=1" in jobs[0].cmds[0]
    tags = {"lad.entry": "distil", "lad.task": "rte", "lad.kind": "run", "lad.method": "lad/6layer",
            "lad.overrides": json.dumps([f"experiment={ref['experiment']}", "teacher=minilm_l6", "seed=1"])}
    seed1 = export.make_record("r1", "lad-rte", "FINISHED", 0, tags, {"seed": "1", "task.main_metric": "accuracy"},
                               {"best/accuracy": 0.6, "train_examples_per_s": 4.0})
    model = tmp_path / "reference-artifacts" / "teachers" / ref["teacher"] / "rte"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    later = grid.reference_jobs(ref, tmp_path, [seed1])
    assert [j.name for j in later] == [f"{ref['experiment']} seed {s}" for s in ref["seeds"] if s != 1]
    assert later[0].teacher.cmds == []  # trained on this machine: found, not retrained
    # priced from its own recorded run (a 6-layer student beside an online teacher), not from the grid's 3-layer
    # speed times a guessed factor; before any is recorded, the factor
    assert jobs[0].speed is None and later[0].speed == 4.0
    n = grid.mean_chars("rte")[0]
    costs = grid.price(later[:1] + jobs[:1], {"rte": (40.0, 60.0)})
    assert costs[later[0].name] == 10.0 * n / 4.0 + grid.RUN_OVERHEAD_S
    assert costs[jobs[0].name] == 4.0 * 10.0 * n / 40.0 + grid.RUN_OVERHEAD_S
