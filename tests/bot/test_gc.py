"""bot/__main__.py's collector settings (issue #13: 10,000 jobs in flight), in a child process so this
test process keeps its own."""

from __future__ import annotations

import subprocess
import sys

from bot.__main__ import GC_THRESHOLDS

CHILD = """
import gc
from bot.__main__ import GC_THRESHOLDS, tune_gc
import bot.client  # what `python -m bot` has loaded when it tunes the collector
assert gc.get_freeze_count() == 0
tune_gc()
assert gc.get_threshold() == GC_THRESHOLDS, gc.get_threshold()
# Everything loaded so far sits outside every collection; new objects are collected as usual.
frozen = gc.get_freeze_count()
assert frozen > 10_000, frozen
assert gc.collect() >= 0 and gc.get_freeze_count() == frozen
print("ok", frozen)
"""


def test_tune_gc_freezes_what_start_up_built_and_makes_full_passes_rarer() -> None:
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok ")
    # Full passes (the long stalls with thousands of jobs) rarer than Python's default; the young
    # generation as small as the default, so a burst's cyclic garbage (image buffers) goes at once.
    assert GC_THRESHOLDS[0] <= 700 and GC_THRESHOLDS[2] >= 10 * 10
