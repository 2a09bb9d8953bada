"""The answer of an accuracy-speed search: its Pareto front, a figure, and the pick by a constraint.

    python -m lad.search.pareto front --study pareto-sst2-... --storage sqlite:///sweeps/pareto.db
    python -m lad.search.pareto pick  --study pareto-sst2-... --storage sqlite:///sweeps/pareto.db \\
        --rule "fastest within 1.0 point of teacher"
    python -m lad.search.pareto pick  ... --rule "best under 20 ms"        # or --max-speed 20 / --max-latency-ms 20

The study is one of ``distil.py -m hparams_search=lad_pareto`` (or ``sweeps/search.py`` with
``objectives=[metric,speed]``): two objectives, the dev metric (maximised) and the speed measure
(``lad.deploy.speed``, minimised). Only COMPLETE trials count: failed and pruned ones never reach the front.

``front`` and ``pick`` write ``<study>.front.png`` (dev metric vs speed: every finished trial, the
front, the teacher and the trivial baseline marked; the pick circled) and ``<study>.front.json``
next to a SQLite study (``--out-dir`` otherwise) and log both to MLflow (the trials' tracking store,
one run per study). ``pick`` then exports the chosen trial's model with ``python -m lad.deploy``
(ONNX, and int8 when it keeps the score within ``--int8-max-drop`` points) and prints the chosen
trial, its score, its speed against the teacher's and the exported model's path.

Exit status: 0 done, 1 the ONNX export does not reproduce PyTorch, 2 a bad input or no trial meets
the rule (one ``error:`` line).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lad.core.errors import ConfigError

log = logging.getLogger(__name__)

TAG = "lad.pareto_study"  # MLflow tag of the run holding a study's front


@dataclass
class Row:
    """One finished trial: its number, dev score, speed (a cost), parameters and run directory."""

    number: int
    score: float
    speed: float
    params: dict = field(default_factory=dict)
    output_dir: str | None = None


@dataclass
class Reference:
    """What a front is compared with, as the trials' runs recorded it (``metrics.json`` ``speed``)."""

    metric: str = "score"
    measure: str = "speed"
    unit: str = ""
    teacher_speed: float | None = None
    teacher_score: float | None = None
    trivial_score: float | None = None


@dataclass(frozen=True)
class Rule:
    """``within``: the fastest trial within ``value`` points of the teacher's score;
    ``under``: the best-scoring trial whose speed is at most ``value``."""

    kind: str
    value: float

    def describe(self, ref: Reference) -> str:
        if self.kind == "within":
            return f"fastest within {self.value:g} point(s) of the teacher"
        return f"best {ref.metric} at {ref.measure} <= {self.value:g} {ref.unit}".rstrip()


_RULES = (
    (re.compile(r"^fastest within ([0-9.]+) points? of (?:the )?teacher('s)?( score)?$"), "within"),
    (re.compile(r"^best(?: score)? (?:under|below|within) ([0-9.]+) ?([a-z/]*)$"), "under"),
)


def parse_rule(text: str) -> Rule:
    """``fastest within X point(s) of (the) teacher`` or ``best (score) under X [unit]``."""
    cleaned = " ".join(text.strip().lower().split())
    for pattern, kind in _RULES:
        found = pattern.match(cleaned)
        if found:
            try:
                return Rule(kind, float(found.group(1)))
            except ValueError:
                break
    raise ConfigError(f"--rule {text!r}: expected 'fastest within <points> point(s) of teacher' "
                      "or 'best under <speed> [unit]'")


def pick(rows: list[Row], rule: Rule, teacher_score: float | None = None) -> Row:
    """The trial of ``rows`` that the rule selects (ties: the other objective decides, then the
    lower trial number); ConfigError naming the nearest miss when none qualifies."""
    if not rows:
        raise ConfigError("the study has no COMPLETE trial: nothing to pick")
    if rule.kind == "within":
        if teacher_score is None:
            raise ConfigError("the teacher's dev score is unknown (its folder has no metrics.json from "
                              "train_teacher.py): pass --teacher-score")
        floor = teacher_score - rule.value / 100
        ok = [r for r in rows if r.score >= floor - 1e-12]
        if not ok:
            best = max(rows, key=lambda r: r.score)
            raise ConfigError(f"no trial is within {rule.value:g} point(s) of the teacher's {teacher_score:.4f}; "
                              f"the best is trial {best.number} at {best.score:.4f} "
                              f"({100 * (best.score - teacher_score):+.2f} points)")
        return min(ok, key=lambda r: (r.speed, -r.score, r.number))
    ok = [r for r in rows if r.speed <= rule.value]
    if not ok:
        fastest = min(rows, key=lambda r: r.speed)
        raise ConfigError(f"no trial has speed <= {rule.value:g}; the fastest is trial {fastest.number} "
                          f"at {fastest.speed:.4g}")
    return max(ok, key=lambda r: (r.score, -r.speed, -r.number))


def non_dominated(rows: list[Row]) -> list[Row]:
    """The rows no other row beats on both objectives (higher score, lower speed), by speed."""
    def dominates(a: Row, b: Row) -> bool:
        return a.score >= b.score and a.speed <= b.speed and (a.score > b.score or a.speed < b.speed)

    return sorted((r for r in rows if not any(dominates(o, r) for o in rows)), key=lambda r: (r.speed, r.number))


# ----------------------------------------------------------------------------- studies
def load_study(name: str, storage: str):
    import optuna

    from lad.search.studies import one_line, open_storage, safe_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:
        raise ConfigError(f"no study {name!r} in {safe_url(storage)}") from None
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - an unusable storage
        raise ConfigError(f"cannot load study {name!r} from {safe_url(storage)}: {one_line(exc)}") from None
    wanted = ["MAXIMIZE", "MINIMIZE"]
    if [d.name for d in study.directions] != wanted:
        raise ConfigError(f"study {name!r} has directions {[d.name.lower() for d in study.directions]}; "
                          "an accuracy-speed study has [maximize, minimize] (hparams_search=lad_pareto)")
    return study


def rows_of(study) -> tuple[list[Row], list[Row]]:
    """(every COMPLETE trial, the Pareto front): failed, pruned and running trials are left out."""
    from optuna.trial import TrialState

    def row(t) -> Row:
        return Row(t.number, float(t.values[0]), float(t.values[1]), dict(t.params), t.user_attrs.get("output_dir"))

    done = [row(t) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    front = sorted((row(t) for t in study.best_trials), key=lambda r: (r.speed, r.number))
    return done, front


def reference_of(rows: list[Row]) -> Reference:
    """The teacher's speed and score and the trivial baseline, from the first trial run that has them."""
    for r in rows:
        path = Path(r.output_dir or "") / "metrics.json"
        if r.output_dir and path.is_file():
            metrics = json.loads(path.read_text())
            speed = metrics.get("speed") or {}
            if speed:
                return Reference(metric=str(metrics.get("main_metric", "score")), measure=speed.get("measure", "speed"),
                                 unit=speed.get("unit", ""), teacher_speed=speed.get("teacher"),
                                 teacher_score=speed.get("teacher_score"), trivial_score=speed.get("trivial_score"))
    return Reference()


def next_to_study(storage: str, study_name: str, out_dir: str | None) -> Path:
    """Where the figure goes: ``--out-dir``, else the folder of a SQLite database, else ``.``."""
    from lad.search.studies import sqlite_file

    if out_dir:
        folder = Path(out_dir).expanduser()
    else:
        db = sqlite_file(storage)
        folder = db.parent if db is not None else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', study_name)}.front"


# ----------------------------------------------------------------------------- figure
def draw_front(done: list[Row], front: list[Row], ref: Reference, path: Path, chosen: Row | None = None,
               title: str = "") -> Path:
    """Dev metric vs speed: every finished trial, the front as a step line, teacher and trivial
    baseline marked, the pick circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([r.speed for r in done], [r.score for r in done], s=18, color="0.6", label="finished trials")
    ax.step([r.speed for r in front], [r.score for r in front], where="post", color="C0", lw=1.5)
    ax.scatter([r.speed for r in front], [r.score for r in front], s=36, color="C0", zorder=3,
               label=f"Pareto front ({len(front)})")
    for r in front:
        ax.annotate(str(r.number), (r.speed, r.score), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if ref.teacher_speed is not None and ref.teacher_score is not None:
        ax.scatter([ref.teacher_speed], [ref.teacher_score], marker="*", s=160, color="C3", zorder=4,
                   label=f"teacher ({ref.teacher_score:.4f})")
    elif ref.teacher_score is not None:
        ax.axhline(ref.teacher_score, color="C3", ls=":", label=f"teacher ({ref.teacher_score:.4f})")
    elif ref.teacher_speed is not None:
        ax.axvline(ref.teacher_speed, color="C3", ls=":", label="teacher's speed")
    if ref.trivial_score is not None:
        ax.axhline(ref.trivial_score, color="0.3", ls="--", lw=1, label=f"trivial baseline ({ref.trivial_score:.4f})")
    if chosen is not None:
        ax.scatter([chosen.speed], [chosen.score], s=160, facecolors="none", edgecolors="C2", lw=2, zorder=5,
                   label=f"pick: trial {chosen.number}")
    ax.set_xlabel(f"{ref.measure} ({ref.unit}, lower is faster)" if ref.unit else ref.measure)
    ax.set_ylabel(f"dev {ref.metric}")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_front(study_name: str, done: list[Row], front: list[Row], ref: Reference, base: Path,
                chosen: Row | None = None, rule: Rule | None = None) -> tuple[Path, Path]:
    """``<base>.png`` and ``<base>.json`` (every row, the front, the reference, the pick)."""
    from lad.core.fileio import write_json

    png = draw_front(done, front, ref, base.with_suffix(".front.png"), chosen, title=study_name)
    data = {"study": study_name, "reference": asdict(ref), "trials": [asdict(r) for r in done],
            "front": [r.number for r in front], "pick": None if chosen is None else chosen.number,
            "rule": None if rule is None else rule.describe(ref)}
    path = base.with_suffix(".front.json")
    write_json(path, data)
    return png, path


def log_front(study_name: str, rows: list[Row], files: list[Path], chosen: Row | None) -> str | None:
    """Log the figure and table to the MLflow store the trials used (their ``config.yaml``), in one
    run per study (tag ``lad.pareto_study``); None when the trials did not track."""
    from omegaconf import OmegaConf

    cfg_file = next((Path(r.output_dir) / "config.yaml" for r in rows
                     if r.output_dir and (Path(r.output_dir) / "config.yaml").is_file()), None)
    if cfg_file is None:
        return None
    mcfg = OmegaConf.load(cfg_file).get("mlflow")
    if not mcfg or not mcfg.get("enabled"):
        return None
    from lad.tracking.store import connect, get_experiment_id

    mlflow = connect(mcfg)
    client = mlflow.tracking.MlflowClient()
    exp = get_experiment_id(mlflow, str(mcfg.experiment), mcfg.get("artifact_location"))
    found = client.search_runs([exp], filter_string=f"tags.`{TAG}` = '{study_name}'", max_results=1)
    run_id = found[0].info.run_id if found else client.create_run(
        exp, run_name=f"pareto {study_name}", tags={TAG: study_name}).info.run_id
    for path in files:
        client.log_artifact(run_id, str(path))
    if chosen is not None:
        client.set_tag(run_id, "pareto.pick", str(chosen.number))
        client.log_metric(run_id, "pareto/pick_score", chosen.score)
        client.log_metric(run_id, "pareto/pick_speed", chosen.speed)
    client.log_metric(run_id, "pareto/front_size", float(len(rows)))
    client.set_terminated(run_id, "FINISHED")
    return run_id


# ----------------------------------------------------------------------------- export
def export(row: Row, args) -> tuple[Path, dict, int]:
    """``python -m lad.deploy <run dir> --int8``; (the model file kept, deploy.json, exit status):
    int8 when its dev score is within ``--int8-max-drop`` points of PyTorch's, else fp32 ONNX."""
    from lad.deploy import export as deploy

    if not row.output_dir or not (Path(row.output_dir) / "metrics.json").is_file():
        raise ConfigError(f"trial {row.number} has no finished run directory recorded "
                          f"(user attribute output_dir: {row.output_dir!r})")
    out = Path(args.out).expanduser() if args.out else Path(row.output_dir) / "export"
    argv = [row.output_dir, "--int8", "--out", str(out), "--latency-runs", str(args.latency_runs)]
    for flag, value in (("--data-dir", args.data_dir), ("--max-eval-samples", args.max_eval_samples),
                        ("--threads", args.threads)):
        if value is not None:
            argv += [flag, str(value)]
    if args.no_mlflow:
        argv.append("--no-mlflow")
    status = deploy.main(argv)
    report = json.loads((out / "deploy.json").read_text())
    int8 = report["backends"].get("onnxruntime-int8", {})
    keeps = int8 and int8.get("score_change_points", -1e9) >= -float(args.int8_max_drop)
    return out / (deploy.INT8_NAME if keeps else deploy.ONNX_NAME), report, status


def describe(row: Row, ref: Reference) -> str:
    """One line: trial, score (against the teacher's) and speed (against the teacher's)."""
    score = f"dev {ref.metric} {row.score:.4f}"
    if ref.teacher_score is not None:
        score += f" (teacher {ref.teacher_score:.4f}, {100 * (row.score - ref.teacher_score):+.2f} points)"
    speed = f"{ref.measure} {row.speed:.4g} {ref.unit}".rstrip()
    if ref.teacher_speed:
        speed += f" (teacher {ref.teacher_speed:.4g}: {ref.teacher_speed / row.speed:.2f}x faster)" if row.speed > 0 \
            else f" (teacher {ref.teacher_speed:.4g})"
    params = " ".join(f"{k}={v}" for k, v in row.params.items())
    return f"trial {row.number}: {score}; {speed}; {params}"


# ----------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lad.search.pareto", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("front", "pick"):
        s = sub.add_parser(name, help="draw the front" if name == "front" else "pick from the front and export it")
        s.add_argument("--study", required=True, help="study name (hydra.sweeper.study_name)")
        s.add_argument("--storage", default="sqlite:///sweeps/pareto.db", help="Optuna storage URL")
        s.add_argument("--out-dir", help="folder of <study>.front.png/.json (default: next to a SQLite study)")
        s.add_argument("--teacher-score", type=float, help="the teacher's dev score (default: its metrics.json)")
        s.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    s = sub.choices["pick"]
    s.add_argument("--rule", help="'fastest within 1.0 point of teacher' | 'best under 20 ms'")
    s.add_argument("--max-speed", type=float, help="best score with speed <= this (the study's unit)")
    s.add_argument("--max-latency-ms", type=float, help="best score under this batch-1 p50 latency "
                                                        "(a study with speed.measure=latency)")
    s.add_argument("--within-points", type=float, help="fastest trial within this many points of the teacher")
    s.add_argument("--out", help="export folder (default: <trial run dir>/export)")
    s.add_argument("--no-export", action="store_true", help="pick and print only")
    s.add_argument("--int8-max-drop", type=float, default=0.5,
                   help="keep int8 when its dev score is at most this many points below fp32 (default 0.5)")
    s.add_argument("--data-dir", help="GLUE folder for the export's checks (default: the run's)")
    s.add_argument("--max-eval-samples", type=int, help="export: use only the first N dev examples")
    s.add_argument("--threads", type=int, help="export: CPU threads")
    s.add_argument("--latency-runs", type=int, default=200, help="export: batch-1 calls timed (default 200)")
    return p.parse_args(argv)


def rule_of(args, ref: Reference) -> Rule:
    given = [(args.rule is not None), args.max_speed is not None, args.max_latency_ms is not None,
             args.within_points is not None]
    if sum(given) != 1:
        raise ConfigError("pick needs exactly one of --rule, --max-speed, --max-latency-ms, --within-points")
    if args.rule is not None:
        rule = parse_rule(args.rule)
        unit = re.search(r"[0-9.]+ ?([a-z/]+)$", " ".join(args.rule.lower().split()))
        if rule.kind == "under" and unit and unit.group(1) == "ms" and ref.measure not in ("latency", "throughput"):
            raise ConfigError(f"--rule {args.rule!r} is in ms, but this study's speed is {ref.measure} "
                              f"({ref.unit}); use --max-speed in {ref.unit}")
        return rule
    if args.max_latency_ms is not None:
        if ref.measure != "latency":
            raise ConfigError(f"--max-latency-ms needs a study with speed.measure=latency; this one measures "
                              f"{ref.measure} ({ref.unit}): use --max-speed")
        return Rule("under", args.max_latency_ms)
    if args.max_speed is not None:
        return Rule("under", args.max_speed)
    return Rule("within", args.within_points)


def run(args) -> int:
    from lad.core.config import register_resolvers, setup_environment

    register_resolvers()  # as the entry points: a trial's config may hold ${lad_...:} values
    setup_environment()
    study = load_study(args.study, args.storage)
    done, front = rows_of(study)
    if not front:
        raise ConfigError(f"study {args.study!r} has no COMPLETE trial yet: run the search first")
    ref = reference_of(front)
    if args.teacher_score is not None:
        ref.teacher_score = args.teacher_score
    rule = rule_of(args, ref) if args.command == "pick" else None
    try:
        chosen = pick(front, rule, ref.teacher_score) if rule is not None else None
    except ConfigError as exc:  # the front is still drawn and shown; then the one error line
        chosen, missed = None, exc
    else:
        missed = None
    base = next_to_study(args.storage, args.study, args.out_dir)
    files = list(write_front(args.study, done, front, ref, base, chosen, rule))
    print(f"[lad.pareto] {args.study}: {len(done)} finished trial(s), {len(front)} on the Pareto front "
          f"(failed and pruned trials excluded)", flush=True)
    for r in front:
        print(f"  {'*' if chosen is r else ' '} {describe(r, ref)}", flush=True)
    print(f"[lad.pareto] front figure: {files[0]}", flush=True)
    if not args.no_mlflow:
        run_id = log_front(args.study, front, files, chosen)
        if run_id:
            print(f"[lad.pareto] logged the front to MLflow run {run_id}", flush=True)
    if missed is not None:
        raise missed
    if chosen is None:
        return 0
    print(f"[lad.pareto] pick ({rule.describe(ref)}): {describe(chosen, ref)}", flush=True)
    print(f"[lad.pareto] run directory: {chosen.output_dir}", flush=True)
    if args.no_export:
        return 0
    model, report, status = export(chosen, args)
    int8 = report["backends"].get("onnxruntime-int8")
    kept = "int8" if model.name.endswith(".int8.onnx") else "fp32 ONNX"
    why = "" if int8 is None else (f": int8 scores {int8['score_change_points']:+.2f} points vs fp32, "
                                   f"limit -{args.int8_max_drop:g}")
    print(f"[lad.pareto] exported model ({kept}{why}): {model}", flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    from lad.core.guard import guarded

    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return guarded(run, args)


if __name__ == "__main__":
    sys.exit(main())
