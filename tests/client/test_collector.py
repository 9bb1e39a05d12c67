"""Only dpkit's own processes freeze the collector's heap; importing the library never does."""

from __future__ import annotations

import subprocess
import sys


def _frozen_after(code: str) -> int:
    script = f"import gc\n{code}\nprint(gc.get_freeze_count())"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    return int(done.stdout.split()[-1])


def test_importing_the_client_freezes_nothing_of_the_host_application() -> None:
    assert _frozen_after("from dpkit import Scene\nimport dpkit.client.scene") == 0


def test_an_application_may_freeze_its_own_start_up() -> None:
    assert _frozen_after("from dpkit.collector import freeze_heap\nfreeze_heap()") > 1000
