"""The lock's liveness check on both platforms, each branch chosen explicitly (CI has no Windows).

On Windows ``os.kill(pid, 0)`` sends CTRL_C_EVENT: the Windows branch must never call it,
and must ask kernel32 instead. The stand-in below answers as kernel32 does
(documented: OpenProcess fails with ERROR_INVALID_PARAMETER for a pid no process has,
ERROR_ACCESS_DENIED for a protected one; GetExitCodeProcess gives STILL_ACTIVE, 259,
while the process runs)."""

import json
import multiprocessing
import os
import socket

import pytest

from reconciler import journal, processes
from reconciler.journal import LockedError, TargetLock
from reconciler.processes import exclusive, pid_alive


class FakeKernel32:
    """kernel32 for a host whose processes are ``{pid: exit code}`` (259 while running)."""

    def __init__(self, processes_, denied=()):
        self.processes = processes_
        self.denied = set(denied)
        self.last_error = 0
        self.open_handles = set()
        self.calls = []

    def OpenProcess(self, access, inherit, pid):
        self.calls.append(("OpenProcess", access, inherit, pid))
        if pid in self.denied:
            self.last_error = processes.ERROR_ACCESS_DENIED
            return None
        if pid not in self.processes:
            self.last_error = processes.ERROR_INVALID_PARAMETER
            return None
        handle = 1000 + pid
        self.open_handles.add(handle)
        return handle

    def GetExitCodeProcess(self, handle, code_ref):
        code_ref._obj.value = self.processes[handle - 1000]
        return 1

    def CloseHandle(self, handle):
        self.open_handles.discard(handle)
        return 1

    def get_last_error(self):
        return self.last_error


def _windows(pid, kernel):
    return pid_alive(pid, platform="win32", kernel32=kernel, get_last_error=kernel.get_last_error)


@pytest.fixture
def no_os_kill(monkeypatch):
    def refuse(*args):
        raise AssertionError(f"os.kill{args} on Windows sends CTRL_C_EVENT")

    monkeypatch.setattr(os, "kill", refuse)


def test_windows_a_running_process_is_alive(no_os_kill):
    kernel = FakeKernel32({4242: processes.STILL_ACTIVE})
    assert _windows(4242, kernel) is True
    assert kernel.calls == [("OpenProcess", processes.PROCESS_QUERY_LIMITED_INFORMATION, False, 4242)]
    assert not kernel.open_handles  # the handle is closed


def test_windows_no_such_process_is_gone(no_os_kill):
    assert _windows(4242, FakeKernel32({})) is False


def test_windows_an_exited_process_whose_handle_lingers_is_gone(no_os_kill):
    kernel = FakeKernel32({4242: 1})
    assert _windows(4242, kernel) is False
    assert not kernel.open_handles


def test_windows_access_denied_counts_as_alive(no_os_kill):
    assert _windows(4, FakeKernel32({}, denied={4})) is True


def test_windows_an_unreadable_pid_is_gone(no_os_kill):
    kernel = FakeKernel32({})
    assert _windows("not a pid", kernel) is False
    assert _windows(None, kernel) is False
    assert kernel.calls == []


def test_windows_branch_is_what_the_lock_uses(monkeypatch, no_os_kill):
    """The lock itself, on 'Windows': a crashed holder's lock reads as gone, a live one as held."""
    kernel = FakeKernel32({77: processes.STILL_ACTIVE})
    monkeypatch.setattr(processes, "_kernel32", lambda: (kernel, kernel.get_last_error))
    here = socket.gethostname()
    assert journal._alive({"host": here, "pid": 77}, platform="win32") is True
    assert journal._alive({"host": here, "pid": 78}, platform="win32") is False
    assert journal._alive({"host": "elsewhere", "pid": 78}, platform="win32") is True


def test_posix_own_process_is_alive_and_a_reaped_child_is_gone():
    assert pid_alive(os.getpid(), platform="linux") is True
    child = multiprocessing.get_context("fork").Process(target=lambda: None)
    child.start()
    child.join()
    assert pid_alive(child.pid, platform="linux") is False


def test_posix_another_users_process_is_alive(monkeypatch):
    def denied(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", denied)
    assert pid_alive(1, platform="linux") is True


class FakeMsvcrt:
    LK_LOCK, LK_UNLCK = 1, 0

    def __init__(self):
        self.calls = []

    def locking(self, fd, mode, nbytes):
        self.calls.append((mode, nbytes, os.lseek(fd, 0, os.SEEK_CUR)))


def test_windows_take_over_guard_uses_msvcrt_not_fcntl(tmp_path):
    fake = FakeMsvcrt()
    fd = os.open(tmp_path / "guard", os.O_CREAT | os.O_RDWR)
    try:
        os.write(fd, b"xy")  # the position is not 0: the lock is still on the first byte
        with exclusive(fd, platform="win32", module=fake):
            assert fake.calls == [(FakeMsvcrt.LK_LOCK, 1, 0)]
        assert fake.calls[-1] == (FakeMsvcrt.LK_UNLCK, 1, 0)
    finally:
        os.close(fd)


def test_take_over_on_windows_end_to_end(tmp_path, monkeypatch, no_os_kill):
    """A lock left by a crashed apply (its pid no longer runs) is taken over on 'Windows'."""
    kernel = FakeKernel32({})
    monkeypatch.setattr(processes, "PLATFORM", "win32", raising=False)
    monkeypatch.setattr(processes, "_kernel32", lambda: (kernel, kernel.get_last_error))
    fake = FakeMsvcrt()
    real = processes.exclusive
    monkeypatch.setattr(journal, "exclusive", lambda fd: real(fd, module=fake), raising=False)
    path = tmp_path / "lock"
    path.write_text(json.dumps({"id": "dead0001", "pid": 999999, "host": socket.gethostname()}))
    with TargetLock(path, "apply --resume", take_over_dead=True) as lock:
        assert lock.taken_over["id"] == "dead0001"
        assert [c[0] for c in fake.calls] == [FakeMsvcrt.LK_LOCK, FakeMsvcrt.LK_UNLCK]
    kernel.processes[999998] = processes.STILL_ACTIVE
    path.write_text(json.dumps({"id": "live0001", "pid": 999998, "host": socket.gethostname()}))
    with pytest.raises(LockedError, match="live0001"):
        with TargetLock(path, "apply --resume", take_over_dead=True):
            pass

