"""The training loop's clock: wall-clock seconds that leave out the time the process was stopped.

A run paused with SIGSTOP or Ctrl-Z (to lend its cores to another job), or a machine that was
suspended, would otherwise count the pause as training: in `elapsed`, in the `--minutes` budget
and in a study's `train_min`. No OS clock leaves a stopped process's time out, so a heartbeat
thread wakes every `beat` seconds and records that the process is alive; a reading that finds
far more than `beat` seconds since the last sign of life means every thread was stopped, and
the excess is booked as paused. Pauses shorter than `beat + slack` are not detected.

The heartbeat needs the GIL to run, so a C call that held the GIL for longer than `slack`
would be mistaken for a pause; torch releases the GIL in its kernels, and the loop has no
such call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class ActiveClock:
    """Call it for the seconds since an arbitrary origin, less the time the process was stopped.

    `source` is the underlying clock and `heartbeat=False` leaves the thread out, both for tests,
    which then call `tick()` where the thread would.
    """

    def __init__(self, *, beat: float = 1.0, slack: float = 4.0, source: Callable[[], float] = time.monotonic,
                 heartbeat: bool = True):
        if beat <= 0 or slack < 0:
            raise ValueError(f"beat must be > 0 and slack >= 0, got beat={beat}, slack={slack}")
        self.beat, self.slack, self._source = beat, slack, source
        self.paused = 0.0  # seconds booked as stopped so far
        self._last = source()  # the last sign of life
        self._lock = threading.Lock()
        if heartbeat:
            threading.Thread(target=self._run, name="encdec-clock", daemon=True).start()

    def __call__(self) -> float:
        return self.tick()

    def tick(self) -> float:
        """Record a sign of life; returns the active time now."""
        with self._lock:
            t = self._source()
            gap = t - self._last
            if gap > self.beat + self.slack:  # nothing ran for that long: the process was stopped
                self.paused += gap - self.beat
            self._last = t
            return t - self.paused

    def _run(self) -> None:
        while True:
            time.sleep(self.beat)
            self.tick()


_shared: ActiveClock | None = None


def now() -> float:
    """The process's shared active clock, its heartbeat started on the first call."""
    global _shared
    if _shared is None:
        _shared = ActiveClock()
    return _shared()


def paused_seconds() -> float:
    """Seconds the shared clock has booked as stopped in this process (0 before its first use)."""
    return _shared.paused if _shared else 0.0
