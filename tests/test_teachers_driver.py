"""sweeps/teachers.py: the lr grid trains one teacher per rate and publishes the best one."""

import json

from sweeps import teachers


def _fake_teacher(artifacts, task, lr, score):
    d = teachers.teacher_dir(artifacts, "minilm_l6", task, lr)
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"main_metric": "accuracy", "best": {"accuracy": score}}))
    (d / "model.safetensors").write_text(f"weights of lr {lr}")


def test_the_best_rate_is_published_with_its_record_and_ties_keep_the_first(tmp_path):
    for lr, score in ((2e-5, 0.61), (5e-5, 0.66), (1e-4, 0.66)):
        _fake_teacher(tmp_path, "rte", lr, score)
    path = teachers.publish_best(tmp_path, "minilm_l6", "rte", [2e-5, 5e-5, 1e-4])
    assert path == tmp_path / "teachers" / "minilm_l6" / "rte"
    assert (path / "model.safetensors").read_text() == "weights of lr 5e-05"
    record = json.loads((path / "lr_grid.json").read_text())
    assert record["chosen_lr"] == 5e-5 and record["dev"] == {"2e-05": 0.61, "5e-05": 0.66, "0.0001": 0.66}
    assert teachers.teacher_done(tmp_path, "minilm_l6", "rte")


def test_grid_tasks_train_into_per_rate_folders_and_single_rate_tasks_publish_directly(tmp_path, capsys):
    code = teachers.main(["--tasks", "rte", "mrpc", "sst2", "--artifacts", str(tmp_path), "--dry-run",
                          "--lr-grid", "rte=3e-5,1e-4"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and len(out) == 4
    assert f"paths.artifacts={tmp_path}/teacher_lr/3e-05" in out[0] and "optim.lr=3e-05" in out[0]
    assert f"paths.artifacts={tmp_path}/teacher_lr/0.0001" in out[1]
    assert f"paths.artifacts={tmp_path} " in out[2] + " " and "optim.lr" not in out[2]
    assert "trainer.epochs=1" in out[3]


def test_a_bad_rate_is_one_error_line(capsys):
    assert teachers.main(["--tasks", "rte", "--dry-run", "--lr-grid", "rte=fast"]) == 2
    assert capsys.readouterr().err.startswith("error: --lr-grid")


def test_a_grid_extended_after_publishing_trains_the_new_rate_and_publishes_again(tmp_path, capsys):
    for lr, score in ((2e-5, 0.61), (5e-5, 0.66)):
        _fake_teacher(tmp_path, "rte", lr, score)
    teachers.publish_best(tmp_path, "minilm_l6", "rte", [2e-5, 5e-5])
    assert teachers.grid_covered(tmp_path, "minilm_l6", "rte", [2e-5, 5e-5])
    assert not teachers.grid_covered(tmp_path, "minilm_l6", "rte", [2e-5, 5e-5, 2e-4])
    teachers.main(["--tasks", "rte", "--artifacts", str(tmp_path), "--dry-run", "--lr-grid", "rte=2e-5,5e-5,2e-4"])
    out = capsys.readouterr().out
    assert "rte lr=2e-05: done, skipping" in out and "optim.lr=0.0002" in out
