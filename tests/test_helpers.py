"""The test helpers themselves: a timed-out multi-process command leaves nothing behind."""

from __future__ import annotations

import sys

import psutil
import pytest

from tests.helpers import run_group

SPAWN = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(child.pid, flush=True)
time.sleep(120)
"""


def test_run_group_kills_descendants_in_other_sessions_on_timeout(tmp_path):
    before = {p.pid for p in psutil.process_iter()}
    with pytest.raises(AssertionError, match="timed out after 3 s"):
        run_group([sys.executable, "-c", SPAWN], timeout=3)
    left = [p for p in psutil.process_iter(["cmdline"]) if p.pid not in before
            and "time.sleep(120)" in " ".join(p.info["cmdline"] or [])]
    # a SIGKILL is delivered asynchronously: give the killed ones a moment to die; one left sleeping was not killed
    _, alive = psutil.wait_procs(left, timeout=10)
    for p in alive:
        try:
            assert p.status() == psutil.STATUS_ZOMBIE, (p.pid, p.status())
        except psutil.NoSuchProcess:
            pass
