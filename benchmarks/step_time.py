"""Training-step throughput of LAD distillation on CPU (not a test).

    python benchmarks/step_time.py                     # RTE and SST-2, 20 timed steps per variant
    python benchmarks/step_time.py --task rte --steps 10

On the same batches of real GLUE training data (length-bucketed, batch 32) and a real MiniLM
teacher (the fine-tuned ``artifacts/teachers/minilm_l6/<task>`` when present, else the packaged
MiniLM backbone with a fresh classification head), a 3-layer student is trained with:

  a  plain student fine-tune (loss=ce)
  b  LAD, teacher run online
  c  LAD, teacher outputs from the teacher cache (its build time is reported separately)
  d  the reference settings re-implemented: every batch padded to 128, fp32, online teacher,
     gate norm per_sequence
  extra rows: a under bf16 autocast; c with the other intra-op thread count (1 thread when the run
  uses several, else all cores); torch.compile: see the report

Variants are timed round-robin (one step of each, then the next batch), so a busy machine slows
them alike. Peak RSS comes from a fresh child process per variant running a few steps. The report
goes to stdout and to docs/benchmarks/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from lad.fileio import write_text  # noqa: E402

BATCH_SIZE = 32
REF_MAX_LEN = 128
STUDENT = {"name": "3layer", "num_layers": 3, "hidden_size": None, "intermediate_size": None,
           "num_attention_heads": None, "init_layers": True, "init_embeddings": True,
           "init_classifier": True}
OPTIM = {"lr": 1e-4, "gate_lr": 1e-6, "weight_decay": 0.01, "warmup_ratio": 0.1,
         "batch_size": BATCH_SIZE, "max_grad_norm": 1.0}
LAD_LOSS = {"hard_weight": 0.5, "soft_weight": 0.5, "hidden_weight": 1000.0, "pkd_weight": 0.0,
            "temperature": 10.0}
CE_LOSS = {"hard_weight": 1.0, "soft_weight": 0.0, "hidden_weight": 0.0, "pkd_weight": 0.0,
           "temperature": 1.0}
# name -> (description, loss, gate norm, teacher (online|cache), pad to 128, bf16 autocast, threads)
VARIANTS = {
    "a": ("plain student fine-tune (loss=ce)", CE_LOSS, None, None, False, False, None),
    "b": ("LAD, online teacher", LAD_LOSS, "per_token", "online", False, False, None),
    "c": ("LAD, cached teacher", LAD_LOSS, "per_token", "cache", False, False, None),
    "d": ("reference: pad 128, fp32, online teacher, per_sequence", LAD_LOSS, "per_sequence", "online",
          True, False, None),
    "a_bf16": ("a under bf16 autocast", CE_LOSS, None, None, False, True, None),
    # the other thread setting: 1 thread when the run uses several, else all cores
    "c_threads": ("c with the other thread count", LAD_LOSS, "per_token", "cache", False, False, "alt"),
}
CORE = ("a", "b", "c", "d")
DEFAULT_MAX_GB = float(OmegaConf.load(REPO / "conf" / "cache" / "default.yaml")["max_gb"])


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
    from lad.config import minilm_path
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
    from lad.config import setup_environment
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


def build_variant(name: str, s: Setup, total_steps: int, release_teacher: bool = False):
    """(module, optimisers, schedulers, clip groups, cache build seconds or None)."""
    from lad.distiller import Distiller
    from lad.gates import HighwayGates
    from lad.losses import Objective
    from lad.models import build_student
    from lad.teacher_cache import attach_cache
    from lad.train import build_optimizers

    _, loss, norm, source, _, _, _ = VARIANTS[name]
    torch.manual_seed(0)
    student, mapping = build_student(s.teacher, OmegaConf.create(STUDENT))
    objective = Objective(**loss, is_regression=s.task.is_regression)
    cfg = s.teacher.config
    gate = HighwayGates(cfg.num_hidden_layers, cfg.hidden_size, norm=norm) if norm else None
    module = Distiller(student, objective, teacher=s.teacher if source else None, gate=gate,
                       layer_map=mapping, teacher_hidden_size=cfg.hidden_size)
    built = None
    if source == "cache":
        ccfg = OmegaConf.create({"cache": {"enabled": True, "dir": str(s.cache_dir), "dtype": "float16",
                                           "max_gb": DEFAULT_MAX_GB, "release_teacher": release_teacher,
                                           "build_batch_size": 64},
                                 "data": {"max_train_samples": None}})
        t0 = time.perf_counter()
        cached = attach_cache(ccfg, module, s.feats, s.teacher_dir, s.task, device=torch.device("cpu"))
        built = time.perf_counter() - t0
        if cached is None:
            raise RuntimeError("the teacher cache was not attached")
    module.train()
    opts, scheds, clips = build_optimizers(module, OmegaConf.create(OPTIM), total_steps)
    return module, opts, scheds, clips, built


def collate_for(name: str, s: Setup, idx):
    from lad.data.loader import FeaturesDataset, collate

    batch = collate([FeaturesDataset(s.feats)[i] for i in idx], pad_id=s.feats.pad_id)
    if VARIANTS[name][4]:  # reference: fixed padding to 128
        width = batch["input_ids"].shape[1]
        extra = REF_MAX_LEN - width
        if extra > 0:
            pad = {"input_ids": s.feats.pad_id, "attention_mask": 0, "token_type_ids": 0}
            for key, value in pad.items():
                batch[key] = torch.nn.functional.pad(batch[key], (0, extra), value=value)
    return batch


def make_step(name: str, s: Setup, parts):
    module, opts, scheds, clips, _ = parts
    bf16, threads = VARIANTS[name][5], VARIANTS[name][6]
    if threads == "alt":
        threads = alt_threads()

    def step(idx) -> tuple[float, int]:
        """One optimisation step on batch ``idx``; returns (seconds, padded tokens)."""
        previous = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        t0 = time.perf_counter()
        batch = collate_for(name, s, idx)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            loss, _ = module.training_step(batch)
        loss.backward()
        for opt, sch, params in zip(opts, scheds, clips):
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sch.step()
            opt.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            raise RuntimeError(f"variant {name}: loss is {loss.item()}")
        elapsed = time.perf_counter() - t0
        if threads:
            torch.set_num_threads(previous)
        return elapsed, int(batch["input_ids"].numel())

    return step


# ----------------------------------------------------------------------------- measuring
def alt_threads() -> int:
    """Thread count of the ``c_threads`` row: 1 if the run uses several, else all cores."""
    return 1 if torch.get_num_threads() > 1 else (os.cpu_count() or 1)


def describe(name: str) -> str:
    if VARIANTS[name][6] == "alt":
        return f"c with torch.set_num_threads({alt_threads()})"
    return VARIANTS[name][0]


def time_task(task_name: str, variants: list[str], steps: int, warmup: int, work: Path) -> dict:
    t_setup = time.perf_counter()
    s = prepare(task_name, warmup + steps, work)
    print(f"[{task_name}] teacher: {s.teacher_kind}", flush=True)
    print(f"[{task_name}] {len(s.batches)} batches of {BATCH_SIZE} from {len(s.feats)} examples "
          f"(setup {time.perf_counter() - t_setup:.1f} s)", flush=True)
    runs, build_s, cache = {}, None, {}
    for name in variants:
        parts = build_variant(name, s, warmup + steps)
        if parts[4] is not None and build_s is None:
            build_s = parts[4]
            manifest = parts[0].teacher_outputs.store.manifest
            per_token = manifest["bytes"] / max(1, manifest["num_tokens"])
            cache = {"bytes": manifest["bytes"], "full_examples": s.full_examples,
                     "full_gb": per_token * s.full_tokens / 1e9}
            print(f"[{task_name}] teacher cache built in {build_s:.1f} s for {len(s.feats)} examples", flush=True)
        runs[name] = make_step(name, s, parts)
    times = {n: [] for n in variants}
    tokens = {n: 0 for n in variants}
    for i, idx in enumerate(s.batches):
        for name in variants:
            sec, tok = runs[name](idx)
            if i >= warmup:
                times[name].append(sec)
                tokens[name] += tok
        if i == warmup - 1:
            print(f"[{task_name}] warm-up done ({warmup} steps per variant)", flush=True)
        elif i >= warmup and (i - warmup + 1) % 5 == 0:
            print(f"[{task_name}] {i - warmup + 1}/{len(s.batches) - warmup} timed rounds "
                  f"({time.perf_counter() - t_setup:.0f} s)", flush=True)
    n_examples = sum(len(b) for b in s.batches[warmup:])
    rows = {}
    for name in variants:
        total = float(sum(times[name]))
        rows[name] = {"step_s": total / steps, "median_step_s": float(np.median(times[name])),
                      "steps_per_s": steps / total, "examples_per_s": n_examples / total,
                      "padded_tokens_per_step": tokens[name] / steps}
    real_tokens = float(np.mean([s.feats.lengths[np.asarray(b)].sum() for b in s.batches[warmup:]]))
    return {"task": task_name, "teacher": s.teacher_kind, "rows": rows, "cache_build_s": build_s,
            "cache_examples": len(s.feats), "cache": cache, "real_tokens_per_step": real_tokens,
            "mean_len": float(np.mean(s.feats.lengths)), "teacher_dir": str(s.teacher_dir)}


def child_rss(task_name: str, variant: str, steps: int, n_batches: int, work: Path) -> None:
    """Child process: set up, run ``steps`` steps of one variant, print peak RSS (MB) as JSON."""
    s = prepare(task_name, n_batches, work)
    parts = build_variant(variant, s, steps, release_teacher=True)
    s.teacher = None  # what the run keeps: the module's own reference only
    step = make_step(variant, s, parts)
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

    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    flags = ""
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        flags = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in text)
    return {"cpu": cpu, "cores": os.cpu_count(), "isa": flags, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "os": platform.platform()}


def _ratio(x: float, y: float) -> float:
    return x / y if y else float("nan")


def report(results: list[dict], info: dict, command: str, load: tuple, wall: float, args) -> str:
    today = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    busy = max(load[0][0], load[1][0]) > (info["cores"] or 1)
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
        f"- load average (1 min) at start / end: {load[0][0]:.2f} / {load[1][0]:.2f}",
    ]
    if busy:
        lines += ["", "> **Note:** the machine was busy while this ran (load average above the core count: "
                      "other jobs shared the CPUs). Absolute numbers are low and noisy; the variants ran "
                      "round-robin on the same batches, so the ratios are the meaningful part."]
    lines += [
        "",
        f"Setup: 3-layer student (teacher layers copied), batch {BATCH_SIZE}, AdamW, length-bucketed "
        f"batches from the real GLUE training set; {args.warmup} warm-up + {args.steps} timed steps per "
        "variant on the same batches, one step of each variant in turn. Step time includes collation, "
        "forward, backward and the optimiser step.",
        "",
    ]
    for res in results:
        rows = res["rows"]
        lines += [f"## {res['task'].upper()}", "", f"Teacher: {res['teacher']}.", "",
                  f"Mean real tokens per batch {res['real_tokens_per_step']:.0f} "
                  f"(mean example length {res['mean_len']:.1f}).", ""]
        lines += ["| variant | step time (ms) | median (ms) | steps/s | examples/s | padded tokens/step "
                  "| step time vs a | peak RSS (MB) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        a = rows.get("a")
        for name, row in rows.items():
            rss = res.get("rss", {}).get(name)
            rss_s = f"{rss:.0f}" if isinstance(rss, float) and rss == rss else "-"
            rel = f"{_ratio(row['step_s'], a['step_s']):.2f}x" if a else "-"
            lines.append(f"| {name}: {describe(name)} | {row['step_s'] * 1e3:.0f} | "
                         f"{row['median_step_s'] * 1e3:.0f} | {row['steps_per_s']:.2f} | "
                         f"{row['examples_per_s']:.1f} | {row['padded_tokens_per_step']:.0f} | {rel} | {rss_s} |")
        if res.get("cache_build_s") is not None:
            per_k = res["cache_build_s"] / res["cache_examples"] * 1000
            lines += ["", f"Teacher cache build (not in the step times): {res['cache_build_s']:.1f} s for "
                          f"{res['cache_examples']} examples ({per_k:.1f} s per 1000 examples); it is "
                          "reused by every later run, seed and trial on the same teacher and data. "
                          f"Size: {res['cache']['bytes'] / 1e6:.1f} MB here; the whole training split "
                          f"({res['cache']['full_examples']} examples, all 6 layers, float16) would take about "
                          f"{res['cache']['full_gb']:.2f} GB (cache.max_gb default: {DEFAULT_MAX_GB:g} GB; "
                          "above it a run falls back to the online teacher)."]
        if all(k in rows for k in CORE):
            b_a = _ratio(rows["b"]["step_s"], rows["a"]["step_s"])
            c_a = _ratio(rows["c"]["step_s"], rows["a"]["step_s"])
            c_d = _ratio(rows["c"]["examples_per_s"], rows["d"]["examples_per_s"])
            res["ratios"] = {"b/a": b_a, "c/a": c_a, "c/d": c_d}
            ok1, ok2 = c_a <= 1.15, c_d >= 3.0
            res["targets"] = {"c/a<=1.15": ok1, "c/d>=3": ok2}
            lines += ["", "Ratios:", "",
                      f"- b/a step time (LAD online vs plain fine-tune): **{b_a:.2f}x**",
                      f"- c/a step time (LAD cached vs plain fine-tune): **{c_a:.2f}x** — target <= 1.15x: "
                      f"**{'met' if ok1 else 'MISSED'}**",
                      f"- c/d examples/s (LAD cached vs reference settings): **{c_d:.2f}x** — target >= 3x: "
                      f"**{'met' if ok2 else 'MISSED'}**"]
        extra = [n for n in rows if n not in CORE]
        if extra:
            lines += ["", "Optional settings (same batches):", ""]
            for name in extra:
                base = name.split("_")[0]
                if base in rows:
                    lines.append(f"- {name} ({describe(name)}): step time "
                                 f"{_ratio(rows[name]['step_s'], rows[base]['step_s']):.2f}x of {base}")
        lines.append("")
    lines += ["## Summary", ""]
    for res in results:
        if "targets" in res:
            t = res["targets"]
            lines.append(f"- {res['task'].upper()}: LAD+cache step <= 1.15 x plain fine-tune step: "
                         f"{'met' if t['c/a<=1.15'] else 'missed'} ({res['ratios']['c/a']:.2f}x); "
                         f"LAD+cache >= 3 x reference examples/s: "
                         f"{'met' if t['c/d>=3'] else 'missed'} ({res['ratios']['c/d']:.2f}x)")
    lines += ["", "## Optional settings", ""] + conclusions(results, busy) + [""]
    return "\n".join(lines)


def conclusions(results: list[dict], busy: bool) -> list[str]:
    """One generated line per optional setting, from the measured ratios."""
    out = []
    for base, name in (("a", "a_bf16"), ("c", "c_threads")):
        ratios = [_ratio(r["rows"][name]["step_s"], r["rows"][base]["step_s"])
                  for r in results if name in r["rows"] and base in r["rows"]]
        if not ratios:
            continue
        shown = ", ".join(f"{x:.2f}x" for x in ratios)
        if name == "a_bf16":
            verdict = ("helps: consider enabling it" if max(ratios) < 0.9 else
                       "does not help the student step on this CPU: it stays off")
            out.append(f"- bf16 autocast (CPU): step time {shown} of fp32 — {verdict}.")
        else:
            run_threads, other = torch.get_num_threads(), alt_threads()
            one = [x if other == 1 else 1.0 / x for x in ratios]  # 1 thread relative to several
            if max(one) < 1.0:
                verdict = (f"1 thread was faster than {max(run_threads, other)}"
                           + (", most likely because other jobs oversubscribed the CPUs and PyTorch's "
                              "threads waited on each other: keep `trainer.num_threads: null` (PyTorch default) on a "
                              "dedicated machine and set `trainer.num_threads=1` on a shared, busy one"
                              if busy else ": consider `trainer.num_threads=1`"))
            elif min(one) > 1.0:
                verdict = f"{max(run_threads, other)} threads were faster: keep `trainer.num_threads: null`"
            else:
                verdict = "no consistent difference: keep `trainer.num_threads: null`"
            out.append(f"- c with {other} thread(s) instead of {run_threads}: step time {shown} — {verdict}.")
    out.append("- torch.compile: not timed. Bucketed batches change the sequence length at nearly every "
               "step, so the compiled graph is re-specialised or made dynamic, and compiling takes minutes "
               "on 2 cores — more than a short run saves; it stays off.")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", action="append", choices=["rte", "sst2", "mrpc", "cola", "qnli"],
                        help="task(s) to measure (default: rte and sst2)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps per variant (default 3)")
    parser.add_argument("--no-extras", action="store_true", help="skip the bf16 / 1-thread rows")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: PyTorch's default)")
    parser.add_argument("--no-rss", action="store_true", help="skip the per-variant peak-RSS child runs")
    parser.add_argument("--rss-steps", type=int, default=3, help="steps per peak-RSS child run (default 3)")
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "performance.md"), help="report file ('' = none)")
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
    tasks = args.task or ["rte", "sst2"]
    variants = list(CORE) + ([] if args.no_extras else ["a_bf16", "c_threads"])
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python benchmarks/step_time.py", *given])
    info = machine_info()
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="lad-bench-") as tmp:
        work = Path(tmp)
        for task_name in tasks:
            res = time_task(task_name, variants, args.steps, args.warmup, work)
            if not args.no_rss:
                res["rss"] = measure_rss(task_name, list(CORE), args.rss_steps, args.warmup + args.steps, work)
            results.append(res)
            for name, row in res["rows"].items():
                print(f"[{task_name}] {name:10s} {row['step_s'] * 1e3:8.1f} ms/step  "
                      f"{row['examples_per_s']:7.1f} ex/s  rss {res.get('rss', {}).get(name, float('nan')):.0f} MB",
                      flush=True)
    text = report(results, info, command, (load_start, os.getloadavg()), time.perf_counter() - t0, args)
    print(text)
    if args.out:
        write_text(args.out, text)
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
