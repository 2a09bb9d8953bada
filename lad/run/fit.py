"""One fit of an assembled module and everything a run keeps of it.

:func:`train_and_save` hands the module, the data and the evaluator to the training loop
(``lad.run.train.Trainer``), saves the best model and its gates whenever the dev score improves,
then writes ``metrics.json``, the test predictions, size and speed records and the MLflow artifacts;
a teacher run publishes its best model to ``teacher.path`` (:func:`publish_teacher`).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from lad.core.fileio import atomic_dir, write_json
from lad.run import evaluation
from lad.run.gate_report import GateProbe, save_gate
from lad.tracking.run_record import ui_extra


def train_and_save(cfg, entry, task, asm, train_feats, eval_sets, out_dir: Path, resume: bool,
                    tracker, device, on_eval=None, dist=None) -> float:
    from lad.data.loader import make_train_batches
    from lad.run.train import Trainer
    from lad.tracking.tracker import run_params

    module = asm.module
    # hidden_positions=all (the reference) pads every training batch to the task's max length
    pad_to = int(task.max_seq_length) if getattr(module.objective, "pads_to_max_length", False) else None
    gate_probe = GateProbe(module, train_feats, device, pad_to)
    params = run_params(cfg)
    params.update({k: str(v) for k, v in asm.extra_params.items()})
    params["data.train_examples"] = str(len(train_feats))
    tracker.log_params(params)
    if dist is None or dist.is_main:
        from lad.core.fileio import write_text
        from lad.core.secrets import redact

        write_text(out_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(redact(cfg))))
    model_dir = out_dir / "model"

    def save_best(metrics: dict) -> None:
        check_finite(module.student, out_dir)

        def fill(tmp: Path) -> None:
            module.student.save_pretrained(tmp, safe_serialization=True)
            asm.tokenizer.save_pretrained(tmp)
        atomic_dir(model_dir, fill)
        if gate_probe.active:  # the probe already ran for this evaluation: reuse its mean gates
            values = gate_probe.mean_values()
            save_gate(module, out_dir / "gates", cfg, values)
            if values:
                tracker.log_metrics({f"gate/layer_{l:02d}": v for l, v in values.items()}, 0)

    batch_size = int(cfg.optim.batch_size)
    trainer = Trainer(
        module,
        evaluate=evaluation.make_evaluator(module, task, eval_sets, int(cfg.trainer.eval_batch_size), device),
        main_metric=task.main_metric, trainer_cfg=cfg.trainer, optim_cfg=cfg.optim, out_dir=out_dir,
        tracker=tracker, device=device,
        make_batches=lambda epoch: make_train_batches(train_feats, batch_size, int(cfg.seed), epoch,
                                                 bool(cfg.data.bucket), int(cfg.data.bucket_factor)),
        collate=lambda idx: evaluation.batch_of(train_feats, idx, pad_to), on_best=save_best, on_eval=on_eval,
        dist=dist,
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
        evaluation.predict_test(cfg, task, asm.tokenizer, out_dir, device)
    from lad.deploy.inference import record_run_inference

    record_run_inference(cfg, model_dir, eval_sets, summary, tracker, result.global_step)
    from lad.run.objectives import wants_speed

    if entry == "distil" and wants_speed(cfg) and eval_sets:
        from lad.deploy.speed import record_run_speed

        record_run_speed(cfg, task, model_dir, asm.model_source, eval_sets, summary, tracker, result.global_step)
    if entry == "train_teacher":
        publish_teacher(cfg, task, model_dir, summary, tracker)
    write_json(out_dir / "metrics.json", summary)
    for name in ("metrics.json", "config.yaml", "predictions", "gates"):
        tracker.log_artifact(out_dir / name, None if name.endswith((".json", ".yaml")) else name)
    if tracker.run_id:
        from lad.tracking.run_record import log_plots

        ui_extra(log_plots, tracker, out_dir, tracker.run.info.run_name, result.history, task.main_metric)
    if cfg.mlflow.log_model and entry == "distil":
        from lad.tracking.mlflow_model import task_input_example

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


def check_finite(model, out_dir: Path) -> None:
    """Refuse to save non-finite weights as the best model (a step that blew the weights up can
    still score well: argmax of NaN logits is class 0)."""
    import torch

    from lad.run import checkpoint as ckpt

    bad = next((name for name, p in model.named_parameters() if not torch.isfinite(p).all()), None)
    if bad is not None:
        raise ckpt.NumericFault(
            f"weights became non-finite ({bad}); the model was not saved as the best one; "
            f"{ckpt.recovery_hint(out_dir / 'checkpoints')}")


def publish_teacher(cfg, task, model_dir: Path, summary: dict, tracker) -> None:
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
        from lad.tracking.mlflow_model import task_input_example

        name = cfg.mlflow.get("teacher_model_name") or f"lad-teacher-{task.name}"
        tracker.log_model_dir(target, registered_name=str(name), input_example=task_input_example(cfg, task))
