"""Ctrl-C stops a command the same way on POSIX and Windows: as ``KeyboardInterrupt``.

The apply's brackets (the scheduler resumed, a raised threshold put back, the lock
released) hang on ``KeyboardInterrupt`` reaching the main thread. Two things differ on
Windows (CPython before 3.14, gh-125541):

* a wait on a lock, an event or a future without a timeout cannot be interrupted: the
  interrupt is raised only when the wait ends, which for a Graph call waiting for
  mailboxes is up to an hour. :func:`wait_for` and :func:`wait_forever` wait in short
  slices, so the interrupt is raised within one slice;
* Ctrl-Break is ``SIGBREAK``, whose default ends the process at once (no ``finally``:
  the scheduler would stay paused). :func:`stop_signals` turns it, and ``SIGTERM`` on
  both, into the same ``KeyboardInterrupt`` as Ctrl-C.

Tests choose the platform explicitly (``platform=``); CI has no Windows.
"""

from __future__ import annotations

import contextlib
import signal as _signal
import sys
import threading
import time

#: How long one slice of an interruptible wait lasts (seconds).
SLICE = 0.25

#: Beside SIGINT (Python's own default handler raises KeyboardInterrupt), the signals
#: that stop a command. SIGTERM on Windows is only ever raised from inside the process.
STOP_SIGNALS = {"posix": ("SIGTERM",), "win32": ("SIGBREAK", "SIGTERM")}


def _raise_interrupt(_signum, _frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def stop_signals(platform=None, signal_module=_signal):
    """Inside: SIGTERM (and on Windows Ctrl-Break) raise ``KeyboardInterrupt``, as Ctrl-C does.
    The previous handlers come back on exit. Only the main thread can set handlers."""
    names = STOP_SIGNALS["win32" if (platform or sys.platform) == "win32" else "posix"]
    if signal_module is _signal and threading.current_thread() is not threading.main_thread():
        names = ()  # only the main thread may set handlers (and only it gets signals)
    previous = {}
    try:
        for name in names:
            number = getattr(signal_module, name, None)
            if number is not None:
                previous[number] = signal_module.signal(number, _raise_interrupt)
        yield
    finally:
        for number, handler in previous.items():
            signal_module.signal(number, handler)


@contextlib.contextmanager
def deferred(platform=None, signal_module=_signal):
    """Inside, a stop signal (Ctrl-C, SIGTERM, on Windows Ctrl-Break) does not cut short the work
    that puts things back (the scheduler resumed, a threshold restored): it is raised as
    ``KeyboardInterrupt`` once that work is done. A second one inside raises at once: the
    operator insists. CI runners send SIGINT and then SIGTERM seconds later; the second
    signal must not land in the middle of the restore."""
    names = ("SIGINT",) + STOP_SIGNALS["win32" if (platform or sys.platform) == "win32" else "posix"]
    if signal_module is _signal and threading.current_thread() is not threading.main_thread():
        names = ()
    came = []

    def _hold(signum, _frame):
        came.append(signum)
        if len(came) > 1:
            raise KeyboardInterrupt

    previous = {}
    try:
        for name in names:
            number = getattr(signal_module, name, None)
            if number is not None:
                previous[number] = signal_module.signal(number, _hold)
        yield came
    finally:
        for number, handler in previous.items():
            signal_module.signal(number, handler)
    if len(came) == 1:
        raise KeyboardInterrupt


def wait_for(future, slice_seconds=SLICE):
    """``future.result()`` that Ctrl-C interrupts on Windows too; the caller cancels on the way out."""
    while True:
        try:
            return future.result(timeout=slice_seconds)
        except TimeoutError:  # concurrent.futures.TimeoutError since 3.11
            if future.done():
                return future.result(timeout=0)  # the work itself raised TimeoutError


def wait_forever(slice_seconds=SLICE, sleep=time.sleep):
    """Until Ctrl-C (``lab serve``): sleeps in slices, which Windows interrupts."""
    while True:
        sleep(slice_seconds)
