"""How big and how fast a saved classifier is on the CPU: parameters, size on disk, latency, throughput.

One measurement protocol for every backend, so PyTorch, onnxruntime fp32 and onnxruntime int8 are
compared on equal terms (``lad.deploy.export`` and ``benchmarks/inference.py`` use the same functions as the
end of every run):

* **latency**: batch 1, the dev example whose length is closest to the split's median token count,
  repeated ``latency_runs`` times after ``warmup`` calls; p50 and p90 in milliseconds.
* **throughput**: batch ``batch_size`` over (an evenly spaced subset of ``throughput_examples``)
  dev examples in length-sorted batches with dynamic padding (the way ``predict_logits`` batches
  them), after a warm-up batch; examples per second.
* the thread count in use is recorded with the numbers (``torch.get_num_threads()``; onnxruntime
  sessions are given the same count).

A *runner* is any callable ``runner(batch) -> logits`` taking a dict of int64 numpy arrays
(``input_ids``, ``attention_mask``, ``token_type_ids``) and returning a float numpy array; batches
are collated before the clock starts, so only the model is timed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
Runner = Callable[[Mapping[str, np.ndarray]], np.ndarray]

# defaults of conf/trainer/default.yaml's ``inference`` block (also used by lad.deploy.export / benchmarks)
DEFAULTS = {"warmup": 5, "latency_runs": 50, "throughput_examples": 256, "batch_size": 32}


# ----------------------------------------------------------------------------- static facts
def param_counts(model) -> dict[str, int]:
    """Total parameters and parameters outside the embedding tables (Hugging Face's own count)."""
    return {"params_total": int(model.num_parameters()),
            "params_non_embedding": int(model.num_parameters(exclude_embeddings=True))}


def dir_size_mb(path: str | Path) -> float:
    """Size of every file under ``path`` (or of the file ``path``) in MiB."""
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def num_threads() -> int:
    import torch

    return int(torch.get_num_threads())


# ----------------------------------------------------------------------------- runners
def load_cpu_model(model_dir: str | Path):
    """The saved classifier on the CPU in eval mode (fp32), as it would be deployed."""
    from transformers import AutoModelForSequenceClassification

    from lad.models.teacher import _quiet_transformers

    _quiet_transformers()
    return AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()


def torch_runner(model) -> Runner:
    import inspect

    import torch

    from lad.models.arch import ARCHS, uses_token_type_ids

    if getattr(model.config, "model_type", None) in ARCHS:  # e.g. RoBERTa takes them but has one type
        accepts_types = uses_token_type_ids(model)
    else:  # inspect.signature follows transformers' decorators to the real forward
        accepts_types = "token_type_ids" in inspect.signature(model.forward).parameters

    def run(batch: Mapping[str, np.ndarray]) -> np.ndarray:
        inputs = {k: torch.from_numpy(v) for k, v in batch.items()
                  if k in INPUT_NAMES and (k != "token_type_ids" or accepts_types)}
        with torch.inference_mode():
            return model(**inputs).logits.float().numpy()

    return run


def ort_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session with ``threads`` intra-op threads (default: torch's count)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or num_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def ort_runner(path: str | Path, threads: int | None = None) -> Runner:
    session = ort_session(path, threads)
    names = [i.name for i in session.get_inputs()]

    def run(batch: Mapping[str, np.ndarray]) -> np.ndarray:
        return session.run(["logits"], {k: batch[k] for k in names})[0]

    return run


# ----------------------------------------------------------------------------- batches
def collate_numpy(features, indices) -> dict[str, np.ndarray]:
    """A dynamically padded batch of the given examples as int64 numpy arrays."""
    from lad.data.loader import FeaturesDataset, collate

    data = FeaturesDataset(features)
    batch = collate([data[int(i)] for i in indices], pad_id=features.pad_id)
    return {k: batch[k].numpy() for k in INPUT_NAMES}


def median_example(features) -> int:
    """Position of the example whose length is closest to the median length (first such one)."""
    lengths = features.lengths
    return int(np.argmin(np.abs(lengths - np.median(lengths))))


def throughput_batches(features, batch_size: int, max_examples: int | None) -> list[dict]:
    """Length-sorted, dynamically padded batches over an evenly spaced subset of the examples."""
    from lad.data.loader import make_eval_batches

    n = len(features)
    keep = np.arange(n)
    if max_examples and max_examples < n:
        keep = np.unique(np.linspace(0, n - 1, int(max_examples)).round().astype(np.int64))
    batches = make_eval_batches(features.lengths[keep], batch_size, sort_by_length=True)
    return [collate_numpy(features, keep[np.asarray(b)]) for b in batches]


# ----------------------------------------------------------------------------- timing
def _clock(fn, batch) -> float:
    start = time.perf_counter()
    fn(batch)
    return time.perf_counter() - start


def measure_speed(runner: Runner, features, warmup: int = DEFAULTS["warmup"],
                  latency_runs: int = DEFAULTS["latency_runs"],
                  throughput_examples: int | None = DEFAULTS["throughput_examples"],
                  batch_size: int = DEFAULTS["batch_size"], threads: int | None = None) -> dict:
    """Batch-1 latency (p50/p90, ms) at the median length and batch throughput (examples/s)."""
    if len(features) == 0:
        raise ValueError("cannot time a model on an empty split")
    one = collate_numpy(features, [median_example(features)])
    batches = throughput_batches(features, int(batch_size), throughput_examples)
    for _ in range(max(1, int(warmup))):
        runner(one)
    times = np.array([_clock(runner, one) for _ in range(max(1, int(latency_runs)))]) * 1000
    runner(batches[0])  # warm the batched shapes too
    examples = sum(len(b["input_ids"]) for b in batches)
    elapsed = sum(_clock(runner, b) for b in batches)
    return {
        "latency_ms_p50": float(np.percentile(times, 50)),
        "latency_ms_p90": float(np.percentile(times, 90)),
        "latency_seq_len": int(one["input_ids"].shape[1]),
        "latency_runs": int(len(times)),
        "throughput_examples_per_s": float(examples / elapsed) if elapsed > 0 else float("inf"),
        "throughput_batch_size": int(batch_size),
        "throughput_examples": int(examples),
        "num_threads": int(threads or num_threads()),
    }


def measure_model_dir(model_dir: str | Path, features, settings: Mapping | None = None) -> dict:
    """Parameters, size on disk and PyTorch fp32 CPU speed of a saved classifier."""
    settings = {**DEFAULTS, **dict(settings or {})}
    model = load_cpu_model(model_dir)
    out = {**param_counts(model), "model_size_mb": dir_size_mb(model_dir), "backend": "pytorch-fp32"}
    out.update(measure_speed(torch_runner(model), features, **{k: settings[k] for k in DEFAULTS}))
    return out


def record_run_inference(cfg, model_dir: Path, eval_sets: Mapping, summary: dict, tracker, step: int) -> None:
    """End of a run: measure the saved best model (``trainer.measure_inference``) into the summary
    (``metrics.json``'s ``inference``) and MLflow (``inference/*`` metrics)."""
    from omegaconf import OmegaConf

    if not OmegaConf.select(cfg, "trainer.measure_inference", default=True) or not eval_sets:
        return
    settings = OmegaConf.to_container(OmegaConf.select(cfg, "trainer.inference", default={}) or {},
                                      resolve=True)
    split, features = next(iter(eval_sets.items()))
    if not (Path(model_dir) / "config.json").exists() or len(features) == 0:
        log.warning("inference not measured: no saved model or no %s examples", split)
        return
    result = {**measure_model_dir(model_dir, features, settings), "split": split}
    summary["inference"] = result
    tracker.log_metrics({f"inference/{k}": v for k, v in result.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)}, step)
    log.info("inference (CPU, %d threads): p50 %.2f ms at %d tokens, %.1f examples/s at batch %d",
             result["num_threads"], result["latency_ms_p50"], result["latency_seq_len"],
             result["throughput_examples_per_s"], result["throughput_batch_size"])
