"""scripts/demo_table.py: the closing table of ``make demo`` (teacher, student, majority baseline)."""

from __future__ import annotations

import json
import sys
from collections import Counter

from omegaconf import OmegaConf

from conftest import REPO, compose

sys.path.insert(0, str(REPO / "scripts"))
import demo_table  # noqa: E402


def _run_dir(root, cfg, score, params, rate, threads=1):
    root.mkdir(parents=True)
    OmegaConf.save(cfg, root / "config.yaml", resolve=True)
    inference = {"params_total": params, "throughput_examples_per_s": rate, "num_threads": threads}
    (root / "metrics.json").write_text(json.dumps({"main_metric": "accuracy", "best": {"accuracy": score},
                                                   "inference": inference}))
    return root


def test_table_rows_teacher_student_majority_with_the_dev_metric_first(tmp_path, tiny_glue, capsys):
    from lad.data.glue import read_split
    from lad.data.tasks import TaskSpec

    cfg = compose("distil", ["task=sst2", f"data.data_dir={tiny_glue}", "trainer.num_threads=1",
                           f"output_dir={tmp_path}"])
    teacher = _run_dir(tmp_path / "t", cfg, 0.81, 22_713_216, 113.4)
    student = _run_dir(tmp_path / "s", cfg, 0.79, 17_390_000, 158.2)
    assert demo_table.main([str(teacher), str(student)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "dev", "accuracy", "params", "inference", "ex/s"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:5]}
    assert list(rows) == ["teacher", "student", "majority"]
    task = TaskSpec.from_config(cfg.task)
    train = Counter(ex.label for ex in read_split(task, tiny_glue, "train"))
    dev = [ex.label for ex in read_split(task, tiny_glue, "dev")]
    majority = sum(label == train.most_common(1)[0][0] for label in dev) / len(dev)
    # speed and size are the runs' own end-of-run measurement (metrics.json), not a second timing
    assert rows == {"teacher": ["0.8100", "22.7M", "113"], "student": ["0.7900", "17.4M", "158"],
                    "majority": [f"{majority:.4f}", "0", "-"]}
    assert lines[5] == "inference ex/s: PyTorch fp32 on the CPU, 1 thread, measured at the end of each run"
    assert demo_table.format_params(22_713_216) == "22.7M" and demo_table.format_params(0) == "0"


def test_speeds_measured_with_different_thread_counts_are_flagged(tmp_path, tiny_glue, capsys):
    cfg = compose("distil", ["task=sst2", f"data.data_dir={tiny_glue}", f"output_dir={tmp_path}"])
    teacher = _run_dir(tmp_path / "t", cfg, 0.81, 1000, 45.0, threads=2)
    student = _run_dir(tmp_path / "s", cfg, 0.79, 500, 88.0, threads=1)
    assert demo_table.main([str(teacher), str(student)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "warning: the speeds were measured with different thread counts (teacher 2, student 1): not comparable")


def test_a_missing_run_is_one_error_line(tmp_path, capsys):
    assert demo_table.main([str(tmp_path / "nope"), str(tmp_path / "nope2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "metrics.json not found" in err and err.count("\n") == 1
