"""Deployable students: inference numbers in every run, ONNX export + parity, int8, model card, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, compose, save_tiny_model

INFERENCE_KEYS = {"params_total", "params_non_embedding", "model_size_mb", "latency_ms_p50", "latency_ms_p90",
                  "latency_seq_len", "throughput_examples_per_s", "throughput_batch_size", "num_threads"}
QUICK = ["--latency-runs", "3", "--throughput-examples", "16"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_teacher, tiny_glue) -> Path:
    """A tiny distillation run (2-layer student of the tiny teacher), inference measured at the end."""
    from lad.run.pipeline import run

    tmp = tmp_path_factory.mktemp("deploy")
    run(compose("distil", [
        "task=sst2", "teacher=local", f"teacher.path={tiny_teacher}", f"data.data_dir={tiny_glue}",
        f"paths.cache={tmp / 'cache'}", f"output_dir={tmp / 'run'}", "mlflow=off", "trainer.progress=false",
        "optim.batch_size=16", "student=2layer", "trainer.max_steps=2", "trainer.predict_test=false",
        "trainer.inference.latency_runs=7", "trainer.inference.throughput_examples=20",
    ]))
    return tmp / "run"


def test_tiny_run_records_size_latency_and_throughput(finished_run):
    import torch

    from lad.deploy.inference import dir_size_mb

    inf = json.loads((finished_run / "metrics.json").read_text())["inference"]
    assert INFERENCE_KEYS <= set(inf)
    assert 0 < inf["params_non_embedding"] < inf["params_total"]  # the 30522 x 32 word embeddings dominate
    assert inf["model_size_mb"] == pytest.approx(dir_size_mb(finished_run / "model"))
    assert 0 < inf["latency_ms_p50"] <= inf["latency_ms_p90"]
    assert inf["latency_runs"] == 7 and inf["throughput_examples"] == 20 and inf["throughput_batch_size"] == 32
    assert inf["throughput_examples_per_s"] > 0 and inf["num_threads"] == torch.get_num_threads()
    assert inf["backend"] == "pytorch-fp32" and inf["split"] == "dev"


def test_measurement_can_be_switched_off(tmp_path, tiny_teacher, tiny_glue):
    from lad.deploy.inference import record_run_inference

    cfg = compose("distil", ["task=sst2", "mlflow=off", "trainer.measure_inference=false"])
    summary = {}
    record_run_inference(cfg, tmp_path, {"dev": object()}, summary, None, 0)
    assert summary == {}


def test_latency_is_timed_at_the_median_length(tiny_teacher, tiny_glue):
    from lad.data.features import load_features
    from lad.data.tasks import TaskSpec
    from lad.deploy.inference import measure_speed
    from lad.models.teacher import load_tokenizer

    task = TaskSpec.from_config(compose("distil", ["task=sst2"]).task)
    feats = load_features(task, tiny_glue, "dev", load_tokenizer(tiny_teacher), 128, None)
    calls = []

    def runner(batch):
        calls.append(batch["input_ids"].shape)
        return np.zeros((batch["input_ids"].shape[0], 2), np.float32)

    out = measure_speed(runner, feats, warmup=2, latency_runs=4, throughput_examples=None, batch_size=8)
    median = np.median(feats.lengths)
    assert abs(out["latency_seq_len"] - median) == np.abs(feats.lengths - median).min()
    assert calls[:6] == [(1, out["latency_seq_len"])] * 6
    batched = calls[7:]  # after the batched warm-up call
    assert sum(s[0] for s in batched) == len(feats) and max(s[0] for s in batched) == 8


def test_torch_runner_feeds_segment_ids_to_bert():
    """Pair tasks: the PyTorch runner must pass token_type_ids (transformers wraps BERT's forward)."""
    import torch
    from transformers import BertForSequenceClassification

    from conftest import tiny_bert_config
    from lad.deploy.inference import torch_runner

    torch.manual_seed(0)
    runner = torch_runner(BertForSequenceClassification(tiny_bert_config(num_layers=1)).eval())
    ids = np.arange(100, 112, dtype=np.int64).reshape(2, 6)
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    pair = {**batch, "token_type_ids": np.concatenate([np.zeros((2, 3), np.int64), np.ones((2, 3), np.int64)], 1)}
    assert np.abs(runner(batch) - runner(pair)).max() > 1e-6


def test_onnx_export_matches_pytorch_on_a_tiny_random_model(tmp_path, tiny_glue):
    """Parity: onnxruntime fp32 reproduces PyTorch's logits within 1e-4 at other batch/sequence sizes."""
    from lad.data.features import load_features
    from lad.data.tasks import TaskSpec
    from lad.deploy.inference import load_cpu_model, ort_runner, torch_runner
    from lad.deploy.onnx_export import export_onnx, parity
    from lad.models.teacher import load_tokenizer

    model_dir = save_tiny_model(tmp_path / "m", num_layers=3, seed=3, dropout=0.3)
    path = export_onnx(model_dir, tmp_path / "model.onnx")
    task = TaskSpec.from_config(compose("distil", ["task=sst2"]).task)
    feats = load_features(task, tiny_glue, "dev", load_tokenizer(model_dir), 128, None)
    check = parity(torch_runner(load_cpu_model(model_dir)), ort_runner(path, threads=1), feats, batch_size=5)
    assert check.max_abs_diff <= 1e-4
    assert np.abs(check.reference).max() > 1e-3  # a real signal, not two zero arrays
    assert np.array_equal(check.reference.argmax(-1), check.candidate.argmax(-1))


def test_deploy_exports_onnx_int8_and_a_model_card(finished_run, tiny_glue, tmp_path, capsys):
    from lad.deploy.export import main

    out = tmp_path / "export"
    assert main([str(finished_run), "--onnx", "--int8", "--out", str(out), "--data-dir", str(tiny_glue),
                 *QUICK]) == 0
    printed = capsys.readouterr().out
    assert "max |Δ logit|" in printed and ": ok" in printed and "int8:" in printed
    for name in ("model.onnx", "model.int8.onnx", "README.md", "deploy.json", "config.json", "tokenizer.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "deploy.json").read_text())
    rows = report["backends"]
    assert set(rows) == {"pytorch-fp32", "onnxruntime-fp32", "onnxruntime-int8"}
    assert rows["onnxruntime-fp32"]["max_abs_logit_diff"] <= 1e-4
    assert rows["onnxruntime-fp32"]["score"] == rows["pytorch-fp32"]["score"]
    assert rows["onnxruntime-int8"]["size_mb"] < rows["onnxruntime-fp32"]["size_mb"]
    assert report["threads"] == 1 and report["facts"]["method"] == "lad/2layer"
    # every backend timed with the same thread count (by default one, as the benchmark page)
    assert {row["num_threads"] for row in rows.values()} == {1}
    card = (out / "README.md").read_text()
    for text in ("lad/2layer", "teacher", "budget", "trainer.max_steps=2", "parameters", "size on disk",
                 "| onnxruntime-int8 |", "ONNX parity", "1 thread"):
        assert text in card, text


def test_deployed_onnx_model_runs_from_the_export_folder_alone(finished_run, tiny_glue, tmp_path):
    """The card's recipe: tokenizer + model.onnx from the folder, no LAD, any batch/sequence size."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    from lad.deploy.export import main
    from lad.deploy.inference import load_cpu_model

    out = tmp_path / "export"
    assert main([str(finished_run), "--onnx", "--out", str(out), "--data-dir", str(tiny_glue), *QUICK]) == 0
    tok = AutoTokenizer.from_pretrained(str(out))
    enc = tok(["a good film", "the plot was really quite awful and very long"], padding=True, return_tensors="np")
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {i.name: enc[i.name].astype(np.int64) for i in sess.get_inputs()})[0]
    import torch

    with torch.no_grad():
        ref = load_cpu_model(finished_run / "model")(**tok(["a good film", "the plot was really quite awful "
                                                            "and very long"], padding=True, return_tensors="pt")).logits
    assert np.abs(logits - ref.numpy()).max() <= 1e-4


def _one_error_line(capsys, exc) -> str:
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_bad_inputs_are_one_line_each(finished_run, tmp_path, capsys):
    from lad.deploy.export import main

    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "nope"), "--onnx"])
    assert "no such run directory" in _one_error_line(capsys, exc)

    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    with pytest.raises(SystemExit) as exc:
        main([str(unfinished), "--onnx"])
    assert "holds no finished model" in _one_error_line(capsys, exc)

    other = tmp_path / "other_arch"
    shutil.copytree(finished_run, other)
    config = json.loads((other / "model" / "config.json").read_text())
    (other / "model" / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(SystemExit) as exc:
        main([str(other), "--onnx"])
    assert "architecture 'gpt2' is not supported" in _one_error_line(capsys, exc)

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exc:
        main([str(finished_run), "--onnx", "--out", str(blocker / "export")])
    assert "cannot write the export to" in _one_error_line(capsys, exc)
    assert not (finished_run / "export").exists()  # nothing written for a bad input


def test_deploy_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lad.deploy", str(tmp_path / "missing"), "--onnx", "--int8"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing'}: no such run directory"]
