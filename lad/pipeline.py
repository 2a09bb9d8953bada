"""Run functions behind the entry points: config in, trained model + records out, objective back.

``run(cfg)`` is what ``train_teacher.py`` and ``distil.py`` call; the only difference between the
two is how the trainable ``Distiller`` is assembled (``build_teacher_finetune`` vs
``build_distillation``), chosen by ``cfg.entry`` through the ``BUILDERS`` registry.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lad.config import setup_environment, validate_common
from lad.errors import ConfigError, LADError
from lad.fileio import atomic_dir, write_json
from lad.models.arch import forward_inputs, hidden_size, num_layers

log = logging.getLogger(__name__)


@dataclass
class Assembled:
    module: object          # lad.distiller.Distiller
    tokenizer: object
    model_source: Path       # directory the tokenizer / weights came from
    extra_params: dict


# ----------------------------------------------------------------------------- output dir
def target_dir(cfg: DictConfig) -> Path:
    """The run directory this command writes to (``trainer.resume=<dir>`` names another one)."""
    resume = cfg.trainer.resume
    if isinstance(resume, str) and resume not in ("true", "false", ""):
        return Path(resume).expanduser()
    return Path(str(cfg.output_dir))


def resolve_output_dir(cfg: DictConfig) -> tuple[Path, bool]:
    """Run directory and whether to resume; refuses to clobber a finished or unfinished run.

    Nothing is changed here: with ``overwrite=true`` the old run is set aside only once every input
    has been checked, and put back if the new run fails (``lad.rundir``).
    """
    from lad import checkpoint as ckpt

    out = target_dir(cfg)
    resume = cfg.trainer.resume
    if isinstance(resume, str) and resume not in ("true", "false", ""):
        if not out.is_dir():
            raise ConfigError(f"trainer.resume={resume}: no such run directory")
        ckpt.latest_intact(out / "checkpoints")
        return out, True
    resume = bool(resume) and resume != "false"
    finished = (out / "metrics.json").exists()
    unfinished = (out / "checkpoints").exists() and not finished
    if resume:
        if finished and not cfg.overwrite:
            from lad.rundir import extended_budget

            if extended_budget(out, cfg) and ckpt.list_checkpoints(out / "checkpoints"):
                ckpt.latest_intact(out / "checkpoints")
                return out, True  # a larger budget continues the finished run from its last checkpoint
            raise ConfigError(f"{out} already holds a finished run; pass overwrite=true to train it again, or "
                              "trainer.resume=true with a larger trainer.max_steps / trainer.epochs to extend it")
        if unfinished:
            ckpt.latest_intact(out / "checkpoints")  # all corrupt -> one clear error, before any work
        elif not finished:
            log.info("trainer.resume=true: %s holds no checkpoint yet; starting a new run", out)
        return out, unfinished
    if (finished or unfinished) and not cfg.overwrite:
        state = "a finished" if finished else "an unfinished"
        hint = "" if finished else " trainer.resume=true to continue it, or"
        raise ConfigError(f"{out} already holds {state} run; pass{hint} overwrite=true to replace it")
    return out, False


# ----------------------------------------------------------------------------- assembly
def memoized(memo: dict | None, key: tuple, make):
    """``make()`` once per ``key`` when a memo dict is given (in-process sweeps reuse teachers/data)."""
    if memo is None:
        return make()
    if key not in memo:
        memo[key] = make()
    return memo[key]


def build_teacher_finetune(cfg: DictConfig, task, memo: dict | None = None) -> Assembled:
    from lad.distiller import Distiller
    from lad.losses import Objective
    from lad.models import load_backbone, load_tokenizer
    from lad.hub import resolve_pretrained
    from lad.models.teacher import check_model_dir

    backbone = check_model_dir(resolve_pretrained(str(cfg.teacher.backbone), "teacher.backbone"), "teacher.backbone")
    tokenizer = load_tokenizer(backbone)
    model = load_backbone(backbone, task)
    objective = Objective(hard_weight=1.0, is_regression=task.is_regression)
    n_params = sum(p.numel() for p in model.parameters())
    return Assembled(Distiller(model, objective), tokenizer, backbone,
                     {"teacher.num_layers": num_layers(model), "teacher.hidden_size": hidden_size(model),
                      "teacher.params": n_params, "student.params": n_params})


def loss_config(cfg: DictConfig) -> DictConfig:
    """The loss group, with hard_weight tied to 1 - soft_weight when ``loss.tie_hard_soft``."""
    loss = OmegaConf.to_container(cfg.loss, resolve=True)
    if loss.pop("tie_hard_soft", False):
        loss["hard_weight"] = 1.0 - float(loss["soft_weight"])
    return OmegaConf.create(loss)


def chosen_loss_needs_teacher(name: str, is_regression: bool) -> bool:
    """Whether ``conf/loss/<name>.yaml`` on its own (before an experiment or an override changes its
    weights) has a term that reads the teacher; True for a loss that has no file there."""
    from lad.config import CONF_DIR, load_with_bases
    from lad.losses import Objective

    path = CONF_DIR / "loss" / f"{name}.yaml"
    return not path.is_file() or Objective.from_config(load_with_bases(path), is_regression).needs_teacher


def build_distillation(cfg: DictConfig, task, memo: dict | None = None) -> Assembled:
    from lad.distiller import Distiller
    from lad.gates import build_gate, gate_class
    from lad.loss_terms import GATED, TEACHER_NEEDS
    from lad.losses import Objective
    from lad.models import build_student, load_teacher, load_tokenizer
    from lad.models.student import init_source
    from lad.models.teacher import load_pretrained_encoder, pretrained_source

    objective = Objective.from_config(loss_config(cfg), is_regression=task.is_regression)
    if not objective.uses_gate and not gate_class(cfg.gate).direct_map:
        gated = "/".join(f"{k}=0" for k in objective.weight_keys({GATED})) or "no term that reads the gate"
        raise ConfigError(
            f"gate={cfg.gate.name} needs a loss with a hidden-state term (loss=lad), "
            f"but loss={cfg.loss.name} has {gated}; use gate=none with loss={cfg.loss.name}"
        )
    if objective.needs_teacher and not chosen_loss_needs_teacher(cfg.loss.name, task.is_regression):
        raise ConfigError(
            f"loss={cfg.loss.name} is fine-tuning without a teacher, but "
            f"{'/'.join(objective.weight_keys(TEACHER_NEEDS))} are set "
            "(an experiment file such as reference_<task> sets LAD's loss weights); use loss=kd or loss=lad, "
            "or drop the experiment and set optim.* directly")
    key = ("teacher", str(cfg.teacher.source), str(cfg.teacher.path), str(cfg.teacher.uri), task.name)
    teacher, teacher_dir = memoized(memo, key, lambda: load_teacher(cfg.teacher, task))
    tokenizer = memoized(memo, key + ("tokenizer",), lambda: load_tokenizer(teacher_dir))
    pretrained, source = None, str(teacher_dir)
    if init_source(cfg.student) == "pretrained":
        source = pretrained_source(cfg.student, cfg.teacher, teacher_dir)
        pretrained = memoized(memo, ("pretrained", source), lambda: load_pretrained_encoder(source))
    student, mapping = build_student(teacher, cfg.student, pretrained)
    L, width = num_layers(teacher), hidden_size(teacher)
    gate = build_gate(cfg.gate, num_layers=L, hidden_size=width) if objective.uses_gate else None
    if getattr(gate, "affine", None) == "position" and not objective.pads_to_max_length:
        raise ConfigError("gate.affine=position needs every batch padded to max length: "
                          "set loss.hidden_positions=all (as the reference recipe does)")
    module = Distiller(student, objective, teacher=teacher if objective.needs_teacher else None,
                       gate=gate, layer_map=mapping, teacher_hidden_size=width)
    n_params = sum(p.numel() for p in student.parameters())
    extra = {
        "teacher.dir": str(teacher_dir),
        "student.init_source": source,
        "teacher.num_layers": L,
        "student.layer_map": ",".join(map(str, mapping)),
        "student.params": n_params,
        "teacher.params": sum(p.numel() for p in teacher.parameters()),
    }
    log.info("student %d layers <- teacher layers %s (%.1fM params)", len(mapping), mapping, n_params / 1e6)
    return Assembled(module, tokenizer, teacher_dir, extra)


BUILDERS = {"train_teacher": build_teacher_finetune, "distil": build_distillation}


# ----------------------------------------------------------------------------- evaluation
def predict_logits(model, features, batch_size: int, device):
    """Logits of a sequence classifier for every example, in the features' order."""
    import numpy as np
    import torch

    from lad.data.loader import make_eval_batches
    from lad.train import to_device

    model.eval()
    out = np.zeros((len(features), model.config.num_labels), dtype=np.float32)
    with torch.no_grad():
        for idx in make_eval_batches(features, batch_size, sort_by_length=True):
            batch = to_device(batch_of(features, idx), device)
            logits = model(**forward_inputs(model, batch)).logits
            out[np.asarray(idx)] = logits.float().cpu().numpy()
    return out


def batch_of(features, indices, pad_to: int | None = None) -> dict:
    """Collated batch of the given example positions: padded to the longest one, or to ``pad_to``."""
    from lad.data.loader import FeaturesDataset, collate

    data = FeaturesDataset(features)
    return collate([data[i] for i in indices], pad_id=features.pad_id, pad_to=pad_to)


def make_evaluator(module, task, eval_sets: dict, batch_size: int, device):
    from lad.metrics import compute_split_metrics, dev_loss, predictions_from_logits

    def evaluate() -> dict:
        results, losses = {}, {}
        for split, feats in eval_sets.items():
            logits = predict_logits(module.student, feats, batch_size, device)
            results[split] = (predictions_from_logits(task, logits), feats.labels)
            losses["loss" + task.split(split).metric_suffix] = dev_loss(task, logits, feats.labels)
        return {k: float(v) for k, v in {**compute_split_metrics(task, results), **losses}.items()}

    return evaluate


# ----------------------------------------------------------------------------- the run
def record_labels(cfg: DictConfig, task) -> None:
    """Write an inferred label set into ``cfg.task.labels`` (so config.yaml and MLflow params show it)."""
    if task.labels is not None and cfg.task.get("labels") is None:
        from omegaconf import open_dict

        with open_dict(cfg):
            cfg.task.labels = list(task.labels)


def run(cfg: DictConfig, overrides: list[str] | None = None, sweep_dir: str | None = None,
        memo: dict | None = None, on_eval=None, job_files: bool = False, trial: int | None = None) -> float:
    """Train per ``cfg`` (teacher fine-tune or distillation) and return the best dev main metric.

    ``memo`` (a dict kept by the caller) reuses the loaded teacher, tokenizer and features across
    calls in one process; ``on_eval(step, metrics)`` is called after every dev evaluation (an
    Optuna pruning callback raises ``optuna.TrialPruned`` there). ``job_files`` writes this Hydra
    job's ``.hydra/`` record and log into the run directory once it is claimed (the entry points).

    The run directory is locked for the whole call (``lad.rundir.claim``); every input is checked
    before anything in it changes.
    ``trial`` is the Optuna trial
    number when the run is one (it names the MLflow run).
    """
    from lad.rundir import claim, close_job_files, hold_early_log
    from lad.secrets import remember

    setup_environment()
    remember(cfg)
    validate_common(cfg)
    entry = str(cfg.entry)
    if entry not in BUILDERS:
        raise ConfigError(f"unknown entry {entry!r} (expected one of {sorted(BUILDERS)})")
    from lad.data.tasks import TaskSpec

    task = TaskSpec.from_config(cfg.task)
    if entry == "distil":
        loss = loss_config(cfg)
        from lad.losses import Objective

        Objective.from_config(loss, is_regression=task.is_regression)  # validate before heavy work
        from lad.objectives import names

        names(cfg)  # what the job returns to a sweeper (objectives, speed.*)
    target = target_dir(cfg)
    from lad.preflight import writable

    writable(target.parent, "output directory", "hydra.run.dir (or paths.output_root)")
    import contextlib

    # under torchrun rank 0 owns the directory (the other ranks write nothing there)
    owner = int(os.environ.get("RANK", "0") or 0) == 0
    teacher = Path(str(cfg.teacher.path)).expanduser() if entry == "train_teacher" else None
    if teacher is not None:
        from lad.rundir import check_apart

        check_apart(target, teacher)
    if job_files and owner:
        hold_early_log()  # the run's <job>.log gets the records logged before it opens (data checks, truncation)
    try:  # a teacher being published is locked like a run directory: two runs cannot race to replace it
        with claim(target) if owner else contextlib.nullcontext(), \
                claim(teacher, "teacher.path") if owner and teacher is not None else contextlib.nullcontext():
            return _run_claimed(cfg, entry, task, overrides, sweep_dir, memo, on_eval, job_files, owner, trial)
    finally:
        close_job_files()


def _check_writable_places(cfg: DictConfig, entry: str, out_dir: Path) -> None:
    """Every directory the run will write to accepts a file (before any training)."""
    from lad.preflight import writable
    from lad.tracking import sqlite_path

    writable(out_dir, "output directory", "hydra.run.dir (or paths.output_root)")
    writable(str(cfg.data.cache_dir), "feature cache directory", "data.cache_dir (or paths.cache)")
    if entry == "distil" and cfg.get("cache") is not None and cfg.cache.enabled:
        writable(str(cfg.cache.dir), "teacher cache directory", "cache.dir (or paths.cache), or pass cache=off")
    if entry == "train_teacher":
        writable(Path(str(cfg.teacher.path)).parent, "teacher directory", "teacher.path (or paths.artifacts)")
    if cfg.mlflow.enabled:
        uri = str(cfg.mlflow.tracking_uri)
        db = sqlite_path(uri)
        if db is not None:
            writable(db.parent, "MLflow store", "mlflow.tracking_uri")
        location = cfg.mlflow.get("artifact_location")
        if location and (db is not None or uri.startswith("file:") or "://" not in uri) \
                and ("://" not in str(location) or str(location).startswith("file://")):
            writable(str(location).removeprefix("file://"), "MLflow artifact directory", "mlflow.artifact_location")


def check_teacher_target(cfg: DictConfig) -> None:
    """train_teacher.py never replaces a teacher that another run fine-tuned, unless overwrite=true
    (distillation runs recorded it as their teacher), and never replaces anything but a teacher."""
    from lad.rundir import check_teacher_target as check

    check(Path(str(cfg.teacher.path)).expanduser(), bool(cfg.overwrite))


def check_test_splits(task, data_dir, limit, memo: dict | None = None) -> None:
    """Read every test split that ``trainer.predict_test`` will predict (a missing file is skipped then)."""
    from lad.data.sources import read_split
    from lad.data.tasks import has_split, test_splits
    from lad.errors import MissingDataFile

    for split in (s for s in test_splits(task) if has_split(task, s)):
        try:
            memoized(memo, ("examples", task, split, str(data_dir), limit),
                     lambda: read_split(task, data_dir, split, limit))
        except MissingDataFile as exc:
            log.warning("no test predictions for %s: %s", split, exc)


def _run_claimed(cfg, entry, task, overrides, sweep_dir, memo, on_eval, job_files, owner=True,
                 trial: int | None = None) -> float:
    from lad import rundir
    from lad.data.tasks import eval_splits

    out_dir = target_dir(cfg)
    if owner:
        rundir.recover(out_dir)
    rundir.check_run_target(out_dir, entry)
    out_dir, resume = resolve_output_dir(cfg)
    if resume:
        rundir.check_resume_config(out_dir, cfg)
    _check_writable_places(cfg, entry, out_dir)
    if entry == "train_teacher":
        check_teacher_target(cfg)

    from lad.data.features import load_features
    from lad.distributed import DistContext
    from lad.data.sources import read_split, with_labels
    from lad.runtime import pick_device, resolve_precision, seed_everything, set_threads
    from lad.tracking import config_tags, connect, make_tracker

    dist = DistContext.from_env()
    device = pick_device(str(cfg.device))
    data_dir = cfg.data.data_dir  # resolved by the layouts that use it (GLUE folders)
    # cheap checks first: the label set, every data file parses, the tracking store answers
    task = memoized(memo, ("labels", task), lambda: with_labels(task, data_dir))
    record_labels(cfg, task)
    examples, limits = {}, {}
    for split in ["train", *eval_splits(task)]:
        limit = cfg.data.max_train_samples if split == "train" else cfg.data.max_eval_samples
        limits[split] = limit
        examples[split] = memoized(memo, ("examples", task, split, str(data_dir), limit),
                                   lambda: read_split(task, data_dir, split, limit))
    if cfg.trainer.predict_test:  # a bad test row is found now, not after training
        check_test_splits(task, data_dir, cfg.data.max_eval_samples, memo)
    if cfg.mlflow.enabled and dist.is_main:
        connect(cfg.mlflow)
        from lad.tracking import check_artifact_store

        check_artifact_store(cfg.mlflow)  # a remote store that is down: one line now, not after training
    threads = set_threads(cfg.trainer.get("num_threads"))
    device = dist.init(device)
    seed_everything(int(cfg.seed))
    asm = BUILDERS[entry](cfg, task, memo)
    asm.extra_params["runtime.num_threads"] = threads
    asm.extra_params["runtime.precision"] = resolve_precision(str(cfg.trainer.precision), device)
    module = asm.module
    max_len = model_max_len(task, asm)
    cache_dir = Path(str(cfg.data.cache_dir))

    def features(split: str, limit):
        key = ("features", task, split, str(data_dir), str(asm.model_source), max_len, limit)
        return memoized(memo, key, lambda: load_features(task, data_dir, split, asm.tokenizer, max_len,
                                                         cache_dir, limit))

    train_feats = features("train", cfg.data.max_train_samples)
    eval_sets = {s: features(s, cfg.data.max_eval_samples) for s in eval_splits(task)}
    asm.extra_params.update(truncation_params(task, {"train": train_feats, **eval_sets}, max_len))
    if dist.is_main:
        check_disk_space(cfg, module, out_dir)
    if entry == "distil" and module.teacher is not None and cfg.cache.enabled:
        from lad.teacher_cache import attach_cache

        attach_cache(cfg, module, train_feats, asm.model_source, task, split="train", device=device)

    set_aside = False
    if cfg.overwrite and not resume and dist.is_main:
        set_aside = rundir.set_aside(out_dir)
    dist.barrier()
    out_dir.mkdir(parents=True, exist_ok=True)
    if job_files and dist.is_main:
        rundir.write_job_files(out_dir, cfg)
    run_id_file = out_dir / "mlflow_run_id"
    prev_run = run_id_file.read_text().strip() if resume and run_id_file.exists() else None
    tracker = None
    try:
        if dist.is_main:
            from lad import run_record

            tags = config_tags(cfg, entry, overrides or [], trial)
            tags[run_record.NOTE_TAG] = run_record.description(entry, overrides, trial, in_sweep=bool(sweep_dir))
            tracker = make_tracker(cfg, tags, resume_run_id=prev_run, sweep_dir=sweep_dir,
                                   run_name=run_record.display_name(cfg, overrides, trial))
            _ui_extra(run_record.log_datasets, tracker, task, data_dir, examples, limits)
            _ui_extra(run_record.save_runs_view, tracker, task.main_metric)
        else:  # under torchrun only rank 0 records
            from lad.tracking import NullTracker

            tracker = NullTracker()
        if tracker.run_id:
            run_id_file.write_text(tracker.run_id)
        result = _train_and_save(cfg, entry, task, asm, train_feats, eval_sets, out_dir, resume,
                                 tracker, device, on_eval, dist)
    except BaseException as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        pruned = type(exc).__name__ == "TrialPruned"
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) or pruned else "FAILED"
        if tracker is not None:
            if pruned:
                tracker.set_tags({"optuna.state": "PRUNED"})
            tracker.end(status=status, error=f"{type(exc).__name__}: {message}"[:4000])
        if set_aside:  # overwrite=true never leaves the user with neither run
            rundir.close_job_files()
            rundir.restore(out_dir)
            log.warning("the new run failed; the previous run in %s was put back", out_dir)
        if isinstance(exc, KeyboardInterrupt) and not getattr(exc, "hint", ""):
            from lad import signals

            exc.hint = (f"the previous run in {out_dir} was put back" if set_aside
                        else signals.resume_hint(out_dir))
        dist.close()
        raise
    if set_aside:
        rundir.discard(out_dir)
    if dist.is_main:
        from lad import checkpoint as ckpt

        ckpt.prune(out_dir / "checkpoints", int(cfg.trainer.get("keep_after_finish", 1)))
    tracker.end("FINISHED")
    dist.close()
    if dist.is_main:
        from lad import run_record

        _ui_extra(run_record.refresh_ablation_table, tracker)
    if sweep_dir:
        from lad.tracking import update_sweep_parent

        update_sweep_parent(tracker, sweep_dir, result, task.main_metric, overrides or [])
    return result


def model_max_len(task, asm: Assembled) -> int:
    """``task.max_seq_length``, capped at the model's position embeddings (longer ids would crash)."""
    max_len = int(task.max_seq_length)
    config = getattr(getattr(asm.module, "student", None), "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and 4 <= positions < max_len:
        log.warning("task.max_seq_length=%d exceeds the model's %d positions: texts are truncated to %d tokens",
                    max_len, positions, positions)
        max_len = positions
    return max_len


def truncation_params(task, splits: dict, max_len: int) -> dict:
    """``data.<split>_truncated``: examples cut to ``max_len`` tokens (logged once per split)."""
    out = {"data.max_len": max_len}
    for split, feats in splits.items():
        count = int(getattr(feats, "truncated", 0) or 0)
        out[f"data.{split}_truncated"] = count
        if count:
            log.warning("%s %s: %d of %d example(s) longer than %d tokens were truncated",
                        task.name, split, count, len(feats), max_len)
    return out


def check_disk_space(cfg, module, out_dir: Path) -> None:
    """Enough free space for the checkpoints and the model this run writes (before training)."""
    from lad.preflight import enough_space

    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    student = sum(p.numel() for p in module.student.parameters())
    keep = max(int(cfg.trainer.keep_checkpoints), 1)
    # a checkpoint = fp32 weights + two AdamW moments; +1 while the newest is written; model in fp32
    needed = (keep + 1) * trainable * 4 * 3 + 2 * student * 4
    enough_space(out_dir, int(needed * 1.1), "checkpoints and the model")


def _ui_extra(fn, *args) -> None:
    """Call an MLflow UI nicety (datasets, plots, the experiment's table); a failure only warns."""
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - never lose a run over its presentation
        log.warning("MLflow %s skipped: %s", fn.__name__, str(exc).splitlines()[0] if str(exc) else exc)


def _train_and_save(cfg, entry, task, asm, train_feats, eval_sets, out_dir: Path, resume: bool,
                    tracker, device, on_eval=None, dist=None) -> float:
    from lad.data.loader import make_train_batches
    from lad.tracking import run_params
    from lad.train import Trainer

    module = asm.module
    # hidden_positions=all (the reference) pads every training batch to the task's max length
    pad_to = int(task.max_seq_length) if getattr(module.objective, "pads_to_max_length", False) else None
    gate_probe = GateProbe(module, train_feats, device, pad_to)
    params = run_params(cfg)
    params.update({k: str(v) for k, v in asm.extra_params.items()})
    params["data.train_examples"] = str(len(train_feats))
    tracker.log_params(params)
    if dist is None or dist.is_main:
        from lad.fileio import write_text
        from lad.secrets import redact

        write_text(out_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(redact(cfg))))
    model_dir = out_dir / "model"

    def save_best(metrics: dict) -> None:
        _check_finite(module.student, out_dir)

        def fill(tmp: Path) -> None:
            module.student.save_pretrained(tmp, safe_serialization=True)
            asm.tokenizer.save_pretrained(tmp)
        atomic_dir(model_dir, fill)
        if gate_probe.active:  # the probe already ran for this evaluation: reuse its mean gates
            values = gate_probe.mean_values()
            _save_gate(module, out_dir / "gates", cfg, values)
            if values:
                tracker.log_metrics({f"gate/layer_{l:02d}": v for l, v in values.items()}, 0)

    batch_size = int(cfg.optim.batch_size)
    trainer = Trainer(
        module,
        evaluate=make_evaluator(module, task, eval_sets, int(cfg.trainer.eval_batch_size), device),
        main_metric=task.main_metric, trainer_cfg=cfg.trainer, optim_cfg=cfg.optim, out_dir=out_dir,
        tracker=tracker, device=device,
        make_batches=lambda epoch: make_train_batches(train_feats, batch_size, int(cfg.seed), epoch,
                                                 bool(cfg.data.bucket), int(cfg.data.bucket_factor)),
        collate=lambda idx: batch_of(train_feats, idx, pad_to), on_best=save_best, on_eval=on_eval, dist=dist,
        diagnostics=gate_probe if gate_probe.active else None,
    )
    t0 = time.time()
    result = trainer.fit(resume=resume)
    try:  # peak resident set size of this process (Linux: ru_maxrss in KiB)
        import resource

        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except ImportError:  # pragma: no cover - non-POSIX: current RSS instead
        import psutil

        peak_rss = psutil.Process().memory_info().rss / 2**20
    summary = {
        "task": task.name, "entry": entry, "main_metric": task.main_metric,
        "best": result.best, "last": result.last, "best_step": result.best_step,
        "steps": result.global_step, "history": result.history,
        "train_examples_per_s": result.train_examples_per_s, "peak_rss_mb": peak_rss,
        "wall_s": time.time() - t0, "resumed_from": result.resumed_from,
        "precision": result.precision, "num_threads": asm.extra_params.get("runtime.num_threads"),
        "truncated": {k.split(".", 1)[1].removesuffix("_truncated"): v for k, v in asm.extra_params.items()
                      if k.endswith("_truncated")},
    }
    if gate_probe.active:
        summary["gates"] = gate_probe.summary()
    if dist is not None and not dist.is_main:  # other ranks only trained; rank 0 writes everything
        return float("nan")
    tracker.log_metrics({"train_examples_per_s": result.train_examples_per_s, "peak_rss_mb": peak_rss,
                         **{f"final/{k}": v for k, v in result.last.items()}}, result.global_step)
    if cfg.trainer.predict_test:
        _predict_test(cfg, task, asm.tokenizer, out_dir, device)
    from lad.inference import record_run_inference

    record_run_inference(cfg, model_dir, eval_sets, summary, tracker, result.global_step)
    from lad.objectives import wants_speed

    if entry == "distil" and wants_speed(cfg) and eval_sets:
        from lad.speed import record_run_speed

        record_run_speed(cfg, task, model_dir, asm.model_source, eval_sets, summary, tracker, result.global_step)
    if entry == "train_teacher":
        _publish_teacher(cfg, task, model_dir, summary, tracker)
    write_json(out_dir / "metrics.json", summary)
    for name in ("metrics.json", "config.yaml", "predictions", "gates"):
        tracker.log_artifact(out_dir / name, None if name.endswith((".json", ".yaml")) else name)
    if tracker.run_id:
        from lad.run_record import log_plots

        _ui_extra(log_plots, tracker, out_dir, tracker.run.info.run_name, result.history, task.main_metric)
    if cfg.mlflow.log_model and entry == "distil":
        from lad.mlflow_model import task_input_example

        tracker.log_model_dir(model_dir, input_example=task_input_example(cfg, task))
    if not cfg.trainer.get("keep_model", True) and (dist is None or dist.is_main):
        shutil.rmtree(model_dir, ignore_errors=True)  # measured, logged (and published): not kept
    score = float(result.best.get(task.main_metric, float("nan")))
    print(f"[lad] {entry} {task.name}: best dev {task.main_metric} = {score:.4f} "
          f"(step {result.best_step}); outputs in {out_dir}", flush=True)
    warning = gate_probe.warning(float(cfg.optim.gate_lr), result.global_step) if gate_probe.active else None
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    return score


GATE_MOVED = 0.01  # relative change ||W - W0|| / ||W0|| below which a run's gates count as unmoved


class GateProbe:
    """Per-evaluation gate diagnostics: the mean gate per teacher layer on a fixed probe batch,
    each gate's relative weight movement ``||W - W0|| / ||W0||`` since initialisation
    (``gate/move/layer_NN``) and the movement of every kind of gate parameter pooled over the gates
    (``gate/move/<kind>``: ``proj_weight``, ``proj_bias``, ``norms_weight``, ``norms_bias`` for LAD;
    see ``Aggregator.movement_by_kind``).

    ``W0`` is taken when the probe is made, i.e. right after the (seeded) model is built and before
    a resumed run loads its checkpoint, so a resumed run measures from the same start.
    """

    def __init__(self, module, features, device, pad_to: int | None = None) -> None:
        gate = module.gate
        self.module, self.features, self.device, self.pad_to = module, features, device, pad_to
        self.active = gate is not None and any(True for _ in gate.parameters())
        self.initial = ({k: v.detach().clone() for k, v in gate.state_dict().items()} if self.active else {})
        self.last: dict = {}

    def __call__(self) -> dict:
        values = probe_gate_values(self.module, self.features, self.device, pad_to=self.pad_to)
        gate = self.module.gate
        moves = {**gate.weight_movement(self.initial), **gate.movement_by_kind(self.initial)}
        self.last = {**{f"gate/mean/layer_{l:02d}": v for l, v in values.items()},
                     **{f"gate/move/{name}": v for name, v in moves.items()}}
        return self.last

    def mean_values(self) -> dict[int, float]:
        """``{teacher layer: mean gate}`` of the latest probe (probing now if there was none)."""
        if not self.last:
            self()
        return {int(k.rsplit("_", 1)[1]): v for k, v in self.last.items() if k.startswith("gate/mean/")}

    def summary(self) -> dict:
        if not self.last:
            self()
        return {"frozen": bool(self.module.gate.frozen),
                "mean": {k.split("/")[-1]: v for k, v in self.last.items() if k.startswith("gate/mean/")},
                "movement": {k.split("/")[-1]: v for k, v in self.last.items() if k.startswith("gate/move/")}}

    def warning(self, gate_lr: float, steps: int | None = None) -> str | None:
        """One line when trainable gates ended (almost) where they started."""
        moves = {k: v for k, v in self.summary()["movement"].items() if k.startswith("layer_")}
        if self.module.gate.frozen or not moves or max(moves.values()) >= GATE_MOVED:
            return None
        during = f" in {steps} steps" if steps else ""
        return (f"the gates hardly moved{during} (largest relative change ||W-W0||/||W0|| = "
                f"{max(moves.values()):.2%}, under {GATE_MOVED:.0%}): their targets are still a random mix of "
                f"teacher layers; raise optim.gate_lr (now {gate_lr:g}) or train longer")


def _check_finite(model, out_dir: Path) -> None:
    """Refuse to save non-finite weights as the best model (a step that blew the weights up can
    still score well: argmax of NaN logits is class 0)."""
    import torch

    from lad import checkpoint as ckpt

    bad = next((name for name, p in model.named_parameters() if not torch.isfinite(p).all()), None)
    if bad is not None:
        raise ckpt.NumericFault(
            f"weights became non-finite ({bad}); the model was not saved as the best one; "
            f"{ckpt.recovery_hint(out_dir / 'checkpoints')}")


def probe_gate_values(module, features, device, n: int = 64, pad_to: int | None = None) -> dict[int, float]:
    """Mean gate value per teacher layer on a fixed probe batch (the first ``n`` training examples).

    Uses ``module.teacher_outputs``, so it works with the online teacher and with the cache.
    Layers the gates do not compute (the anchor layer, or layers above the last mapped one) are
    left out.
    """
    import math

    import torch

    from lad.train import to_device

    gate = module.gate
    if gate is None or getattr(gate, "needs_student_hidden", False):
        return {}
    batch = to_device(batch_of(features, list(range(min(n, len(features)))), pad_to), device)
    with torch.no_grad():
        t_hidden = module.teacher_outputs(batch).hidden
        gate(t_hidden, batch["attention_mask"], module.layer_map, None)
    values = getattr(gate, "gate_values", None)
    if values is None:
        return {}
    return {l + 1: float(v) for l, v in enumerate(values.tolist()) if not math.isnan(v)}


def _save_gate(module, gate_dir: Path, cfg, values: dict | None = None) -> None:
    from safetensors.torch import save_file

    def fill(tmp: Path) -> None:
        if values:
            (tmp / "gate_values.json").write_text(json.dumps({str(k): v for k, v in values.items()}, indent=1))
        state = {k: v.detach().cpu().contiguous() for k, v in module.gate.state_dict().items()}
        save_file(state, str(tmp / "gate.safetensors"))
        gate_cfg = OmegaConf.to_container(cfg.gate, resolve=True)
        gate_cfg.update({"num_layers": num_layers(module.teacher), "hidden_size": hidden_size(module.teacher),
                         "layer_map": module.layer_map})
        (tmp / "gate_config.json").write_text(json.dumps(gate_cfg, indent=2))
    atomic_dir(gate_dir, fill)


def _predict_test(cfg, task, tokenizer, out_dir: Path, device) -> None:
    """GLUE submission files for the test split(s), from the best checkpoint."""
    from transformers import AutoModelForSequenceClassification

    from lad.data.features import load_features
    from lad.data.glue import submission_path, write_submission
    from lad.data.tasks import has_split, test_splits
    from lad.metrics import predictions_from_logits

    best = AutoModelForSequenceClassification.from_pretrained(str(out_dir / "model")).to(device)
    data_dir = cfg.data.data_dir
    for split in test_splits(task):
        if not has_split(task, split):
            continue
        try:
            feats = load_features(task, data_dir, split, tokenizer, int(task.max_seq_length),
                                  Path(str(cfg.data.cache_dir)), cfg.data.max_eval_samples)
        except LADError as exc:
            log.warning("skipping test predictions: %s", exc)
            continue
        preds = predictions_from_logits(task, predict_logits(best, feats, int(cfg.trainer.eval_batch_size), device))
        write_submission(task, split, feats.guids, preds, submission_path(task, split, out_dir / "predictions"))


def _publish_teacher(cfg, task, model_dir: Path, summary: dict, tracker) -> None:
    """Copy the best teacher to ``teacher.path`` (atomically) and register it in MLflow."""
    target = Path(str(cfg.teacher.path))

    from lad.models.teacher import write_teacher_meta

    def fill(tmp: Path) -> None:
        for item in model_dir.iterdir():
            shutil.copy2(item, tmp / item.name)
        write_teacher_meta(tmp, str(cfg.teacher.backbone), str(cfg.teacher.name), task.name)
        (tmp / "metrics.json").write_text(json.dumps(
            {k: summary[k] for k in ("task", "main_metric", "best", "best_step", "steps")}, indent=2))
    atomic_dir(target, fill)
    summary["teacher_path"] = str(target)
    print(f"[lad] teacher saved to {target}", flush=True)
    if cfg.mlflow.register_teacher:
        from lad.mlflow_model import task_input_example

        name = cfg.mlflow.get("teacher_model_name") or f"lad-teacher-{task.name}"
        tracker.log_model_dir(target, registered_name=str(name), input_example=task_input_example(cfg, task))
