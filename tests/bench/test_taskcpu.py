"""bench/taskcpu.py: BENCH_TASKCPU's attribution of the loop thread's CPU to tasks and callbacks."""

from __future__ import annotations

import asyncio
import time
from asyncio import events
from pathlib import Path

import pytest

from bench import taskcpu


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def busy_leaf() -> None:
    burn(0.02)  # before its first await: the step that ends at the sleep below
    await asyncio.sleep(0)


async def busy_task() -> None:
    await busy_leaf()


async def test_the_loop_threads_cpu_goes_to_the_task_and_the_awaits_it_stopped_at() -> None:
    original = events.Handle._run
    meter = taskcpu.HandleCPU(depth=3)
    meter.start()
    try:
        with pytest.raises(RuntimeError):
            meter.start()
        await asyncio.create_task(busy_task())
        asyncio.get_running_loop().call_soon(burn, 0.01)
        await asyncio.sleep(0.01)
    finally:
        meter.stop()
    assert events.Handle._run is original  # restored
    stepped = {k: v for k, v in meter.seconds.items() if k.startswith("task:busy_task")}
    assert max(stepped.values()) >= 0.02
    busiest = max(stepped, key=stepped.__getitem__)
    assert busiest == "task:busy_task > busy_leaf > sleep > __sleep0"
    assert meter.seconds["cb:burn"] >= 0.01 and meter.handles["cb:burn"] == 1
    assert meter.table().splitlines()[1].endswith(busiest)


def test_it_is_off_unless_asked_for_and_writes_each_runs_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BENCH_TASKCPU", raising=False)
    assert taskcpu.start_taskcpu() is None
    out = tmp_path / "cpu.txt"
    monkeypatch.setenv("BENCH_TASKCPU", str(out))
    meter = taskcpu.start_taskcpu()
    assert meter is not None
    taskcpu.stop_taskcpu(meter, naive=True)
    assert events.Handle._run is not None and meter._original is None
    assert (tmp_path / "cpu.txt-naive").read_text().startswith("total ")
