"""task=custom: own CSV/TSV/JSONL/Parquet files, inferred labels, metrics, hub datasets, bad data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import REPO, compose, save_tiny_model
from lad.core.errors import ConfigError, DataError
from lad.data import sources
from lad.data.tasks import TaskSpec

EXAMPLE = REPO / "tests" / "data" / "reviews.csv"
EXAMPLE_DEV = REPO / "tests" / "data" / "reviews_dev.csv"


def custom_task(**overrides) -> TaskSpec:
    """The conf/task/custom.yaml TaskSpec with ``data.*`` and ``task.*`` overrides applied."""
    data = {"train_file": None, "dev_file": None, "test_file": None, "hf_dataset": None}
    data.update({k: str(v) if isinstance(v, Path) else v for k, v in overrides.pop("data", {}).items()})
    cfg = OmegaConf.create({"data": data, "task": OmegaConf.load(REPO / "conf" / "task" / "custom.yaml")})
    for key, value in overrides.items():
        cfg.task[key] = value
    return TaskSpec.from_config(cfg.task)


def files(tmp_path: Path, train: str | bytes, dev: str | bytes | None = None, ext: str = "csv") -> dict:
    paths = {}
    for split, content in (("train", train), ("dev", dev if dev is not None else train)):
        path = tmp_path / f"{split}.{ext}"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        paths[f"{split}_file"] = path
    return paths


def read(task: TaskSpec, split: str = "train"):
    return sources.read_split(task, None, split)


# ------------------------------------------------------------------ readers and labels
def test_example_file_reads_with_inferred_sorted_labels():
    task = sources.with_labels(custom_task(data={"train_file": EXAMPLE, "dev_file": EXAMPLE_DEV}), None)
    assert task.labels == ("neg", "pos") and task.num_labels == 2
    rows = read(task)
    assert len(rows) == 19 and rows[0].text_a == "Great battery life, the screen is bright and sharp."
    assert rows[17].text_a == 'Battery died within a week, very "reliable".'   # CSV quoting
    assert [r.label for r in rows[:2]] == [1, 0] and rows[0].guid == "train-0"


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "parquet"])
def test_every_format_gives_the_same_examples(ext, tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"id": ["a", "b", "c"], "q": ["x, y", "z", 'say "hi"'],
                          "p": ["one", "two", "three"], "y": ["10", "2", "10"]})
    path = tmp_path / f"train.{ext}"
    writers = {"csv": lambda: frame.to_csv(path, index=False), "tsv": lambda: frame.to_csv(path, sep="\t", index=False),
               "jsonl": lambda: frame.to_json(path, orient="records", lines=True),
               "parquet": lambda: frame.to_parquet(path)}
    writers[ext]()
    task = sources.with_labels(custom_task(data={"train_file": path, "dev_file": path}, text_a="q",
                                           text_b="p", label="y", index="id"), None)
    assert task.labels == ("2", "10")  # numbers sort numerically
    rows = read(task)
    assert [(r.guid, r.text_a, r.text_b, r.label) for r in rows] == [
        ("a", "x, y", "one", 1), ("b", "z", "two", 0), ("c", 'say "hi"', "three", 1)]


def test_jsonl_numbers_and_given_labels(tmp_path):
    lines = [json.dumps({"text": f"t{i}", "label": i % 3}) for i in range(6)]
    paths = files(tmp_path, "\n".join(lines) + "\n", ext="jsonl")
    inferred = sources.with_labels(custom_task(data=paths), None)
    assert inferred.labels == ("0", "1", "2")
    given = custom_task(data=paths, labels=["2", "1", "0"])
    assert sources.with_labels(given, None) is given
    assert [r.label for r in read(given)] == [2, 1, 0, 2, 1, 0]
    named = sources.with_labels(custom_task(data=paths, label_names=["low", "mid", "high"]), None)
    assert named.labels == ("0", "1", "2") and named.class_names == ("low", "mid", "high")
    with pytest.raises(ConfigError, match=r"label_names \[low, high\] must name each of the 3 labels \[0, 1, 2\]"):
        sources.with_labels(custom_task(data=paths, label_names=["low", "high"]), None)


def test_regression_and_metric_names(tmp_path):
    paths = files(tmp_path, "text,score\na,0.5\nb,3\nc,4.25\n")
    task = custom_task(data=paths, label="score", is_regression=True)
    assert (task.metric, task.main_metric, task.num_labels) == ("pearson_spearman", "pearson", 1)
    assert [r.label for r in read(task)] == [0.5, 3.0, 4.25]
    assert custom_task(data=paths, label="score", is_regression=True, metric="spearman").main_metric == "spearman"
    assert (custom_task(data=paths, metric="f1").metric, custom_task(data=paths, metric="f1").main_metric) == (
        "f1_acc", "f1")
    assert custom_task(data=paths, metric="mcc").main_metric == "mcc"
    with pytest.raises(ConfigError, match="unknown metric 'bleu'"):
        custom_task(data=paths, metric="bleu")
    with pytest.raises(ConfigError, match="does not fit is_regression"):
        custom_task(data=paths, metric="accuracy", is_regression=True)


def test_multiclass_f1_is_macro():
    import numpy as np

    from lad.data.metrics import metric_family

    labels, preds = np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])
    got = metric_family("f1_acc", preds, labels, num_labels=3)["f1"]
    assert got == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


# ------------------------------------------------------------------ bad data: one line naming file and row
BAD = {
    "missing_column": (dict(train="review,label\ngood,pos\nbad,neg\n"),
                       r"train\.csv: missing column 'text' \(task\.text_a\); columns are: review, label"),
    "unknown_dev_label": (dict(train="text,label\na,pos\nb,neg\n", dev="text,label\nc,pos\nd,neutral\n"),
                          r"dev\.csv: row 2: label 'neutral' is not in the label set \[neg, pos\]"),
    "empty_file": (dict(train=""), r"train\.csv: empty file"),
    "header_only": (dict(train="text,label\n"), r"train\.csv: no data rows"),
    "mixed_label_types": (dict(train='{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n'
                                     '{"text": "c", "label": "pos"}\n', ext="jsonl"),
                          r"train\.jsonl: row 3: label 'pos' is text but row 1's label 1 is number: "
                          r"mixed label types"),
    "not_utf8": (dict(train=b"text,label\ngood,pos\nna\xefve,neg\n"), r"train\.csv: line 3: not UTF-8 text"),
    "missing_label": (dict(train="text,label\na,pos\nb,\n"), r"train\.csv: row 2: missing label"),
    "bad_json": (dict(train='{"text": "a", "label": 1}\n{"text": "b",\n', ext="jsonl"),
                 r"train\.jsonl: line 2: invalid JSON"),
    "one_class": (dict(train="text,label\na,pos\nb,pos\n"), r"only one label \(pos\)"),
    "blank_text": (dict(train="text,label\na,pos\n   ,neg\n"),
                   r"train\.csv: row 2: empty text in column 'text' \(task\.text_a\)"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_custom_data_is_one_error_line_naming_file_and_row(case, tmp_path, capsys):
    """Through lad.core.guard.guarded, as the entry points run it: exit 2 and one ``error:`` line."""
    from lad.core.guard import guarded
    from lad.run.pipeline import run

    spec, pattern = BAD[case]
    paths = files(tmp_path, **spec)
    cfg = compose("train_teacher", ["task=custom", f"data.train_file={paths['train_file']}",
                                    f"data.dev_file={paths['dev_file']}", "mlflow=off",
                                    f"output_dir={tmp_path / 'run'}", f"paths.cache={tmp_path / 'cache'}"])
    with pytest.raises(SystemExit) as exit_info:
        guarded(run, cfg)
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert pytest.importorskip("re").search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "run").exists()  # caught before any output


def test_missing_train_file_and_unknown_extension_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"split 'train' has no file: pass data\.train_file=<path>"):
        custom_task(data={"dev_file": "x.csv"})
    with pytest.raises(ConfigError, match=r"unsupported file type '\.xlsx' \(use one of \.csv, \.tsv"):
        read(custom_task(data={"train_file": tmp_path / "t.xlsx", "dev_file": tmp_path / "t.xlsx"}, labels=["a", "b"]))
    with pytest.raises(DataError, match=r"nope\.csv: file not found \(task 'custom', split 'train'\)"):
        read(custom_task(data={"train_file": tmp_path / "nope.csv", "dev_file": EXAMPLE}, labels=["a", "b"]))


def test_cli_reports_bad_custom_data_in_one_line(tmp_path):
    """The real entry point: exit status 2, one ``error:`` line, no traceback, before any model loads."""
    paths = files(tmp_path, "text,label\na,1\nb,0\nc,positive\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(
        [sys.executable, "train_teacher.py", "task=custom", f"data.train_file={paths['train_file']}",
         f"data.dev_file={paths['dev_file']}", "task.text_a=text", "task.label=label", "mlflow=off",
         f"hydra.run.dir={tmp_path / 'run'}", f"paths.artifacts={tmp_path / 'artifacts'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "artifacts").exists()  # not even the folder of the teacher it would have published
    assert lines == [f"error: {paths['train_file']}: row 3: label 'positive' is text but row 1's label '1' "
                     "is number: mixed label types in one column"]


# ------------------------------------------------------------------ the Hub
def test_hub_dataset_without_datasets_package_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed
    task = custom_task(data={"hf_dataset": "nyu-mll/glue:sst2"})
    with pytest.raises(DataError, match=r"data\.hf_dataset=nyu-mll/glue:sst2 needs the 'datasets' package"):
        sources.with_labels(task, None)


def test_hub_dataset_offline_is_one_line_and_online_maps_class_names(monkeypatch):
    import pandas as pd

    calls = []

    class FakeSplit:
        features = {"sentence": object(), "label": types.SimpleNamespace(names=["negative", "positive"])}

        def to_pandas(self):
            return pd.DataFrame({"sentence": ["bad", "good", "fine"], "label": [0, 1, 1]})

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)\nmore")
        return FakeSplit()

    fake = types.SimpleNamespace(load_dataset=load_dataset,
                                 logging=types.SimpleNamespace(set_verbosity_error=lambda: None))
    monkeypatch.setitem(sys.modules, "datasets", fake)
    task = custom_task(data={"hf_dataset": "nyu-mll/glue:sst2"}, text_a="sentence")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        sources.with_labels(task, None)
    assert str(err.value) == (
        "data.hf_dataset=nyu-mll/glue:sst2: cannot load split 'train' from the Hugging Face Hub: Couldn't "
        "reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError) (LAD runs offline unless HF_HUB_OFFLINE=0 "
        "is set; with no network, download the data and pass data.train_file/data.dev_file)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    task = sources.with_labels(task, None)
    assert task.labels == ("negative", "positive")
    assert [r.label for r in read(task, "dev")] == [0, 1, 1]
    assert calls[-1] == ("nyu-mll/glue", "sst2", "validation")


# ------------------------------------------------------------------ end to end
def test_example_files_end_to_end_with_test_predictions(tmp_path):
    """train_teacher then distil on the shipped example (tiny backbone); labels recorded; test predictions."""
    from transformers import AutoConfig

    from lad.run.pipeline import run

    backbone = save_tiny_model(tmp_path / "backbone", num_layers=2, labels=("0", "1", "2"))
    test = tmp_path / "test.csv"
    test.write_text("id,text\nr1,Love it.\nr2,Broken on arrival.\n")
    common = ["task=custom", f"data.train_file={EXAMPLE}", f"data.dev_file={EXAMPLE_DEV}",
              f"data.test_file={test}", "task.index=id", "task.name=reviews", "teacher=local",
              f"teacher.path={tmp_path / 'teacher'}", "mlflow=off", "trainer.max_steps=2",
              "trainer.progress=false", "optim.batch_size=8", f"paths.cache={tmp_path / 'cache'}", "device=cpu"]
    run(compose("train_teacher", [*common, f"teacher.backbone={backbone}", f"output_dir={tmp_path / 't'}"]))
    assert AutoConfig.from_pretrained(str(tmp_path / "teacher")).id2label == {0: "neg", 1: "pos"}
    assert OmegaConf.load(tmp_path / "t" / "config.yaml").task.labels == ["neg", "pos"]
    run(compose("distil", [*common, "student=2layer", f"output_dir={tmp_path / 's'}"]))
    assert AutoConfig.from_pretrained(str(tmp_path / "s" / "model")).id2label == {0: "neg", 1: "pos"}
    rows = (tmp_path / "s" / "predictions" / "test.tsv").read_text().splitlines()
    assert rows[0] == "index\tprediction" and [r.split("\t")[0] for r in rows[1:]] == ["r1", "r2"]
    assert {r.split("\t")[1] for r in rows[1:]} <= {"neg", "pos"}


def test_own_data_with_mlflow_on_publishes_both_models_and_the_demo_table_reads_the_runs(tmp_path, capsys):
    """README's own-data example with MLflow on (a temporary sqlite store): the teacher is
    registered and the student logged with an input example read from the own dev file, and
    ``scripts/demo_table.py`` prints the table of the two runs."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from lad.run.pipeline import run

    sys.path.insert(0, str(REPO / "scripts"))
    import demo_table

    backbone = save_tiny_model(tmp_path / "backbone", num_layers=2)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    common = ["task=custom", f"data.train_file={EXAMPLE}", f"data.dev_file={EXAMPLE_DEV}", "task.text_a=text",
              "task.label=label", "teacher=local", f"teacher.path={tmp_path / 'teacher'}", "trainer.max_steps=2",
              f"mlflow.tracking_uri={uri}", f"mlflow.artifact_location={tmp_path / 'art'}",
              "trainer.progress=false", "optim.batch_size=8", f"paths.cache={tmp_path / 'cache'}", "device=cpu"]
    run(compose("train_teacher", [*common, f"teacher.backbone={backbone}", f"output_dir={tmp_path / 't'}"]))
    run(compose("distil", [*common, "student=2layer", f"output_dir={tmp_path / 's'}"]))
    client = MlflowClient(tracking_uri=uri)
    assert [v.version for v in client.search_model_versions("name='lad-teacher-custom'")] == [1]
    mlflow.set_tracking_uri(uri)
    try:
        first_dev = EXAMPLE_DEV.read_text().splitlines()[1]
        for run_dir in ("t", "s"):
            run_id = (tmp_path / run_dir / "mlflow_run_id").read_text().strip()
            info = mlflow.models.get_model_info(f"runs:/{run_id}/model")
            example = json.loads(Path(mlflow.artifacts.download_artifacts(
                f"runs:/{run_id}/model/{info.saved_input_example_info['artifact_path']}")).read_text())
            assert example["data"][0][0] in first_dev  # the own dev file's first row, not a made-up one
    finally:
        mlflow.set_tracking_uri(None)
    capsys.readouterr()
    assert demo_table.main([str(tmp_path / "t"), str(tmp_path / "s")]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:5]]
    assert [r[0] for r in rows] == ["teacher", "student", "majority"]


def test_teacher_with_other_label_names_is_refused(tmp_path):
    from lad.models import load_teacher

    teacher = save_tiny_model(tmp_path / "teacher", num_layers=2, labels=("bad", "good"))
    task = sources.with_labels(custom_task(data={"train_file": EXAMPLE, "dev_file": EXAMPLE_DEV}), None)
    cfg = OmegaConf.create({"source": "path", "path": str(teacher), "name": "local"})
    with pytest.raises(ConfigError, match=r"its labels are \[bad, good\] but task custom has \[neg, pos\]"):
        load_teacher(cfg, task)


def test_hub_path_with_the_real_datasets_library_on_a_local_folder(tmp_path, monkeypatch):
    """``load_dataset`` on a local folder (no network): the same code path as a Hub name."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    pytest.importorskip("datasets")
    folder = tmp_path / "reviews_ds"
    folder.mkdir()
    (folder / "train.csv").write_text(EXAMPLE.read_text())
    (folder / "validation.csv").write_text(EXAMPLE_DEV.read_text())
    task = sources.with_labels(custom_task(data={"hf_dataset": str(folder)}), None)
    assert task.labels == ("neg", "pos")
    assert len(read(task)) == 19 and [r.label for r in read(task, "dev")][:2] == [1, 0]
