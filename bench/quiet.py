"""Wait for a quiet machine before a timed run, so that neither side of a ratio pays for work
the other left running: the stage server's spare scorer imports TensorFlow (about 5 s of one
core) right after a register stage takes the last one."""

from __future__ import annotations

import time


def _busy_and_total() -> tuple[int, int]:
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def settle(threshold: float = 0.15, window_s: float = 0.5, max_s: float = 30.0) -> float:
    """Return once the whole machine's CPU use over `window_s` falls below `threshold` (or
    after `max_s`); the seconds waited."""
    start = time.perf_counter()
    try:
        busy, total = _busy_and_total()
    except OSError:  # no /proc (not Linux): nothing to wait on
        return 0.0
    while time.perf_counter() - start < max_s:
        time.sleep(window_s)
        busy_now, total_now = _busy_and_total()
        share = (busy_now - busy) / max(1, total_now - total)
        busy, total = busy_now, total_now
        if share < threshold:
            break
    return time.perf_counter() - start
