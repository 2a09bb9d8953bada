"""Aggregators that turn teacher hidden states into per-student-layer targets.

Every aggregator is an ``nn.Module`` with the same call signature::

    targets = gate(teacher_hidden, mask, layer_map, student_hidden=None)

``teacher_hidden`` holds the L outputs of teacher layers 1..L (each ``[B, T, d]``),
``mask`` is ``[B, T]`` with 1 for real tokens, ``layer_map`` gives the 1-based teacher
layer for each of the K student layers, and the result is K tensors ``[B, T, d]``.

``lad`` (:class:`HighwayGates`) is the Layer-wise Adaptive Distillation gate stack of
Lin, Chen & Kao (Sensors 2023); ``none``, ``mean`` and ``attention`` are baselines.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lad.core.config import as_dict
from lad.core.errors import ConfigError

NORMS = ("per_token", "per_sequence")
AFFINES = ("hidden", "position")
BIAS_INITS = ("zeros", "default")


class Aggregator(nn.Module):
    """Base class: validates inputs shared by all aggregators.

    Every aggregator takes ``frozen`` (its parameters stay at their initial values: no optimiser
    sees them, the same targets are computed) and ``clip_per_gate`` (each unit of
    :meth:`clip_units` has its gradient norm clipped on its own, as the reference code does for
    each highway gate; otherwise the gate parameters are clipped together).
    """

    needs_student_hidden: bool = False
    # True when the targets depend on padded positions (then a cache of unpadded rows cannot serve them)
    reads_padding: bool = False
    # True when the targets are the mapped teacher layers themselves (nothing aggregated): the one kind
    # of gate a loss without a term that reads gate targets can be configured with
    direct_map: bool = False

    def __init__(self, num_layers: int | None = None, hidden_size: int | None = None,
                 frozen: bool = False, clip_per_gate: bool = False) -> None:
        super().__init__()
        if num_layers is not None and int(num_layers) < 1:
            raise ConfigError(f"gate num_layers must be >= 1, got {num_layers}")
        if hidden_size is not None and int(hidden_size) < 1:
            raise ConfigError(f"gate hidden_size must be >= 1, got {hidden_size}")
        for key, value in (("frozen", frozen), ("clip_per_gate", clip_per_gate)):
            if not isinstance(value, bool):
                raise ConfigError(f"gate.{key} must be true or false, got {value!r}")
        self.num_layers = None if num_layers is None else int(num_layers)
        self.hidden_size = None if hidden_size is None else int(hidden_size)
        self.frozen = frozen
        self.clip_per_gate = clip_per_gate
        # Detached summary of the last forward (for heatmaps); None when not applicable.
        self.gate_values: Tensor | None = None

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters an optimiser should update (none when ``frozen``)."""
        return [] if self.frozen else list(self.parameters())

    def clip_units(self) -> list[list[nn.Parameter]]:
        """Parameter lists whose gradient norms are clipped separately."""
        params = self.trainable_parameters()
        return [params] if params else []

    def teacher_layers(self, layer_map: Sequence[int], num_layers: int) -> tuple[int, ...]:
        """1-based teacher layers the targets are computed from (what a teacher cache must hold)."""
        return tuple(range(1, num_layers + 1))

    def weight_movement(self, initial: Mapping[str, Tensor]) -> dict[str, float]:
        """Relative movement ``||W - W0|| / ||W0||`` of each gate's weight matrix (empty if none)."""
        return {}

    def movement_by_kind(self, initial: Mapping[str, Tensor]) -> dict[str, float]:
        """``{kind: relative_change}`` over every parameter of the aggregator, one number per kind.

        A parameter's kind is its name without the gate index (``proj.3.bias`` -> ``proj_bias``,
        ``norms.0.weight`` -> ``norms_weight``): for the LAD gates the projection weight and bias
        and the normalisation's affine weight and bias, each pooled over all gates.
        ``initial`` is a ``state_dict()`` taken at initialisation.
        """
        now: dict[str, list[Tensor]] = {}
        start: dict[str, list[Tensor]] = {}
        for name, param in self.named_parameters():
            kind = "_".join(part for part in name.split(".") if not part.isdigit())
            now.setdefault(kind, []).append(param.detach().double().reshape(-1))
            start.setdefault(kind, []).append(initial[name].to(param.device, torch.float64).reshape(-1))
        return {kind: relative_change(torch.cat(now[kind]), torch.cat(start[kind])) for kind in now}

    def _check(self, teacher_hidden: Sequence[Tensor], layer_map: Sequence[int]) -> int:
        """Validate the layer count and the layer map; return L."""
        num = len(teacher_hidden)
        if num == 0:
            raise ValueError("teacher_hidden is empty")
        if self.num_layers is not None and num != self.num_layers:
            raise ValueError(
                f"{type(self).__name__} was built for {self.num_layers} teacher layers, "
                f"got {num} hidden states"
            )
        if len(layer_map) == 0:
            raise ConfigError("layer_map is empty")
        bad = [m for m in layer_map if not 1 <= int(m) <= num]
        if bad:
            raise ConfigError(f"layer_map entries must be in 1..{num} (1-based), got {list(layer_map)}")
        return num


def relative_change(current: Tensor, initial: Tensor) -> float:
    """``||x - x0|| / ||x0||``, measured from the initial values ``x0``; when ``x0`` is all zeros
    (a zero-initialised bias) the root-mean-square change ``||x - x0|| / sqrt(n)`` instead."""
    delta = torch.linalg.vector_norm(current.double() - initial.double())
    scale = torch.linalg.vector_norm(initial.double())
    if float(scale) == 0.0:
        scale = torch.tensor(float(max(initial.numel(), 1))).sqrt()
    return float(delta / scale)


def _masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``x`` ([B, T, ...]) over real tokens and all trailing dims."""
    if mask is None:
        return x.mean()
    m = mask.to(x.dtype).reshape(mask.shape + (1,) * (x.dim() - mask.dim()))
    denom = m.sum() * (x[0, 0].numel())
    return (x * m).sum() / denom.clamp_min(1.0)


class SequenceLayerNorm(nn.Module):
    """Normalise each example over its whole ``[T, d]`` block (statistics include padding).

    ``positions=None``: the affine is over ``d`` (shape ``[d]``), so any padded length works.
    ``positions=T``: an element-wise ``[T, d]`` affine, as the reference code's
    ``nn.LayerNorm([max_len, d])``; inputs must then be padded to exactly ``T``.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-5, positions: int | None = None) -> None:
        super().__init__()
        self.eps = eps
        self.positions = positions
        shape = (hidden_size,) if positions is None else (int(positions), hidden_size)
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))

    def forward(self, x: Tensor) -> Tensor:
        if self.positions is not None and x.shape[1] != self.positions:
            raise ValueError(
                f"gate.affine=position was built for sequences padded to {self.positions}, got length "
                f"{x.shape[1]} (use loss.hidden_positions=all, which pads every batch to max length)"
            )
        mean = x.mean(dim=(1, 2), keepdim=True)
        var = x.var(dim=(1, 2), keepdim=True, unbiased=False)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class HighwayGates(Aggregator):
    """LAD: a stack of highway gates that aggregates teacher layers.

    Bottom-up (``reverse=False``): ``A_1 = H_1`` and for ``l >= 2``
    ``g_l = sigmoid(W_l A_{l-1} + b_l)``, ``A_l = LN_l(g_l * H_l + (1 - g_l) * A_{l-1})``.
    Top-down (``reverse=True``): ``A_L = H_L`` and ``A_l`` mixes ``H_l`` with ``A_{l+1}``.
    Target for student layer k is ``A_{layer_map[k]}`` (not detached: the hidden loss
    trains the gates).

    ``gate_values`` after a forward: tensor ``[L]`` with the mean gate (over real tokens
    and dims) per teacher layer, detached, on the input's device; 1.0 for the anchor layer
    (it takes ``H`` as is) and NaN for layers not computed because no target needed them.
    """

    def __init__(
        self,
        num_layers: int,
        hidden_size: int,
        reverse: bool = False,
        norm: str = "per_token",
        eps: float = 1e-5,
        affine: str = "hidden",
        max_len: int | None = None,
        bias_init: str = "default",
        frozen: bool = False,
        clip_per_gate: bool = True,
    ) -> None:
        if num_layers is None or hidden_size is None:
            raise ConfigError("HighwayGates needs num_layers and hidden_size")
        super().__init__(num_layers, hidden_size, frozen=frozen, clip_per_gate=clip_per_gate)
        for key, value, allowed in (("norm", norm, NORMS), ("affine", affine, AFFINES),
                                    ("bias_init", bias_init, BIAS_INITS)):
            if value not in allowed:
                raise ConfigError(f"gate.{key} must be one of {', '.join(allowed)}; got {value!r}")
        if affine == "position" and norm != "per_sequence":
            raise ConfigError("gate.affine=position needs gate.norm=per_sequence (a [max_len, d] affine "
                              "over each example's padded block)")
        if affine == "position" and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
            raise ConfigError(f"gate.affine=position needs gate.max_len (the padded length), got {max_len!r}")
        self.reverse = bool(reverse)
        self.norm = norm
        self.affine = affine
        self.bias_init = bias_init
        self.reads_padding = norm == "per_sequence"
        steps = self.num_layers - 1
        self.proj = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in range(steps))
        positions = int(max_len) if affine == "position" else None
        if norm == "per_token":
            self.norms = nn.ModuleList(nn.LayerNorm(hidden_size, eps=eps) for _ in range(steps))
        else:
            self.norms = nn.ModuleList(SequenceLayerNorm(hidden_size, eps=eps, positions=positions)
                                       for _ in range(steps))
        for lin in self.proj:
            nn.init.xavier_uniform_(lin.weight)
            if bias_init == "zeros":  # "default" keeps torch's nn.Linear init (the reference code's)
                nn.init.zeros_(lin.bias)
        if frozen:
            self.requires_grad_(False)

    def extra_repr(self) -> str:
        return (f"num_layers={self.num_layers}, reverse={self.reverse}, norm={self.norm!r}, "
                f"affine={self.affine!r}, frozen={self.frozen}")

    def clip_units(self) -> list[list[nn.Parameter]]:
        if self.frozen:
            return []
        if not self.clip_per_gate:
            return [list(self.parameters())]
        return [[*lin.parameters(), *norm.parameters()] for lin, norm in zip(self.proj, self.norms)]

    def weight_movement(self, initial: Mapping[str, Tensor]) -> dict[str, float]:
        """``{gate: ||W - W0|| / ||W0||}`` per highway gate, keyed by the 1-based teacher layer it mixes in."""
        order = self._order()
        out = {}
        for step, lin in enumerate(self.proj):
            w0 = initial[f"proj.{step}.weight"].to(lin.weight.device)
            out[f"layer_{order[step + 1] + 1:02d}"] = relative_change(lin.weight.detach(), w0)
        return out

    def _order(self) -> list[int]:
        """0-based layer indices in aggregation order (anchor first)."""
        order = list(range(self.num_layers))
        return order[::-1] if self.reverse else order

    def aggregate(self, teacher_hidden: Sequence[Tensor], mask: Tensor | None, upto: int | None = None) -> dict[int, Tensor]:
        """Return ``{l (1-based): A_l}`` for layers from the anchor through ``upto`` (1-based)."""
        order = self._order()
        stop = len(order) if upto is None else order.index(upto - 1) + 1
        first = order[0]
        prev = teacher_hidden[first]
        gates = torch.full((self.num_layers,), float("nan"), device=prev.device)
        gates[first] = 1.0
        out = {first + 1: prev}
        for step, idx in enumerate(order[1:stop]):
            g = torch.sigmoid(self.proj[step](prev))
            mixed = g * teacher_hidden[idx] + (1.0 - g) * prev
            prev = self.norms[step](mixed)
            out[idx + 1] = prev
            gates[idx] = _masked_mean(g.detach(), mask).float()
        self.gate_values = gates
        return out

    def forward(
        self,
        teacher_hidden: Sequence[Tensor],
        mask: Tensor | None,
        layer_map: Sequence[int],
        student_hidden: Sequence[Tensor] | None = None,
    ) -> list[Tensor]:
        self._check(teacher_hidden, layer_map)
        furthest = min(layer_map) if self.reverse else max(layer_map)
        agg = self.aggregate(teacher_hidden, mask, upto=int(furthest))
        return [agg[int(m)] for m in layer_map]


class DirectGates(Aggregator):
    """``none``: direct layer mapping, target_k = H_{layer_map[k]}."""

    direct_map = True

    def teacher_layers(self, layer_map: Sequence[int], num_layers: int) -> tuple[int, ...]:
        return tuple(sorted({int(m) for m in layer_map}))

    def forward(
        self,
        teacher_hidden: Sequence[Tensor],
        mask: Tensor | None,
        layer_map: Sequence[int],
        student_hidden: Sequence[Tensor] | None = None,
    ) -> list[Tensor]:
        self._check(teacher_hidden, layer_map)
        return [teacher_hidden[int(m) - 1] for m in layer_map]


class MeanGates(Aggregator):
    """``mean``: target_k = uniform mean of H_1..H_{layer_map[k]}."""

    def forward(
        self,
        teacher_hidden: Sequence[Tensor],
        mask: Tensor | None,
        layer_map: Sequence[int],
        student_hidden: Sequence[Tensor] | None = None,
    ) -> list[Tensor]:
        self._check(teacher_hidden, layer_map)
        top = max(int(m) for m in layer_map)
        running = torch.zeros_like(teacher_hidden[0])
        means: dict[int, Tensor] = {}
        for l in range(1, top + 1):
            running = running + teacher_hidden[l - 1]
            means[l] = running / l
        return [means[int(m)] for m in layer_map]


class AttentionGates(Aggregator):
    """``attention`` (ALP-KD): per token, attend from student layer k over all teacher layers.

    ``alpha_{k,l} = softmax_l(<s_k, H_l> / sqrt(d))`` and target_k = sum_l alpha_{k,l} H_l.
    ``layer_map`` is only used for its length (K). ``gate_values`` after a forward is
    ``[K, L]``: mean attention weight over real tokens.
    """

    needs_student_hidden = True

    def weights(self, teacher_hidden: Sequence[Tensor], student_hidden: Sequence[Tensor]) -> Tensor:
        """Attention weights ``[K, B, T, L]`` (sum to 1 over L)."""
        teach = torch.stack(list(teacher_hidden), dim=-2)  # [B, T, L, d]
        stud = torch.stack(list(student_hidden), dim=0)  # [K, B, T, d]
        if stud.shape[-1] != teach.shape[-1]:
            raise ValueError(
                f"student hidden size {stud.shape[-1]} != teacher hidden size {teach.shape[-1]}; "
                "project the student first"
            )
        scores = torch.einsum("kbtd,btld->kbtl", stud, teach) / math.sqrt(teach.shape[-1])
        return torch.softmax(scores, dim=-1)

    def forward(
        self,
        teacher_hidden: Sequence[Tensor],
        mask: Tensor | None,
        layer_map: Sequence[int],
        student_hidden: Sequence[Tensor] | None = None,
    ) -> list[Tensor]:
        self._check(teacher_hidden, layer_map)
        if student_hidden is None:
            raise ValueError("the attention gate needs student_hidden")
        if len(student_hidden) != len(layer_map):
            raise ValueError(f"got {len(student_hidden)} student hidden states for {len(layer_map)} mapped layers")
        alpha = self.weights(teacher_hidden, student_hidden)
        teach = torch.stack(list(teacher_hidden), dim=-2)
        targets = torch.einsum("kbtl,btld->kbtd", alpha, teach)
        with torch.no_grad():
            if mask is None:
                self.gate_values = alpha.mean(dim=(1, 2))
            else:
                m = mask.to(alpha.dtype)[None, :, :, None]
                self.gate_values = (alpha * m).sum(dim=(1, 2)) / m.sum().clamp_min(1.0)
        return list(targets.unbind(0))


def gate_class(cfg: Any) -> type[Aggregator]:
    """The aggregator class a gate config names by ``_target_`` (imported, not built)."""
    from hydra.utils import get_class

    if not isinstance(cfg, Mapping):
        raise ConfigError(f"gate config must be a mapping, got {type(cfg).__name__}")
    spec = {key: cfg.get(key) for key in ("name", "_target_")}  # the rest may interpolate other groups
    if spec["_target_"] is None:
        raise ConfigError(f"gate config {spec.get('name')!r} has no _target_ "
                          "(the class to build, e.g. lad.method.gates.HighwayGates)")
    try:
        cls = get_class(str(spec["_target_"]))
    except Exception as err:  # noqa: BLE001 - an unimportable or misspelled class
        raise ConfigError(f"cannot import gate {spec.get('name')!r} from {spec['_target_']!r}: "
                          f"{' '.join(str(err).split())}") from err
    if not (isinstance(cls, type) and issubclass(cls, Aggregator)):
        raise ConfigError(f"gate {spec.get('name')!r}: _target_ {spec['_target_']!r} "
                          "is not a lad.method.gates aggregator")
    return cls


def build_gate(cfg: Any, num_layers: int, hidden_size: int) -> Aggregator:
    """Build an aggregator from a gate config ``{name, _target_, <constructor arguments>...}``.

    ``num_layers`` (of the teacher) and ``hidden_size`` are passed to the constructor; ``name`` is
    dropped.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    spec = as_dict(cfg, "gate config")
    name = spec.pop("name", None)
    if "_target_" not in spec:
        raise ConfigError(f"gate config {name!r} has no _target_ (the class to build, "
                          "e.g. lad.method.gates.HighwayGates)")
    try:
        gate = instantiate(spec, num_layers=num_layers, hidden_size=hidden_size)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        reason = " ".join(str(cause if cause is not None else err).split()) or type(err).__name__
        raise ConfigError(f"cannot build gate {name!r} from {spec['_target_']!r}: {reason}") from err
    if not isinstance(gate, Aggregator):
        raise ConfigError(f"gate {name!r}: _target_ {spec['_target_']!r} is not a lad.method.gates aggregator")
    return gate
