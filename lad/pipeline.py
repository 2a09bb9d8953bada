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
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lad.config import setup_environment, validate_common
from lad.errors import ConfigError, LADError
from lad.fileio import write_json

log = logging.getLogger(__name__)


@dataclass
class Assembled:
    module: object          # lad.distiller.Distiller
    tokenizer: object
    model_source: Path       # directory the tokenizer / weights came from
    extra_params: dict


# ----------------------------------------------------------------------------- output dir
OUTPUT_NAMES = ("checkpoints", "metrics.json", "model", "gates", "predictions", "mlflow_run_id")


def resolve_output_dir(cfg: DictConfig) -> tuple[Path, bool]:
    """Run directory and whether to resume; refuses to clobber a finished or unfinished run.

    Nothing is deleted here: with ``overwrite=true`` the old outputs are removed by
    ``clear_outputs`` only once every input has been checked, so a mistake never costs a run.
    """
    from lad import checkpoint as ckpt

    resume = cfg.trainer.resume
    if isinstance(resume, str) and resume not in ("true", "false", ""):
        out = Path(resume).expanduser()
        if not out.is_dir():
            raise ConfigError(f"trainer.resume={resume}: no such run directory")
        ckpt.latest_intact(out / "checkpoints")
        return out, True
    out = Path(str(cfg.output_dir))
    resume = bool(resume) and resume != "false"
    finished = (out / "metrics.json").exists()
    unfinished = (out / "checkpoints").exists() and not finished
    if resume:
        if finished and not cfg.overwrite:
            raise ConfigError(f"{out} already holds a finished run; pass overwrite=true to train it again")
        if unfinished:
            ckpt.latest_intact(out / "checkpoints")  # all corrupt -> one clear error, before any work
        return out, unfinished
    if (finished or unfinished) and not cfg.overwrite:
        state = "a finished" if finished else "an unfinished"
        hint = "" if finished else " trainer.resume=true to continue it, or"
        raise ConfigError(f"{out} already holds {state} run; pass{hint} overwrite=true to replace it")
    return out, False


def clear_outputs(out_dir: Path) -> None:
    """Remove a previous run's outputs (``overwrite=true``), just before training starts."""
    for name in OUTPUT_NAMES:
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def atomic_dir(final: Path, fill) -> None:
    """Fill a temp dir next to ``final`` with ``fill(tmp)`` and swap it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        fill(tmp)
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
    objective = Objective(hard_weight=1.0, soft_weight=0.0, hidden_weight=0.0, pkd_weight=0.0,
                          temperature=1.0, is_regression=task.is_regression)
    n_params = sum(p.numel() for p in model.parameters())
    return Assembled(Distiller(model, objective), tokenizer, backbone,
                     {"teacher.num_layers": model.config.num_hidden_layers,
                      "teacher.hidden_size": model.config.hidden_size,
                      "teacher.params": n_params, "student.params": n_params})


def loss_config(cfg: DictConfig) -> DictConfig:
    """The loss group, with hard_weight tied to 1 - soft_weight when ``loss.tie_hard_soft``."""
    loss = OmegaConf.to_container(cfg.loss, resolve=True)
    if loss.pop("tie_hard_soft", False):
        loss["hard_weight"] = 1.0 - float(loss["soft_weight"])
    return OmegaConf.create(loss)


def build_distillation(cfg: DictConfig, task, memo: dict | None = None) -> Assembled:
    from lad.distiller import Distiller
    from lad.gates import build_gate
    from lad.losses import Objective
    from lad.models import build_student, load_teacher, load_tokenizer

    objective = Objective.from_config(loss_config(cfg), is_regression=task.is_regression)
    if cfg.gate.name != "none" and objective.hidden_weight <= 0:
        raise ConfigError(
            f"gate={cfg.gate.name} needs a loss with a hidden-state term (loss=lad), "
            f"but loss={cfg.loss.name} has hidden_weight=0; use gate=none with loss={cfg.loss.name}"
        )
    if cfg.loss.name == "ce" and objective.needs_teacher:
        raise ConfigError(
            "loss=ce is fine-tuning without a teacher, but soft_weight/hidden_weight/pkd_weight are set "
            "(an experiment file such as paper_<task> sets LAD's loss weights); use loss=kd or loss=lad, "
            "or drop the experiment and set optim.* directly")
    key = ("teacher", str(cfg.teacher.source), str(cfg.teacher.path), str(cfg.teacher.uri), task.name)
    teacher, teacher_dir = memoized(memo, key, lambda: load_teacher(cfg.teacher, task))
    tokenizer = memoized(memo, key + ("tokenizer",), lambda: load_tokenizer(teacher_dir))
    student, mapping = build_student(teacher, cfg.student)
    L, width = teacher.config.num_hidden_layers, teacher.config.hidden_size
    gate = build_gate(cfg.gate, num_layers=L, hidden_size=width) if objective.hidden_weight > 0 else None
    module = Distiller(student, objective, teacher=teacher if objective.needs_teacher else None,
                       gate=gate, layer_map=mapping, teacher_hidden_size=width)
    n_params = sum(p.numel() for p in student.parameters())
    extra = {
        "teacher.dir": str(teacher_dir),
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
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           token_type_ids=batch.get("token_type_ids")).logits
            out[np.asarray(idx)] = logits.float().cpu().numpy()
    return out


def batch_of(features, indices) -> dict:
    """Collated (dynamically padded) batch of the given example positions."""
    from lad.data.loader import FeaturesDataset, collate

    data = FeaturesDataset(features)
    return collate([data[i] for i in indices], pad_id=features.pad_id)


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
def run(cfg: DictConfig, overrides: list[str] | None = None, sweep_dir: str | None = None,
        memo: dict | None = None, on_eval=None, trial: int | None = None) -> float:
    """Train per ``cfg`` (teacher fine-tune or distillation) and return the best dev main metric.

    ``memo`` (a dict kept by the caller) reuses the loaded teacher, tokenizer and features across
    calls in one process; ``on_eval(step, metrics)`` is called after every dev evaluation (an
    Optuna pruning callback raises ``optuna.TrialPruned`` there); ``trial`` is the Optuna trial
    number when the run is one (it names the MLflow run).
    """
    setup_environment()
    validate_common(cfg)
    entry = str(cfg.entry)
    if entry not in BUILDERS:
        raise ConfigError(f"unknown entry {entry!r} (expected one of {sorted(BUILDERS)})")
    from lad.data.tasks import TaskSpec, eval_splits

    task = TaskSpec.from_config(cfg.task)
    if entry == "distil":
        loss = loss_config(cfg)
        from lad.losses import Objective

        Objective.from_config(loss, is_regression=task.is_regression)  # validate before heavy work
    out_dir, resume = resolve_output_dir(cfg)

    from lad.data.features import load_features
    from lad.distributed import DistContext
    from lad.data.glue import read_split, resolve_data_dir
    from lad.runtime import pick_device, seed_everything, set_threads
    from lad.tracking import config_tags, connect, make_tracker

    dist = DistContext.from_env()
    device = pick_device(str(cfg.device))
    data_dir = resolve_data_dir(cfg.data.data_dir)
    # cheap checks first: every data file parses, the tracking store answers
    examples, limits = {}, {}
    for split in ["train", *eval_splits(task)]:
        limit = cfg.data.max_train_samples if split == "train" else cfg.data.max_eval_samples
        limits[split] = limit
        examples[split] = memoized(memo, ("examples", task.name, split, str(data_dir), limit),
                                   lambda: read_split(task, data_dir, split, limit))
    if cfg.mlflow.enabled and dist.is_main:
        connect(cfg.mlflow)
    threads = set_threads(cfg.trainer.get("num_threads"))
    device = dist.init(device)
    seed_everything(int(cfg.seed))
    asm = BUILDERS[entry](cfg, task, memo)
    asm.extra_params["runtime.num_threads"] = threads
    module = asm.module
    max_len = int(task.max_seq_length)
    cache_dir = Path(str(cfg.data.cache_dir))

    def features(split: str, limit):
        key = ("features", task.name, split, str(data_dir), str(asm.model_source), max_len, limit)
        return memoized(memo, key, lambda: load_features(task, data_dir, split, asm.tokenizer, max_len,
                                                         cache_dir, limit))

    train_feats = features("train", cfg.data.max_train_samples)
    eval_sets = {s: features(s, cfg.data.max_eval_samples) for s in eval_splits(task)}
    if entry == "distil" and module.teacher is not None and cfg.cache.enabled:
        from lad.teacher_cache import attach_cache

        attach_cache(cfg, module, train_feats, asm.model_source, task, split="train", device=device)

    if cfg.overwrite and not resume and dist.is_main:
        clear_outputs(out_dir)
    dist.barrier()
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id_file = out_dir / "mlflow_run_id"
    prev_run = run_id_file.read_text().strip() if resume and run_id_file.exists() else None
    if dist.is_main:
        from lad import run_record

        tags = config_tags(cfg, entry, overrides or [])
        tags[run_record.NOTE_TAG] = run_record.description(entry, overrides, trial, in_sweep=bool(sweep_dir))
        tracker = make_tracker(cfg, tags, resume_run_id=prev_run, sweep_dir=sweep_dir,
                               run_name=run_record.display_name(cfg, overrides, trial))
        _ui_extra(run_record.log_datasets, tracker, task, data_dir, examples, limits)
    else:  # under torchrun only rank 0 records
        from lad.tracking import NullTracker

        tracker = NullTracker()
    if tracker.run_id:
        run_id_file.write_text(tracker.run_id)
    try:
        result = _train_and_save(cfg, entry, task, asm, train_feats, eval_sets, out_dir, resume,
                                 tracker, device, on_eval, dist)
    except BaseException as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        pruned = type(exc).__name__ == "TrialPruned"
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) or pruned else "FAILED"
        if pruned:
            tracker.set_tags({"optuna.state": "PRUNED"})
        tracker.end(status=status, error=f"{type(exc).__name__}: {message}"[:4000])
        dist.close()
        raise
    tracker.end("FINISHED")
    dist.close()
    if dist.is_main:
        from lad import run_record

        _ui_extra(run_record.refresh_ablation_table, tracker)
    if sweep_dir:
        from lad.tracking import update_sweep_parent

        update_sweep_parent(tracker, sweep_dir, result, task.main_metric, overrides or [])
    return result


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
    params = run_params(cfg)
    params.update({k: str(v) for k, v in asm.extra_params.items()})
    params["data.train_examples"] = str(len(train_feats))
    tracker.log_params(params)
    if dist is None or dist.is_main:
        OmegaConf.save(cfg, out_dir / "config.yaml", resolve=True)
    model_dir = out_dir / "model"

    def save_best(metrics: dict) -> None:
        def fill(tmp: Path) -> None:
            module.student.save_pretrained(tmp, safe_serialization=True)
            asm.tokenizer.save_pretrained(tmp)
        atomic_dir(model_dir, fill)
        if module.gate is not None and any(True for _ in module.gate.parameters()):
            values = probe_gate_values(module, train_feats, device)
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
        collate=lambda idx: batch_of(train_feats, idx), on_best=save_best, on_eval=on_eval, dist=dist,
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
    }
    if dist is not None and not dist.is_main:  # other ranks only trained; rank 0 writes everything
        return float("nan")
    tracker.log_metrics({"train_examples_per_s": result.train_examples_per_s, "peak_rss_mb": peak_rss,
                         **{f"final/{k}": v for k, v in result.last.items()}}, result.global_step)
    if cfg.trainer.predict_test:
        _predict_test(cfg, task, asm.tokenizer, out_dir, device)
    if entry == "train_teacher":
        _publish_teacher(cfg, task, model_dir, summary, tracker)
    write_json(out_dir / "metrics.json", summary)
    for name in ("metrics.json", "config.yaml", "predictions", "gates"):
        tracker.log_artifact(out_dir / name, None if name.endswith((".json", ".yaml")) else name)
    if tracker.run_id:
        from lad.run_record import log_plots

        _ui_extra(log_plots, tracker, out_dir, tracker.run.info.run_name, result.history, task.main_metric)
    if cfg.mlflow.log_model and entry == "distil":
        tracker.log_model_dir(model_dir)
    score = float(result.best.get(task.main_metric, float("nan")))
    print(f"[lad] {entry} {task.name}: best dev {task.main_metric} = {score:.4f} "
          f"(step {result.best_step}); outputs in {out_dir}", flush=True)
    return score


def probe_gate_values(module, features, device, n: int = 64) -> dict[int, float]:
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
    batch = to_device(batch_of(features, list(range(min(n, len(features))))), device)
    with torch.no_grad():
        _, t_hidden = module.teacher_outputs(batch)
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
        gate_cfg.update({"num_layers": module.teacher.config.num_hidden_layers,
                         "hidden_size": module.teacher.config.hidden_size,
                         "layer_map": module.layer_map})
        (tmp / "gate_config.json").write_text(json.dumps(gate_cfg, indent=2))
    atomic_dir(gate_dir, fill)


def _predict_test(cfg, task, tokenizer, out_dir: Path, device) -> None:
    """GLUE submission files for the test split(s), from the best checkpoint."""
    from transformers import AutoModelForSequenceClassification

    from lad.data.features import load_features
    from lad.data.glue import resolve_data_dir, submission_path, write_submission
    from lad.data.tasks import has_split, test_splits
    from lad.metrics import predictions_from_logits

    best = AutoModelForSequenceClassification.from_pretrained(str(out_dir / "model")).to(device)
    data_dir = resolve_data_dir(cfg.data.data_dir)
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

    def fill(tmp: Path) -> None:
        for item in model_dir.iterdir():
            shutil.copy2(item, tmp / item.name)
        (tmp / "metrics.json").write_text(json.dumps(
            {k: summary[k] for k in ("task", "main_metric", "best", "best_step", "steps")}, indent=2))
    atomic_dir(target, fill)
    summary["teacher_path"] = str(target)
    print(f"[lad] teacher saved to {target}", flush=True)
    if cfg.mlflow.register_teacher:
        name = cfg.mlflow.get("teacher_model_name") or f"lad-teacher-{task.name}"
        tracker.log_model_dir(target, registered_name=str(name))
