"""The pre-registered analysis (``results/preregistration.yaml``): what the headline, the primary family
and the targets of the results page are. The page reads it; it never decides them itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sweeps.reporting.model import REPO

DEFAULT_PREREG = Path("results") / "preregistration.yaml"
MIN_SEEDS = 5   # a headline cell needs at least this many seeds to count (issue 38)


@dataclass(frozen=True)
class Prereg:
    student: str = "3layer"
    tasks: tuple[str, ...] = ("rte", "mrpc", "stsb", "cola", "sst2")
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    primary: tuple[tuple[str, str], ...] = (("lad", "kd"), ("lad", "pkd"), ("lad", "lad-frozen"))
    alpha: float = 0.05
    power: float = 0.8
    smallest_effect: float = 1.0
    ratio_method: str = "lad"
    min_pct_of_teacher: float = 97.0
    ratio_by_difference: tuple[str, ...] = ("stsb", "cola")  # % of teacher = 100 - gap in points
    wins_method: str = "lad"
    wins_over: tuple[str, ...] = ("kd", "pkd")
    min_tasks: int = 3
    headline_commit: str | None = None
    path: str = DEFAULT_PREREG.as_posix()
    tuning_trials: int = 8
    tuning_dir: str | None = None          # the tuning records (results/tuning/<method>.json), when read from a file

    @property
    def family_size(self) -> int:
        return len(self.tasks) * len(self.primary)

    @property
    def alpha_star(self) -> float:
        """alpha / family size: the level of Holm's first step (Bonferroni), used for the MDE."""
        return self.alpha / self.family_size

    min_seeds: int = MIN_SEEDS
    @property
    def methods(self) -> list[str]:
        """The headline arms: every method of the primary family, in order of first mention."""
        return list(dict.fromkeys(m for pair in self.primary for m in pair))


def read_prereg(path: Path | None = None) -> Prereg:
    """The pre-registration file (relative paths from the repository root when not found from the cwd)."""
    import yaml

    from lad.core.errors import LADError

    path = Path(path or DEFAULT_PREREG)
    found = path if path.is_file() else REPO / path
    if not found.is_file():
        raise LADError(f"no pre-registration file at {path}")
    try:
        data = yaml.safe_load(found.read_text(encoding="utf-8")) or {}
        targets = data.get("targets", {})
        commit = data.get("headline_commit")
        return Prereg(student=str(data["student"]), tasks=tuple(map(str, data["tasks"])),
                      seeds=tuple(int(s) for s in data.get("seeds") or ()),
                      primary=tuple((str(a), str(b)) for a, b in data["primary"]),
                      alpha=float(data["alpha"]), power=float(data["power"]),
                      smallest_effect=float(data["smallest_effect"]),
                      ratio_method=str(targets["ratio"]["method"]),
                      min_pct_of_teacher=float(targets["ratio"]["min_pct_of_teacher"]),
                      ratio_by_difference=tuple(map(str, targets["ratio"].get("by_difference",
                                                                         Prereg.ratio_by_difference) or ())),
                      wins_method=str(targets["wins"]["method"]),
                      wins_over=tuple(map(str, targets["wins"]["over"])),
                      min_tasks=int(targets["wins"]["min_tasks"]),
                      headline_commit=None if commit in (None, "") else str(commit), path=path.as_posix(),
                      tuning_trials=int((data.get("tuning") or {}).get("trials", 8)),
                      tuning_dir=(found.parent / "tuning").as_posix())
    except (KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise LADError(f"{path}: not a valid pre-registration ({type(exc).__name__}: {exc})") from exc


def tuning_progress(pre: Prereg) -> dict[str, int] | None:
    """Finished trials of each headline method's tuning study (from its record; None: no records folder)."""
    from sweeps.tune import finished_trials

    if pre.tuning_dir is None:
        return None
    return {method: finished_trials(Path(pre.tuning_dir) / f"{method}.json") for method in pre.methods}
