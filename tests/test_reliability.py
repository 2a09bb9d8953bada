"""Reliability classes, checked in-process (fast): typed config values, secrets, teacher folders,
undecodable / over-long text, numeric faults, run-directory ownership, file modes, Optuna studies.

The real-process checks (MLflow server on loopback, concurrent commands, kill during a cache build,
read-only and full directories) are in tests/test_reliability_processes.py.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import compose, save_tiny_model
from lad.core.errors import ConfigError, DataError


# ----------------------------------------------------------------------------- 2. typed values
@pytest.fixture(scope="module")
def base_cfg():
    return compose("distil", [])


def _with(cfg, override: str):
    """``cfg`` with one command-line override applied, its value typed by Hydra's own parser."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_override(override)
    copy = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.update(copy, parsed.key_or_group, parsed.value(), force_add=True)
    return copy


@pytest.mark.parametrize("override, message", [
    ("trainer.max_steps=2.5", r"trainer\.max_steps must be an integer, got 2\.5"),
    ("optim.batch_size=2.5", r"optim\.batch_size must be an integer, got 2\.5"),
    ("optim.batch_size=0", r"optim\.batch_size must be an integer >= 1, got 0"),
    ("trainer.log_every=0", r"trainer\.log_every must be an integer >= 1"),
    ("trainer.keep_checkpoints=0", r"trainer\.keep_checkpoints must be an integer >= 1"),
    ("trainer.num_threads=0", r"trainer\.num_threads must be an integer >= 1 or auto or null"),
    ("data.max_train_samples=0", r"data\.max_train_samples must be an integer >= 1 or null"),
    ("cache.build_batch_size=0", r"cache\.build_batch_size must be an integer >= 1"),
    ("cache.max_gb=0", r"cache\.max_gb must be > 0 \(use cache=off"),
    ("trainer.max_steps=0", r"trainer\.max_steps must be an integer >= 1 or -1"),
    ("trainer.eval_every=-3", r"trainer\.eval_every must be an integer >= 0 \(0 = once per epoch\)"),
    ("overwrite=yes", r"overwrite must be true or false, got 'yes'"),
    ("data.bucket=1", r"data\.bucket must be true or false, got 1"),
    ("optim.lr=nan", r"optim\.lr must be a number > 0, got nan"),
    ("optim.lr=inf", r"optim\.lr must be a number > 0, got inf"),
    ("optim.lr='1e-4'", r"optim\.lr must be a number > 0, got '1e-4' \(a string\)"),
    ("seed=-1", r"seed must be an integer in \[0, 4294967295\], got -1"),
    ("seed=4294967296", r"seed must be an integer in \[0, 4294967295\], got 4294967296"),
    ("task.max_seq_length=3", r"task\.max_seq_length must be an integer in \[4, 100000\]"),
    ("loss.hidden_weight=-1", r"loss\.hidden_weight must be a number >= 0"),
    ("cache.dtype=int8", r"cache\.dtype must be one of float16, bfloat16, float32"),
    ("trainer.keep_after_finish=-1", r"trainer\.keep_after_finish must be an integer >= 0"),
    ("trainer.epochs=0", r"trainer\.epochs must be > 0 when trainer\.max_steps=-1"),
    # T^2 * KL at logits/T in float32: a tiny T makes the soft term 0 or NaN, a huge one loses it
    ("loss.temperature=0", r"loss\.temperature must be a number in \[0\.01, 1000\] \(the soft loss"),
    ("loss.temperature=1e-8", r"loss\.temperature must be a number in \[0\.01, 1000\] .*, got 1e-08"),
    ("loss.temperature=1e6", r"loss\.temperature must be a number in \[0\.01, 1000\] .*, got 1000000\.0"),
])
def test_typed_values_are_checked_before_any_work(override, message, base_cfg):
    from lad.run.checks import validate_common

    with pytest.raises(ConfigError, match=message):
        validate_common(_with(base_cfg, override))


@pytest.mark.parametrize("override", ["trainer.max_steps=1e3", "optim.batch_size=32.0", "trainer.eval_every=0",
                                      "trainer.num_threads=null", "trainer.keep_after_finish=0", "optim.lr=1",
                                      "loss.temperature=0.5", "loss.temperature=20"])
def test_valid_values_pass(override, base_cfg):
    from lad.run.checks import validate_common

    validate_common(_with(base_cfg, override))


# ----------------------------------------------------------------------------- 1. secrets
def test_mask_hides_url_passwords_query_secrets_and_remembered_ones():
    from lad.core import secrets

    assert secrets.mask("http://alice:pa55word@host:5000/x") == "http://alice:***@host:5000/x"
    assert secrets.mask("cannot reach postgresql+psycopg2://u:s3cr%40t@db/x") == \
        "cannot reach postgresql+psycopg2://u:***@db/x"
    assert secrets.mask("s3://b?access_key=AKIA&secret_key=XYZ") == "s3://b?access_key=***&secret_key=***"
    secrets.remember({"mlflow": {"tracking_uri": "http://bob:Hunter2Secret@127.0.0.1:1"}})
    assert secrets.mask("Authorization for Hunter2Secret failed") == "Authorization for *** failed"
    assert secrets.mask("sqlite:///mlruns.db and http://127.0.0.1:5000/#/x") == \
        "sqlite:///mlruns.db and http://127.0.0.1:5000/#/x"


def test_redact_masks_every_string_of_a_config():
    from lad.core.secrets import redact

    cfg = OmegaConf.create({"a": {"uri": "http://u:topsecret1@h/"}, "l": ["x", "mysql://r:pw123@h/db"], "n": 3})
    text = json.dumps(redact(cfg))
    assert "topsecret1" not in text and "pw123" not in text and '"n": 3' in text


def test_log_filter_and_stream_guard_mask_secrets(capsys):
    from lad.core.secrets import MaskingFilter, _MaskingStream, remember

    remember("http://u:Filt3rSecret@h")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "uri %s", ("http://u:Filt3rSecret@h",), None)
    assert MaskingFilter().filter(record) and "Filt3rSecret" not in record.getMessage()

    class Sink:
        text = ""

        def write(self, t):
            Sink.text += t

        def flush(self):
            pass

    stream = _MaskingStream(Sink())
    print("View run at http://u:Filt3rSecret@h/#/runs/1", file=stream)
    assert "Filt3rSecret" not in Sink.text and "http://u:***@h" in Sink.text


def test_run_dirname_never_carries_a_password():
    from lad.core.config import run_dirname

    assert "zzsecret" not in run_dirname("+db=postgresql://u:zzsecret@h/x,optim.lr=0.1")


# ----------------------------------------------------------------------------- 2. teacher folders
def _task(name="sst2"):
    from lad.data.tasks import TaskSpec

    return TaskSpec.from_config(compose("distil", [f"task={name}"]).task)


def test_teacher_without_tokenizer_files_is_refused(tmp_path):
    from lad.models.teacher import check_model_dir

    path = save_tiny_model(tmp_path / "t", num_layers=2)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (path / name).unlink(missing_ok=True)
    with pytest.raises(ConfigError, match=r"has no tokenizer files .*every word would become \[UNK\]"):
        check_model_dir(path, "teacher.path")


def test_teacher_with_another_label_order_is_refused(tmp_path):
    from lad.models.teacher import check_label_order
    from transformers import AutoConfig

    path = save_tiny_model(tmp_path / "t", num_layers=2, labels=("not_entailment", "entailment"))
    with pytest.raises(ConfigError, match=r"its labels are \[not_entailment, entailment\] but task rte has "
                                          r"\[entailment, not_entailment\]"):
        check_label_order(AutoConfig.from_pretrained(path), _task("rte"), path)
    same = save_tiny_model(tmp_path / "ok", num_layers=2, labels=("entailment", "not_entailment"))
    check_label_order(AutoConfig.from_pretrained(same), _task("rte"), same)


def test_teacher_named_by_file_values_or_class_names_is_accepted_and_given_the_names(tmp_path):
    from lad.models.teacher import check_label_order
    from transformers import AutoConfig

    for labels in (("0", "1"), ("negative", "positive")):  # saved before / after SST-2 had label names
        path = save_tiny_model(tmp_path / labels[0], num_layers=2, labels=labels)
        config = AutoConfig.from_pretrained(path)
        check_label_order(config, _task("sst2"), path)
        assert config.id2label == {0: "negative", 1: "positive"}
        assert config.label2id == {"negative": 0, "positive": 1}
    path = save_tiny_model(tmp_path / "swapped", num_layers=2, labels=("positive", "negative"))
    with pytest.raises(ConfigError, match=r"its labels are \[positive, negative\] but task sst2 has "
                                          r"\[negative, positive\]"):
        check_label_order(AutoConfig.from_pretrained(path), _task("sst2"), path)


def test_damaged_weight_file_is_refused(tmp_path):
    from lad.models.teacher import check_model_dir

    path = save_tiny_model(tmp_path / "t", num_layers=2)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ConfigError, match=r"model\.safetensors is damaged or incomplete"):
        check_model_dir(path, "teacher.path")


def _edit_weights(path: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    weights = path / "model.safetensors"
    save_file(edit(load_file(str(weights))), str(weights), metadata={"format": "pt"})


def _edit_config(path: Path, **values) -> None:
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, **values}))


def _nan_classifier(tensors: dict) -> dict:
    tensors["classifier.weight"] = tensors["classifier.weight"].clone().fill_(float("nan"))
    return tensors


@pytest.mark.parametrize("break_it, message", [
    (lambda p: _edit_weights(p, lambda t: {f"other.{k}": v for k, v in t.items()}),
     r"its weights do not fit its config\.json \(\d+ missing \(e\.g\. .*\); \d+ not used by its config"),
    (lambda p: _edit_config(p, num_hidden_layers=1), r"its weights do not fit its config\.json \(\d+ not used by "
                                                     r"its config \(e\.g\. bert\.encoder\.layer\.1\."),
    (lambda p: _edit_weights(p, _nan_classifier), r"1 weight tensor\(s\) hold NaN or infinite values "
                                                  r"\(e\.g\. classifier\.weight\)"),
    (lambda p: _edit_config(p, intermediate_size=74), r"cannot load its weights|of another shape"),
])
def test_teacher_weights_that_would_load_as_random_values_are_refused(tmp_path, break_it, message):
    """transformers starts missing or mis-shaped weights from random values with only a warning."""
    from lad.models.teacher import load_teacher

    path = save_tiny_model(tmp_path / "t", num_layers=2)
    load_teacher(OmegaConf.create({"source": "path", "path": str(path), "name": "local"}), _task())
    break_it(path)
    with pytest.raises(ConfigError, match=message):
        load_teacher(OmegaConf.create({"source": "path", "path": str(path), "name": "local"}), _task())


def test_backbone_may_lack_its_task_head_but_not_its_encoder(tmp_path):
    from lad.models.teacher import load_backbone

    path = save_tiny_model(tmp_path / "t", num_layers=2, labels=("a", "b", "c"))
    _edit_weights(path, lambda t: {k: v for k, v in t.items() if not k.startswith(("classifier.", "bert.pooler."))})
    load_backbone(path, _task("sst2"))  # a new 2-class head, a new pooler: what fine-tuning expects
    _edit_weights(path, lambda t: {k: v for k, v in t.items() if ".layer.1." not in k})
    with pytest.raises(ConfigError, match=r"teacher\.backbone \S+: its weights do not fit its config\.json "
                                          r"\(\d+ missing \(e\.g\. bert\.encoder\.layer\.1\."):
        load_backbone(path, _task("sst2"))


def test_damaged_tokenizer_file_is_one_error(tmp_path):
    from lad.models.teacher import load_tokenizer

    path = save_tiny_model(tmp_path / "t", num_layers=2)
    (path / "tokenizer.json").write_text("{ not json")
    (path / "vocab.txt").unlink(missing_ok=True)
    with pytest.raises(ConfigError, match=r"cannot load a tokenizer from \S+: "):
        load_tokenizer(path)


def test_tokenizer_that_maps_words_to_unk_is_refused(tmp_path):
    from lad.models.teacher import load_tokenizer

    path = save_tiny_model(tmp_path / "t", num_layers=2)
    vocab = path / "vocab.txt"
    (path / "tokenizer.json").unlink(missing_ok=True)
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nzebra\n")
    with pytest.raises(ConfigError, match=r"maps ordinary English words to \[UNK\]"):
        load_tokenizer(path)


# ----------------------------------------------------------------------------- 5. text
def test_undecodable_text_names_file_and_line(tmp_path):
    from lad.data.glue import read_split

    task_dir = tmp_path / "SST-2"
    task_dir.mkdir()
    (task_dir / "train.tsv").write_bytes(b"sentence\tlabel\ngood film\t1\nna\xefve caf\xe9\t0\n")
    with pytest.raises(DataError, match=r"SST-2/train\.tsv:3: not valid UTF-8 \(byte 0xef at column 3\)"):
        read_split(_task(), tmp_path, "train")


def test_texts_longer_than_max_len_are_truncated_and_counted(tmp_path):
    from lad.data.features import encode_examples, load_features
    from lad.data.glue import Example
    from lad.models.teacher import load_tokenizer

    from conftest import minilm_dir

    tok = load_tokenizer(minilm_dir())
    examples = [Example("0", "good " * 40, None, 1), Example("1", "bad film", None, 0),
                Example("2", "a b c d e f", None, 0)]
    feats = encode_examples(examples, tok, 8, False)
    assert feats.truncated == 1 and max(feats.lengths) == 8
    task_dir = tmp_path / "glue" / "SST-2"
    task_dir.mkdir(parents=True)
    (task_dir / "train.tsv").write_text("sentence\tlabel\n" + "good " * 40 + "\t1\nbad\t0\n")
    for _ in range(2):  # the count survives the feature cache
        loaded = load_features(_task(), tmp_path / "glue", "train", tok, 8, tmp_path / "cache")
        assert loaded.truncated == 1


def test_max_len_is_capped_at_the_model_positions(caplog):
    from types import SimpleNamespace

    from lad.run.builders import Assembled, model_max_len

    student = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=64))
    asm = Assembled(SimpleNamespace(student=student), None, Path("."), {})
    task = SimpleNamespace(max_seq_length=128)
    with caplog.at_level(logging.WARNING):
        assert model_max_len(task, asm) == 64
    assert "exceeds the model's 64 positions" in caplog.text


# ----------------------------------------------------------------------------- 4. numeric faults
def test_nan_weights_never_become_a_checkpoint_and_the_hint_names_one_that_exists(tmp_path):
    import torch

    from lad.run import checkpoint as ckpt

    good = {"w": torch.ones(3)}
    ckpt.save_checkpoint(tmp_path, 4, good, {"step": 4})
    with pytest.raises(ckpt.NumericFault, match=r"no checkpoint was written; the last good checkpoint is .*step-4"):
        ckpt.save_checkpoint(tmp_path, 8, {"w": torch.tensor([1.0, float("nan"), 0.0])}, {"step": 8})
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-4"]
    assert "no checkpoint was written before it" in ckpt.recovery_hint(tmp_path / "none")


def test_best_model_is_not_saved_with_nan_weights(tmp_path):
    import torch

    from lad.run import checkpoint as ckpt
    from lad.run.fit import check_finite

    model = torch.nn.Linear(2, 2)
    check_finite(model, tmp_path)
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    with pytest.raises(ckpt.NumericFault, match=r"weights became non-finite \(weight\); the model was not saved"):
        check_finite(model, tmp_path)


def test_prune_keeps_the_newest_checkpoints(tmp_path):
    import torch

    from lad.run import checkpoint as ckpt

    for step in (2, 4, 6):
        ckpt.save_checkpoint(tmp_path / "c", step, {"w": torch.ones(1)}, {}, keep=3)
    ckpt.prune(tmp_path / "c", 1)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "c")] == ["step-6"]
    ckpt.prune(tmp_path / "c", 0)
    assert not (tmp_path / "c").exists()


def test_corrupt_teacher_cache_is_reported_as_such(tmp_path):
    import torch

    from lad.method.teacher_cache import CachedTeacher, TeacherCacheCorrupt
    from lad.method.teacher_store import Content, Store

    (tmp_path / "manifest.json").write_text("{}")
    hidden = np.zeros((5, 1, 4), dtype=np.float16)
    hidden[3, 0, 1] = np.nan
    store = Store(tmp_path, {"dtype": "float16"}, Content("tokens", (1,)), np.zeros((2, 2), np.float32),
                  hidden, np.array([0, 2, 5]))
    cached = CachedTeacher(store, Content("tokens", (1,)), 1)
    batch = {"index": torch.tensor([0, 1]), "input_ids": torch.zeros(2, 3, dtype=torch.long),
             "attention_mask": torch.tensor([[1, 1, 0], [1, 1, 1]])}
    with pytest.raises(TeacherCacheCorrupt, match=r"cache files are corrupt, not the training"):
        cached(batch)
    assert not (tmp_path / "manifest.json").exists()  # rebuilt by the next run


# ----------------------------------------------------------------------------- 3. run directory
def _finished_run(path: Path) -> dict[str, bytes]:
    files = {"metrics.json": b'{"best": 1}', "config.yaml": b"optim:\n  lr: 0.1\n", ".hydra/config.yaml": b"x: 1\n",
             "model/model.safetensors": b"old weights", "distil.log": b"old log\n",
             "checkpoints/step-5/weights.safetensors": b"w"}
    for rel, data in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    return files


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_overwrite_sets_the_old_run_aside_and_restores_it_when_the_new_one_fails(tmp_path):
    from lad.run import rundir

    old = _finished_run(tmp_path)
    assert rundir.set_aside(tmp_path)
    (tmp_path / "checkpoints" / "step-1").mkdir(parents=True)
    (tmp_path / "config.yaml").write_text("new")
    rundir.restore(tmp_path)
    assert _tree(tmp_path) == old
    # killed between set_aside and the end: the next command puts the complete run back
    rundir.set_aside(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    rundir.recover(tmp_path)
    assert _tree(tmp_path) == old
    # ... or keeps the new run when it had finished
    rundir.set_aside(tmp_path)
    (tmp_path / "metrics.json").write_text("{}")
    rundir.recover(tmp_path)
    assert _tree(tmp_path) == {"metrics.json": b"{}"}


def test_resume_with_another_configuration_is_refused(tmp_path):
    from lad.core.secrets import redact
    from lad.run import rundir

    cfg = OmegaConf.create({"optim": {"lr": 0.1, "batch_size": 8}, "trainer": {"resume": False, "progress": True},
                            "mlflow": {"tracking_uri": "http://u:pw123456@h"}})
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(redact(cfg))))
    same = OmegaConf.merge(cfg, {"trainer": {"resume": True, "progress": False}})
    rundir.check_resume_config(tmp_path, same)
    other = OmegaConf.merge(same, {"optim": {"lr": 0.2}})
    with pytest.raises(ConfigError, match=r"was started with another configuration \(optim\.lr: 0\.1 -> 0\.2\)"):
        rundir.check_resume_config(tmp_path, other)


def test_second_claim_of_a_run_directory_is_refused(tmp_path):
    from lad.run.rundir import claim, lock_file

    run = tmp_path / "run"
    with claim(run):
        with pytest.raises(ConfigError, match=r"is in use by another running command"):
            with claim(run):
                pass
    assert not run.exists() and lock_file(run).parent == tmp_path
    with claim(run):  # released
        pass
    deep = tmp_path / "artifacts" / "teachers" / "minilm_l6" / "rte"
    with pytest.raises(ConfigError):  # a command refused under the lock leaves not even the lock's folders
        with claim(deep):
            raise ConfigError("bad input")
    assert not (tmp_path / "artifacts").exists()
    with claim(deep):  # a run that wrote its folder keeps the folders above it
        deep.mkdir()
    assert deep.is_dir() and lock_file(deep).parent.is_dir()


# ----------------------------------------------------------------------------- 6. files
def test_swapped_folders_and_feature_caches_follow_the_umask(tmp_path):
    from lad.core.fileio import atomic_dir
    from lad.data.features import Features, save_features

    old = os.umask(0o022)
    try:
        import torch
        from safetensors.torch import save_file

        atomic_dir(tmp_path / "model", lambda tmp: save_file({"w": torch.ones(1)}, str(tmp / "w.safetensors")))
        save_features(Features([np.array([1, 2], np.int32)], [np.array([0, 0], np.int8)], np.array([1]), ["g"]),
                      tmp_path / "f.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "model" / "w.safetensors").stat().st_mode) == 0o644  # safetensors: 0600
    assert stat.S_IMODE((tmp_path / "f.npz").stat().st_mode) == 0o644


def test_unwritable_place_is_reported_before_training(tmp_path):
    from lad.core.preflight import describe_os_error, enough_space, writable

    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"is a file, not a directory; set data\.cache_dir"):
        writable(tmp_path / "file" / "sub", "feature cache directory", "data.cache_dir")
    writable(tmp_path / "new" / "deeper", "output directory", "hydra.run.dir")
    assert not (tmp_path / "new").exists()  # checking creates nothing
    with pytest.raises(ConfigError, match=r"not enough disk space for checkpoints"):
        enough_space(tmp_path, 1 << 62, "checkpoints")
    import errno

    assert describe_os_error(OSError(errno.ENOSPC, "No space left on device", "/x/y")) == \
        "cannot write /x/y: No space left on device"
    assert describe_os_error(OSError(errno.ENOENT, "nope")) is None


# ----------------------------------------------------------------------------- 5. Optuna
def test_stored_study_with_another_space_is_refused_before_a_trial_is_created():
    import optuna
    from optuna.distributions import FloatDistribution

    from lad.core.errors import StudyError as SweeperError  # lad.search.studies serves the sweeper and sweeps/search.py
    from lad.search.studies import check_space

    study = optuna.create_study(study_name="s1", direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={"optim.lr": 1e-4},
                                              distributions={"optim.lr": FloatDistribution(1e-5, 1e-3, log=True)},
                                              value=0.5))
    check_space(study, {"optim.lr": FloatDistribution(1e-5, 1e-3, log=True)})
    for space, shown in [({"optim.lr": FloatDistribution(1e-5, 1e-2, log=True)}, r"float\[1e-05, 0\.01, log\]"),
                         ({"optim.lr": FloatDistribution(1e-5, 1e-3)}, r"float\[1e-05, 0\.001\]"),
                         ({"loss.temperature": FloatDistribution(1, 20)}, "not searched")]:
        with pytest.raises(SweeperError, match=rf"study 's1' was searched over another space .*{shown}"):
            check_space(study, space)
    assert len(study.trials) == 1


def test_n_trials_zero_is_an_error():
    from types import SimpleNamespace

    from hydra_plugins.lad_optuna_sweeper._impl import check_options
    from hydra_plugins.lad_optuna_sweeper.errors import SweeperError

    opts = dict(direction="maximize", n_jobs=1, heartbeat_interval=60, grace_period=None, storage=None,
                max_trials=None, max_failure_rate=0.0)
    for bad in (0, -1, 2.5):
        with pytest.raises(SweeperError, match="n_trials must be an integer >= 1"):
            check_options(SimpleNamespace(n_trials=bad, **opts))
    check_options(SimpleNamespace(n_trials=1, **opts))


@pytest.mark.parametrize("key, bad, message", [
    ("n_trials", 0, r"n_trials must be an integer >= 1 or null, got 0"),
    ("n_trials", 1.5, r"n_trials must be an integer, got 1\.5 \(it would be cut to 1\)"),
    ("max_trials", 0, r"max_trials must be an integer >= 1 or null, got 0"),
    ("max_trials", None, r"n_trials and max_trials are both null: set n_trials \(the trials this run adds\)")])
def test_in_process_search_checks_n_trials_before_any_trial(key, bad, message, tmp_path):
    from lad.search.inprocess import run_search

    cfg = compose("search", ["task=sst2", "mlflow=off"])
    OmegaConf.update(cfg, key, bad, force_add=True)
    with pytest.raises(ConfigError, match=message):
        run_search(cfg, tmp_path, overrides=[])
