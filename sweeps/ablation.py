"""Ablation grid driver: gates x losses x students x seeds for one task, resumable across sessions.

    python sweeps/ablation.py task=rte
    python sweeps/ablation.py task=rte 'methods=[lad,kd]' 'students=[3layer]' 'seeds=[1]' \
        budget.max_steps=10 budget.max_train_samples=320
    python sweeps/ablation.py task=rte dry_run=true        # show what would run

Config: sweeps/conf/ablation.yaml. Each cell is one ``distil.py`` subprocess (a crash fails that
cell only; its output goes to ``<log_dir>/<task>/<run-dir-name>.log``). A cell is skipped when a
grid cell (``sweeps/kinds.py``: a FINISHED distil run that is not an Optuna sweep trial) with the
same task, method label, student, seed and resolved ``match_params`` (budget, loss weights, learning
rates, ...) is in MLflow or in the export (results/runs.jsonl).

Leftover run directories of cells that are not recorded as done: one holding checkpoints but no
``metrics.json`` (an interrupted cell) is continued with ``trainer.resume=true`` (or replaced with
``overwrite=true`` when ``on_unfinished=overwrite``); a finished one that no store records (trained
against another store, or its tracking failed) is trained again with ``overwrite=true``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from lad.core.config import CONF_DIR, load_with_bases, register_resolvers, run_dirname
from lad.core.errors import ConfigError, LADError
from sweeps.export import absolute_uri, load_mlflow_records, read_export
from sweeps.kinds import cell_key, is_grid_cell

REPO = Path(__file__).resolve().parent.parent

# overrides that only control how a cell runs (not what it trains); purpose=results lets
# sweeps/export.py put the run into results/runs.jsonl
RUN_CONTROL = ("trainer.progress=false", "mlflow.purpose=results")
# config keys that do not change what is trained: never used to tell cells apart
NOT_IDENTITY = ("paths.", "mlflow.", "hydra.", "cache.", "device", "overwrite", "data.data_dir",
                "data.cache_dir", "trainer.progress", "trainer.resume", "trainer.num_threads",
                "trainer.eval_batch_size", "trainer.log_every", "trainer.ckpt_every",
                "trainer.keep_checkpoints", "trainer.keep_after_finish", "trainer.predict_test",
                "trainer.measure_inference", "trainer.inference.")


@dataclass(frozen=True)
class Cell:
    """One point of the grid: what to train, as distil.py overrides."""

    task: str
    method: str
    gate: str
    loss: str
    student: str
    seed: int
    overrides: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.method}/{self.student} seed={self.seed}"


@dataclass
class PlannedCell:
    cell: Cell
    params: dict[str, str]          # resolved match_params, as MLflow stores them
    experiment: str
    tracking_uri: str
    run_dir: Path
    log_path: Path
    command: list[str] = field(default_factory=list)
    control: tuple[str, ...] = ()   # overwrite / resume overrides for leftover run dirs
    done_by: str | None = None      # run id of the recorded run that makes this cell done


@dataclass
class Summary:
    planned: list[PlannedCell]
    skipped: list[PlannedCell] = field(default_factory=list)
    ran: list[PlannedCell] = field(default_factory=list)
    failed: list[PlannedCell] = field(default_factory=list)


# ----------------------------------------------------------------------------- planning
def as_list(value) -> list | None:
    if value is None:
        return None
    if isinstance(value, (ListConfig, list, tuple)):
        return list(value)
    return [value]


def loss_has_hidden_term(loss: str, conf_dir: Path = CONF_DIR) -> bool:
    """Whether ``conf/loss/<loss>.yaml`` has a term that reads the gate's targets (what a gate needs)."""
    from lad.method.loss_terms import GATED, TERMS, term_of_weight

    path = conf_dir / "loss" / f"{loss}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown loss {loss!r}: no {path.relative_to(conf_dir.parent)}")
    spec = load_with_bases(path)
    return any(GATED in TERMS[term_of_weight(k)].teacher and float(spec[k] or 0.0) > 0
               for k in spec if term_of_weight(k))


FROZEN = ("gate.frozen=true",)  # the same gate stack kept at its random init (adaptivity ablation)


def method_of(gate: str, loss: str, frozen: bool = False, conf_dir: Path = CONF_DIR) -> str:
    """The method label of ``gate=<gate> loss=<loss>`` (lad.tracking.tracker.method_label on their files)."""
    from lad.tracking.tracker import method_label

    gate_cfg = load_with_bases(conf_dir / "gate" / f"{gate}.yaml")
    if frozen:
        gate_cfg.frozen = True
    return method_label(OmegaConf.create({"gate": gate_cfg, "loss": load_with_bases(conf_dir / "loss" / f"{loss}.yaml")}))


def gate_can_freeze(gate: str, conf_dir: Path = CONF_DIR) -> bool:
    """Whether ``conf/gate/<gate>.yaml`` (or the gate file it inherits) has a ``frozen`` key: gates with
    parameters do, parameter-free ones (none, mean, attention) have nothing to freeze."""
    path = conf_dir / "gate" / f"{gate}.yaml"
    if not path.is_file():
        return False
    return "frozen" in load_with_bases(path)


def valid_pairs(gates: Iterable[str], losses: Iterable[str],
                has_hidden: Callable[[str], bool] = loss_has_hidden_term,
                can_freeze: Callable[[str], bool] = gate_can_freeze) -> dict[str, tuple[str, str, tuple]]:
    """Method label -> (gate, loss, extra overrides) for every pair distil.py accepts (a gate needs a
    hidden loss); a gate with parameters also comes frozen (``<label>-frozen``: ``gate.frozen=true``)."""
    pairs: dict[str, tuple[str, str, tuple]] = {}
    for gate in gates:
        for loss in losses:
            if gate != "none" and not has_hidden(loss):
                continue
            pairs.setdefault(method_of(gate, loss), (gate, loss, ()))
            if gate != "none" and can_freeze(gate):
                pairs.setdefault(method_of(gate, loss, frozen=True), (gate, loss, FROZEN))
    return pairs


def budget_overrides(budget) -> list[str]:
    mapping = (("max_steps", "trainer.max_steps"), ("epochs", "trainer.epochs"),
               ("max_train_samples", "data.max_train_samples"))
    return [f"{key}={budget[name]}" for name, key in mapping if budget.get(name) is not None]


def plan_cells(cfg: DictConfig, has_hidden: Callable[[str], bool] = loss_has_hidden_term) -> list[Cell]:
    """The grid in run order (seed, then student, then method), only valid gate/loss pairs."""
    pairs = valid_pairs(as_list(cfg.gates), as_list(cfg.losses), has_hidden)
    methods = as_list(cfg.methods)
    if methods is None:
        methods = list(pairs)
    unknown = [m for m in methods if m not in pairs]
    if unknown:
        raise ConfigError(f"methods {unknown} are not valid gate x loss pairs of gates={list(cfg.gates)} "
                          f"losses={list(cfg.losses)} (valid: {', '.join(pairs)})")
    common = budget_overrides(cfg.budget) + [f"trainer.predict_test={str(bool(cfg.predict_test)).lower()}"]
    common += [str(x) for x in as_list(cfg.extra) or []]
    cells = []
    for seed in as_list(cfg.seeds):
        for student in as_list(cfg.students):
            for method in dict.fromkeys(methods):
                gate, loss, variant = pairs[method]
                overrides = (f"task={cfg.task}", f"gate={gate}", f"loss={loss}", *variant, f"student={student}",
                             f"seed={seed}", *common)
                cells.append(Cell(str(cfg.task), method, gate, loss, str(student), int(seed), overrides))
    return cells


def override_keys(overrides: Iterable[str]) -> list[str]:
    """Keys of plain ``key=value`` overrides that change what is trained (not groups, not +/~)."""
    keys = []
    for item in overrides:
        key, sep, _ = str(item).partition("=")
        if sep and "." in key and not key.startswith(("+", "~", *NOT_IDENTITY)):
            keys.append(key)
    return keys


@contextmanager
def distil_composer():
    """``compose(overrides) -> DictConfig`` of conf/distil.yaml, usable inside another Hydra app."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    saved = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="distil"):
            yield lambda overrides: compose("distil", overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
        if saved is not None:
            GlobalHydra.instance().initialize(saved)


def param_string(value) -> str:
    """A config value the way lad.tracking.tracker.run_params stores it."""
    import json

    if isinstance(value, (ListConfig, DictConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    return json.dumps(value) if isinstance(value, (list, tuple)) else str(value)


def cell_params(dcfg: DictConfig, keys: Iterable[str]) -> dict[str, str]:
    return {k: param_string(OmegaConf.select(dcfg, k, default=None)) for k in dict.fromkeys(keys)}


def resolve_cells(cfg: DictConfig, cells: list[Cell]) -> list[PlannedCell]:
    """Compose each cell's distil config: match params, experiment, store and run directory."""
    uri_override = []
    if cfg.mlflow.tracking_uri:
        uri_override = [f"mlflow.tracking_uri={absolute_uri(str(cfg.mlflow.tracking_uri), REPO)}"]
    keys = list(cfg.match_params) + override_keys(as_list(cfg.extra) or [])
    log_dir = REPO / str(cfg.log_dir)
    planned = []
    with distil_composer() as compose:
        for cell in cells:
            try:
                dcfg = compose([*cell.overrides, *uri_override])
            except Exception as exc:  # noqa: BLE001 - Hydra reports bad overrides in many types
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConfigError(f"cell {cell.label}: {first}") from exc
            if not dcfg.mlflow.enabled:
                raise ConfigError("the ablation needs MLflow (mlflow=off cannot record which cells are done)")
            dirname = run_dirname(str(dcfg.hydra.job.override_dirname))
            run_dir = REPO / str(dcfg.paths.output_root) / str(dcfg.entry) / cell.task / dirname
            planned.append(PlannedCell(
                cell=cell, params=cell_params(dcfg, keys), experiment=str(dcfg.mlflow.experiment),
                tracking_uri=absolute_uri(str(dcfg.mlflow.tracking_uri), REPO), run_dir=run_dir,
                log_path=log_dir / cell.task / f"{dirname}.log"))
    return planned


# ----------------------------------------------------------------------------- done detection
def same_value(a: str | None, b: str | None) -> bool:
    a, b = str(a), str(b)
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def matches(record: dict, pc: PlannedCell) -> bool:
    """Whether a run record is this cell: a grid cell (``sweeps.kinds``: never a sweep trial) with the
    same task, method, student, seed and match params."""
    cell = pc.cell
    if not is_grid_cell(record) or cell_key(record) != (cell.task, cell.method, cell.student, cell.seed):
        return False
    params = record.get("params", {})
    return all(same_value(params.get(k, "None"), v) for k, v in pc.params.items())


def recorded_runs(cfg: DictConfig, planned: list[PlannedCell]) -> list[dict]:
    """FINISHED distil runs in the cells' MLflow experiments, plus the export's."""
    records = []
    by_store: dict[str, set[str]] = {}
    for pc in planned:
        by_store.setdefault(pc.tracking_uri, set()).add(pc.experiment)
    for uri, experiments in sorted(by_store.items()):
        records += load_mlflow_records(uri, sorted(experiments), missing_ok=True)
    if cfg.export:
        records += read_export(REPO / str(cfg.export))
    return records


def mark_done(planned: list[PlannedCell], records: list[dict]) -> None:
    for pc in planned:
        pc.done_by = next((r["run_id"] for r in records if matches(r, pc)), None)


def control_overrides(run_dir: Path, on_unfinished: str) -> tuple[str, ...]:
    """What to pass for a not-yet-recorded cell whose run directory already exists."""
    finished = (run_dir / "metrics.json").exists()
    if finished:
        return ("overwrite=true",)
    if (run_dir / "checkpoints").exists():
        return ("trainer.resume=true",) if on_unfinished == "resume" else ("overwrite=true",)
    return ()


def build_command(pc: PlannedCell, cfg: DictConfig) -> list[str]:
    cmd = [sys.executable, str(REPO / "distil.py"), *pc.cell.overrides, *RUN_CONTROL,
           f"mlflow.log_model={str(bool(cfg.log_models)).lower()}"]
    if cfg.mlflow.tracking_uri:
        cmd.append(f"mlflow.tracking_uri={pc.tracking_uri}")
    return cmd + list(pc.control)


# ----------------------------------------------------------------------------- running
def subprocess_runner(pc: PlannedCell) -> int:
    """Run one cell's command with its output appended to the cell's log file."""
    pc.log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(pc.log_path, "a", encoding="utf-8") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {' '.join(pc.command[1:])}\n")
        log.flush()
        return subprocess.run(pc.command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, check=False).returncode


def say(message: str) -> None:
    print(f"[ablation] {message}", flush=True)


def recorded_seconds(planned: list[PlannedCell]) -> list[float]:
    """Wall times (metrics.json ``wall_s``) of the grid's cells that already finished on this machine."""
    import json

    out = []
    for pc in planned:
        try:
            out.append(float(json.loads((pc.run_dir / "metrics.json").read_text())["wall_s"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def eta_text(seconds: float) -> str:
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def run_ablation(cfg: DictConfig, runner: Callable[[PlannedCell], int] = subprocess_runner,
                 records: list[dict] | None = None) -> Summary:
    """Plan the grid, skip recorded cells, run the others one at a time with ``runner``."""
    if cfg.on_unfinished not in ("resume", "overwrite"):
        raise ConfigError(f"on_unfinished must be resume or overwrite, got {cfg.on_unfinished!r}")
    planned = resolve_cells(cfg, plan_cells(cfg))
    mark_done(planned, recorded_runs(cfg, planned) if records is None else records)
    summary = Summary(planned)
    todo = [pc for pc in planned if pc.done_by is None]
    say(f"{cfg.task}: {len(planned)} cells, {len(planned) - len(todo)} already done, {len(todo)} to run"
        f" (store {planned[0].tracking_uri if planned else '-'})")
    durations = recorded_seconds(planned)
    if todo and not cfg.dry_run:
        say(f"estimate: {len(todo)} cells x {statistics.median(durations):.0f} s = "
            f"{eta_text(len(todo) * statistics.median(durations))} (median of {len(durations)} finished cells "
            "of this grid), one at a time" if durations else
            f"estimate: {len(todo)} cells; an ETA follows the first finished cell")
    remaining = len(todo)
    for i, pc in enumerate(planned, 1):
        if pc.done_by is not None:
            summary.skipped.append(pc)
            if cfg.dry_run:
                say(f"[{i}/{len(planned)}] {pc.cell.label}: done (run {pc.done_by})")
            continue
        pc.control = control_overrides(pc.run_dir, str(cfg.on_unfinished))
        pc.command = build_command(pc, cfg)
        rel_log = pc.log_path.relative_to(REPO) if pc.log_path.is_relative_to(REPO) else pc.log_path
        if cfg.dry_run:
            say(f"[{i}/{len(planned)}] {pc.cell.label}: would run {' '.join(pc.command[1:])}")
            continue
        say(f"[{i}/{len(planned)}] {pc.cell.label}: running{' ' + ' '.join(pc.control) if pc.control else ''}"
            f" (log {rel_log})")
        t0 = time.time()
        rc = runner(pc)
        remaining -= 1
        if rc == 0:
            summary.ran.append(pc)
            durations.append(time.time() - t0)
            say(f"[{i}/{len(planned)}] {pc.cell.label}: ok ({durations[-1]:.0f} s); "
                f"ETA {eta_text(remaining * statistics.median(durations))} for {remaining} more")
        else:
            summary.failed.append(pc)
            say(f"[{i}/{len(planned)}] {pc.cell.label}: FAILED (exit {rc}; see {rel_log})")
            if cfg.fail_fast:
                break
    if not cfg.dry_run:
        say(f"{cfg.task}: ran {len(summary.ran)}, failed {len(summary.failed)}, skipped {len(summary.skipped)}")
    return summary


@hydra.main(config_path="conf", config_name="ablation", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        summary = run_ablation(cfg)
    except LADError as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        say("interrupted: run the same command again to resume (finished cells are skipped)")
        sys.exit(130)
    if summary.failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
