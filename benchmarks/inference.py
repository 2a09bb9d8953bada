"""CPU inference of a teacher and its students: PyTorch fp32, onnxruntime fp32 and int8 (not a test).

    python benchmarks/inference.py --teacher outputs/train_teacher/sst2/<dir> \\
        --student 3layer=outputs/distil/sst2/<dir> --student 2layer=outputs/distil/sst2/<dir> --threads 1

Every model is a finished run directory (``model/``, ``config.yaml``, ``metrics.json``). Each one is
exported to ONNX and quantized to int8 exactly as ``python -m lad.deploy --onnx --int8`` does, and all
(model, backend) cells are measured in one process with ``lad.deploy.inference``'s protocol (batch-1 latency
at the dev set's median length, batch-32 throughput over the length-sorted dev set), round-robin:
each round measures every cell once, so a busy machine slows them alike; a cell's numbers are the
medians over the rounds. Dev scores are computed on the whole dev split for every cell. Ratios are
to the teacher in PyTorch fp32. The page (``--out``, default ``docs/benchmarks/inference.md``), a JSON
of every number and a score-vs-throughput plot are written by this script; nothing is typed in.

Goals checked (issue "Deployable students"): the 3-layer student reaches >= 1.9x the teacher's
PyTorch fp32 throughput; an int8 onnxruntime student reaches >= 4x the teacher's PyTorch fp32
throughput while losing <= 0.5 points of dev score against the same student in PyTorch fp32.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402 - after the environment defaults above
from omegaconf import OmegaConf  # noqa: E402

from lad.core.fileio import write_json, write_text  # noqa: E402

BACKENDS = ("pytorch-fp32", "onnxruntime-fp32", "onnxruntime-int8")
GOAL_3LAYER_THROUGHPUT = 1.9
GOAL_INT8_THROUGHPUT = 4.0
GOAL_INT8_MAX_LOSS_POINTS = 0.5


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", required=True, help="finished train_teacher.py run directory")
    p.add_argument("--student", action="append", default=[], metavar="NAME=DIR",
                   help="finished distil.py run directory (repeat), e.g. 3layer=outputs/distil/sst2/...")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for every backend (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="round-robin rounds (default 3)")
    p.add_argument("--latency-runs", type=int, default=100, help="batch-1 calls per cell and round")
    p.add_argument("--throughput-examples", type=int, default=0, help="dev examples per cell and round (0 = all)")
    p.add_argument("--data-dir", default=None, help="GLUE folder (default: each run's data.data_dir)")
    p.add_argument("--work", default=None, help="folder for the ONNX files (default: a temporary folder)")
    p.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "inference.md"))
    return p.parse_args(argv)


def load_run(run_dir: Path) -> dict:
    cfg = OmegaConf.load(run_dir / "config.yaml")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    get = lambda key: OmegaConf.select(cfg, key, default=None)  # noqa: E731
    return {"dir": run_dir, "cfg": cfg, "metrics": metrics, "entry": get("entry"),
            "layers": json.loads((run_dir / "model" / "config.json").read_text())["num_hidden_layers"],
            "method": (f"{get('loss.name')}/{get('gate.name')}" if get("entry") == "distil" else "fine-tuned"),
            "train_samples": get("data.max_train_samples"), "epochs": get("trainer.epochs"),
            "max_steps": get("trainer.max_steps"), "steps": metrics.get("steps"),
            "train_wall_s": metrics.get("wall_s"), "train_threads": get("trainer.num_threads"),
            "train_best": metrics.get("best", {}).get(metrics.get("main_metric"))}


def main(argv=None) -> int:
    args = parse_args(argv)
    import onnxruntime
    import torch

    from lad.core.runtime import machine
    from lad.deploy.export import dev_features, from_run_dir, score
    from lad.deploy.inference import dir_size_mb, load_cpu_model, measure_speed, ort_runner, param_counts, torch_runner
    from lad.deploy.onnx_export import all_logits, export_onnx, quantize_int8

    torch.set_num_threads(args.threads)
    names = [("teacher", Path(args.teacher))]
    for item in args.student:
        name, _, path = item.partition("=")
        names.append((name, Path(path)))
    load_before = os.getloadavg()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="lad-bench-"))
    models, cells = {}, {}
    for name, run_dir in names:
        src = from_run_dir(run_dir)
        split, feats, _ = dev_features(src, args.data_dir, None)
        run = load_run(run_dir)
        model = load_cpu_model(src.model_dir)
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        onnx_path = export_onnx(src.model_dir, folder / "model.onnx")
        int8_path = quantize_int8(onnx_path, folder / "model.int8.onnx")
        run.update(param_counts(model), task=src.task, split=split, feats=feats, size_mb={
            "pytorch-fp32": dir_size_mb(next(src.model_dir.glob("*.safetensors"))),
            "onnxruntime-fp32": dir_size_mb(onnx_path), "onnxruntime-int8": dir_size_mb(int8_path)})
        models[name] = run
        runners = {"pytorch-fp32": torch_runner(model), "onnxruntime-fp32": ort_runner(onnx_path, args.threads),
                   "onnxruntime-int8": ort_runner(int8_path, args.threads)}
        ref = None
        for backend, runner in runners.items():
            logits = all_logits(runner, feats)
            ref = logits if ref is None else ref
            cells[name, backend] = {"runner": runner, "score": score(src.task, split, logits, feats.labels),
                                    "max_abs_logit_diff": float(np.abs(logits - ref).max()), "rounds": []}
        print(f"[bench] {name}: exported, dev scores "
              + ", ".join(f"{b} {cells[name, b]['score']:.4f}" for b in BACKENDS), flush=True)
    for r in range(args.rounds):
        for (name, backend), cell in cells.items():
            cell["rounds"].append(measure_speed(cell["runner"], models[name]["feats"], warmup=5,
                                                latency_runs=args.latency_runs,
                                                throughput_examples=args.throughput_examples or None,
                                                batch_size=32, threads=args.threads))
        print(f"[bench] round {r + 1}/{args.rounds} done", flush=True)
    load_after = os.getloadavg()
    for cell in cells.values():
        for key in ("latency_ms_p50", "latency_ms_p90", "throughput_examples_per_s"):
            cell[key] = float(np.median([rnd[key] for rnd in cell["rounds"]]))
        cell["latency_seq_len"] = cell["rounds"][0]["latency_seq_len"]
    base = cells["teacher", "pytorch-fp32"]
    for (name, backend), cell in cells.items():  # ratios within each round (same load), median over rounds
        tput = [c["throughput_examples_per_s"] / b["throughput_examples_per_s"]
                for c, b in zip(cell["rounds"], base["rounds"])]
        lat = [b["latency_ms_p50"] / c["latency_ms_p50"] for c, b in zip(cell["rounds"], base["rounds"])]
        cell["throughput_x"], cell["throughput_x_range"] = float(np.median(tput)), (min(tput), max(tput))
        cell["latency_x"], cell["latency_x_range"] = float(np.median(lat)), (min(lat), max(lat))
        cell["points_vs_own_fp32"] = 100 * (cell["score"] - cells[name, "pytorch-fp32"]["score"])
        cell["points_vs_teacher"] = 100 * (cell["score"] - base["score"])
    verdicts = goal_verdicts(models, cells)
    for line in verdicts:
        print(line, flush=True)
    env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": machine(), "threads": args.threads, "rounds": args.rounds,
           "latency_runs": args.latency_runs, "load_before": load_before, "load_after": load_after,
           "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
           "command": "python benchmarks/inference.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))}
    out = Path(args.out)
    plot = plot_pareto(models, cells, out.with_suffix(".png"))
    write_json(out.with_suffix(".json"), {
        "env": env, "verdicts": verdicts,
        "models": {n: {k: v for k, v in m.items() if k not in ("cfg", "feats", "task", "dir")} | {"dir": str(m["dir"])}
                   for n, m in models.items()},
        "cells": [{"model": n, "backend": b, **{k: v for k, v in c.items() if k != "runner"}}
                  for (n, b), c in cells.items()]})
    write_text(out, page(models, cells, verdicts, env, plot))
    print(f"[bench] wrote {out}", flush=True)
    return 0


def goal_verdicts(models: dict, cells: dict) -> list[str]:
    lines = []
    three = [n for n, m in models.items() if n != "teacher" and m["layers"] == 3]
    for name in three:
        x = cells[name, "pytorch-fp32"]["throughput_x"]
        lines.append(f"- **{'met' if x >= GOAL_3LAYER_THROUGHPUT else 'not met'}**: {name} student in PyTorch fp32 "
                     f">= {GOAL_3LAYER_THROUGHPUT}x the teacher's throughput: {x:.2f}x")
    if not three:
        lines.append("- 3-layer goal: no 3-layer student given")
    for name in (n for n in models if n != "teacher"):
        cell = cells[name, "onnxruntime-int8"]
        ok = cell["throughput_x"] >= GOAL_INT8_THROUGHPUT and cell["points_vs_own_fp32"] >= -GOAL_INT8_MAX_LOSS_POINTS
        lines.append(f"- **{'met' if ok else 'not met'}**: {name} student in onnxruntime int8 >= "
                     f"{GOAL_INT8_THROUGHPUT}x the teacher's PyTorch fp32 throughput, losing <= "
                     f"{GOAL_INT8_MAX_LOSS_POINTS} points of dev score against its PyTorch fp32 self: "
                     f"{cell['throughput_x']:.2f}x, {cell['points_vs_own_fp32']:+.2f} points "
                     f"({cell['points_vs_teacher']:+.2f} vs the teacher)")
    return lines


def plot_pareto(models: dict, cells: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    markers = dict(zip(BACKENDS, "os^"))
    for name in models:
        xs = [cells[name, b]["throughput_examples_per_s"] for b in BACKENDS]
        ys = [100 * cells[name, b]["score"] for b in BACKENDS]
        ax.plot(xs, ys, color="0.8", zorder=1)
        for b, x, y in zip(BACKENDS, xs, ys):
            ax.scatter([x], [y], marker=markers[b], zorder=2, label=b if name == "teacher" else None)
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    task = next(iter(models.values()))["task"].name
    ax.set_xscale("log")
    ax.set_xlabel("throughput, examples/s at batch 32 (log)")
    ax.set_ylabel(f"{task} dev score (x100)")
    ax.set_title(f"{task}: dev score vs CPU throughput")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def page(models: dict, cells: dict, verdicts: list[str], env: dict, plot: Path) -> str:
    teacher = models["teacher"]
    task, split = teacher["task"], teacher["split"]
    metric = task.main_metric
    lines = [
        "# Inference: teacher vs students on the CPU", "",
        f"Generated by `benchmarks/inference.py` on {env['date']}; do not edit by hand. Command:", "",
        f"    {env['command']}", "",
        f"Machine: {env['machine']}; {env['threads']} intra-op thread(s) for every backend; torch {env['torch']}, "
        f"onnxruntime {env['onnxruntime']}, Python {env['python']}. Load average (1/5/15 min) "
        f"{'/'.join(f'{v:.1f}' for v in env['load_before'])} before and "
        f"{'/'.join(f'{v:.1f}' for v in env['load_after'])} after the run: the machine was shared, so "
        "absolute numbers are noisy; the cells were measured round-robin "
        f"({env['rounds']} rounds, medians shown), so the ratios are the robust part.", "",
        f"Protocol (`lad.deploy.inference`): latency = batch 1, the {split} example at the median length "
        f"({cells['teacher', 'pytorch-fp32']['latency_seq_len']} tokens), {env['latency_runs']} calls per round "
        f"after 5 warm-up calls; throughput = batch 32 over the {split} split "
        f"({len(teacher['feats'])} examples) in length-sorted batches with dynamic padding. ONNX export and "
        "int8 quantization as `python -m lad.deploy --onnx --int8` (TorchScript exporter, opset 17; "
        "onnxruntime dynamic int8 quantization). Dev scores on the whole split for every cell.", "",
        "## Models", "",
        f"Small models trained for this page only ({task.name}, "
        f"`data.max_train_samples` as listed, `trainer.num_threads` as listed, `mlflow=off`); the students "
        "were distilled from this teacher. Their scores are below those of full-data training; what the page "
        "measures is speed and what export and quantization cost.", "",
        f"| model | run | layers | params | params w/o embeddings | train samples | epochs | steps | "
        f"training wall s (threads) | best dev {metric} (training run) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in models.items():
        lines.append(f"| {name} | `{m['dir']}` ({m['method']}) | {m['layers']} | {m['params_total']:,} | "
                     f"{m['params_non_embedding']:,} | {m['train_samples']} | {m['epochs']} | {m['steps']} | "
                     f"{m['train_wall_s']:.0f} ({m['train_threads']}) | {m['train_best']:.4f} |")
    lines += [
        "", "## Results", "",
        f"× = ratio to the teacher in PyTorch fp32 (throughput: examples/s ratio; latency: p50 speed-up), "
        "taken within each round and shown as the median over the rounds [lowest–highest round]; "
        f"ms and examples/s are medians over the rounds. Δ = dev {metric} change in points against the same "
        "model in PyTorch fp32.", "",
        f"| model | backend | size MiB | dev {metric} | Δ points | p50 ms | p90 ms | latency × | examples/s | "
        "throughput × | max \\|Δ logit\\| |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (name, backend), c in cells.items():
        lines.append(f"| {name} | {backend} | {models[name]['size_mb'][backend]:.1f} | {c['score']:.4f} | "
                     f"{c['points_vs_own_fp32']:+.2f} | {c['latency_ms_p50']:.2f} | {c['latency_ms_p90']:.2f} | "
                     f"{c['latency_x']:.2f} [{c['latency_x_range'][0]:.2f}–{c['latency_x_range'][1]:.2f}] | "
                     f"{c['throughput_examples_per_s']:.1f} | {c['throughput_x']:.2f} "
                     f"[{c['throughput_x_range'][0]:.2f}–{c['throughput_x_range'][1]:.2f}] | "
                     f"{c['max_abs_logit_diff']:.1e} |")
    lines += ["", "## Goals", "", *verdicts, "", f"![dev score vs throughput]({plot.name})", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
