"""Stopping cleanly: SIGTERM/SIGINT raise ``Interrupted``, a per-case deadline raises ``CaseTimeout``.

Both raise an exception from a signal handler in the main thread, so a stop takes effect at the next Python
instruction. During inference that is within one sliding window, because MONAI loops over the windows in Python.
Every file the package writes goes through a temporary name that is removed on any exception, so no stop leaves a
partial file behind.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from htcnns.errors import CaseTimeout, Interrupted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals() -> None:
    """Make the first SIGTERM or SIGINT raise Interrupted; later ones are ignored while the run shuts down."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_interrupted)


_held = {"depth": 0, "pending": 0}
"""Stops held back (``hold_stops``) and the signal that arrived meanwhile (0: none)."""


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    for other in STOP_SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    if _held["depth"]:
        _held["pending"] = signum
        return
    raise Interrupted(signum)


def hold_stops() -> None:
    """Hold back SIGTERM/SIGINT until ``release_stops``: between an output's rename and its report entry, so a
    stop never leaves a finished output that the report calls interrupted. Calls nest."""
    _held["depth"] += 1


def release_stops() -> None:
    """End one ``hold_stops``; at the outermost, a stop that arrived meanwhile raises Interrupted now."""
    _held["depth"] = max(0, _held["depth"] - 1)
    if not _held["depth"] and _held["pending"]:
        signum, _held["pending"] = _held["pending"], 0
        raise Interrupted(signum)


def _raise_timeout(signum: int, frame: FrameType | None) -> None:
    raise CaseTimeout()


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise CaseTimeout inside the block once ``seconds`` (wall clock) have passed.

    No limit when ``seconds`` is None, or outside the main thread (only it receives signals).
    """
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGALRM, _raise_timeout)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
