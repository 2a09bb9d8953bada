"""Every composition of conf/ (each entry point alone and with each option of each group, Hydra's own
part included) composes what tests/data/composed_configs.json recorded: reorganising the files (a
variant inheriting its base, a block moved to conf/hydra/) must not change what a command runs.

A wanted change of a config: ``python -m lad.testing.configs --write`` and commit the new digests.
"""

from __future__ import annotations

import json

from lad.testing.configs import SNAPSHOT, digests


def test_every_composition_is_the_recorded_one():
    recorded = json.loads(SNAPSHOT.read_text())
    found = digests()
    changed = sorted(name for name in recorded.keys() & found.keys() if recorded[name] != found[name])
    assert not changed, f"these compositions changed ({len(changed)}): {changed[:10]}"
    assert found.keys() == recorded.keys(), (
        f"compositions added: {sorted(found.keys() - recorded.keys())}, "
        f"gone: {sorted(recorded.keys() - found.keys())} (python -m lad.testing.configs --write)")
