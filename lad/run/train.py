"""The one training loop (teacher fine-tuning and distillation alike).

The loop knows nothing about teachers or gates: it asks the module for its parameter groups (one
AdamW optimiser + warm-up/decay schedule each, ``optim.lr_scheduler_type``, at the LR key each group
names; every group's LR is logged) and for ``training_step(batch)``; it evaluates, checkpoints,
resumes and logs.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from lad.core.errors import ConfigError, LADError
from lad.core.runtime import resolve_precision, rng_state, set_rng_state
from lad.run import checkpoint as ckpt
from lad.run import schedules
from lad.run.distributed import DistContext

log = logging.getLogger(__name__)



class TrainingDiverged(LADError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    best: dict
    last: dict
    best_step: int
    global_step: int
    history: list = field(default_factory=list)
    train_examples_per_s: float = 0.0
    resumed_from: int | None = None
    precision: str = "fp32"     # what ran: bf16 (autocast) or fp32


def no_decay_ids(module) -> set[int]:
    """Parameters excluded from weight decay: biases and every parameter of a normalisation layer.

    Decided by module type (any ``*LayerNorm`` / ``*RMSNorm`` class, the gates' own
    ``SequenceLayerNorm`` included), not by parameter name, so a gate stack's ``norms.0.weight``
    is exempt like BERT's ``LayerNorm.weight`` (Hugging Face's Trainer groups the same way).
    """
    ids = set()
    for mod in module.modules():
        is_norm = isinstance(mod, torch.nn.LayerNorm) or type(mod).__name__.lower().endswith(("layernorm", "rmsnorm"))
        for name, param in mod.named_parameters(recurse=False):
            if is_norm or name == "bias":
                ids.add(id(param))
    return ids


def _adamw_kwargs(impl: str, device: torch.device) -> dict:
    """``optim.impl`` as torch.optim.AdamW arguments: ``fused`` (one kernel over all weights),
    ``foreach``, ``for_loop``; ``auto`` = fused where torch has the kernel (CPU and CUDA)."""
    if impl == "auto":
        impl = "fused" if device.type in ("cpu", "cuda") else "default"
    return {"fused": {"fused": True}, "foreach": {"foreach": True},
            "for_loop": {"foreach": False}}.get(impl, {})


def build_optimizers(module, optim_cfg, total_steps: int, device: torch.device | None = None):
    """One AdamW + Hugging Face schedule per parameter group the module declares (``param_groups()``,
    each at its ``optim.<lr_key>``), and the parameter lists to clip."""
    optimizers, schedulers, clip = [], [], []
    warmup = schedules.warmup_steps(optim_cfg, total_steps)
    kind = str(optim_cfg.get("lr_scheduler_type", "linear"))
    impl = _adamw_kwargs(str(optim_cfg.get("impl", "auto")),
                         device or next(module.parameters()).device)
    exempt = no_decay_ids(module)
    for group in module.param_groups():
        if not group.params:
            continue
        if optim_cfg.get(group.lr_key) is None:
            raise ConfigError(f"optim.{group.lr_key} is not set: the learning rate of the {group.name} parameters")
        decay = [p for p in group.params if id(p) not in exempt]
        no_decay = [p for p in group.params if id(p) in exempt]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": float(optim_cfg.weight_decay)},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=float(optim_cfg[group.lr_key]), **impl,
        )
        optimizers.append(opt)
        schedulers.append(schedules.build(kind, opt, warmup, total_steps))
        clip.extend(unit for unit in group.units() if unit)
    return optimizers, schedulers, clip


class NonFiniteGuard:
    """Notices a non-finite loss or gradient norm without a host sync at every step.

    Each step's loss, largest gradient norm and loss parts stay on the device; the values of the
    first bad step are kept, and from that step on every optimiser update is skipped on the
    device (the fused AdamW kernel's ``found_inf`` input), so the weights stay those of the last
    good step. :meth:`check` reads one flag (the only sync) and raises
    :class:`TrainingDiverged`; the loop calls it every ``trainer.log_every`` steps and before
    every evaluation and checkpoint, so nothing from a bad step is ever evaluated or saved.
    Optimisers without that input (``optim.impl`` other than fused) are checked at every step.
    """

    def __init__(self, optimizers, device: torch.device, recovery_hint: Callable[[], str]) -> None:
        self.optimizers = optimizers
        self.deferred = all(opt.defaults.get("fused") for opt in optimizers)
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.skip = torch.zeros((), dtype=torch.float32, device=device)
        self.step = torch.zeros((), dtype=torch.float32, device=device)
        self.record: torch.Tensor | None = None
        self.names: list[str] = []
        self.hint = recovery_hint
        if self.deferred:
            for opt in optimizers:
                opt.found_inf = self.skip  # read by the fused kernel: 1.0 = skip this update

    def observe(self, loss: torch.Tensor, norms: list, parts: dict) -> None:
        """Record this step (after backward and clipping, before the optimiser step)."""
        device = self.bad.device
        self.step += 1
        self.names = list(parts)
        norm = torch.stack([torch.as_tensor(n, device=device).float().reshape(()) for n in norms]).max() \
            if norms else torch.zeros((), device=device)
        values = torch.stack([self.step, loss.detach().float().reshape(()), norm,
                              *(torch.as_tensor(v, device=device).detach().float().reshape(())
                                for v in parts.values())])
        self.record = values if self.record is None or self.record.shape != values.shape \
            else torch.where(self.bad, self.record, values)
        self.bad |= ~torch.isfinite(values[1:3]).all()
        self.skip.copy_(self.bad)
        if not self.deferred:
            self.check()

    def check(self) -> None:
        if self.record is None or not bool(self.bad):
            return
        step, loss, norm, *parts = self.record.tolist()
        shown = _fmt(dict(zip(self.names, parts)))
        if not math.isfinite(loss):
            what = f"loss became {loss} at step {int(step)} (parts: {shown}); "
        else:
            what = (f"gradient norm became {norm} at step {int(step)} (loss {loss:.4g}; parts: {shown}); "
                    "no update was applied; ")
        raise TrainingDiverged(what + self.hint())


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


class Trainer:
    def __init__(self, module, evaluate: Callable[[], dict], main_metric: str,
                 trainer_cfg, optim_cfg, out_dir: Path, tracker, device: torch.device,
                 make_batches: Callable[[int], list], collate: Callable, on_best: Callable[[dict], None],
                 on_eval: Callable[[int, dict], None] | None = None, dist=None,
                 diagnostics: Callable[[], dict] | None = None):
        self.module = module
        self.evaluate = evaluate
        self.main_metric = main_metric
        self.tcfg = trainer_cfg
        self.ocfg = optim_cfg
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.tracker = tracker
        self.device = device
        self.make_batches = make_batches
        self.collate = collate
        self.on_best = on_best
        self.on_eval = on_eval
        self.dist = dist or DistContext()
        # extra numbers recorded with every evaluation (e.g. gate values and movement)
        self.diagnostics = diagnostics

    def _plan(self) -> tuple[int, int]:
        per_epoch = len(self.make_batches(0))
        if per_epoch == 0:
            raise LADError("the training set is empty")
        if self.tcfg.max_steps and self.tcfg.max_steps > 0:
            total = int(self.tcfg.max_steps)
        else:
            total = int(self.tcfg.epochs) * per_epoch
        return per_epoch, total

    def fit(self, resume: bool = False) -> TrainResult:
        per_epoch, total = self._plan()
        module = self.module.to(self.device)
        optimizers, schedulers, clip_groups = build_optimizers(module, self.ocfg, total, self.device)
        lr_names = ["train/lr" if i == 0 else f"train/lr_{g.name}"  # every group's LR, by the group's name
                    for i, g in enumerate(g for g in module.param_groups() if g.params)]
        guard = NonFiniteGuard(optimizers, self.device, lambda: ckpt.recovery_hint(self.ckpt_dir))
        step, epoch, in_epoch = 0, 0, 0
        best_score, best_step, best, last, history = -math.inf, -1, {}, {}, []
        train_time, seen = 0.0, 0
        resumed_from = None
        if resume:
            loaded = ckpt.load_latest(self.ckpt_dir)
            if loaded is None:
                log.info("no checkpoint in %s: starting from scratch", self.ckpt_dir)
            else:
                weights, state, path = loaded
                module.load_trainable_state_dict(weights)
                for opt, s in zip(optimizers, state["optimizers"]):
                    opt.load_state_dict(s)
                for sch, s in zip(schedulers, state["schedulers"]):
                    sch.load_state_dict(s)
                set_rng_state(state["rng"])
                step, epoch, in_epoch = state["step"], state["epoch"], state["in_epoch"]
                best_score, best_step = state["best_score"], state["best_step"]
                best, last, history = state["best"], state["last"], state["history"]
                train_time, seen = state["train_time"], state["seen"]
                resumed_from = step
                guard.step.fill_(step)  # the step a divergence message names counts from the run's start
                log.info("resumed from %s (step %d)", path, step)

        eval_every = int(self.tcfg.eval_every or 0)
        ckpt_every = int(self.tcfg.ckpt_every or 0)
        log_every = max(1, int(self.tcfg.log_every or 1))
        precision = resolve_precision(str(self.tcfg.precision), self.device)
        amp = precision == "bf16"
        dist = self.dist
        model = dist.wrap(module, self.device)  # DDP under torchrun; forward() is the training step
        bar = None
        if self.tcfg.progress and dist.is_main:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=step, desc="train", dynamic_ncols=True, mininterval=1.0)

        def save_ckpt() -> None:
            if not dist.is_main:
                return
            state = {
                "step": step, "epoch": epoch, "in_epoch": in_epoch,
                "optimizers": [o.state_dict() for o in optimizers],
                "schedulers": [s.state_dict() for s in schedulers],
                "rng": rng_state(), "best_score": best_score, "best_step": best_step,
                "best": best, "last": last, "history": history,
                "train_time": train_time, "seen": seen,
            }
            ckpt.save_checkpoint(self.ckpt_dir, step, module.trainable_state_dict(), state,
                                 keep=int(self.tcfg.keep_checkpoints))

        def run_eval() -> None:
            nonlocal best_score, best_step, best, last
            guard.check()  # nothing from a diverged step is evaluated or saved
            if not dist.is_main:  # rank 0 evaluates; the others go on to the next step
                return
            module.eval()
            metrics = self.evaluate()
            extra = self.diagnostics() if self.diagnostics is not None else {}
            module.train()
            last = dict(metrics)
            history.append({"step": step, **metrics, **extra})
            self.tracker.log_metrics({**{f"dev/{k}": v for k, v in metrics.items()}, **extra}, step)
            score = metrics[self.main_metric]
            if score > best_score:
                best_score, best_step, best = score, step, dict(metrics)
                self.on_best(metrics)
            self.tracker.log_metrics({f"best/{self.main_metric}": best_score}, step)
            log.info("step %d dev %s (best %.4f @ %d)", step, _fmt(metrics), best_score, best_step)
            if self.on_eval is not None:
                self.on_eval(step, metrics)

        module.train()
        parts_acc: dict[str, float] = {}
        n_acc = 0
        try:
            while step < total:
                batches = self.make_batches(epoch)
                for b_idx in range(in_epoch, len(batches)):
                    if step >= total:
                        break
                    if dist.enabled and len(batches[b_idx]) < dist.world:
                        in_epoch = b_idx + 1  # a tail batch too small to give every rank an example
                        continue
                    t0 = time.perf_counter()
                    batch = to_device(self.collate(dist.shard(batches[b_idx])), self.device)
                    with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=amp):
                        loss, parts = model(batch)
                    loss.backward()
                    norms = [torch.nn.utils.clip_grad_norm_(params, float(self.ocfg.max_grad_norm))
                             for params in clip_groups]
                    guard.observe(loss, norms, parts)
                    for opt, sch in zip(optimizers, schedulers):
                        opt.step()
                        sch.step()
                        opt.zero_grad(set_to_none=True)
                    step += 1
                    in_epoch = b_idx + 1
                    n = int(batch["input_ids"].shape[0]) * dist.world
                    seen += n
                    train_time += time.perf_counter() - t0
                    # accumulated on the device; read every log_every steps (no per-step host sync)
                    for k, v in parts.items():
                        parts_acc[k] = parts_acc.get(k, 0.0) + torch.as_tensor(v).detach().float()
                    parts_acc["loss"] = parts_acc.get("loss", 0.0) + loss.detach().float()
                    n_acc += 1
                    if bar is not None:
                        bar.update(1)
                    if step % log_every == 0 or step == total:
                        guard.check()
                        logged = {f"train/{k}": float(v) / n_acc for k, v in parts_acc.items()}
                        for name, sch in zip(lr_names, schedulers):
                            logged[name] = sch.get_last_lr()[0]
                        logged["train/examples_per_s"] = seen / max(train_time, 1e-9)
                        self.tracker.log_metrics(logged, step)
                        if bar is not None:
                            bar.set_postfix(loss=f"{logged['train/loss']:.4f}", ex_s=f"{logged['train/examples_per_s']:.1f}")
                        parts_acc, n_acc = {}, 0
                    end_of_epoch = in_epoch == len(batches)
                    if (eval_every and step % eval_every == 0) or (not eval_every and end_of_epoch) or step == total:
                        run_eval()
                    if (ckpt_every and step % ckpt_every == 0) or (not ckpt_every and end_of_epoch):
                        guard.check()
                        save_ckpt()
                if in_epoch >= len(batches):
                    epoch, in_epoch = epoch + 1, 0
        finally:
            if bar is not None:
                bar.close()
        guard.check()
        if dist.is_main and (not last or history[-1]["step"] != step):
            run_eval()
        save_ckpt()
        return TrainResult(best=best, last=last, best_step=best_step, global_step=step, history=history,
                           train_examples_per_s=seen / max(train_time, 1e-9), resumed_from=resumed_from,
                           precision=precision)


def _fmt(values: dict) -> str:
    return ", ".join(f"{k}={float(v):.4f}" for k, v in values.items())
