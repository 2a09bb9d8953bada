"""Every config a user can compose, as data: one composition per entry point and per option of each
config group (``distil`` + ``loss=kd``, ``train_teacher`` + ``experiment=reference_rte``, ...),
Hydra's own part included. ``tests/test_configs.py`` compares their digests with
``tests/data/composed_configs.json``, so reorganising ``conf/`` (a variant inheriting its base, a
block moved to another file) is checked to compose exactly what it composed before.

    python -m lad.testing.configs            # print name -> digest
    python -m lad.testing.configs --write    # rewrite tests/data/composed_configs.json (a wanted change)
    python -m lad.testing.configs --dump F   # every composition in full to F (JSON), to diff two trees
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from lad.core.config import CONF_DIR, REPO_ROOT

SNAPSHOT = REPO_ROOT / "tests" / "data" / "composed_configs.json"
ENTRIES = ("distil", "train_teacher", "search")
#: groups that are not chosen on the command line (Hydra's own, and the experiments' recipes)
NOT_CHOSEN = ("hydra", "recipe")


def compositions() -> list[tuple[str, list[str]]]:
    """``(entry point, overrides)``: each entry point alone, then with every option of every group."""
    groups = sorted(p for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in NOT_CHOSEN)
    out = [(entry, []) for entry in ENTRIES]
    for entry in ENTRIES:
        for group in groups:
            for option in sorted(f.stem for f in group.glob("*.yaml")):
                out.append((entry, [f"{group.name}={option}"]))
    return out


def composed(entry: str, overrides: list[str]) -> dict | str:
    """The composed config (Hydra's part without its run-time fields) as plain data, or the error."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from lad.core.config import register_resolvers

    register_resolvers()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=entry, overrides=overrides, return_hydra_config=True)
    except Exception as exc:  # noqa: BLE001 - an option that does not compose with this entry is data too
        return f"error: {type(exc).__name__}"
    data = OmegaConf.to_container(cfg, resolve=False)
    data["hydra"].pop("runtime", None)  # the working directory, the plugins' versions
    # the one order that matters (the digest sorts keys): a seeded sampler suggests in this order
    data["searched in order"] = list((data["hydra"].get("sweeper") or {}).get("params") or {})
    return data


def digest(data: dict | str) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def every() -> dict[str, dict | str]:
    """``"<entry> <override>"`` -> the composed config (or its error)."""
    return {" ".join([entry, *overrides]): composed(entry, overrides) for entry, overrides in compositions()}


def digests(full: dict[str, dict | str] | None = None) -> dict[str, str]:
    """``"<entry> <override>"`` -> the digest of its composition."""
    return {name: digest(data) for name, data in (every() if full is None else full).items()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    full = every()
    found = digests(full)
    if "--dump" in argv:
        Path(argv[argv.index("--dump") + 1]).write_text(json.dumps(full, indent=1, sort_keys=True, default=str))
    if "--write" in argv:
        SNAPSHOT.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
        print(f"wrote {Path(SNAPSHOT).relative_to(REPO_ROOT)} ({len(found)} compositions)")
    else:
        for name, value in found.items():
            print(f"{value}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
