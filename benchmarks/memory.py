"""Peak resident memory of a benchmark's child process (Linux), shared by the benchmarks."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path


def reset_peak_rss() -> None:
    """Linux keeps a process's high-water RSS across fork and exec; clear it so that a child
    measures its own peak (writing 5 to clear_refs resets VmHWM)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan
