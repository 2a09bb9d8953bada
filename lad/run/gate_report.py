"""What a run reports about its gates: the mean gate per teacher layer on a fixed probe batch, how
far the gate weights moved from their initialisation (with a warning when they hardly moved), and
the gates saved beside the best model (``gates/``: weights, config, mean values)."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from lad.core.fileio import atomic_dir
from lad.models.arch import hidden_size, num_layers
from lad.run import evaluation


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


def probe_gate_values(module, features, device, n: int = 64, pad_to: int | None = None) -> dict[int, float]:
    """Mean gate value per teacher layer on a fixed probe batch (the first ``n`` training examples).

    Uses ``module.teacher_outputs``, so it works with the online teacher and with the cache.
    Layers the gates do not compute (the anchor layer, or layers above the last mapped one) are
    left out.
    """
    import math

    import torch

    from lad.run.train import to_device

    gate = module.gate
    if gate is None or getattr(gate, "needs_student_hidden", False):
        return {}
    batch = to_device(evaluation.batch_of(features, list(range(min(n, len(features)))), pad_to), device)
    with torch.no_grad():
        t_hidden = module.teacher_outputs(batch).hidden
        gate(t_hidden, batch["attention_mask"], module.layer_map, None)
    values = getattr(gate, "gate_values", None)
    if values is None:
        return {}
    return {l + 1: float(v) for l, v in enumerate(values.tolist()) if not math.isnan(v)}


def save_gate(module, gate_dir: Path, cfg, values: dict | None = None) -> None:
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
