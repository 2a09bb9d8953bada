"""Task configs, GLUE TSV readers, data-dir resolution and submission files."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lad.core.errors import ConfigError, DataError
from lad.data import glue
from lad.data.glue import read_split, resolve_data_dir, submission_path, write_submission
from lad.data.tasks import REQUIRED_KEYS, TaskSpec, eval_splits, test_splits

TASK_DIR = Path(__file__).resolve().parents[1] / "conf" / "task"
ALL_TASKS = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "ax"]
SHARED = glue.default_data_dirs()[0]
needs_glue = pytest.mark.skipif(not SHARED.is_dir(), reason=f"GLUE copy not found at {SHARED}")


def task(name: str) -> TaskSpec:
    return TaskSpec.from_config(OmegaConf.load(TASK_DIR / f"{name}.yaml"))


def write(path: Path, rows: list[list[str]] | str, bom: bool = False) -> Path:
    """Write a TSV file (list of rows joined by tabs, or raw text)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = rows if isinstance(rows, str) else "".join("\t".join(r) + "\n" for r in rows)
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- task configs

@pytest.mark.parametrize("name", ALL_TASKS)
def test_every_task_config_has_required_keys_and_parses(name):
    raw = OmegaConf.to_container(OmegaConf.load(TASK_DIR / f"{name}.yaml"))
    assert set(REQUIRED_KEYS) <= set(raw)
    spec = TaskSpec.from_config(OmegaConf.load(TASK_DIR / f"{name}.yaml"))
    assert spec.name == name
    assert spec.max_seq_length == 128
    assert spec.num_labels == (1 if spec.is_regression else len(spec.labels))
    assert test_splits(spec), "every GLUE task has a test split"


def test_task_specific_settings():
    assert task("stsb").is_regression and task("stsb").num_labels == 1
    assert task("mnli").labels == ("contradiction", "entailment", "neutral")
    assert task("ax").labels == task("mnli").labels
    assert eval_splits(task("mnli")) == ["dev_matched", "dev_mismatched"]
    assert test_splits(task("mnli")) == ["test_matched", "test_mismatched"]
    assert task("mnli").main_metric == "accuracy_m"
    assert task("mnli").metric_keys("dev_mismatched") == ("accuracy_mm",)
    assert eval_splits(task("rte")) == ["dev"] and eval_splits(task("ax")) == []
    assert task("ax").split_names == ["test"]
    assert task("cola").split("train").header is False
    assert task("cola").split("test").header is True
    assert task("mrpc").text_b == "#2 String"


@pytest.mark.parametrize("name", [n for n in ALL_TASKS if n != "stsb"])
def test_every_classification_task_names_its_classes(name):
    """What a trained model calls the classes (its id2label) are words, as RTE's and MNLI's are, while
    the label values stay those of the files (read from them, written to GLUE submissions)."""
    spec = task(name)
    assert not any(n.isdigit() for n in spec.class_names), spec.class_names
    assert len(spec.class_names) == len(spec.labels) == spec.num_labels
    assert len(set(spec.class_names)) == len(spec.class_names)


def test_sst2_class_names_and_file_values():
    spec = task("sst2")
    assert spec.labels == ("0", "1") and spec.class_names == ("negative", "positive")
    assert task("cola").class_names == ("unacceptable", "acceptable")
    assert task("mrpc").class_names == ("not_equivalent", "equivalent")
    assert task("qqp").class_names == ("not_duplicate", "duplicate")
    assert task("wnli").class_names == ("not_entailment", "entailment")
    assert task("rte").class_names == task("rte").labels == ("entailment", "not_entailment")
    assert spec.label_name(1) == "1"  # GLUE's SST-2 submission format


@pytest.mark.parametrize("names, pattern", [
    (["negative"], "label_names must list at least two classes"),
    (["a", "b", "c"], r"label_names \[a, b, c\] must name each of the 2 labels \[0, 1\]"),
    (["a", "a"], "label_names contain duplicates"),
])
def test_bad_label_names_are_refused(names, pattern):
    raw = OmegaConf.to_container(OmegaConf.load(TASK_DIR / "sst2.yaml"))
    raw["label_names"] = names
    with pytest.raises(ConfigError, match=pattern):
        TaskSpec.from_config(raw)


def test_a_regression_task_has_no_label_names():
    raw = OmegaConf.to_container(OmegaConf.load(TASK_DIR / "stsb.yaml"))
    raw["label_names"] = ["low", "high"]
    with pytest.raises(ConfigError, match="label_names must be null for a regression task"):
        TaskSpec.from_config(raw)


@pytest.mark.parametrize("missing", ["labels", "splits", "main_metric", "text_b"])
def test_from_config_rejects_missing_keys(missing):
    raw = OmegaConf.to_container(OmegaConf.load(TASK_DIR / "rte.yaml"))
    del raw[missing]
    with pytest.raises(ConfigError, match=missing):
        TaskSpec.from_config(raw)


@pytest.mark.parametrize("change, pattern", [
    ({"metric": "bleu"}, "unknown metric"),
    ({"main_metric": "f1"}, "main_metric"),
    ({"labels": None}, "labels"),
    ({"is_regression": True}, "labels must be null"),
    ({"header": False}, "position"),            # header-less files need integer columns
    ({"splits": {"validation": "dev.tsv"}}, "validation"),
    ({"bogus": 1}, "unknown key"),
])
def test_from_config_rejects_inconsistent_values(change, pattern):
    raw = OmegaConf.to_container(OmegaConf.load(TASK_DIR / "rte.yaml"))
    raw.update(change)
    with pytest.raises(ConfigError, match=pattern):
        TaskSpec.from_config(raw)


def test_unknown_split_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="dev_matched"):
        read_split(task("rte"), tmp_path, "dev_matched")


# ---------------------------------------------------------------- real files

@needs_glue
@pytest.mark.parametrize("name, split, count", [
    ("cola", "train", 8551), ("cola", "dev", 1043), ("cola", "test", 1063),
    ("sst2", "train", 67349), ("sst2", "dev", 872), ("sst2", "test", 1821),
    ("mrpc", "train", 3667), ("mrpc", "dev", 408), ("mrpc", "test", 1725),
    ("stsb", "train", 5749), ("stsb", "dev", 1500), ("stsb", "test", 1379),
    ("rte", "train", 2490), ("rte", "dev", 277), ("rte", "test", 3000),
    ("wnli", "train", 635), ("wnli", "dev", 71), ("wnli", "test", 146),
    ("qnli", "dev", 5463), ("qnli", "test", 5463),
    ("ax", "test", 1104),
])
def test_real_glue_row_counts(name, split, count):
    spec = task(name)
    rows = read_split(spec, SHARED, split)
    assert len(rows) == count
    assert all(r.text_a for r in rows[:50])
    assert all((r.text_b is not None) == spec.is_pair for r in rows[:50])
    if split.startswith("test"):
        assert all(r.label is None for r in rows)
        assert [r.guid for r in rows[:3]] == ["0", "1", "2"]  # GLUE submission ids
    elif spec.is_regression:
        assert all(0.0 <= r.label <= 5.0 for r in rows)
    else:
        assert {r.label for r in rows} == set(range(spec.num_labels))


@needs_glue
def test_real_files_parse_details():
    cola = read_split(task("cola"), SHARED, "train", max_samples=3)
    assert cola[0].text_a.startswith("Our friends won't buy this analysis")
    assert cola[0].label == 1 and cola[0].guid == "train-0"
    mrpc = read_split(task("mrpc"), SHARED, "train", max_samples=2)
    assert mrpc[0].label == 1 and mrpc[1].label == 0      # BOM did not hide the Quality column
    assert '" the witness "' in mrpc[0].text_a          # stray quotes kept verbatim
    stsb = read_split(task("stsb"), SHARED, "train", max_samples=2)
    assert stsb[1].label == pytest.approx(3.8)
    rte = read_split(task("rte"), SHARED, "dev", max_samples=1)[0]
    assert rte.label == task("rte").labels.index("not_entailment")
    assert rte.text_b == "Christopher Reeve had an accident."


@needs_glue
def test_max_samples_takes_the_first_rows():
    full = read_split(task("sst2"), SHARED, "dev")
    head = read_split(task("sst2"), SHARED, "dev", max_samples=5)
    assert head == full[:5]
    with pytest.raises(ConfigError):
        read_split(task("sst2"), SHARED, "dev", max_samples=0)


@needs_glue
def test_auto_data_dir_prefers_shared_copy():
    assert resolve_data_dir(None) == SHARED
    assert resolve_data_dir("auto") == SHARED


# ---------------------------------------------------------------- synthetic MNLI / QQP

MNLI_TRAIN = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse",
              "sentence2_binary_parse", "sentence1_parse", "sentence2_parse",
              "sentence1", "sentence2", "label1", "gold_label"]
MNLI_DEV = MNLI_TRAIN[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]
MNLI_TEST = MNLI_TRAIN[:10]


def mnli_row(i: int, n_cols: int, label: str | None) -> list[str]:
    row = [str(i), "p", f"{i}e", "fiction", "( A )", "( B )", "(ROOT A)", "(ROOT B)",
           f"premise {i} .", f"hypothesis {i} ."]
    return row + (["x"] * (n_cols - 11) + [label] if label else [])


@pytest.fixture
def mnli_dir(tmp_path):
    labels = ["neutral", "contradiction", "entailment"]
    d = tmp_path / "MNLI"
    write(d / "train.tsv", [MNLI_TRAIN] + [mnli_row(i, 12, labels[i % 3]) for i in range(6)])
    for name in ("dev_matched", "dev_mismatched"):
        write(d / f"{name}.tsv", [MNLI_DEV] + [mnli_row(i, 16, labels[i % 3]) for i in range(4)])
    for name in ("test_matched", "test_mismatched"):
        write(d / f"{name}.tsv", [MNLI_TEST] + [mnli_row(100 + i, 10, None) for i in range(3)])
    return tmp_path


def test_mnli_reader_all_five_files(mnli_dir):
    spec = task("mnli")
    train = read_split(spec, mnli_dir, "train")
    assert [r.label for r in train] == [2, 0, 1, 2, 0, 1]      # neutral, contradiction, entailment
    assert train[1].text_a == "premise 1 ." and train[1].text_b == "hypothesis 1 ."
    for split in eval_splits(spec):
        dev = read_split(spec, mnli_dir, split)
        assert len(dev) == 4 and dev[3].label == spec.labels.index("neutral")  # gold_label, last column
    for split in test_splits(spec):
        test = read_split(spec, mnli_dir, split)
        assert [r.guid for r in test] == ["100", "101", "102"] and test[0].label is None


def test_mnli_bad_gold_label(mnli_dir):
    rows = [MNLI_TRAIN, mnli_row(0, 12, "neutral"), mnli_row(1, 12, "-")]
    path = write(mnli_dir / "MNLI" / "train.tsv", rows)
    with pytest.raises(DataError, match=re.escape(f"{path}:3: ") + "label '-' not in label set"):
        read_split(task("mnli"), mnli_dir, "train")


QQP_HEADER = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]


def test_qqp_skips_malformed_rows_with_one_counted_warning(tmp_path, caplog):
    rows = [QQP_HEADER,
            ["0", "1", "2", "How do I cook rice?", "What is the way to cook rice?", "1"],
            ["1", "3", "4", "Why is the sky blue?", "Broken question with a line"],  # 5 columns
            ["break inside a question?", "0"],                                     # 2 columns
            ["2", "5", "6", "Is tea healthy?", "Is coffee healthy?", "0"],
            ["3", "7", "8", "Q?", "Q2?", "maybe"],                                 # bad label
            ["4", "9", "10", "Last?", "Final?", "1"]]
    write(tmp_path / "QQP" / "train.tsv", rows)
    with caplog.at_level(logging.WARNING, logger="lad.data.glue"):
        out = read_split(task("qqp"), tmp_path, "train")
    assert [r.guid for r in out] == ["0", "2", "4"]
    assert [r.label for r in out] == [1, 0, 1]
    warnings = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 3 malformed row(s)" in warnings[0].getMessage()
    assert "train.tsv:3" in warnings[0].getMessage()   # first offender located


def test_qqp_test_split(tmp_path):
    write(tmp_path / "QQP" / "test.tsv", [["id", "question1", "question2"], ["7", "a?", "b?"]])
    (row,) = read_split(task("qqp"), tmp_path, "test")
    assert (row.guid, row.text_a, row.text_b, row.label) == ("7", "a?", "b?", None)


# ---------------------------------------------------------------- bad input

RTE_HEADER = ["index", "sentence1", "sentence2", "label"]


def test_missing_data_dir(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=re.escape(str(missing))):
        resolve_data_dir(missing)
    with pytest.raises(DataError, match="nowhere"):
        read_split(task("rte"), missing, "dev")


def test_missing_task_folder_and_file(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "RTE"))):
        read_split(task("rte"), tmp_path, "dev")
    write(tmp_path / "RTE" / "train.tsv", [RTE_HEADER, ["0", "a", "b", "entailment"]])
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'RTE' / 'dev.tsv'}: file not found")):
        read_split(task("rte"), tmp_path, "dev")


@pytest.mark.parametrize("content", ["", "\ufeff", "\n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "RTE" / "dev.tsv"
    path.parent.mkdir()
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{path}:1: ") + "empty file"):
        read_split(task("rte"), tmp_path, "dev")


def test_header_only_file(tmp_path):
    path = write(tmp_path / "RTE" / "dev.tsv", [RTE_HEADER])
    with pytest.raises(DataError, match=re.escape(f"{path}:2: ") + "no data rows"):
        read_split(task("rte"), tmp_path, "dev")


def test_wrong_column_count_names_file_and_line(tmp_path):
    path = write(tmp_path / "RTE" / "dev.tsv",
                 [RTE_HEADER, ["0", "a", "b", "entailment"], ["1", "a", "not_entailment"]])
    expected = "^" + re.escape(f"{path}:3: expected 4 tab-separated columns, found 3") + "$"
    with pytest.raises(DataError, match=expected):
        read_split(task("rte"), tmp_path, "dev")


def test_headerless_cola_wrong_column_count(tmp_path):
    path = write(tmp_path / "CoLA" / "train.tsv",
                 [["gj04", "1", "", "Fine sentence ."], ["gj04", "0", "*"]])
    with pytest.raises(DataError, match=re.escape(f"{path}:2: ") + "expected 4"):
        read_split(task("cola"), tmp_path, "train")


def test_blank_lines_are_not_rows(tmp_path):
    path = write(tmp_path / "RTE" / "dev.tsv", [RTE_HEADER, ["0", "a", "b", "entailment"]])
    path.write_text(path.read_text() + "\n  \n\n", encoding="utf-8")
    assert [e.guid for e in read_split(task("rte"), tmp_path, "dev")] == ["0"]


@pytest.mark.parametrize("column, row", [(1, ["0", "  ", "b", "entailment"]), (2, ["0", "a", "", "entailment"])])
def test_empty_text_names_file_line_and_column(tmp_path, column, row):
    path = write(tmp_path / "RTE" / "dev.tsv", [RTE_HEADER, ["1", "a", "b", "entailment"], row])
    key = "text_a" if column == 1 else "text_b"
    with pytest.raises(DataError, match=re.escape(f"{path}:3: empty text in column {column} (task.{key})")):
        read_split(task("rte"), tmp_path, "dev")


def test_label_not_in_label_set(tmp_path):
    path = write(tmp_path / "RTE" / "train.tsv", [RTE_HEADER, ["0", "a", "b", "contradiction"]])
    with pytest.raises(DataError, match=re.escape(f"{path}:2: ") + "label 'contradiction' not in label set"):
        read_split(task("rte"), tmp_path, "train")


def test_missing_column_in_header(tmp_path):
    path = write(tmp_path / "RTE" / "dev.tsv", [["index", "sentence1", "label"], ["0", "a", "entailment"]])
    with pytest.raises(DataError, match=re.escape(f"{path}:1: ") + "missing column 'sentence2'"):
        read_split(task("rte"), tmp_path, "dev")


STSB_HEADER = ["index", "genre", "filename", "year", "old_index", "source1", "source2",
               "sentence1", "sentence2", "score"]


@pytest.mark.parametrize("score, pattern", [("high", "non-numeric score 'high'"),
                                            ("nan", "non-finite"), ("7.5", r"score 7\.5 outside \[0, 5\]")])
def test_bad_stsb_scores(tmp_path, score, pattern):
    meta = ["main", "f", "2012", "0001", "none", "none", "A cat.", "A dog."]
    path = write(tmp_path / "STS-B" / "dev.tsv",
                 [STSB_HEADER, ["0", *meta, "3.250"], ["1", *meta, score]])
    with pytest.raises(DataError, match=re.escape(f"{path}:3: ") + pattern):
        read_split(task("stsb"), tmp_path, "dev")


def test_stsb_float_labels(tmp_path):
    meta = ["main", "f", "2012", "0001", "none", "none", "A cat.", "A dog."]
    write(tmp_path / "STS-B" / "train.tsv", [STSB_HEADER, ["0", *meta, "3.250"], ["1", *meta, "0"]])
    assert [r.label for r in read_split(task("stsb"), tmp_path, "train")] == [3.25, 0.0]


def test_bom_and_quotes_are_read_verbatim(tmp_path):
    rows = [["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
            ["1", "1", "2", 'He said " yes', '" unbalanced quote'], ["0", "3", "4", "x", "y"]]
    write(tmp_path / "MRPC" / "train.tsv", rows, bom=True)
    out = read_split(task("mrpc"), tmp_path, "train")
    assert [r.label for r in out] == [1, 0]
    assert out[0].text_a == 'He said " yes' and out[0].text_b == '" unbalanced quote'
    assert [r.guid for r in out] == ["train-0", "train-1"]


def test_auto_data_dir_fallback(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.setattr(glue, "REPO_ROOT", repo)
    with pytest.raises(DataError, match=re.escape(str(repo / "data" / "glue"))):
        resolve_data_dir(None)
    (repo / "data" / "glue").mkdir(parents=True)
    assert resolve_data_dir("auto") == repo / "data" / "glue"
    (tmp_path / "shared" / "glue").mkdir(parents=True)
    assert resolve_data_dir(None) == tmp_path / "shared" / "glue"


def test_explicit_data_dir_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "glue").mkdir()
    assert resolve_data_dir("~/glue") == tmp_path / "glue"
    assert isinstance(resolve_data_dir(str(tmp_path / "glue")), Path)


# ---------------------------------------------------------------- submissions

def test_write_submission_classification(tmp_path):
    spec = task("mnli")
    path = submission_path(spec, "test_mismatched", tmp_path)
    assert path.name == "MNLI-mm.tsv"
    write_submission(spec, "test_mismatched", ["0", "1", "2"], [2, 0, 1], path)
    assert path.read_text() == "index\tprediction\n0\tneutral\n1\tcontradiction\n2\tentailment\n"
    assert list(tmp_path.iterdir()) == [path]     # no temporary file left behind


def test_write_submission_regression_and_mismatch(tmp_path):
    spec = task("stsb")
    path = write_submission(spec, "test", [0, 1], [4.25, 0.5], tmp_path / "sub" / "STS-B.tsv")
    assert path.read_text().splitlines() == ["index\tprediction", "0\t4.25", "1\t0.5"]
    with pytest.raises(ValueError):
        write_submission(spec, "test", [0, 1, 2], [4.25, 0.5], path)
