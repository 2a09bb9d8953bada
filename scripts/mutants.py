"""Mutation check for the LAD method: do the tests catch a broken implementation?

    python scripts/mutants.py              # every mutant; exit 0 only if each one is caught
    python scripts/mutants.py --list       # the mutants and the tests that should catch them
    python scripts/mutants.py --only kd_T  # some of them (names as listed)

Each mutant is one small edit of the package, made on the syntax tree of one named function:
``module`` (``lad.method.gates``) and ``function`` (its qualified name: ``HighwayGates.aggregate``, a
nested ``Trainer.fit.run_eval``) locate the code; ``old`` is a Python expression or statement that
must occur exactly once in that function (compared as syntax trees, so line breaks, spacing,
comments and the code around it do not matter), and ``new`` replaces it. A refactor that moves,
reformats or renames other code leaves the table valid; one that changes the targeted code itself
makes the check stop with an error naming the mutant (never silently testing nothing).

The edit is applied to a temporary copy of the repository (never to this checkout): the module is
re-written from its edited tree (``ast.unparse``), and the tests named for the mutant run against
that copy (``PYTHONPATH`` puts the copy's ``lad`` first). A mutant is *caught* when those tests
fail. Before any mutant, the same tests must pass on the unmodified copy. Prints a table
mutant -> caught? -> the first failing test; exits 1 when a mutant survives, 2 on a bad table.
"""

from __future__ import annotations

import argparse
import ast
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
COPY = ("lad", "conf", "tests", "hydra_plugins", "sweeps", "scripts", "distil.py", "train_teacher.py",
        "pyproject.toml")
M = "tests/test_method.py::"
S = "tests/test_science.py::"


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    module: str        # dotted module name, e.g. lad.method.distiller
    function: str      # qualified name inside the module, e.g. Distiller.param_groups
    old: str           # expression or statement (source) that occurs exactly once in that function
    new: str           # its replacement (an expression for an expression, statements for a statement)
    tests: tuple[str, ...]

    @property
    def path(self) -> str:
        return self.module.replace(".", "/") + ".py"


MUTANTS = (
    # --- gradients, optimisers and learning rates
    Mutant("targets_detached", "hidden targets detached in the production distiller path",
           "lad.method.distiller", "StepInputs.targets",
           "gate(self.t_hidden, self.mask, self.layer_map, student_arg)",
           "[t.detach() for t in gate(self.t_hidden, self.mask, self.layer_map, student_arg)]",
           (M + "test_production_training_step_sends_gradients_into_every_needed_gate",)),
    Mutant("gates_not_optimised", "gate parameters missing from every optimiser", "lad.method.distiller",
           "Distiller.param_groups", 'groups.append(ParamGroup("gate", gate_params, "gate_lr", self.gate.clip_units()))',
           "pass", (M + "test_one_step_moves_gates_by_gate_lr_and_student_by_lr",)),
    Mutant("gates_at_student_lr", "gates trained at the student's learning rate", "lad.method.distiller",
           "Distiller.param_groups", 'ParamGroup("gate", gate_params, "gate_lr", self.gate.clip_units())',
           'ParamGroup("gate", gate_params, "lr", self.gate.clip_units())',
           (M + "test_one_step_moves_gates_by_gate_lr_and_student_by_lr",)),
    Mutant("frozen_ignored", "gate.frozen=true still trains the gates", "lad.method.gates",
           "Aggregator.trainable_parameters", "[] if self.frozen else list(self.parameters())",
           "list(self.parameters())",
           (M + "test_frozen_gates_are_in_no_optimiser_and_compute_the_same_targets",)),
    Mutant("norms_decayed", "gate LayerNorm weights get weight decay", "lad.run.train", "no_decay_ids",
           'is_norm or name == "bias"', 'name == "bias"',
           (M + "test_gate_layernorm_weights_are_not_weight_decayed",)),
    Mutant("gate_opt_no_warmup", "the gate optimiser has no warm-up while the student's keeps it",
           "lad.run.train", "build_optimizers", "schedules.build(kind, opt, warmup, total_steps)",
           "schedules.build(kind, opt, warmup if not optimizers else 0, total_steps)",
           (S + "test_every_optimiser_and_parameter_group_follows_its_schedule_with_warmup",)),
    Mutant("first_scheduler_only", "only the first optimiser's schedule is stepped", "lad.run.train", "Trainer.fit",
           "sch.step()", "sch.step() if sch is schedulers[0] else None",
           (S + "test_every_optimiser_and_parameter_group_follows_its_schedule_with_warmup",)),
    # --- the teacher and the data
    Mutant("teacher_train_mode", "the teacher left in train mode (dropout on) while producing targets",
           "lad.method.distiller", "Distiller.train", "self.teacher.eval()", "pass",
           (S + "test_teacher_gives_identical_targets_twice_while_the_student_trains",)),
    Mutant("order_from_torch_rng", "training order drawn from torch's global RNG (depends on what the method "
           "built before)", "lad.data.loader", "LengthBucketSampler.batches", "rng.permutation(len(self.lengths))",
           "torch.randperm(len(self.lengths)).numpy()",
           (S + "test_two_methods_with_one_seed_see_the_same_example_order",)),
    Mutant("order_seed_per_method", "the data-order seed depends on the loss", "lad.run.fit", "train_and_save",
           "int(cfg.seed)", "int(cfg.seed) + len(str(cfg.loss.name))",
           (S + "test_two_methods_with_one_seed_see_the_same_example_order",)),
    Mutant("bucket_ignored", "data.bucket=false (the reference's uniform shuffle) still trains on length buckets",
           "lad.run.fit", "train_and_save", "bool(cfg.data.bucket)", "True",
           (S + "test_uniform_shuffle_reaches_the_training_loop",)),
    Mutant("warmup_steps_ignored", "optim.warmup_steps (the reference teacher's) ignored for the ratio",
           "lad.run.schedules", "warmup_steps", "steps is not None", "False",
           (S + "test_reference_warmup_steps_set_the_schedule",)),
    Mutant("dev_from_train", "dev metrics computed on the training split", "lad.run.pipeline", "_run_claimed",
           "features(s, cfg.data.max_eval_samples)", 'features("train", cfg.data.max_eval_samples)',
           (S + "test_dev_metrics_are_those_of_the_dev_split",)),
    Mutant("best_is_last", "'best dev' is the last evaluation, not the best", "lad.run.train", "Trainer.fit.run_eval",
           "score > best_score", "True", (S + "test_best_dev_is_the_best_evaluation_not_the_last",)),
    Mutant("score_from_last", "the run returns the last evaluation's score", "lad.run.fit", "train_and_save",
           "result.best.get(task.main_metric, float('nan'))", "result.last.get(task.main_metric, float('nan'))",
           (S + "test_best_dev_is_the_best_evaluation_not_the_last",)),
    # --- the student and its targets
    Mutant("student_hidden_shift", "student hidden states off by one layer (embeddings as layer 1)",
           "lad.method.distiller", "StepInputs.s_hidden", "self.s_out.hidden_states[1:]",
           "self.s_out.hidden_states[:-1]", (M + "test_student_identical_to_teacher_has_zero_hidden_loss",)),
    Mutant("layer_map_shift", "layer map off by one (k*L/K - 1)", "lad.models.student", "layer_map",
           "(k * l_) // k_", "(k * l_) // k_ - 1",
           ("tests/test_pipeline.py::test_layer_map", "tests/test_pipeline.py::test_student_layer_k_is_teacher_layer_k_L_over_K")),
    Mutant("gate_swapped", "g and 1 - g swapped in the highway mix", "lad.method.gates", "HighwayGates.aggregate",
           "g * teacher_hidden[idx] + (1.0 - g) * prev", "(1.0 - g) * teacher_hidden[idx] + g * prev",
           ("tests/test_gates.py::test_lad_recurrence_matches_hand_loop",
            M + "test_reference_gate_stack_and_hidden_loss_equal_the_paper_equations")),
    Mutant("position_affine_dropped", "gate.affine=position normalises without its [T, d] affine", "lad.method.gates",
           "SequenceLayerNorm.forward", "(x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias",
           "(x - mean) * torch.rsqrt(var + self.eps)",
           (M + "test_reference_gate_stack_and_hidden_loss_equal_the_paper_equations",)),
    Mutant("kd_T", "soft loss scaled by T instead of T^2", "lad.method.loss_terms.logits", "soft_loss",
           "kl * (T * T)", "kl * T",
           ("tests/test_losses.py::test_kd_t_squared_scaling", "tests/test_losses.py::test_kd_matches_hand_computation")),
    Mutant("kl_reversed", "KL(student || teacher) instead of KL(teacher || student)", "lad.method.loss_terms.logits",
           "soft_loss", "(log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1).mean()",
           "(log_p_s.exp() * (log_p_s - log_p_t)).sum(dim=-1).mean()",
           ("tests/test_losses.py::test_kd_direction_is_teacher_to_student",)),
    Mutant("real_counts_padding", "hidden_positions=real averages over padding too", "lad.method.loss_terms.layers",
           "Hidden.__call__", 'inputs.mask if self.hidden_positions == "real" else None', "None",
           (M + "test_hidden_positions_real_ignores_padding_and_all_averages_every_position",)),
    Mutant("all_skips_padding", "hidden_positions=all averages over real tokens only", "lad.method.loss_terms.layers",
           "Hidden.__call__", 'inputs.mask if self.hidden_positions == "real" else None', "inputs.mask",
           (M + "test_hidden_positions_real_ignores_padding_and_all_averages_every_position",
            M + "test_reference_gate_stack_and_hidden_loss_equal_the_paper_equations")),
    Mutant("all_not_padded", "hidden_positions=all keeps dynamic padding", "lad.method.loss_terms.layers",
           "Hidden.pads_to_max_length", 'self.hidden_positions == "all"', "False",
           (M + "test_hidden_positions_all_pads_training_batches_to_max_length",)),
    Mutant("embeddings_not_copied", "student.init_embeddings=true leaves the embeddings random",
           "lad.models.student", "build_student",
           "_copy_parts(arch.shared_modules(source), arch.shared_modules(student))", "pass",
           ("tests/test_pipeline.py::test_student_layer_k_is_teacher_layer_k_L_over_K",
            M + "test_init_from_pretrained_takes_layers_and_pooler_from_the_backbone")),
    Mutant("pretrained_takes_teacher", "student.init_from=pretrained silently copies the teacher's layers",
           "lad.models.student", "build_student", "source = pretrained", "source = teacher",
           (M + "test_init_from_pretrained_takes_layers_and_pooler_from_the_backbone",)),
    # --- gate movement
    Mutant("movement_not_measured", "gate movement always reported as 0", "lad.method.gates",
           "HighwayGates.weight_movement", "relative_change(lin.weight.detach(), w0)", "0.0",
           (M + "test_metrics_json_records_gate_movement_and_mean_gates_per_evaluation",)),
    Mutant("movement_by_current", "gate movement normalised by the current weights, not the initial ones",
           "lad.method.gates", "relative_change", "torch.linalg.vector_norm(initial.double())",
           "torch.linalg.vector_norm(current.double())",
           (S + "test_gate_movement_is_measured_from_the_initial_weights",)),
    Mutant("movement_weight_only", "runs record the projection weights' movement only (no bias, no norm affine)",
           "lad.run.gate_report", "GateProbe.__call__",
           "{**gate.weight_movement(self.initial), **gate.movement_by_kind(self.initial)}",
           "gate.weight_movement(self.initial)", (S + "test_runs_record_gate_movement_per_kind",)),
)


# --------------------------------------------------------------------------- the AST edit
def find_function(tree: ast.Module, qualname: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    """The function (or method, or nested function) named ``qualname`` (``Class.method.inner``)."""
    scope: ast.AST = tree
    for part in qualname.split("."):
        found = [node for node in ast.iter_child_nodes(scope) if isinstance(
            node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == part]
        if not found and not isinstance(scope, ast.Module):  # a nested def inside the body's blocks
            found = [node for node in ast.walk(scope) if node is not scope and isinstance(
                node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == part]
        if len(found) != 1:
            raise ValueError(f"{'no' if not found else len(found)} definition(s) named {part!r} for {qualname!r}")
        scope = found[0]
    if not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise ValueError(f"{qualname!r} is a class, not a function")
    return scope


def _is_expression(source: str) -> bool:
    try:
        ast.parse(source.strip(), mode="eval")
        return True
    except SyntaxError:
        return False


class _Replace(ast.NodeTransformer):
    """Replaces the nodes equal (as syntax trees) to ``old``: an expression when ``old`` and ``new``
    both are expressions, else a statement (``new`` may be several statements, or ``pass``)."""

    def __init__(self, old: str, new: str) -> None:
        self.kind = "expr" if _is_expression(old) and _is_expression(new) else "stmt"
        if self.kind == "expr":
            old_nodes, self.new = [ast.parse(old.strip(), mode="eval").body], [ast.parse(new.strip(), mode="eval").body]
        else:
            old_nodes, self.new = ast.parse(old.strip()).body, ast.parse(new.strip()).body
        if len(old_nodes) != 1:
            raise ValueError(f"old must be one expression or one statement, got {old!r}")
        self.old = ast.dump(old_nodes[0])
        self.count = 0

    def generic_visit(self, node: ast.AST) -> ast.AST:
        base = ast.expr if self.kind == "expr" else ast.stmt
        if isinstance(node, base) and ast.dump(node) == self.old:
            self.count += 1
            return self.new[0] if self.kind == "expr" else list(self.new)
        return super().generic_visit(node)


def mutate_source(source: str, function: str, old: str, new: str, label: str = "mutant") -> str:
    """``source`` with the one occurrence of ``old`` inside ``function`` replaced by ``new``.

    ValueError (naming ``label``) when the function is missing or ``old`` does not occur exactly once.
    """
    tree = ast.parse(source)
    try:
        func = find_function(tree, function)
        edit = _Replace(old, new)
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"{label}: {exc} (the code changed: update the mutant)") from None
    body = [edit.visit(stmt) for stmt in func.body]
    func.body = [s for item in body for s in (item if isinstance(item, list) else [item])] or [ast.Pass()]
    if edit.count != 1:
        raise ValueError(f"{label}: {old!r} occurs {edit.count} times in {function} "
                         "(the code changed: update the mutant)")
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


def check_applies(mutant: Mutant, root: Path = REPO) -> str:
    """The mutated text of the mutant's module under ``root``; ValueError unless it applies once."""
    return mutate_source((root / mutant.path).read_text(), mutant.function, mutant.old, mutant.new,
                         f"mutant {mutant.name} ({mutant.module}:{mutant.function})")


# --------------------------------------------------------------------------- running the tests
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
    ap.add_argument("--timeout", type=int, default=600, help="seconds per test run (default 600)")
    args = ap.parse_args(argv)
    names = {m.name for m in MUTANTS}
    unknown = sorted(set(args.only or []) - names)
    if unknown:
        print(f"error: unknown mutant(s) {', '.join(unknown)}; choose from {', '.join(sorted(names))}", file=sys.stderr)
        return 2
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.what}\n    {m.module}:{m.function}; caught by {', '.join(m.tests)}")
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
