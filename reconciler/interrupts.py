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

On POSIX, ``SIGHUP`` (the terminal closed: an SSH session dropped, the window shut at the
approval prompt) is one too: its default ends the process at once, leaving the scheduler
paused and the lock behind. A signal the process was started ignoring stays ignored
(``nohup syncprep apply ...`` keeps running after the terminal goes; a shell's background
job keeps ignoring SIGINT).

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
STOP_SIGNALS = {"posix": ("SIGTERM", "SIGHUP"), "win32": ("SIGBREAK", "SIGTERM")}


def _hung_up(signum, signal_module):
    """Whether ``signum`` is a hang-up; if so, SIGHUP is ignored from now on: the terminal is gone,
    and the next one (the shell passes on the kernel's) is nobody insisting."""
    if signum != getattr(signal_module, "SIGHUP", None):
        return False
    signal_module.signal(signum, getattr(signal_module, "SIG_IGN", _signal.SIG_IGN))
    return True


def _install(names, handler, signal_module, previous):
    """``handler`` for each signal of ``names`` the module has and the process does not ignore;
    the handlers it replaced go in ``previous`` (by number), to be put back."""
    ignored = getattr(signal_module, "SIG_IGN", _signal.SIG_IGN)
    for name in names:
        number = getattr(signal_module, name, None)
        if number is None:
            continue
        replaced = signal_module.signal(number, handler)
        if replaced is ignored:  # nohup, or a background job's SIGINT: it stays ignored
            signal_module.signal(number, replaced)
        else:
            previous[number] = replaced


def _restore(previous, signal_module):
    ignored = getattr(signal_module, "SIG_IGN", _signal.SIG_IGN)
    for number, handler in previous.items():
        if signal_module.signal(number, handler) is ignored:  # a hang-up came: it stays ignored
            signal_module.signal(number, ignored)


@contextlib.contextmanager
def stop_signals(platform=None, signal_module=_signal):
    """Inside: SIGTERM (on POSIX SIGHUP, on Windows Ctrl-Break) raise ``KeyboardInterrupt``, as
    Ctrl-C does. The previous handlers come back on exit. Only the main thread can set handlers."""
    names = STOP_SIGNALS["win32" if (platform or sys.platform) == "win32" else "posix"]
    if signal_module is _signal and threading.current_thread() is not threading.main_thread():
        names = ()  # only the main thread may set handlers (and only it gets signals)

    def _stop(signum, _frame):
        _hung_up(signum, signal_module)
        raise KeyboardInterrupt

    previous = {}
    try:
        _install(names, _stop, signal_module, previous)
        yield
    finally:
        _restore(previous, signal_module)


@contextlib.contextmanager
def deferred(platform=None, signal_module=_signal):
    """Inside, a stop signal (Ctrl-C, SIGTERM, SIGHUP, on Windows Ctrl-Break) does not cut short the work
    that puts things back (the scheduler resumed, a threshold restored): it is raised as
    ``KeyboardInterrupt`` once that work is done. A second one inside raises at once: the
    operator insists. CI runners send SIGINT and then SIGTERM seconds later; the second
    signal must not land in the middle of the restore."""
    names = ("SIGINT",) + STOP_SIGNALS["win32" if (platform or sys.platform) == "win32" else "posix"]
    if signal_module is _signal and threading.current_thread() is not threading.main_thread():
        names = ()
    came = []

    def _hold(signum, _frame):
        if _hung_up(signum, signal_module):  # a hang-up stops, and never insists
            if not came:
                came.append(signum)
            return
        came.append(signum)
        if len(came) > 1:
            raise KeyboardInterrupt

    previous = {}
    try:
        _install(names, _hold, signal_module, previous)
        yield came
    finally:
        _restore(previous, signal_module)
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
