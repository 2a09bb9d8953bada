"""Export a finished model for deployment: ONNX, int8, parity check, speed, model card, MLflow.

    python -m lad.deploy outputs/distil/sst2/student=3layer --onnx --int8
    python -m lad.deploy models:/lad-teacher-sst2/1 --onnx --tracking-uri sqlite:///mlruns.db

SOURCE is a run directory written by ``train_teacher.py`` or ``distil.py`` (its ``model/``,
``config.yaml`` and ``metrics.json``) or an MLflow model URI (``models:/name/version``,
``runs:/id/model``) logged by LAD. The export folder (``--out``, default ``<run dir>/export``)
receives ``model.onnx`` (``--onnx``), ``model.int8.onnx`` (``--int8``, implies ``--onnx``), the
tokenizer and ``config.json``, ``deploy.json`` (every number) and ``README.md`` (the model card).
The folder is logged to the source's MLflow run under ``export/`` with ``deploy/*`` metrics.

Exit status: 0 done, 1 the ONNX model does not reproduce PyTorch's logits within ``--tolerance``,
2 a bad input (one ``error:`` line).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from lad.core.config import REPO_ROOT, register_resolvers, setup_environment
from lad.core.errors import ConfigError
from lad.core.fileio import write_json, write_text

log = logging.getLogger(__name__)

ONNX_NAME, INT8_NAME = "model.onnx", "model.int8.onnx"


@dataclass
class Source:
    """What is exported and what the card says about it."""

    model_dir: Path
    task: object                 # lad.data.tasks.TaskSpec
    facts: dict                  # teacher, method, budget, scores (strings and numbers for the card)
    default_out: Path
    data_dir: str | None = None
    max_eval_samples: int | None = None
    run_id: str | None = None
    tracking_uri: str | None = None
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- sources
def _budget(get) -> dict:
    keys = ("trainer.max_steps", "trainer.epochs", "data.max_train_samples", "optim.batch_size", "seed")
    return {k: get(k) for k in keys}


def from_run_dir(path: Path) -> Source:
    from lad.data.tasks import TaskSpec
    from lad.tracking.tracker import method_label

    if not path.is_dir():
        raise ConfigError(f"{path}: no such run directory")
    model_dir = path / "model"
    if not (path / "metrics.json").is_file() or not (model_dir / "config.json").is_file():
        raise ConfigError(f"{path} holds no finished model (metrics.json and model/ are written when "
                          "train_teacher.py or distil.py finishes)")
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"{path} has no config.yaml: not a LAD run directory")
    cfg = OmegaConf.load(path / "config.yaml")
    metrics = json.loads((path / "metrics.json").read_text())
    entry = str(cfg.get("entry", metrics.get("entry", "?")))
    get = lambda key: OmegaConf.select(cfg, key, default=None)  # noqa: E731
    method = f"{method_label(cfg)}/{cfg.student.name}" if "student" in cfg else "teacher (fine-tuned)"
    teacher = get("teacher.backbone") if entry == "train_teacher" else (get("teacher.path") or get("teacher.uri"))
    facts = {
        "entry": entry, "method": method, "teacher": str(teacher),
        "teacher_name": get("teacher.name"), "gate": get("gate.name"), "loss": get("loss.name"),
        "student_layers": get("student.num_layers"), "budget": _budget(get),
        "steps": metrics.get("steps"), "best_step": metrics.get("best_step"),
        "best": metrics.get("best", {}), "main_metric": metrics.get("main_metric"),
        "source": str(path), "run_inference": metrics.get("inference"),
    }
    run_id_file = path / "mlflow_run_id"
    enabled = bool(get("mlflow.enabled"))
    return Source(model_dir, TaskSpec.from_config(cfg.task), facts, path / "export",
                  data_dir=get("data.data_dir"), max_eval_samples=get("data.max_eval_samples"),
                  run_id=run_id_file.read_text().strip() if enabled and run_id_file.exists() else None,
                  tracking_uri=str(get("mlflow.tracking_uri")) if enabled else None)


def from_model_uri(uri: str, tracking_uri: str) -> Source:
    from mlflow.tracking import MlflowClient

    from lad.data.tasks import TaskSpec
    from lad.models.from_mlflow import hf_dir_of
    from lad.tracking.store import connect

    mlflow = connect(OmegaConf.create({"tracking_uri": tracking_uri}))
    try:
        info = mlflow.models.get_model_info(uri)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except Exception as exc:  # noqa: BLE001 - any failure here is "no such model"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot load {uri} from MLflow: {first[:200]}") from exc
    model_dir = hf_dir_of(local)
    run = MlflowClient().get_run(info.run_id)
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    task_name = params.get("task.name") or tags.get("lad.task")
    task_file = REPO_ROOT / "conf" / "task" / f"{task_name}.yaml"
    if not task_file.is_file():
        raise ConfigError(f"{uri}: its run names no known task (task.name={task_name!r})")
    entry = tags.get("lad.entry", "?")
    facts = {
        "entry": entry, "method": tags.get("lad.method", "?"),
        "teacher": params.get("teacher.backbone") if entry == "train_teacher" else params.get("teacher.path"),
        "teacher_name": params.get("teacher.name"), "gate": params.get("gate.name"),
        "loss": params.get("loss.name"), "student_layers": params.get("student.num_layers"),
        "budget": _budget(params.get), "steps": None, "best_step": None,
        "best": {k[len("best/"):]: v for k, v in metrics.items() if k.startswith("best/")},
        "main_metric": params.get("task.main_metric"), "source": uri, "run_inference": None,
    }
    slug = uri.split(":/", 1)[-1].strip("/").replace("/", "-") or "model"
    return Source(model_dir, TaskSpec.from_config(OmegaConf.load(task_file)), facts,
                  Path("exports") / slug, run_id=info.run_id, tracking_uri=tracking_uri)


def resolve_source(text: str, tracking_uri: str) -> Source:
    if text.startswith(("models:/", "runs:/")):
        return from_model_uri(text, tracking_uri)
    if "://" in text:
        raise ConfigError(f"{text}: expected a run directory or a models:/ or runs:/ URI")
    return from_run_dir(Path(text).expanduser())


def writable_dir(path: Path) -> Path:
    """Create ``path`` and prove a file can be written there, before any heavy work."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".lad-write-test."):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write the export to {path}: {exc.strerror or exc}") from exc
    return path


# ----------------------------------------------------------------------------- measuring
def dev_features(src: Source, data_dir: str | None, max_samples: int | None):
    from lad.data.features import load_features
    from lad.data.glue import resolve_data_dir
    from lad.data.tasks import eval_splits
    from lad.models.teacher import load_tokenizer

    task = src.task
    split = eval_splits(task)[0]
    tokenizer = load_tokenizer(src.model_dir)
    feats = load_features(task, resolve_data_dir(data_dir or src.data_dir), split, tokenizer,
                          int(task.max_seq_length), None, max_samples)
    return split, feats, tokenizer


def score(task, split: str, logits, labels) -> float:
    from lad.data.metrics import compute_split_metrics, predictions_from_logits

    metrics = compute_split_metrics(task, {split: (predictions_from_logits(task, logits), labels)})
    return float(metrics.get(task.main_metric, next(iter(metrics.values()))))


def check_tolerance(value: float) -> float:
    import math

    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"--tolerance must be a finite number >= 0 (the largest accepted |logit difference|), "
                          f"got {value}")
    return value


def check_out(out: Path, model_dir: Path) -> Path:
    """The export folder is a folder of its own: not the model's folder, inside it, or above it."""
    out_r, model_r = out.absolute().resolve(), Path(model_dir).absolute().resolve()
    if out_r == model_r or model_r in out_r.parents or out_r in model_r.parents:
        raise ConfigError(f"--out {out} overlaps the model folder {model_dir}: the export would write over "
                          "the run's own files; give the export a folder of its own (default: <run dir>/export)")
    return out


def deploy(args) -> int:
    register_resolvers()  # a run's config.yaml may hold ${lad_...:} values left unresolved
    setup_environment()
    check_tolerance(args.tolerance)
    src = resolve_source(args.source, args.tracking_uri)
    if args.int8:
        args.onnx = True
    if args.onnx:
        from lad.deploy.onnx_export import check_supported

        check_supported(src.model_dir)
    out = writable_dir(check_out(Path(args.out).expanduser() if args.out else src.default_out, src.model_dir))
    log_to_mlflow = bool(src.run_id and src.tracking_uri and not args.no_mlflow)
    if log_to_mlflow:
        from lad.tracking.store import connect

        connect(OmegaConf.create({"tracking_uri": src.tracking_uri}))
    from lad.core.runtime import machine, set_threads
    from lad.deploy import inference as inf
    from lad.deploy.onnx_export import all_logits

    # one thread count for every backend compared (PyTorch's intra-op pool and each onnxruntime session)
    threads = set_threads(args.threads or None)
    split, feats, tokenizer = dev_features(src, args.data_dir, args.max_eval_samples or src.max_eval_samples)
    task = src.task
    timing = {**inf.DEFAULTS, "latency_runs": args.latency_runs, "throughput_examples": args.throughput_examples,
              "threads": threads}
    model = inf.load_cpu_model(src.model_dir)
    torch_run = inf.torch_runner(model)
    ref_logits = all_logits(torch_run, feats)
    metric = task.main_metric
    rows = {"pytorch-fp32": {**inf.measure_speed(torch_run, feats, **timing),
                             "score": score(task, split, ref_logits, feats.labels),
                             "size_mb": inf.dir_size_mb(weights_of(src.model_dir))}}
    report = {"source": src.facts["source"], "task": task.name, "split": split, "metric": metric,
              "dev_examples": len(feats), **inf.param_counts(model),
              "model_dir_size_mb": inf.dir_size_mb(src.model_dir), "threads": threads,
              "machine": machine(), "backends": rows, "files": []}
    base = rows["pytorch-fp32"]
    print(f"[lad.deploy] {task.name} {split}: PyTorch fp32 {metric} {base['score']:.4f}, "
          f"p50 {base['latency_ms_p50']:.2f} ms, {base['throughput_examples_per_s']:.1f} examples/s "
          f"({report['threads']} threads)", flush=True)
    status = 0
    if args.onnx:
        from lad.deploy.onnx_export import export_onnx

        path = export_onnx(src.model_dir, out / ONNX_NAME)
        run = inf.ort_runner(path, threads)
        logits = all_logits(run, feats)
        diff = float(abs(logits - ref_logits).max())
        row = {**inf.measure_speed(run, feats, **timing), "score": score(task, split, logits, feats.labels),
               "size_mb": inf.dir_size_mb(path), "max_abs_logit_diff": diff}
        ok = diff <= args.tolerance and row["score"] == base["score"]
        row["parity_ok"] = ok
        rows["onnxruntime-fp32"] = row
        report["files"].append(ONNX_NAME)
        print(f"[lad.deploy] ONNX parity on {len(feats)} dev examples: max |Δ logit| = {diff:.2e} "
              f"(tolerance {args.tolerance:.0e}), {metric} {row['score']:.4f} vs PyTorch {base['score']:.4f}: "
              f"{'ok' if ok else 'FAILED'}", flush=True)
        status = 0 if ok else 1
    if args.int8:
        from lad.deploy.onnx_export import quantize_int8

        path = quantize_int8(out / ONNX_NAME, out / INT8_NAME)
        run = inf.ort_runner(path, threads)
        logits = all_logits(run, feats)
        row = {**inf.measure_speed(run, feats, **timing), "score": score(task, split, logits, feats.labels),
               "size_mb": inf.dir_size_mb(path), "max_abs_logit_diff": float(abs(logits - ref_logits).max())}
        rows["onnxruntime-int8"] = row
        report["files"].append(INT8_NAME)
        print(f"[lad.deploy] int8: {metric} {row['score']:.4f} ({100 * (row['score'] - base['score']):+.2f} points), "
              f"throughput {ratio(row, base):.2f}x PyTorch fp32, p50 latency "
              f"{base['latency_ms_p50'] / row['latency_ms_p50']:.2f}x faster", flush=True)
    for row in rows.values():
        row["throughput_vs_pytorch_fp32"] = ratio(row, base)
        row["latency_p50_speedup_vs_pytorch_fp32"] = base["latency_ms_p50"] / row["latency_ms_p50"]
        row["score_change_points"] = 100 * (row["score"] - base["score"])
    tokenizer.save_pretrained(out)
    shutil.copy2(src.model_dir / "config.json", out / "config.json")
    report["facts"] = {k: v for k, v in src.facts.items() if k != "run_inference"}
    write_json(out / "deploy.json", report)
    write_text(out / "README.md", model_card(src, report))
    print(f"[lad.deploy] wrote {', '.join(report['files'] + ['README.md', 'deploy.json'])} to {out}", flush=True)
    if log_to_mlflow:
        log_export(src, out, rows)
    return status


def weights_of(model_dir: Path) -> Path:
    files = sorted(model_dir.glob("*.safetensors"))
    return files[0] if len(files) == 1 else model_dir


def ratio(row: dict, base: dict) -> float:
    return row["throughput_examples_per_s"] / base["throughput_examples_per_s"]


def log_export(src: Source, out: Path, rows: dict) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.log_artifacts(src.run_id, str(out), "export")
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(f"deploy/{name}/{key}", float(row[key]), now, 0) for name, row in rows.items()
               for key in ("score", "latency_ms_p50", "throughput_examples_per_s", "size_mb",
                           "throughput_vs_pytorch_fp32") if key in row]
    client.log_batch(src.run_id, metrics=metrics)
    print(f"[lad.deploy] logged the export to MLflow run {src.run_id} (artifacts export/)", flush=True)


# ----------------------------------------------------------------------------- model card
def model_card(src: Source, report: dict) -> str:
    f, rows = src.facts, report["backends"]
    budget = ", ".join(f"{k}={v}" for k, v in f["budget"].items() if v not in (None, "None"))
    best = ", ".join(f"{k} {v:.4f}" for k, v in sorted(f["best"].items())
                     if isinstance(v, (int, float)) and not k.startswith("loss"))
    lines = [
        f"# {src.task.name} classifier: {f['method']}",
        "",
        f"Exported by `python -m lad.deploy` from `{f['source']}`.",
        "",
        "| | |", "|---|---|",
        f"| task | {src.task.name} ({len(src.task.labels) if not src.task.is_regression else 1} outputs, "
        f"max length {src.task.max_seq_length}) |",
        f"| produced by | {'train_teacher.py (fine-tuned teacher)' if f['entry'] == 'train_teacher' else 'distil.py'} |",
        f"| teacher | {f['teacher_name'] or '?'}: `{f['teacher']}` |",
        f"| method | {f['method']}" + (f" (gate={f['gate']}, loss={f['loss']})" if f.get("gate") else "") + " |",
        f"| budget | {budget or '?'}" + (f"; trained {f['steps']} steps, best at step {f['best_step']}"
                                        if f.get("steps") is not None else "") + " |",
        f"| dev scores (training run) | {best or '?'} |",
        f"| parameters | {report['params_total']:,} total, {report['params_non_embedding']:,} without embeddings |",
        f"| size on disk | PyTorch weights {rows['pytorch-fp32']['size_mb']:.1f} MiB"
        + "".join(f", {name} {row['size_mb']:.1f} MiB" for name, row in rows.items() if name != "pytorch-fp32")
        + " |",
        "",
        f"## Speed and score on {report['split']} ({report['dev_examples']} examples)",
        "",
        f"CPU: {report['machine']}; {report['threads']} thread(s). Latency: batch 1 at the median length "
        f"({rows['pytorch-fp32']['latency_seq_len']} tokens); throughput: batch "
        f"{rows['pytorch-fp32']['throughput_batch_size']}, length-sorted batches with dynamic padding.",
        "",
        f"| backend | {report['metric']} | Δ points | p50 ms | p90 ms | examples/s | × PyTorch fp32 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['score']:.4f} | {row['score_change_points']:+.2f} | "
                     f"{row['latency_ms_p50']:.2f} | {row['latency_ms_p90']:.2f} | "
                     f"{row['throughput_examples_per_s']:.1f} | {row['throughput_vs_pytorch_fp32']:.2f} |")
    onnx = rows.get("onnxruntime-fp32")
    if onnx:
        lines += ["", f"ONNX parity: max |Δ logit| vs PyTorch = {onnx['max_abs_logit_diff']:.2e} over the split "
                  f"({'same' if onnx['score'] == rows['pytorch-fp32']['score'] else 'different'} dev score)."]
    if report["files"]:
        first = report["files"][-1]
        lines += [
            "", "## Use", "", "```python",
            "import numpy as np, onnxruntime as ort",
            "from transformers import AutoTokenizer",
            "tok = AutoTokenizer.from_pretrained('.')",
            f"sess = ort.InferenceSession('{first}', providers=['CPUExecutionProvider'])",
            "enc = tok(['a sentence'], return_tensors='np')",
            "feed = {i.name: enc[i.name].astype(np.int64) for i in sess.get_inputs()}",
            "logits = sess.run(['logits'], feed)[0]",
            "```",
        ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lad.deploy", description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="run directory (outputs/...) or MLflow model URI (models:/name/version)")
    p.add_argument("--onnx", action="store_true", help="export model.onnx and check it against PyTorch")
    p.add_argument("--int8", action="store_true", help="also write model.int8.onnx (dynamic int8; implies --onnx)")
    p.add_argument("--out", help="export folder (default: <run dir>/export, or exports/<name>-<version>)")
    p.add_argument("--data-dir", help="GLUE folder (default: the run's data.data_dir)")
    p.add_argument("--max-eval-samples", type=int, help="use only the first N dev examples")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads of every backend timed, the same for all (default 1, as "
                        "docs/benchmarks/performance.md; 0 = PyTorch's default)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted |Δ logit| (default 1e-4)")
    p.add_argument("--latency-runs", type=int, default=200, help="batch-1 calls timed (default 200)")
    p.add_argument("--throughput-examples", type=int, default=0,
                   help="dev examples timed at batch 32 (default 0 = the whole split)")
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlruns.db"),
                   help="MLflow store of a models:/ URI (default $MLFLOW_TRACKING_URI or sqlite:///mlruns.db)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the export to the MLflow run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from lad.core.guard import guarded

    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return guarded(deploy, args)


if __name__ == "__main__":
    sys.exit(main())
