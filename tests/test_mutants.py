"""The mutation check's machinery (scripts/mutants.py): mutants are syntax-tree edits of a named
function, so a refactor that reformats a line or renames the code around it keeps the table valid,
and a mutant that no longer finds its code is an error, never a silent no-op."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scripts.mutants import Mutant, check_applies, mutate_source

TINY = '''
class Mixer:
    def mix(self, g, a, b):
        """Highway mix."""
        out = g * a + (1.0 - g) * b   # the line the mutant targets
        self.last = out
        return out

    def other(self, g, a, b):
        return g * a + (1.0 - g) * b


def scale(x):
    return x * 2
'''

# the same code after a refactor: the targeted expression split over lines, with other spacing and a
# comment, a variable and a method renamed, a method and a function added above it, the class moved down
REFACTORED = '''
def helper():
    return 1


def scale(x):
    return x * 2


class Mixer:
    def blend(self, g, a, b):
        return g * a + (1.0 - g) * b

    def mix(self, g, a, b):
        """Highway mix, reformatted."""
        mixed = (g * a
                 + (1.0 - g) * b)  # still the same expression
        self.last = mixed
        return mixed
'''

OLD, NEW = "g * a + (1.0 - g) * b", "(1.0 - g) * a + g * b"


def _run(source: str, g: float = 0.25) -> float:
    scope: dict = {}
    exec(compile(source, "<tiny>", "exec"), scope)  # noqa: S102 - the test's own tiny module
    return scope["Mixer"]().mix(g, 1.0, 0.0)


def test_a_mutant_edits_only_the_named_function():
    mutated = mutate_source(TINY, "Mixer.mix", OLD, NEW)
    assert _run(TINY) == 0.25 and _run(mutated) == 0.75
    scope: dict = {}
    exec(compile(mutated, "<tiny>", "exec"), scope)  # noqa: S102
    assert scope["Mixer"]().other(0.25, 1.0, 0.0) == 0.25  # the same expression elsewhere is untouched


def test_reformatting_and_renaming_around_the_target_keeps_the_mutant():
    assert _run(REFACTORED) == 0.25
    assert _run(mutate_source(REFACTORED, "Mixer.mix", OLD, NEW)) == 0.75


def test_statements_can_be_removed():
    mutated = mutate_source(TINY, "Mixer.mix", "self.last = out", "pass")
    scope: dict = {}
    exec(compile(mutated, "<tiny>", "exec"), scope)  # noqa: S102
    mixer = scope["Mixer"]()
    mixer.mix(0.5, 1.0, 0.0)
    assert not hasattr(mixer, "last")


def test_nested_functions_are_found_by_qualified_name():
    source = "def outer():\n    def inner(x):\n        return x + 1\n    return inner(1)\n"
    scope: dict = {}
    exec(compile(mutate_source(source, "outer.inner", "x + 1", "x - 1"), "<tiny>", "exec"), scope)  # noqa: S102
    assert scope["outer"]() == 0


@pytest.mark.parametrize("function,old,why", [
    ("Mixer.mix", "g * b", "occurs 0 times"),          # the code changed: nothing to mutate
    ("Mixer.gone", OLD, "no definition"),               # the function was renamed or removed
    ("Mixer", OLD, "a class, not a function"),
])
def test_a_mutant_that_no_longer_applies_is_an_error(function, old, why):
    with pytest.raises(ValueError, match=why):
        mutate_source(TINY, function, old, NEW, "mutant tiny")


def test_an_ambiguous_target_is_an_error():
    source = "def f(x):\n    y = x * 2\n    return x * 2 + y\n"
    with pytest.raises(ValueError, match="occurs 2 times"):
        mutate_source(source, "f", "x * 2", "x * 3")


def test_check_applies_reads_the_module_under_a_root(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "tiny.py").write_text(REFACTORED)
    mutant = Mutant("swap", "g and 1 - g swapped", "pkg.tiny", "Mixer.mix", OLD, NEW, ())
    assert _run(check_applies(mutant, tmp_path)) == 0.75


def test_list_names_every_mutant_with_its_function():
    out = subprocess.run([sys.executable, "scripts/mutants.py", "--list"], capture_output=True, text=True,
                         cwd=__import__("conftest").REPO, check=True).stdout
    assert "teacher_train_mode: " in out and "lad.method.distiller:Distiller.train" in out
    bad = subprocess.run([sys.executable, "scripts/mutants.py", "--only", "nope"], capture_output=True, text=True,
                         cwd=__import__("conftest").REPO)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown mutant(s) nope")


def test_every_mutant_still_applies_after_the_package_is_reformatted(tmp_path):
    """Every module the table names, re-written with other line breaks, quotes and no comments
    (``ast.unparse``) and with a blank line and a comment added at the top of each function: the
    mutants find their code as before."""
    import ast

    from conftest import REPO
    from scripts.mutants import MUTANTS

    for path in sorted({m.path for m in MUTANTS}):
        text = ast.unparse(ast.parse((REPO / path).read_text()))
        text = text.replace("):\n    ", "):\n    # reformatted\n\n    ")
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
        assert text != (REPO / path).read_text()
    for m in MUTANTS:
        check_applies(m, tmp_path)
