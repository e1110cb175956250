"""Ctrl-C stops a command on Windows as on Linux: tested by logic, the platform chosen explicitly.

``_thread.interrupt_main()`` trips the interrupt flag without sending a signal, so a
blocked wait is not woken on Linux either: exactly what Ctrl-C does on Windows
(before CPython 3.14), where only a wait in slices lets the interrupt through.
"""

import _thread
import asyncio
import concurrent.futures
import os
import signal
import threading

import pytest

from providers.graph.tenant import GraphTenant
from reconciler.interrupts import stop_signals, wait_for, wait_forever


class FakeSignals:
    SIGINT, SIGTERM, SIGBREAK = 2, 15, 21

    def __init__(self):
        self.handlers = {2: "default-int", 15: "default-term", 21: "default-break"}

    def signal(self, number, handler):
        previous, self.handlers[number] = self.handlers[number], handler
        return previous


def test_on_windows_ctrl_break_and_sigterm_raise_keyboard_interrupt_and_are_restored():
    fake = FakeSignals()
    with stop_signals(platform="win32", signal_module=fake):
        for number in (fake.SIGBREAK, fake.SIGTERM):
            with pytest.raises(KeyboardInterrupt):
                fake.handlers[number](number, None)
        assert fake.handlers[fake.SIGINT] == "default-int"  # Python's own: KeyboardInterrupt already
    assert fake.handlers == FakeSignals().handlers


def test_on_posix_sigterm_is_ctrl_c_and_sigbreak_is_not_asked_for():
    class NoBreak(FakeSignals):
        def signal(self, number, handler):
            assert number != self.SIGBREAK
            return super().signal(number, handler)

    with stop_signals(platform="linux", signal_module=NoBreak()):
        pass
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with stop_signals(platform="linux"):
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is previous


class SliceOnly(concurrent.futures.Future):
    """A future that refuses a wait without a timeout: Windows would not interrupt it."""

    def result(self, timeout=None):
        assert timeout is not None, "a wait without a timeout cannot be interrupted on Windows"
        return super().result(timeout)


def test_wait_for_waits_in_slices_and_gives_the_result_or_the_error():
    future = SliceOnly()
    threading.Timer(0.05, future.set_result, ("done",)).start()
    assert wait_for(future, slice_seconds=0.01) == "done"
    failed = SliceOnly()
    failed.set_exception(TimeoutError("the work itself timed out"))
    with pytest.raises(TimeoutError, match="the work itself"):
        wait_for(failed, slice_seconds=0.01)


def test_wait_forever_sleeps_in_slices_until_interrupted():
    slices = []

    def sleep(seconds):
        slices.append(seconds)
        if len(slices) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        wait_forever(slice_seconds=0.2, sleep=sleep)
    assert slices == [0.2, 0.2, 0.2]


@pytest.fixture
def python_ctrl_c():
    """Python's own Ctrl-C handler, as a run in the foreground has: a run started in the
    background (a shell's ``&``) ignores SIGINT, and ``interrupt_main()`` then does nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_a_graph_call_cancels_it_and_reaches_the_caller(monkeypatch, python_ctrl_c):
    """A Graph call that waits (for mailboxes, up to an hour) is cut short by Ctrl-C:
    the coroutine is cancelled in the provider's loop, and the interrupt reaches apply's
    brackets at once, not when the call ends."""
    import providers.graph.tenant as graph_tenant

    tenant = GraphTenant("http://127.0.0.1:9/v1.0", make_auth=lambda: None)
    started, waiting, outcome = threading.Event(), threading.Event(), []
    real_wait = getattr(graph_tenant, "wait_for", None)

    def wait_for(future):
        waiting.set()  # the main thread is in the provider's wait (old code: never, it waits in one piece)
        return real_wait(future)

    if real_wait is not None:
        monkeypatch.setattr(graph_tenant, "wait_for", wait_for)

    async def long_graph_call():
        started.set()
        try:
            await asyncio.sleep(3)
            outcome.append("finished")
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    def press_ctrl_c():
        started.wait()
        waiting.wait(timeout=1 if real_wait is None else None)
        _thread.interrupt_main()  # like Windows: no signal wakes the wait

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            tenant._run(long_graph_call())
        assert tenant._run(asyncio.sleep(0, "the loop still serves")) == "the loop still serves"
        assert outcome == ["cancelled"]
    finally:
        tenant.close()


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_interrupted_apply_exits_130_with_the_scheduler_on_and_the_lock_released(cli, monkeypatch, how):
    """Ctrl-C (KeyboardInterrupt, as Windows and Linux both raise it) or SIGTERM inside a step
    of `syncprep apply`: the scheduler is resumed, the lock released, exit 130, resumable."""
    from pathlib import Path

    from conftest import EXAMPLE
    from providers.lab import store
    from providers.lab.provider import LabServer
    from reconciler.operations import RemoveRule

    real = LabServer.apply

    def interrupted(self, operation):
        if isinstance(operation, RemoveRule):
            if how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            raise KeyboardInterrupt
        return real(self, operation)

    monkeypatch.setattr(LabServer, "apply", interrupted)
    code, _out, err = cli("apply", EXAMPLE, "--auto-approve")
    assert code == 130 and "interrupted" in err
    assert store.load(".syncprep/lab.json").server.sync_cycle_enabled
    assert not list(Path(".syncprep").glob("*.lock"))
    monkeypatch.setattr(LabServer, "apply", real)
    code, _out, err = cli("apply", EXAMPLE, "--auto-approve", "--resume")
    assert code == 4, err  # finished; user07 and user20 end without a licence, as in the quick start
