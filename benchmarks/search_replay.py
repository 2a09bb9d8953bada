"""Pruners replayed offline on recorded unpruned searches, over many trial orders (not a test).

    python benchmarks/search_replay.py results/search/search-160-seed*.json results/search/search-160w2-seed*.json \
        --variant search.warmup_evals=1 --variant search.warmup_evals=2 --out results/search/search-replay.md
    python benchmarks/search_replay.py results/search/search-160-seed*.json results/search/search-160w2-seed*.json --pool 30 \
        --variant "search.warmup_evals=0,1,2" --out results/search/search-replay-pool30.md
    python benchmarks/search_replay.py results/search/search-160*.json --tolerance 0.005 \
        --out results/search/search-replay-tolerance-0.005.md

Each input is a ``.json`` written by ``benchmarks/search_pruning.py``. Its unpruned search ran every
trial to the end and kept the trial's dev metrics at every evaluation and its duration, so a pruner
can be replayed on the same trials without training anything: the recorded dev values are fed to
Optuna's own pruner (built by ``lad.search.make_pruner`` from the search config of the recorded
command, plus the ``--variant`` overrides) one evaluation at a time, exactly as ``lad.search`` reports
them, and a stopped trial is charged the share of its recorded duration that it trained
(steps done / steps).

Where the best trial falls in a search is luck of the sampler's order, and a 12-trial search whose
best comes early reaches it within half its time with or without a pruner. The replay therefore
runs each recorded search in ``--orders`` random orders of its trials (the same orders for every
variant) and counts how often the pruned search reaches the unpruned best within half of the
unpruned wall time, how often the unpruned search does so by itself, and how often the pruner
stops the best trial. ``--tolerance T`` lowers the target to the best score minus ``T`` (a few dev
examples' worth), to see how close to the best the searches get. ``--pool N`` puts the trials of all
inputs (trained alike: same task, budget and training overrides) in one pool, each input's durations
rescaled to a common median trial time, and replays searches of N trials drawn from it, a larger
study than any one recording. What the replay cannot show: in a live search TPE picks later trials
from what it has seen, and pruned trials change what it sees; the replay keeps the recorded trials.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import shlex
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.search_pruning import REPO, build_parser, search_cfg
from lad.fileio import write_text


@dataclass
class Recorded:
    """One recorded benchmark run: its command's settings, its unpruned (complete) trials and the
    trials of its pruned search."""

    name: str
    args: argparse.Namespace
    trials: list[dict]
    pruned_run: list[dict]

    @classmethod
    def load(cls, path: Path) -> "Recorded":
        try:
            raw = json.loads(Path(path).read_text())
            args = build_parser().parse_args(shlex.split(raw["command"])[2:])
            trials = [t for t in raw["trials"]["none"] if t["state"] == "COMPLETE"]
            pruned_run = raw["trials"].get("pruned", [])
        except (OSError, ValueError, KeyError, SystemExit) as exc:
            raise ValueError(f"{path}: not a JSON written by benchmarks/search_pruning.py ({exc})") from None
        if not trials or not all(t["dev"] and t["duration_s"] for t in trials):
            raise ValueError(f"{path}: its unpruned search has no complete trial with dev metrics and a duration")
        return cls(Path(path).stem, args, trials, pruned_run)

    def training(self) -> tuple:
        """What decides a trial's dev curve: task, budget and the overrides other than the seed, the
        pruner's settings (``search.*``) and the thread count (which changes durations only)."""
        a = self.args
        return (a.task, a.steps, a.eval_every,
                sorted(o for o in a.overrides if not o.startswith(("seed=", "search.", "trainer.num_threads="))))

    @classmethod
    def pool(cls, recs: list["Recorded"]) -> "Recorded":
        """All unpruned trials of several recorded searches as one pool. The recordings must have trained
        alike (``training()``); each one's durations are rescaled so that its median trial takes the pool's
        median time, since recordings run on different thread counts (or machines) differ in speed only."""
        first = recs[0]
        for rec in recs[1:]:
            if rec.training() != first.training():
                raise ValueError(f"--pool: {rec.name} and {first.name} trained differently (task, steps, "
                                 "eval-every or overrides other than seed=, search.* and trainer.num_threads=)")
        medians = [statistics.median(t["duration_s"] for t in rec.trials) for rec in recs]
        unit = statistics.median(medians)
        rescaled = (dict(t, duration_s=t["duration_s"] * unit / median)
                    for rec, median in zip(recs, medians) for t in rec.trials)
        trials = [dict(t, number=i) for i, t in enumerate(rescaled)]
        return cls(f"pool of {len(recs)}", first.args, trials, [])


class Setting:
    """A pruner and what trials report to it, composed from a recorded command plus overrides."""

    def __init__(self, rec: Recorded, variant: list[str]):
        from lad.data.tasks import TaskSpec
        from lad.search import make_pruner, prune_value, resolve_prune_on

        a = rec.args
        with tempfile.TemporaryDirectory() as tmp:
            cfg = search_cfg(a.task, a.trials, a.steps, a.eval_every, a.pruner, "pruned", Path(tmp),
                             [*a.overrides, *variant])
        self.search, self.steps = cfg.search, int(a.steps)
        task = TaskSpec.from_config(cfg.task)
        prune_on = resolve_prune_on(self.search, task)
        self.new_pruner = lambda: make_pruner(self.search)
        self.value = lambda metrics: prune_value(metrics, task, prune_on)
        s = self.search
        if s.pruner == "median":
            self.label = (f"median on {prune_on}, {s.startup_trials} startup trials, "
                          f"{s.warmup_evals} warm-up evaluations")
        else:
            self.label = f"{s.pruner} on {prune_on}, min_resource {s.min_resource}, reduction {s.reduction_factor}"


def replay(trials: list[dict], order: list[int], setting: Setting, target: float):
    """Run ``trials`` in ``order`` under the setting's pruner. Returns (seconds until the best complete
    score first reached ``target`` or None, seconds for all trials, {trial number: step it was stopped at})."""
    import optuna

    # the recorded pruned search's study name: Hyperband picks a trial's bracket from a hash of the
    # study name and the trial number, so a random name would make the replay irreproducible
    study = optuna.create_study(study_name=str(setting.search.study_name), direction="maximize",
                                pruner=setting.new_pruner())
    clock, best, reached, stopped = 0.0, float("-inf"), None, {}
    for i in order:
        rec = trials[i]
        trial = study.ask()
        for step in sorted(int(s) for s in rec["dev"]):
            trial.report(setting.value(rec["dev"][str(step)]), step)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                clock += rec["duration_s"] * min(step / setting.steps, 1.0)
                stopped[rec["number"]] = step
                break
        else:
            study.tell(trial, rec["value"])
            clock += rec["duration_s"]
            best = max(best, rec["value"])
            if reached is None and best >= target:
                reached = clock
    return reached, clock, stopped


def unpruned_reach(trials: list[dict], order: list[int], target: float) -> float:
    """Seconds until the unpruned search, running ``order``, completes a trial scoring ``target``."""
    clock = 0.0
    for i in order:
        clock += trials[i]["duration_s"]
        if trials[i]["value"] >= target:
            return clock
    raise ValueError("target above every trial's score")


def tally(rec: Recorded, setting: Setting, orders: list[list[int]], tolerance: float = 0.0) -> dict:
    """Counts over ``orders`` (each a search: trial indices in the order they run) for one setting;
    times are shares of that search's unpruned total, the target is its best trial's score minus
    ``tolerance``."""
    alone = late = rescued = met = lost = 0
    shares, totals = [], []
    for order in orders:
        target = max(rec.trials[i]["value"] for i in order) - tolerance
        total = sum(rec.trials[i]["duration_s"] for i in order)
        own = unpruned_reach(rec.trials, order, target) / total
        reached, clock, _ = replay(rec.trials, order, setting, target)
        share = float("inf") if reached is None else reached / total
        alone += own <= 0.5
        met += share <= 0.5
        late += own > 0.5
        rescued += own > 0.5 and share <= 0.5
        lost += reached is None
        shares.append(share)
        totals.append(clock / total)
    return {"orders": len(orders), "alone": alone, "met": met, "late": late, "rescued": rescued, "lost": lost,
            "shares": shares, "totals": totals}


def agreement(rec: Recorded, setting: Setting) -> str:
    """The replay of the recorded order next to what the recorded pruned search did, on the trials
    that drew the same parameters in both searches (a check of the replay itself)."""
    base = {t["number"]: t for t in rec.trials}
    _, _, stopped = replay(rec.trials, list(range(len(rec.trials))), setting,
                           max(t["value"] for t in rec.trials))
    same = [t for t in rec.pruned_run if t["number"] in base and t["params"] == base[t["number"]]["params"]]
    if not same:
        return f"{rec.name}: no pruned search on record to compare with."
    agree, ratios = 0, []
    for t in same:
        recorded = max(map(int, t["reports"]), default=0) if t["state"] == "PRUNED" else None
        agree += recorded == stopped.get(t["number"])
        if recorded is not None and t["duration_s"]:
            ratios.append(t["duration_s"] / (base[t["number"]]["duration_s"] * recorded / setting.steps))
    line = (f"{rec.name}: replaying the recorded order with the recorded settings makes the same decision "
            f"(stopped at the same step, or run to the end) as the recorded pruned search for {agree} of "
            f"the {len(same)} trials that drew the same parameters in both")
    if ratios:
        line += (f"; a trial it stopped took {min(ratios):.2f}–{max(ratios):.2f} × the duration the replay "
                 f"charges for it")
    return line + "."


def expand(variant: str) -> list[list[str]]:
    """``"a=1,2 b=x"`` -> ``[["a=1", "b=x"], ["a=2", "b=x"]]``: comma lists sweep as in Hydra's multirun."""
    choices = []
    for token in variant.split():
        key, sep, values = token.partition("=")
        if not sep or not values:
            raise ValueError(f"--variant {variant!r}: expected key=value overrides, got {token!r}")
        choices.append([f"{key}={v}" for v in values.split(",")])
    return [list(c) for c in itertools.product(*choices)]


def _pct(n: int, d: int) -> str:
    return "—" if d == 0 else f"{n / d:.0%} ({n}/{d})"


def _median_share(shares: list[float]) -> str:
    m = statistics.median(shares)
    return "never" if m == float("inf") else f"{m:.0%}"


def table_head(tolerance: float) -> list[str]:
    """The table's header and alignment lines; with a tolerance the target is the best minus it, and
    a search that never gets there may still have run the best trial partly (not "stopped the best
    trial")."""
    if not tolerance:
        target, never, when = "its best", "pruner stops the best trial", "the best"
    else:
        target, never, when = f"its best − {tolerance:g}", "pruned search never gets there", "the target"
    return [f"| recorded search | replayed pruner | unpruned reaches {target} ≤ 50 % | pruned reaches it ≤ 50 % "
            f"| … of the orders where unpruned needs > 50 % | {never} | median time to {when} (share of "
            "unpruned total) | all trials (share of unpruned total) |", "|---|---|---:|---:|---:|---:|---:|---:|"]


def row(name: str, label: str, t: dict) -> str:
    return (f"| {name} | {label} | {_pct(t['alone'], t['orders'])} | {_pct(t['met'], t['orders'])} | "
            f"{_pct(t['rescued'], t['late'])} | {_pct(t['lost'], t['orders'])} | {_median_share(t['shares'])} | "
            f"{statistics.mean(t['totals']):.0%} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="JSON files written by benchmarks/search_pruning.py")
    parser.add_argument("--variant", action="append", default=[],
                        help="space-separated search overrides replayed on top of each recorded command; "
                             "key=a,b sweeps the values as Hydra's multirun does (repeatable; default: the "
                             "recorded settings only)")
    parser.add_argument("--orders", type=int, default=500, help="random trial orders per recorded search")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool", type=int, default=0, metavar="N",
                        help="put the inputs' trials in one pool and replay searches of N trials drawn "
                             "from it (a larger study than any one recording; 0: each input as recorded)")
    parser.add_argument("--tolerance", type=float, default=0.0, metavar="T",
                        help="target = the unpruned best minus T (default 0: the best itself)")
    parser.add_argument("--pooled-only", action="store_true",
                        help="only the rows of all recorded searches together (for many variants)")
    parser.add_argument("--out", default=str(REPO / "results" / "search" / "search-replay.md"))
    args = parser.parse_args(argv)
    if args.orders < 1:
        parser.error("--orders must be >= 1")
    if args.pool < 0:
        parser.error("--pool must be >= 0")
    if args.tolerance < 0:
        parser.error("--tolerance must be >= 0")

    import optuna

    from lad.config import setup_environment

    setup_environment()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        recs = [Recorded.load(Path(p)) for p in args.inputs]
        checked = recs
        if args.pool:
            recs = [Recorded.pool(recs)]
            if args.pool > len(recs[0].trials):
                raise ValueError(f"--pool {args.pool}: the inputs hold only {len(recs[0].trials)} complete trials")
        variants = [combo for v in args.variant for combo in expand(v)] or [[]]
        settings = [[Setting(rec, v) for v in variants] for rec in recs]
    except Exception as exc:  # noqa: BLE001 - a bad input file or override is a user mistake: one line
        message = str(exc).splitlines()[0] if str(exc) else repr(exc)
        print(f"error: {message}", file=sys.stderr)
        return 2

    command = "python benchmarks/search_replay.py " + " ".join(
        [*args.inputs, *(f"--variant {shlex.quote(v)}" for v in args.variant),
         f"--orders {args.orders}", f"--seed {args.seed}", *([f"--pool {args.pool}"] if args.pool else []),
         *([f"--tolerance {args.tolerance:g}"] if args.tolerance else []),
         *(["--pooled-only"] if args.pooled_only else [])])
    head = table_head(args.tolerance)
    lines = ["# Pruners replayed on recorded searches", "",
             f"Generated by `{command}` — do not edit by hand.", "",
             "Each recorded search (a `.json` from `benchmarks/search_pruning.py`) is replayed in "
             f"{args.orders} random orders of its unpruned trials (seed {args.seed}, the same orders for each "
             "pruner): the recorded dev metrics are reported to Optuna's pruner one evaluation at a time, and "
             "a stopped trial costs the share of its recorded duration it trained. The target is the "
             "unpruned search's best score" + (f" minus {args.tolerance:g}" if args.tolerance else "")
             + ", reached within 50 % of the unpruned wall time. In a live "
             "search TPE would choose later trials from what it has seen; the replay keeps the recorded "
             "trials, so it measures the pruner's decisions and savings, not the sampler's."
             + (f" Here the inputs' trials form one pool and each replayed search runs {args.pool} trials "
                "drawn from it at random, as a larger study whose sampler kept drawing at random; the "
                "target is then the best of the drawn trials. Each input's trial durations are rescaled so "
                "that its median trial takes the pool's median time (inputs run on different thread counts "
                "differ in speed only)." if args.pool else ""), "",
             *([] if args.pooled_only else head)]
    rng = random.Random(args.seed)
    pooled: dict[str, dict] = {}
    for rec, rec_settings in zip(recs, settings):
        size = args.pool or len(rec.trials)
        orders = [rng.sample(range(len(rec.trials)), size) for _ in range(args.orders)]
        for setting in rec_settings:
            t = tally(rec, setting, orders, args.tolerance)
            p = pooled.setdefault(setting.label, {k: 0 if k not in ("shares", "totals") else [] for k in t})
            for k, v in t.items():
                p[k] += v
            line = row(f"{rec.name} ({len(rec.trials)} trials" + (f", searches of {size})" if args.pool else ")"),
                       setting.label, t)
            print(line, flush=True)
            if not args.pooled_only:
                lines.append(line)
    if len(recs) > 1 or args.pooled_only:
        lines += ["", f"All {len(recs)} recorded searches together (each weighs the same):", "",
                  *head]
        lines += [row("all", label, t) for label, t in pooled.items()]
    lines += ["", "Check of the replay against the recorded pruned searches (recorded settings, recorded "
              "order):", ""]
    lines += [f"- {agreement(rec, Setting(rec, []))}" for rec in checked]
    lines.append("")
    write_text(Path(args.out), "\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
