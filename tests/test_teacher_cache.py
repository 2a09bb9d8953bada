"""Teacher-output cache: same losses as the online teacher, built once, keyed, bounded, self-healing."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch

from conftest import compose
from lad.core.errors import LADError
from lad.method import teacher_cache as tc
from lad.method import teacher_store


def distil_cfg(tmp: Path, teacher: Path, glue: Path, *extra: str):
    return compose("distil", [
        "task=sst2", "teacher=local", f"teacher.path={teacher}", f"data.data_dir={glue}",
        f"paths.cache={tmp / 'cache'}", f"output_dir={tmp / 'run'}", "mlflow=off",
        "trainer.progress=false", "optim.batch_size=16", "student=2layer", "cache.enabled=true",
        *extra,
    ])


def assemble(cfg, max_len: int | None = None):
    """(module, task, train features) the way the pipeline builds them."""
    from lad.data.features import load_features
    from lad.data.tasks import TaskSpec
    from lad.run.builders import build_distillation

    task = TaskSpec.from_config(cfg.task)
    if max_len is not None:
        task = dataclasses.replace(task, max_seq_length=max_len)
    torch.manual_seed(0)
    asm = build_distillation(cfg, task)
    feats = load_features(task, cfg.data.data_dir, "train", asm.tokenizer, int(task.max_seq_length), None)
    asm.module.eval()  # no dropout: losses are deterministic
    return asm, task, feats


def batches(feats, n: int = 4, size: int = 16) -> list[dict]:
    """Unbucketed batches (mixed lengths, so re-padding matters)."""
    from lad.data.loader import make_train_batches
    from lad.run.evaluation import batch_of

    return [batch_of(feats, idx) for idx in make_train_batches(feats, size, 3, 0, bucket=False)[:n]]


def attach(cfg, asm, task, feats):
    return tc.attach_cache(cfg, asm.module, feats, asm.model_source, task, split="train",
                           device=torch.device("cpu"))


def count_teacher_calls(module) -> list[int]:
    calls = [0]
    module.teacher.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def variant_dirs(cfg) -> list[Path]:
    root = Path(str(cfg.cache.dir))
    return sorted(p for p in root.glob("*/*") if p.is_dir() and not p.name.startswith("."))


# --------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("loss,gate,dtype,mode", [
    ("lad", "lad", "float16", "tokens"),
    ("kd", "none", "float16", "logits"),
    ("pkd", "none", "float16", "cls"),
    ("lad", "none", "bfloat16", "tokens"),
    ("lad", "attention", "float16", "tokens"),
])
def test_cached_losses_match_the_online_teacher(tmp_path, tiny_teacher, tiny_glue, loss, gate, dtype, mode):
    cfg = distil_cfg(tmp_path, tiny_teacher, tiny_glue, f"loss={loss}", f"gate={gate}", f"cache.dtype={dtype}")
    asm, task, feats = assemble(cfg)
    module = asm.module
    data = batches(feats)
    online_out = [module.teacher_outputs(b) for b in data]
    online = [module.training_step(b) for b in data]

    cached = attach(cfg, asm, task, feats)
    assert isinstance(cached, tc.CachedTeacher) and module.teacher_outputs is cached
    assert cached.need.mode == mode
    assert isinstance(module.teacher, tc.ReleasedTeacher)  # weights dropped, config kept
    assert module.teacher.config.num_hidden_layers == 4 and not list(module.teacher.parameters())
    with pytest.raises(LADError, match="release_teacher"):
        module._online_teacher(data[0])
    tol = 2e-2 if dtype == "bfloat16" else 3e-3
    for b, (t_logits, t_hidden, _), (loss_on, parts_on) in zip(data, online_out, online):
        c_logits, c_hidden, c_attentions = cached(b)
        assert c_attentions is None
        assert c_logits.dtype == torch.float32
        torch.testing.assert_close(c_logits, t_logits, rtol=1e-5, atol=1e-5)
        if mode == "tokens":
            mask = b["attention_mask"].bool()
            for m in cached.need.layers:
                assert c_hidden[m - 1].shape == t_hidden[m - 1].shape
                torch.testing.assert_close(c_hidden[m - 1][mask], t_hidden[m - 1][mask], rtol=tol, atol=tol)
                assert torch.all(c_hidden[m - 1][~mask] == 0)
        loss_c, parts_c = module.training_step(b)
        torch.testing.assert_close(loss_c, loss_on, rtol=tol, atol=1e-4)
        for key, value in parts_on.items():
            assert float(parts_c[key]) == pytest.approx(float(value), rel=tol, abs=1e-5), key
        if loss == "kd":
            assert parts_on["hidden"] == parts_on["pkd"] == 0.0
        else:
            assert parts_on["hidden" if loss == "lad" else "pkd"] > 0
    if gate == "none" and mode == "tokens":  # only the mapped layers are stored and served
        assert cached.store.layers == tuple(module.layer_map) == (2, 4)
        assert [h is not None for h in cached(data[0])[1]] == [False, True, False, True]
        wrong = dict(data[0], index=data[0]["index"].flip(0))  # rows of other lengths
        with pytest.raises(LADError, match="do not match the cached rows"):
            cached(wrong)


# --------------------------------------------------------------------------- build once, reuse
def test_cache_is_built_once_and_reused_without_running_the_teacher(tmp_path, tiny_teacher, tiny_glue,
                                                                    monkeypatch, caplog):
    cfg = distil_cfg(tmp_path, tiny_teacher, tiny_glue)
    asm, task, feats = assemble(cfg)
    calls = count_teacher_calls(asm.module)
    with caplog.at_level(logging.INFO, logger="lad.method"):
        attach(cfg, asm, task, feats)
    assert calls[0] == -(-len(feats) // int(cfg.cache.build_batch_size))
    assert "teacher cache: writing" in caplog.text and " GB " in caplog.text  # size logged before writing
    built = variant_dirs(cfg)
    assert len(built) == 1 and (built[0] / "manifest.json").is_file()

    def no_build(*a, **k):
        raise AssertionError("the cache was rebuilt")

    monkeypatch.setattr(teacher_store, "build_store", no_build)
    # a second run (another seed) and a KD run both reuse the all-layer cache
    for extra in (["seed=7"], ["seed=7", "loss=kd", "gate=none"]):
        cfg2 = distil_cfg(tmp_path, tiny_teacher, tiny_glue, *extra)
        asm2, task2, feats2 = assemble(cfg2)
        calls2 = count_teacher_calls(asm2.module)
        cached = attach(cfg2, asm2, task2, feats2)
        batch = batches(feats2, n=1)[0]
        asm2.module.training_step(batch)
        assert calls2[0] == 0 and cached.calls == 1
        assert cached.store.path == built[0]
    assert variant_dirs(cfg) == built


def test_key_changes_with_max_len(tmp_path, tiny_teacher, tiny_glue):
    cfg = distil_cfg(tmp_path, tiny_teacher, tiny_glue, "loss=kd", "gate=none")
    roots = []
    for max_len in (128, 8):
        asm, task, feats = assemble(cfg, max_len=max_len)
        cached = attach(cfg, asm, task, feats)
        assert cached.store.manifest["key"]["max_len"] == max_len
        roots.append(cached.store.path.parent)
    assert roots[0] != roots[1]
    assert all(r.is_dir() for r in roots)
    key = dict(cached.store.manifest["key"])
    assert teacher_store.key_digest(key) != teacher_store.key_digest({**key, "max_len": 128})
    assert "seed" not in json.dumps(key) and "lr" not in key


# --------------------------------------------------------------------------- fallbacks and repair
@pytest.mark.parametrize("why", ["max_gb", "unwritable"])
def test_size_limit_or_unwritable_dir_keeps_the_online_teacher(tmp_path, tiny_teacher, tiny_glue, caplog, why):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    extra = "cache.max_gb=1e-9" if why == "max_gb" else f"cache.dir={blocker / 'sub'}"
    cfg = distil_cfg(tmp_path, tiny_teacher, tiny_glue, extra)
    asm, task, feats = assemble(cfg)
    module = asm.module
    teacher = module.teacher
    with caplog.at_level(logging.INFO, logger="lad.method"):
        assert attach(cfg, asm, task, feats) is None
    assert ("cache.max_gb" if why == "max_gb" else "cannot write") in caplog.text
    assert "falling back to the online teacher" in caplog.text
    assert module.teacher is teacher and module.teacher_outputs == module._online_teacher
    assert variant_dirs(cfg) == []
    loss, _ = module.training_step(batches(feats, n=1)[0])
    assert torch.isfinite(loss)


def test_per_sequence_norm_keeps_the_online_teacher(tmp_path, tiny_teacher, tiny_glue, caplog):
    cfg = distil_cfg(tmp_path, tiny_teacher, tiny_glue, "gate.norm=per_sequence")
    asm, task, feats = assemble(cfg)
    with caplog.at_level(logging.INFO, logger="lad.method"):
        assert attach(cfg, asm, task, feats) is None
    assert "per_sequence" in caplog.text
    assert asm.module.teacher_outputs == asm.module._online_teacher


@pytest.mark.parametrize("damage", ["flip_bytes", "truncate", "drop_manifest"])
def test_corrupt_cache_is_rebuilt(tmp_path, tiny_teacher, tiny_glue, damage, caplog):
    cfg = distil_cfg(tmp_path, tiny_teacher, tiny_glue)
    asm, task, feats = assemble(cfg)
    good = attach(cfg, asm, task, feats)
    batch = batches(feats, n=1)[0]
    expected = good(batch)
    path = good.store.path
    del good
    hidden = path / "hidden.npy"
    if damage == "flip_bytes":
        raw = bytearray(hidden.read_bytes())
        mid = len(raw) // 2
        raw[mid:mid + 64] = bytes(64)
        hidden.write_bytes(bytes(raw))
    elif damage == "truncate":
        hidden.write_bytes(hidden.read_bytes()[:-100])
    else:
        (path / "manifest.json").unlink()
    (path.parent / ".tmp-leftover").mkdir()  # an interrupted build is ignored

    asm2, task2, feats2 = assemble(cfg)
    calls = count_teacher_calls(asm2.module)
    with caplog.at_level(logging.INFO, logger="lad.method"):
        cached = attach(cfg, asm2, task2, feats2)
    assert calls[0] > 0, "the damaged cache was used instead of rebuilt"
    assert "teacher cache: writing" in caplog.text
    if damage != "drop_manifest":
        assert "unusable" in caplog.text
    got = cached(batch)
    torch.testing.assert_close(got[0], expected[0])
    for a, b in zip(got[1], expected[1]):
        torch.testing.assert_close(a, b)
    assert variant_dirs(cfg) == [path]
    assert not (path.parent / ".tmp-leftover").exists()


# --------------------------------------------------------------------------- end to end
def test_pipeline_run_with_cache(tmp_path, tiny_teacher, tiny_glue, caplog):
    from lad.run.pipeline import run

    cfg = distil_cfg(tmp_path, tiny_teacher, tiny_glue, "trainer.max_steps=4", "trainer.predict_test=false")
    with caplog.at_level(logging.INFO, logger="lad.method"):
        score = run(cfg)
    assert 0.0 <= score <= 1.0
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["steps"] == 4
    assert "teacher cache: serving tokens" in caplog.text
    built = variant_dirs(cfg)
    assert len(built) == 1
    manifest = json.loads((built[0] / "manifest.json").read_text())
    assert manifest["num_examples"] == 96 and manifest["content"]["layers"] == [1, 2, 3, 4]
    assert (tmp_path / "run" / "gates" / "gate_config.json").is_file()  # gate saving still sees the config
