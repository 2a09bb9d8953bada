"""Training-step throughput of LAD distillation on CPU, against the hardware's matmul roofline (not a test).

    python benchmarks/step_time.py --threads 1                       # MRPC and RTE, every row
    python benchmarks/step_time.py --threads 1 --task mrpc --compile-steps 12

On the same batches of real GLUE training data (length-bucketed, batch 32) and a real MiniLM
teacher (the fine-tuned ``artifacts/teachers/minilm_l6/<task>`` when present, else the packaged
MiniLM backbone with a fresh classification head), a 3-layer student is trained with the
previous defaults (``a0`` plain fine-tune, ``c0`` LAD with the cached teacher: fp32, for-loop
AdamW), the reference settings (``d``: pad 128, fp32, online teacher, per-sequence gate norm),
the new defaults (``a``, ``b`` online teacher, ``c`` cached teacher: ``trainer.precision=auto``,
fused AdamW) and one change at a time (bf16, foreach / fused AdamW, 2 threads, a busy neighbour,
torch.compile). Each row's FLOPs per step are counted with ``torch.utils.flop_counter`` and
compared with a same-shape matmul timed in the same run ("% of roofline").

Variants are timed round-robin (one step of each, then the next batch), so a busy machine slows
them alike. Peak RSS comes from a fresh child process per variant running a few steps. The report
goes to stdout, docs/benchmarks/performance.md and its .json twin (read by ``sweeps/grid.py plan``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from lad.core.fileio import write_text  # noqa: E402

BATCH_SIZE = 32
REF_MAX_LEN = 128
COMPILE_MULTIPLE = 32      # torch.compile row: batch lengths rounded up so that shapes repeat
STUDENT = {"name": "3layer", "num_layers": 3, "hidden_size": None, "intermediate_size": None,
           "num_attention_heads": None, "init_layers": True, "init_embeddings": True,
           "init_classifier": True}
OPTIM = {"lr": 1e-4, "gate_lr": 1e-5, "weight_decay": 0.01, "warmup_ratio": 0.1,
         "batch_size": BATCH_SIZE, "max_grad_norm": 1.0}
LAD_LOSS = {"hard_weight": 0.5, "soft_weight": 0.5, "hidden_weight": 1000.0, "pkd_weight": 0.0,
            "temperature": 10.0}
CE_LOSS = {"hard_weight": 1.0, "soft_weight": 0.0, "hidden_weight": 0.0, "pkd_weight": 0.0,
           "temperature": 1.0}


@dataclass(frozen=True)
class Variant:
    desc: str
    loss: dict
    norm: str | None = None           # gate norm (None: no gate)
    teacher: str | None = None        # online | cache | None
    pad_max: bool = False             # every batch padded to 128 (reference)
    precision: str = "fp32"           # fp32 | bf16 | new (what trainer.precision=auto picks here)
    impl: str = "for_loop"            # AdamW kernel: for_loop (the previous default) | foreach | fused
    threads: int | None = None        # intra-op threads for this row (None: the run's)
    busy: bool = False                # a nice-19 busy process runs beside this row's steps
    compiled: bool = False            # torch.compile(student), lengths rounded up to COMPILE_MULTIPLE

    @property
    def flop_class(self) -> str:      # rows with the same FLOPs per step
        return f"{'ce' if self.loss is CE_LOSS else 'lad'}-{self.teacher}-{self.pad_max}-{self.compiled}"


NEW = {"precision": "new", "impl": "fused"}   # the new defaults: trainer.precision=auto, optim.impl=auto
VARIANTS = {
    # the previous defaults (fp32, for-loop AdamW)
    "a0": Variant("plain student fine-tune (loss=ce), previous default", CE_LOSS),
    "c0": Variant("LAD, cached teacher, previous default", LAD_LOSS, "per_token", "cache"),
    "d": Variant("reference: pad 128, fp32, online teacher, per_sequence", LAD_LOSS, "per_sequence", "online",
                 pad_max=True),
    # the new defaults
    "a": Variant("plain student fine-tune (loss=ce)", CE_LOSS, **NEW),
    "b": Variant("LAD, online teacher", LAD_LOSS, "per_token", "online", **NEW),
    "c": Variant("LAD, cached teacher", LAD_LOSS, "per_token", "cache", **NEW),
    # one change at a time from c0
    "c0_bf16": Variant("c0 + bf16 autocast", LAD_LOSS, "per_token", "cache", precision="bf16"),
    "c0_foreach": Variant("c0 + foreach AdamW", LAD_LOSS, "per_token", "cache", impl="foreach"),
    "c0_fused": Variant("c0 + fused AdamW", LAD_LOSS, "per_token", "cache", impl="fused"),
    # threads: 2 threads on a quiet machine, and 1 / 2 threads beside one busy nice-19 process
    "c_2threads": Variant("c with 2 threads", LAD_LOSS, "per_token", "cache", threads=2, **NEW),
    "c_busy_1thread": Variant("c, 1 thread, a nice-19 busy process beside it", LAD_LOSS, "per_token", "cache",
                              threads=1, busy=True, **NEW),
    "c_busy_2threads": Variant("c, 2 threads, a nice-19 busy process beside it", LAD_LOSS, "per_token", "cache",
                               threads=2, busy=True, **NEW),
}
CORE = ("a0", "c0", "d", "a", "b", "c")
COMPILE_ROW = Variant(f"c + torch.compile(student), lengths rounded up to {COMPILE_MULTIPLE}", LAD_LOSS,
                      "per_token", "cache", compiled=True, **NEW)
DEFAULT_MAX_GB = float(OmegaConf.load(REPO / "conf" / "cache" / "default.yaml")["max_gb"])


def precision_of(v: Variant) -> str:
    from lad.core.runtime import resolve_precision

    return resolve_precision("auto", torch.device("cpu")) if v.precision == "new" else v.precision


# ----------------------------------------------------------------------------- setup
@dataclass
class Setup:
    task: object
    teacher: object
    teacher_dir: Path
    teacher_kind: str
    feats: object                  # the examples the timed batches use (re-indexed)
    batches: list                  # lists of positions in ``feats``
    cache_dir: Path
    full_examples: int = 0         # size of the whole training split
    full_tokens: int = 0


def _task(name: str):
    from lad.data.tasks import TaskSpec

    return TaskSpec.from_config(OmegaConf.load(REPO / "conf" / "task" / f"{name}.yaml"))


def _teacher(task, work: Path):
    """(teacher model, directory holding exactly its weights, description)."""
    from lad.core.config import minilm_path
    from lad.models import load_backbone, load_tokenizer
    from lad.models.teacher import check_model_dir

    tuned = REPO / "artifacts" / "teachers" / "minilm_l6" / task.name
    try:
        path = check_model_dir(tuned, "teacher")
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(str(path))
        kind = f"fine-tuned MiniLM-L6 teacher ({tuned.relative_to(REPO)})"
    except Exception:  # noqa: BLE001 - any problem: use the raw backbone
        from transformers import AutoModelForSequenceClassification

        backbone = Path(minilm_path())
        path = work / "teacher" / task.name  # saved once, so the cache key matches these weights
        if (path / "config.json").is_file():
            model = AutoModelForSequenceClassification.from_pretrained(str(path))
        else:
            torch.manual_seed(0)
            model = load_backbone(backbone, task)
            path.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(path, safe_serialization=True)
            load_tokenizer(backbone).save_pretrained(path)
        kind = ("raw packaged MiniLM-L6 backbone with a fresh (random) head "
                f"(no fine-tuned teacher at {tuned.relative_to(REPO)})")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, path, kind


def _subset(feats, batches):
    """Features holding only the examples of ``batches``, and the batches re-indexed into it."""
    from lad.data.features import Features

    used = sorted({i for b in batches for i in b})
    pos = {i: j for j, i in enumerate(used)}
    sub = Features([feats.input_ids[i] for i in used], [feats.token_type_ids[i] for i in used],
                   feats.labels[np.asarray(used)], [feats.guids[i] for i in used], pad_id=feats.pad_id)
    return sub, [[pos[i] for i in b] for b in batches]


def prepare(task_name: str, n_batches: int, work: Path) -> Setup:
    from lad.core.config import setup_environment
    from lad.data.features import load_features
    from lad.data.glue import resolve_data_dir
    from lad.data.loader import make_train_batches
    from lad.models import load_tokenizer

    setup_environment()
    task = _task(task_name)
    teacher, teacher_dir, kind = _teacher(task, work)
    tok = load_tokenizer(teacher_dir)
    feats = load_features(task, resolve_data_dir("auto"), "train", tok, int(task.max_seq_length),
                          REPO / ".cache" / "lad" / "features")
    batches = make_train_batches(feats, BATCH_SIZE, seed=0, epoch=0, bucket=True)[:n_batches]
    sub, sub_batches = _subset(feats, batches)
    return Setup(task, teacher, teacher_dir, kind, sub, sub_batches, work / "teacher_outputs",
                 len(feats), int(feats.lengths.sum()))


def build_variant(v: Variant, s: Setup, total_steps: int, release_teacher: bool = False):
    """(module, optimisers, schedulers, clip groups, cache build seconds or None)."""
    from lad.method.distiller import Distiller
    from lad.method.gates import HighwayGates
    from lad.method.losses import Objective
    from lad.method.teacher_cache import attach_cache
    from lad.models import build_student
    from lad.run.train import build_optimizers

    torch.manual_seed(0)
    student, mapping = build_student(s.teacher, OmegaConf.create(STUDENT))
    objective = Objective(**v.loss, is_regression=s.task.is_regression)
    cfg = s.teacher.config
    gate = HighwayGates(cfg.num_hidden_layers, cfg.hidden_size, norm=v.norm) if v.norm else None
    module = Distiller(student, objective, teacher=s.teacher if v.teacher else None, gate=gate,
                       layer_map=mapping, teacher_hidden_size=cfg.hidden_size)
    built = None
    if v.teacher == "cache":
        ccfg = OmegaConf.create({"cache": {"enabled": True, "dir": str(s.cache_dir), "dtype": "float16",
                                           "max_gb": DEFAULT_MAX_GB, "release_teacher": release_teacher,
                                           "build_batch_size": 64},
                                 "data": {"max_train_samples": None}})
        t0 = time.perf_counter()
        cached = attach_cache(ccfg, module, s.feats, s.teacher_dir, s.task, device=torch.device("cpu"))
        built = time.perf_counter() - t0
        if cached is None:
            raise RuntimeError("the teacher cache was not attached")
    if v.compiled:
        module.student = torch.compile(module.student, dynamic=False)
    module.train()
    optim = OmegaConf.create({**OPTIM, "impl": v.impl})
    opts, scheds, clips = build_optimizers(module, optim, total_steps, torch.device("cpu"))
    return module, opts, scheds, clips, built


def collate_for(v: Variant, s: Setup, idx):
    from lad.data.loader import FeaturesDataset, collate

    batch = collate([FeaturesDataset(s.feats)[i] for i in idx], pad_id=s.feats.pad_id)
    width = batch["input_ids"].shape[1]
    target = REF_MAX_LEN if v.pad_max else -(-width // COMPILE_MULTIPLE) * COMPILE_MULTIPLE if v.compiled else width
    if target > width:
        pad = {"input_ids": s.feats.pad_id, "attention_mask": 0, "token_type_ids": 0}
        for key, value in pad.items():
            batch[key] = torch.nn.functional.pad(batch[key], (0, target - width), value=value)
    return batch


class Neighbour:
    """A nice-19 busy loop, paused (SIGSTOP) except while a ``busy`` row's step runs."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=self._start)
        self.pause()

    @staticmethod
    def _start() -> None:
        """In the child: lowest priority, and killed with the benchmark (Linux PR_SET_PDEATHSIG), so an
        interrupted benchmark leaves no busy loop behind."""
        os.nice(19)
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1

    def run(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def make_step(v: Variant, s: Setup, parts, neighbour: Neighbour | None = None):
    module, opts, scheds, clips, _ = parts
    bf16 = precision_of(v) == "bf16"

    def step(idx) -> tuple[float, float, int]:
        """One optimisation step on batch ``idx``; returns (seconds, collate seconds, padded tokens)."""
        previous = torch.get_num_threads()
        if v.threads:
            torch.set_num_threads(v.threads)
        if v.busy and neighbour is not None:
            neighbour.run()
        t0 = time.perf_counter()
        batch = collate_for(v, s, idx)
        t_collate = time.perf_counter() - t0
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = module.training_step(batch)
        loss.backward()
        for opt, sch, params in zip(opts, scheds, clips):
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sch.step()
            opt.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - t0
        if v.busy and neighbour is not None:
            neighbour.pause()
        if v.threads:
            torch.set_num_threads(previous)
        if not torch.isfinite(loss):
            raise RuntimeError(f"variant {v.desc}: loss is {loss.item()}")
        return elapsed, t_collate, int(batch["input_ids"].numel())

    return step


# ----------------------------------------------------------------------------- FLOPs and roofline
def step_flops(v: Variant, s: Setup, batches) -> float:
    """Mean FLOPs of one training step (forward + backward, counted by torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    module = build_variant(replace(v, compiled=False), s, len(batches))[0]
    counts = []
    for idx in batches:
        with FlopCounterMode(display=False) as counter:
            loss, _ = module.training_step(collate_for(v, s, idx))
            loss.backward()
        counts.append(counter.get_total_flops())
        module.zero_grad(set_to_none=True)
    return float(np.mean(counts))


def matmul_roofline(tokens: int, hidden: int, threads: int, dtype: torch.dtype, rounds: int = 20) -> float:
    """GFLOP/s of a [tokens, hidden] @ [hidden, 4 hidden] matmul (the student's FFN shape)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(tokens, hidden, dtype=dtype), torch.randn(hidden, 4 * hidden, dtype=dtype)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(rounds):
        a @ b
    elapsed = (time.perf_counter() - t0) / rounds
    torch.set_num_threads(previous)
    return 2.0 * tokens * hidden * 4 * hidden / elapsed / 1e9


# ----------------------------------------------------------------------------- measuring
def time_task(task_name: str, variants: list[str], steps: int, warmup: int, work: Path, compile_steps: int) -> dict:
    t_setup = time.perf_counter()
    s = prepare(task_name, warmup + steps, work)
    print(f"[{task_name}] teacher: {s.teacher_kind}", flush=True)
    print(f"[{task_name}] {len(s.batches)} batches of {BATCH_SIZE} from {len(s.feats)} examples "
          f"(setup {time.perf_counter() - t_setup:.1f} s)", flush=True)
    runs, build_s, cache = {}, None, {}
    neighbour = Neighbour() if any(VARIANTS[n].busy for n in variants) else None
    try:
        for name in variants:
            parts = build_variant(VARIANTS[name], s, warmup + steps)
            if parts[4] is not None and build_s is None:
                build_s = parts[4]
                manifest = parts[0].teacher_outputs.store.manifest
                per_token = manifest["bytes"] / max(1, manifest["num_tokens"])
                cache = {"bytes": manifest["bytes"], "full_examples": s.full_examples,
                         "full_gb": per_token * s.full_tokens / 1e9}
                print(f"[{task_name}] teacher cache built in {build_s:.1f} s for {len(s.feats)} examples", flush=True)
            runs[name] = make_step(VARIANTS[name], s, parts, neighbour)
        times = {n: [] for n in variants}
        collate_s = {n: 0.0 for n in variants}
        tokens = {n: 0 for n in variants}
        for i, idx in enumerate(s.batches):
            for name in variants:  # round-robin: a busy machine slows every row alike
                sec, col, tok = runs[name](idx)
                if i >= warmup:
                    times[name].append(sec)
                    collate_s[name] += col
                    tokens[name] += tok
            if i == warmup - 1:
                print(f"[{task_name}] warm-up done ({warmup} steps per variant)", flush=True)
            elif i >= warmup and (i - warmup + 1) % 5 == 0:
                print(f"[{task_name}] {i - warmup + 1}/{len(s.batches) - warmup} timed rounds "
                      f"({time.perf_counter() - t_setup:.0f} s)", flush=True)
    finally:
        if neighbour is not None:
            neighbour.close()
    timed = s.batches[warmup:]
    n_examples = sum(len(b) for b in timed)
    rows = {}
    for name in variants:
        total = float(sum(times[name]))
        rows[name] = {"step_s": total / steps, "median_step_s": float(np.median(times[name])),
                      "steps_per_s": steps / total, "examples_per_s": n_examples / total,
                      "padded_tokens_per_step": tokens[name] / steps, "collate_share": collate_s[name] / total}
    # FLOPs per step (one count per class of rows that do the same arithmetic) and the matmul roofline
    flops: dict[str, float] = {}
    for name in variants:
        key = VARIANTS[name].flop_class
        if key not in flops:
            flops[key] = step_flops(VARIANTS[name], s, timed)
        rows[name]["gflop_per_step"] = flops[key] / 1e9
    real_tokens = float(np.mean([s.feats.lengths[np.asarray(b)].sum() for b in timed]))
    padded = int(round(np.mean([rows[n]["padded_tokens_per_step"] for n in variants if n.startswith("c")])))
    hidden = int(s.teacher.config.hidden_size)
    roof = {(p, t): matmul_roofline(padded, hidden, t, torch.float32 if p == "fp32" else torch.bfloat16)
            for p in ("fp32", "bf16") for t in sorted({VARIANTS[n].threads or torch.get_num_threads() for n in variants})}
    for name in variants:
        v = VARIANTS[name]
        peak = roof[(precision_of(v), v.threads or torch.get_num_threads())]
        achieved = rows[name]["gflop_per_step"] / rows[name]["step_s"]
        rows[name]["gflop_s"] = achieved
        rows[name]["roofline"] = achieved / peak
    res = {"task": task_name, "teacher": s.teacher_kind, "rows": rows, "cache_build_s": build_s,
           "cache_examples": len(s.feats), "cache": cache, "real_tokens_per_step": real_tokens,
           "mean_len": float(np.mean(s.feats.lengths)), "teacher_dir": str(s.teacher_dir),
           "roofline": {f"{p}@{t}": g for (p, t), g in roof.items()}, "matmul_tokens": padded}
    if compile_steps:
        res["compile"] = time_compile(s, compile_steps, rows["c"]["step_s"] if "c" in rows else None)
    return res


def time_compile(s: Setup, steps: int, eager_step_s: float | None) -> dict:
    """torch.compile of the student: seconds to the first step of each new shape, then steady steps."""
    print("[compile] compiling (each new batch length compiles the graph again) ...", flush=True)
    parts = build_variant(COMPILE_ROW, s, 2 * steps)
    step = make_step(COMPILE_ROW, s, parts)
    batches = s.batches[:steps]
    first = [step(idx) for idx in batches]      # includes the compilations
    steady = [step(idx) for idx in batches]     # every shape already compiled
    shapes = sorted({int(collate_for(COMPILE_ROW, s, idx)["input_ids"].shape[1]) for idx in batches})
    first_s, steady_s = sum(t for t, _, _ in first), sum(t for t, _, _ in steady)
    out = {"shapes": shapes, "first_pass_s": first_s, "all_shapes": -(-int(s.task.max_seq_length) // COMPILE_MULTIPLE),
           "run_steps": 3 * -(-s.full_examples // BATCH_SIZE), "steady_step_s": steady_s / len(steady),
           "compile_s": first_s - steady_s, "steps": len(batches), "eager_step_s": eager_step_s}
    print(f"[compile] {len(shapes)} shapes, compile {out['compile_s']:.0f} s, steady step "
          f"{out['steady_step_s'] * 1e3:.0f} ms", flush=True)
    return out


def child_rss(task_name: str, variant: str, steps: int, n_batches: int, work: Path) -> None:
    """Child process: set up, run ``steps`` steps of one variant, print peak RSS (MB) as JSON."""
    s = prepare(task_name, n_batches, work)
    v = VARIANTS[variant]
    parts = build_variant(v, s, steps, release_teacher=True)
    s.teacher = None  # what the run keeps: the module's own reference only
    step = make_step(v, s, parts)
    for idx in s.batches[:steps]:
        step(idx)
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; unlike ru_maxrss it does not carry the parent's
    peak across fork + exec)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_rss(task_name: str, variants: list[str], steps: int, n_batches: int, work: Path) -> dict:
    out = {}
    for name in variants:
        cmd = [sys.executable, __file__, "--child-rss", name, "--task", task_name, "--steps", str(steps),
               "--child-batches", str(n_batches), "--work", str(work),
               "--threads", str(torch.get_num_threads())]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        try:
            out[name] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"]
        except (IndexError, ValueError, KeyError):
            print(f"[{task_name}] RSS child for {name} failed:\n{proc.stderr[-2000:]}", flush=True)
            out[name] = float("nan")
    return out


# ----------------------------------------------------------------------------- report
def machine_info() -> dict:
    import transformers

    from lad.core.runtime import cpu_info

    info = cpu_info()
    flags = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in info["flags"])
    return {"cpu": info["model"] or platform.processor() or "unknown", "cores": os.cpu_count(), "isa": flags,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(), "os": platform.platform(),
            "auto_precision": precision_of(VARIANTS["c"])}


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds every process of the machine has used, CPU seconds of this process and its children)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    busy = sum(int(x) for i, x in enumerate(fields) if i not in (3, 4))  # all but idle and iowait
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system + own.children_user + own.children_system


def _ratio(x: float, y: float) -> float:
    return x / y if y else float("nan")


def report(results: list[dict], info: dict, command: str, load: tuple, wall: float, args, today: str | None = None) -> str:
    today = today or datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    others = load[2] if len(load) > 2 else None      # CPU-seconds other processes used during the run
    busy = (others / max(wall, 1e-9) > 0.2) if others is not None else max(load[0][0], load[1][0]) > (info["cores"] or 1)
    lines = [
        "# Performance: training-step throughput on CPU",
        "",
        "_Generated by `benchmarks/step_time.py`; do not edit by hand (re-run the command below)._",
        "",
        f"- command: `{command}`",
        f"- date: {today}; wall time {wall:.0f} s",
        f"- machine: {info['cores']} cores ({info['cpu']}; {info['isa']}), {info['os']}",
        f"- software: torch {info['torch']}, transformers {info['transformers']}, Python {info['python']}, "
        f"torch intra-op threads {info['threads']}"
        f"{' (set by --threads)' if args.threads else ' (PyTorch default)'}",
        f"- load average (1 min) at start / end: {load[0][0]:.2f} / {load[1][0]:.2f}"
        + (f"; other processes used {others:.0f} CPU-seconds during the run ({100 * others / max(wall, 1e-9):.0f} % "
           "of one core)" if others is not None else ""),
        f"- `trainer.precision=auto` picks **{info['auto_precision']}** on this machine; `optim.impl=auto` "
        "picks the fused AdamW kernel.",
    ]
    if busy:
        lines += ["", "> **Note:** the machine was busy while this ran (other processes used more than a fifth of "
                      "a core). Absolute numbers are low and noisy; the variants ran round-robin on the same "
                      "batches, so the ratios are the meaningful part."]
    lines += [
        "",
        f"Setup: 3-layer student (teacher layers copied), batch {BATCH_SIZE}, AdamW, length-bucketed "
        f"batches from the real GLUE training set; {args.warmup} warm-up + {args.steps} timed steps per "
        "variant on the same batches, one step of each variant in turn. Step time includes collation, "
        "forward, backward, clipping and the optimiser step. FLOPs per step are counted by "
        "`torch.utils.flop_counter` on the same batches (forward + backward; the optimiser's "
        "element-wise work is not counted). The roofline is a same-thread-count matmul of the "
        "student's feed-forward shape (tokens x hidden @ hidden x 4·hidden) in the row's precision, "
        "timed in the same run; \"% of roofline\" = achieved GFLOP/s ÷ that matmul's GFLOP/s.",
        "",
    ]
    for res in results:
        rows = res["rows"]
        roof = ", ".join(f"{k.replace('@', ' at ')} thread(s) {v:.0f} GFLOP/s" for k, v in res["roofline"].items())
        lines += [f"## {res['task'].upper()}", "", f"Teacher: {res['teacher']}.", "",
                  f"Mean real tokens per batch {res['real_tokens_per_step']:.0f} "
                  f"(mean example length {res['mean_len']:.1f}). Matmul roofline "
                  f"({res['matmul_tokens']} x hidden @ hidden x 4·hidden): {roof}.", ""]
        lines += ["| variant | precision | AdamW | step (ms) | median (ms) | examples/s | padded tokens/step "
                  "| GFLOP/step | GFLOP/s | % of roofline | vs c0 (examples/s) | peak RSS (MB) |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        base = rows.get("c0")
        for name, row in rows.items():
            v = VARIANTS[name]
            rss = res.get("rss", {}).get(name)
            rss_s = f"{rss:.0f}" if isinstance(rss, float) and rss == rss else "-"
            rel = f"{_ratio(row['examples_per_s'], base['examples_per_s']):.2f}x" if base else "-"
            lines.append(f"| {name}: {v.desc} | {precision_of(v)} | {v.impl} | {row['step_s'] * 1e3:.0f} | "
                         f"{row['median_step_s'] * 1e3:.0f} | {row['examples_per_s']:.1f} | "
                         f"{row['padded_tokens_per_step']:.0f} | {row['gflop_per_step']:.1f} | {row['gflop_s']:.0f} | "
                         f"{row['roofline'] * 100:.0f} % | {rel} | {rss_s} |")
        if res.get("cache_build_s") is not None:
            per_k = res["cache_build_s"] / res["cache_examples"] * 1000
            lines += ["", f"Teacher cache build (not in the step times): {res['cache_build_s']:.1f} s for "
                          f"{res['cache_examples']} examples ({per_k:.1f} s per 1000 examples); it is "
                          "reused by every later run, seed and trial on the same teacher and data. "
                          f"Size: {res['cache']['bytes'] / 1e6:.1f} MB here; the whole training split "
                          f"({res['cache']['full_examples']} examples, all 6 layers, float16) would take about "
                          f"{res['cache']['full_gb']:.2f} GB (cache.max_gb default: {DEFAULT_MAX_GB:g} GB; "
                          "above it a run falls back to the online teacher)."]
        res["ratios"], res["targets"] = ratios(rows)
        lines += ["", "Ratios (same batches, same run):", ""] + [f"- {line}" for line in ratio_lines(res)]
        if "compile" in res:
            lines += ["", compile_line(res["compile"], res["task"])]
        lines.append("")
    lines += ["## Summary", ""]
    for res in results:
        lines += [f"- {res['task'].upper()}: " + "; ".join(
            f"{label}: {'met' if ok else 'MISSED'} ({value})" for label, (ok, value) in res["targets"].items())]
    lines += ["", "## Settings", ""] + conclusions(results) + [""]
    return "\n".join(lines)


def ratios(rows: dict) -> tuple[dict, dict]:
    """The ratios the targets are stated in, and the targets with their verdicts."""
    r = {}
    if {"c", "c0"} <= rows.keys():
        r["c/c0 examples/s"] = _ratio(rows["c"]["examples_per_s"], rows["c0"]["examples_per_s"])
    if {"c", "a"} <= rows.keys():
        r["c/a step"] = _ratio(rows["c"]["step_s"], rows["a"]["step_s"])
    if {"c0", "a0"} <= rows.keys():
        r["c0/a0 step"] = _ratio(rows["c0"]["step_s"], rows["a0"]["step_s"])
    if {"c", "d"} <= rows.keys():
        r["c/d examples/s"] = _ratio(rows["c"]["examples_per_s"], rows["d"]["examples_per_s"])
    for name in ("c0_bf16", "c0_foreach", "c0_fused"):
        if {name, "c0"} <= rows.keys():
            r[f"{name}/c0 step"] = _ratio(rows[name]["step_s"], rows["c0"]["step_s"])
    if {"c_2threads", "c"} <= rows.keys():
        r["c_2threads/c step"] = _ratio(rows["c_2threads"]["step_s"], rows["c"]["step_s"])
    if {"c_busy_2threads", "c_busy_1thread"} <= rows.keys():
        r["busy 2/1 threads step"] = _ratio(rows["c_busy_2threads"]["step_s"], rows["c_busy_1thread"]["step_s"])
    targets = {}
    if "c/c0 examples/s" in r:
        targets["LAD cached >= 1.8x the previous default's examples/s"] = (
            r["c/c0 examples/s"] >= 1.8, f"{r['c/c0 examples/s']:.2f}x")
    if "c" in rows:
        targets["LAD cached step >= 50 % of the matmul roofline"] = (
            rows["c"]["roofline"] >= 0.5, f"{rows['c']['roofline'] * 100:.0f} %")
    if "c/a step" in r:
        targets["LAD cached step <= 1.10x the plain fine-tune step (same precision)"] = (
            r["c/a step"] <= 1.10, f"{r['c/a step']:.2f}x")
    return r, targets


def ratio_lines(res: dict) -> list[str]:
    rows, r = res["rows"], res["ratios"]
    out = [f"{k}: **{v:.2f}x**" for k, v in r.items()]
    if {"a", "c"} <= rows.keys():
        flops = _ratio(rows["c"]["gflop_per_step"], rows["a"]["gflop_per_step"])
        out.append(f"c/a FLOPs per step: **{flops:.2f}x** (the gate stack and hidden-state loss are arithmetic of "
                   "their own: at equal efficiency the c/a step ratio cannot go below this)")
    if "c" in rows:
        out.append(f"collation share of the c step: {rows['c']['collate_share'] * 100:.1f} % (the most that "
                   "overlapping data loading with compute could save)")
    return out


def compile_line(c: dict, task: str) -> str:
    steady_gain = (c["eager_step_s"] - c["steady_step_s"]) if c["eager_step_s"] else float("nan")
    text = (f"torch.compile (row c + `torch.compile(student)`, lengths rounded up to {COMPILE_MULTIPLE}): "
            f"{len(c['shapes'])} batch shapes in {c['steps']} steps; compiling took {c['compile_s']:.0f} s; "
            f"steady step {c['steady_step_s'] * 1e3:.0f} ms vs {c['eager_step_s'] * 1e3:.0f} ms eager (c).")
    per_shape = c["compile_s"] / max(1, len(c["shapes"]))
    eager = c["run_steps"] * c["eager_step_s"]
    compiled = per_shape * c["all_shapes"] + c["run_steps"] * c["steady_step_s"]
    text += (f" A whole 3-epoch {task.upper()} run ({c['run_steps']} steps, up to {c['all_shapes']} shapes): "
             f"about {eager / 60:.1f} min eager vs {compiled / 60:.1f} min compiled "
             f"(**{compiled / eager:.2f}x**; compile time per shape x shapes + steps x steady step).")
    if steady_gain <= 0:
        text += (" Compiled steps are slower than eager ones here, so compiling never pays off, whatever it costs "
                 "(this row reused Inductor's on-disk cache where earlier compiles had filled it, so its compile "
                 "time is a lower bound).")
    return text


def conclusions(results: list[dict]) -> list[str]:
    """One generated line per setting, from the measured ratios (adopted only where it wins)."""
    def shown(key):
        vals = [r["ratios"][key] for r in results if key in r["ratios"]]
        return vals, ", ".join(f"{x:.2f}x" for x in vals)

    out = []
    vals, text = shown("c0_bf16/c0 step")
    if vals:
        out.append(f"- bf16 autocast: step time {text} of fp32. `trainer.precision=auto` uses it where the CPU "
                   "has native bf16 (AVX-512-BF16 / AMX) and on CUDA; the accuracy check (paired seeds, MRPC and "
                   "RTE) is [precision.md](precision.md).")
    for key, what in (("c0_fused/c0 step", "fused AdamW"), ("c0_foreach/c0 step", "foreach AdamW")):
        vals, text = shown(key)
        if vals:
            verdict = "adopted (`optim.impl=auto`)" if what.startswith("fused") and max(vals) < 1 else "not the default"
            out.append(f"- {what}: step time {text} of the for-loop AdamW — {verdict}.")
    vals, text = shown("c_2threads/c step")
    busy_vals, busy_text = shown("busy 2/1 threads step")
    if vals:
        line = f"- 2 threads instead of 1 on a quiet machine: step time {text}."
        if busy_vals:
            helps = max(busy_vals) < 1.0
            line += (f" Beside one busy `nice -n 19` process, 2 threads take {busy_text} the time of 1 thread"
                     + (": the niced neighbour yields its core, so the threads still help." if helps else
                        ": a thread that loses its core stalls every operator of the step."))
        line += (" `trainer.num_threads=auto` takes the cores that other work leaves: processes of normal priority "
                 "count against it, niced ones do not where `nice` works (with Linux's autogroup scheduling on, "
                 "`nice` does not order processes of different terminal sessions, so every runnable process counts; "
                 "see troubleshooting). The results grid runs 2 single-thread runs side by side.")
        out.append(line)
    comp = [r["compile"] for r in results if "compile" in r]
    if comp:
        out.append("- torch.compile: " + "; ".join(
            f"{c['compile_s']:.0f} s of compiling for {len(c['shapes'])} shapes, steady step "
            f"{_ratio(c['steady_step_s'], c['eager_step_s']):.2f}x of eager" for c in comp)
            + ". Not adopted unless the steady gain repays the compile time within a typical run "
              "(see each task's line above).")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", action="append", choices=["rte", "sst2", "mrpc", "cola", "qnli"],
                        help="task(s) to measure (default: mrpc and rte)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps per variant (default 3)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None,
                        help="rows to time (default: all)")
    parser.add_argument("--compile-steps", type=int, default=0,
                        help="also time torch.compile over this many batches (0 = skip; compiling takes minutes)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: PyTorch's default)")
    parser.add_argument("--no-rss", action="store_true", help="skip the per-variant peak-RSS child runs")
    parser.add_argument("--rss-steps", type=int, default=3, help="steps per peak-RSS child run (default 3)")
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "performance.md"), help="report file ('' = none)")
    parser.add_argument("--render", default=None, metavar="JSON",
                        help="write the report again from a saved run (its .json twin) without measuring")
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-rss", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-batches", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_rss:
        child_rss(args.task[0], args.child_rss, args.steps, args.child_batches, Path(args.work))
        return 0
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        meta = saved["meta"]
        text = report(saved["results"], saved["info"], meta["command"], tuple(meta["load"]),
                      meta["wall"], argparse.Namespace(**meta["args"]), meta["date"])
        write_text(args.out, text)
        print(f"written to {args.out}")
        return 0
    tasks = args.task or ["mrpc", "rte"]
    variants = args.variants or list(VARIANTS)
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python benchmarks/step_time.py", *given])
    info = machine_info()
    load_start = os.getloadavg()
    cpu_start = cpu_seconds()
    t0 = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="lad-bench-") as tmp:
        work = Path(tmp)
        for task_name in tasks:
            res = time_task(task_name, variants, args.steps, args.warmup, work, args.compile_steps)
            if not args.no_rss:
                res["rss"] = measure_rss(task_name, [n for n in CORE if n in variants], args.rss_steps,
                                         args.warmup + args.steps, work)
            results.append(res)
            for name, row in res["rows"].items():
                print(f"[{task_name}] {name:16s} {row['step_s'] * 1e3:8.1f} ms/step  "
                      f"{row['examples_per_s']:7.1f} ex/s  {row['roofline'] * 100:4.0f} % of roofline", flush=True)
    cpu_end = cpu_seconds()
    others = (cpu_end[0] - cpu_start[0]) - (cpu_end[1] - cpu_start[1])
    load, wall = (load_start, os.getloadavg(), max(0.0, others)), time.perf_counter() - t0
    text = report(results, info, command, load, wall, args)
    print(text)
    if args.out:
        write_text(args.out, text)
        meta = {"command": command, "load": [list(load[0]), list(load[1]), load[2]], "wall": wall,
                "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                "args": {"threads": args.threads, "steps": args.steps, "warmup": args.warmup}}
        write_text(Path(args.out).with_suffix(".json"), json.dumps({"info": info, "results": results, "meta": meta},
                                                                  indent=1, default=str) + "\n")
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
