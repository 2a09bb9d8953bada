"""scripts/demo_table.py: the closing table of ``make demo`` (teacher, student, majority baseline)."""

from __future__ import annotations

import json
import sys
from collections import Counter

from omegaconf import OmegaConf

from conftest import REPO, compose, save_tiny_model

sys.path.insert(0, str(REPO / "scripts"))
import demo_table  # noqa: E402


def _run_dir(root, cfg, score, layers):
    root.mkdir(parents=True)
    OmegaConf.save(cfg, root / "config.yaml", resolve=True)
    (root / "metrics.json").write_text(json.dumps({"main_metric": "accuracy", "best": {"accuracy": score}}))
    save_tiny_model(root / "model", num_layers=layers)
    return root


def test_table_rows_teacher_student_majority_with_the_dev_metric_first(tmp_path, tiny_glue, capsys):
    from lad.data.glue import read_split
    from lad.data.tasks import TaskSpec

    cfg = compose("distil", ["task=sst2", f"data.data_dir={tiny_glue}", "trainer.num_threads=1",
                           f"output_dir={tmp_path}"])
    teacher = _run_dir(tmp_path / "t", cfg, 0.81, 4)
    student = _run_dir(tmp_path / "s", cfg, 0.79, 2)
    assert demo_table.main([str(teacher), str(student), "--examples", "16", "--batch-size", "8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "dev", "accuracy", "params", "inference", "ex/s"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert list(rows) == ["teacher", "student", "majority"]
    assert rows["teacher"][0] == "0.8100" and rows["student"][0] == "0.7900"
    task = TaskSpec.from_config(cfg.task)
    train = Counter(ex.label for ex in read_split(task, tiny_glue, "train"))
    dev = [ex.label for ex in read_split(task, tiny_glue, "dev")]
    majority = sum(label == train.most_common(1)[0][0] for label in dev) / len(dev)
    assert rows["majority"] == [f"{majority:.4f}", "0", "-"]
    assert float(rows["teacher"][2]) > 0 and float(rows["student"][2]) > 0  # examples/s measured
    from transformers import AutoModelForSequenceClassification

    for name, run in (("teacher", teacher), ("student", student)):
        model = AutoModelForSequenceClassification.from_pretrained(str(run / "model"))
        assert rows[name][1] == demo_table.format_params(sum(p.numel() for p in model.parameters()))
    assert demo_table.format_params(22_713_216) == "22.7M" and demo_table.format_params(0) == "0"


def test_a_missing_run_is_one_error_line(tmp_path, capsys):
    assert demo_table.main([str(tmp_path / "nope"), str(tmp_path / "nope2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "metrics.json not found" in err and err.count("\n") == 1
