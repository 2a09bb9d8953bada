"""What a finished run keeps on disk: one copy of the student's weights (model/), no resume
checkpoint unless asked (trainer.keep_after_finish), no model for search trials (trainer.keep_model)."""

from __future__ import annotations

import subprocess

from conftest import REPO, compose

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _weights(root):
    """Files holding model or optimiser weights (the gate stack's own small file aside)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.suffix in WEIGHT_SUFFIXES and p.parent.name != "gates")


def _run(tmp_path, tiny_teacher, tiny_glue, name, *extra):
    from lad.run.pipeline import run

    run(compose("distil", ["task=sst2", "teacher=local", f"teacher.path={tiny_teacher}", "student=2layer",
                           f"data.data_dir={tiny_glue}", f"paths.cache={tmp_path / 'cache'}", "mlflow=off",
                           f"output_dir={tmp_path / name}", "trainer.progress=false", "optim.batch_size=16",
                           "trainer.max_steps=4", "trainer.ckpt_every=2", "trainer.predict_test=false", *extra]))
    return tmp_path / name


def test_a_finished_run_holds_one_copy_of_the_weights(tmp_path, tiny_teacher, tiny_glue):
    out = _run(tmp_path, tiny_teacher, tiny_glue, "default")
    assert _weights(out) == ["model/model.safetensors"] and not (out / "checkpoints").exists()
    # asked for: the newest resume checkpoint stays (to continue training with more steps)
    kept = _run(tmp_path, tiny_teacher, tiny_glue, "kept", "trainer.keep_after_finish=1")
    assert _weights(kept) == ["checkpoints/step-4/state.pt", "checkpoints/step-4/weights.safetensors",
                              "model/model.safetensors"]
    # a search trial (trainer.keep_model=false in the search configs): measured, then no weights kept
    trial = _run(tmp_path, tiny_teacher, tiny_glue, "trial", "trainer.keep_model=false")
    assert _weights(trial) == [] and (trial / "metrics.json").is_file()


def test_search_configs_keep_no_trial_model():
    from lad.core.config import load_with_bases

    for name in ("lad_optuna", "kd_optuna"):
        body = load_with_bases(REPO / "conf" / "hparams_search" / f"{name}.yaml")
        assert body.trainer.keep_model is False and body.mlflow.log_model is False
    assert compose("search", []).trainer.keep_model is False
    assert compose("distil", []).trainer.keep_model is True and compose("distil", []).trainer.keep_after_finish == 0


def test_make_clean_says_what_it_keeps_and_clean_stores_removes_them(tmp_path):
    out = subprocess.run(["make", "-n", "-s", "clean"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "kept:" in out and "mlruns.db" in out and "make clean-stores" in out
    stores = subprocess.run(["make", "-n", "clean-stores"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout
    assert "mlruns.db" in stores and "mlartifacts" in stores and "sweeps/optuna.db" in stores
