"""Mutation check for the LAD method: do the tests catch a broken implementation?

    python scripts/mutants.py              # every mutant; exit 0 only if each one is caught
    python scripts/mutants.py --list       # the mutants and the tests that should catch them
    python scripts/mutants.py --only kd_T  # some of them (names as listed)

Each mutant is one small edit of the package (a text replacement that must match exactly once).
It is applied to a temporary copy of the repository (never to this checkout), and the tests named
for it run against that copy (``PYTHONPATH`` puts the copy's ``lad`` first). A mutant is *caught*
when those tests fail. Before any mutant, the same tests must pass on the unmodified copy.
Prints a table mutant -> caught? -> the first failing test.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COPY = ("lad", "conf", "tests", "hydra_plugins", "sweeps", "distil.py", "train_teacher.py", "pyproject.toml")
M = "tests/test_method.py::"


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = (
    Mutant("targets_detached", "hidden targets detached in the production distiller path", "lad/distiller.py",
           "return gate(self.t_hidden, self.mask, self.layer_map, student_arg)",
           "return [t.detach() for t in gate(self.t_hidden, self.mask, self.layer_map, student_arg)]",
           (M + "test_production_training_step_sends_gradients_into_every_needed_gate",)),
    Mutant("gates_not_optimised", "gate parameters missing from every optimiser", "lad/distiller.py",
           'groups.append(ParamGroup("gate", gate_params, gate_lr, self.gate.clip_units()))', "pass",
           (M + "test_one_step_moves_gates_by_gate_lr_and_student_by_lr",)),
    Mutant("gates_at_student_lr", "gates trained at the student's learning rate", "lad/distiller.py",
           'ParamGroup("gate", gate_params, gate_lr,', 'ParamGroup("gate", gate_params, lr,',
           (M + "test_one_step_moves_gates_by_gate_lr_and_student_by_lr",)),
    Mutant("frozen_ignored", "gate.frozen=true still trains the gates", "lad/gates.py",
           "return [] if self.frozen else list(self.parameters())", "return list(self.parameters())",
           (M + "test_frozen_gates_are_in_no_optimiser_and_compute_the_same_targets",)),
    Mutant("student_hidden_shift", "student hidden states off by one layer (embeddings as layer 1)",
           "lad/distiller.py", "s_hidden = list(self.s_out.hidden_states[1:])",
           "s_hidden = list(self.s_out.hidden_states[:-1])",
           (M + "test_student_identical_to_teacher_has_zero_hidden_loss",)),
    Mutant("layer_map_shift", "layer map off by one (k*L/K - 1)", "lad/models/student.py",
           "return [(k * l_) // k_ for k in range(1, k_ + 1)]", "return [(k * l_) // k_ - 1 for k in range(1, k_ + 1)]",
           ("tests/test_pipeline.py::test_layer_map", "tests/test_pipeline.py::test_student_layer_k_is_teacher_layer_k_L_over_K")),
    Mutant("gate_swapped", "g and 1 - g swapped in the highway mix", "lad/gates.py",
           "mixed = g * teacher_hidden[idx] + (1.0 - g) * prev", "mixed = (1.0 - g) * teacher_hidden[idx] + g * prev",
           ("tests/test_gates.py::test_lad_recurrence_matches_hand_loop",
            M + "test_reference_gate_stack_and_hidden_loss_equal_the_paper_equations")),
    Mutant("position_affine_dropped", "gate.affine=position normalises without its [T, d] affine", "lad/gates.py",
           "return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias",
           "return (x - mean) * torch.rsqrt(var + self.eps)",
           (M + "test_reference_gate_stack_and_hidden_loss_equal_the_paper_equations",)),
    Mutant("kd_T", "soft loss scaled by T instead of T^2", "lad/loss_terms/logits.py", "return kl * (T * T)", "return kl * T",
           ("tests/test_losses.py::test_kd_t_squared_scaling", "tests/test_losses.py::test_kd_matches_hand_computation")),
    Mutant("kl_reversed", "KL(student || teacher) instead of KL(teacher || student)", "lad/loss_terms/logits.py",
           "kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1).mean()",
           "kl = (log_p_s.exp() * (log_p_s - log_p_t)).sum(dim=-1).mean()",
           ("tests/test_losses.py::test_kd_direction_is_teacher_to_student",)),
    Mutant("real_counts_padding", "hidden_positions=real averages over padding too", "lad/loss_terms/layers.py",
           'hidden_mask = inputs.mask if self.hidden_positions == "real" else None', "hidden_mask = None",
           (M + "test_hidden_positions_real_ignores_padding_and_all_averages_every_position",)),
    Mutant("all_skips_padding", "hidden_positions=all averages over real tokens only", "lad/loss_terms/layers.py",
           'hidden_mask = inputs.mask if self.hidden_positions == "real" else None', "hidden_mask = inputs.mask",
           (M + "test_hidden_positions_real_ignores_padding_and_all_averages_every_position",
            M + "test_reference_gate_stack_and_hidden_loss_equal_the_paper_equations")),
    Mutant("all_not_padded", "hidden_positions=all keeps dynamic padding", "lad/loss_terms/layers.py",
           'return self.hidden_positions == "all"', "return False",
           (M + "test_hidden_positions_all_pads_training_batches_to_max_length",)),
    Mutant("embeddings_not_copied", "student.init_embeddings=true leaves the embeddings random",
           "lad/models/student.py", "_copy_parts(arch.shared_modules(source), arch.shared_modules(student))", "pass",
           ("tests/test_pipeline.py::test_student_layer_k_is_teacher_layer_k_L_over_K",
            M + "test_init_from_pretrained_takes_layers_and_pooler_from_the_backbone")),
    Mutant("pretrained_takes_teacher", "student.init_from=pretrained silently copies the teacher's layers",
           "lad/models/student.py", "        source = pretrained\n", "        source = teacher\n",
           (M + "test_init_from_pretrained_takes_layers_and_pooler_from_the_backbone",)),
    Mutant("norms_decayed", "gate LayerNorm weights get weight decay", "lad/train.py",
           'if is_norm or name == "bias":', 'if name == "bias":',
           (M + "test_gate_layernorm_weights_are_not_weight_decayed",)),
    Mutant("movement_not_measured", "gate movement always reported as 0", "lad/gates.py",
           "out[f\"layer_{order[step + 1] + 1:02d}\"] = float(delta / torch.linalg.vector_norm(w0).clamp_min(1e-30))",
           "out[f\"layer_{order[step + 1] + 1:02d}\"] = 0.0",
           (M + "test_metrics_json_records_gate_movement_and_mean_gates_per_evaluation",)),
)


def check_applies(mutant: Mutant, root: Path = REPO) -> str:
    """The mutated text of ``mutant.path``; ValueError unless ``old`` occurs exactly once."""
    text = (root / mutant.path).read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise ValueError(f"mutant {mutant.name}: the text to replace occurs {count} times in {mutant.path} "
                         "(the code changed: update the mutant)")
    return text.replace(mutant.old, mutant.new)


def make_copy(dest: Path) -> None:
    for name in COPY:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / name)


def run_tests(root: Path, tests: tuple[str, ...], timeout: int) -> tuple[bool, str]:
    """(passed, first failing test id or a short reason)."""
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *tests]
    try:
        out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout} s"
    if out.returncode == 0:
        return True, ""
    failed = re.findall(r"^FAILED (\S+)", out.stdout, flags=re.M)
    return False, failed[0] if failed else (out.stdout.strip().splitlines() or ["exit %d" % out.returncode])[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="list the mutants and their tests, run nothing")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per test run (default 300)")
    args = ap.parse_args(argv)
    names = {m.name for m in MUTANTS}
    unknown = sorted(set(args.only or []) - names)
    if unknown:
        print(f"error: unknown mutant(s) {', '.join(unknown)}; choose from {', '.join(sorted(names))}", file=sys.stderr)
        return 2
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.what}\n    {m.path}; caught by {', '.join(m.tests)}")
        return 0
    try:
        for m in chosen:
            check_applies(m)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    all_tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
    rows, t_start = [], time.time()
    with tempfile.TemporaryDirectory(prefix="lad-mutants-") as tmp:
        root = Path(tmp)
        make_copy(root)
        probe = subprocess.run([sys.executable, "-c", "import lad; print(lad.__file__)"], cwd=root,
                               env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True)
        if not probe.stdout.strip().startswith(str(root)):
            print(f"error: the copy's package is not the one imported ({probe.stdout.strip() or probe.stderr.strip()})",
                  file=sys.stderr)
            return 2
        print(f"baseline: {len(all_tests)} tests on the unmodified copy ...", flush=True)
        ok, why = run_tests(root, all_tests, args.timeout)
        if not ok:
            print(f"error: the tests fail without any mutant ({why}); fix them first", file=sys.stderr)
            return 1
        for i, m in enumerate(chosen, 1):
            target = root / m.path
            original = target.read_text()
            target.write_text(check_applies(m, root))
            t0 = time.time()
            passed, why = run_tests(root, m.tests, args.timeout)
            target.write_text(original)
            rows.append((m, not passed, why))
            print(f"[{i}/{len(chosen)}] {m.name}: {'caught' if not passed else 'NOT CAUGHT'} "
                  f"({time.time() - t0:.0f} s)", flush=True)
    print()
    print("| mutant | what it breaks | caught | by |")
    print("|---|---|---|---|")
    for m, caught, why in rows:
        print(f"| {m.name} | {m.what} | {'yes' if caught else '**no**'} | {why if caught else ', '.join(m.tests)} |")
    missed = [m.name for m, caught, _ in rows if not caught]
    print(f"\n{len(rows) - len(missed)}/{len(rows)} mutants caught in {time.time() - t_start:.0f} s"
          + (f"; not caught: {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
