"""Whether a process of this host still runs, and an exclusive guard on a file, on POSIX and Windows.

A lock left behind by a crashed apply is taken over only when its process is provably
gone. On POSIX ``os.kill(pid, 0)`` asks that without touching the process. On Windows
signal 0 is ``CTRL_C_EVENT``: ``os.kill(pid, 0)`` would interrupt a console process
group or fail with "The parameter is incorrect", so the process is asked about through
the OS's own API instead (``OpenProcess`` + ``GetExitCodeProcess``, as psutil does, without
a compiled dependency for one call).

When the answer is unsure (access denied, an API failing) the process counts as alive:
a live apply's lock must never be taken over. Tests choose the platform branch
explicitly (``platform=``) and give the Windows branch a stand-in for kernel32.
"""

from __future__ import annotations

import os
import sys

#: The platform whose branch runs; tests set it to choose a branch.
PLATFORM = sys.platform
#: OpenProcess access right enough for GetExitCodeProcess, granted for other users' processes too.
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
#: GetExitCodeProcess's code for a process that has not ended (a process that ends with
#: exit code 259 reads as alive: the safe side).
STILL_ACTIVE = 259
ERROR_ACCESS_DENIED = 5
#: OpenProcess's answer for a pid no process has.
ERROR_INVALID_PARAMETER = 87


#: The largest pid each kind of system can give: a C int on POSIX, a DWORD on Windows.
_MAX_POSIX_PID, _MAX_WINDOWS_PID = 2**31 - 1, 2**32 - 1


def pid_alive(pid, platform=None, kernel32=None, get_last_error=None):
    """Whether process ``pid`` of this host runs. ``platform`` defaults to :data:`PLATFORM`."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    windows = (platform or PLATFORM) == "win32"
    if pid <= 0 or pid > (_MAX_WINDOWS_PID if windows else _MAX_POSIX_PID):
        return False  # no process can have it (os.kill would raise OverflowError, ctypes ArgumentError)
    if windows:
        return _alive_windows(pid, kernel32, get_last_error)
    return _alive_posix(pid)


def _alive_posix(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    except OSError:
        return True  # cannot tell: keep the lock
    return True


def _alive_windows(pid, kernel32=None, get_last_error=None):
    import ctypes

    if kernel32 is None:
        kernel32, get_last_error = _kernel32()
    handle = kernel32.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        return get_last_error() != ERROR_INVALID_PARAMETER  # access denied, or unsure: alive
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _kernel32():
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.GetExitCodeProcess.argtypes = (wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD))
    kernel32.GetExitCodeProcess.restype = wintypes.BOOL
    kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
    kernel32.CloseHandle.restype = wintypes.BOOL
    return kernel32, ctypes.get_last_error


class exclusive:
    """``with exclusive(fd):`` — an exclusive lock on an open file, released on exit:
    ``fcntl.flock`` on POSIX, ``msvcrt.locking`` of its first byte on Windows (there is
    no fcntl there). ``module`` stands in for fcntl/msvcrt in tests."""

    def __init__(self, fd, platform=None, module=None):
        self.fd = fd
        self.windows = (platform or PLATFORM) == "win32"
        self.module = module

    def __enter__(self):
        if self.windows:
            msvcrt = self.module or __import__("msvcrt")
            os.lseek(self.fd, 0, os.SEEK_SET)
            # LK_LOCK retries for about ten seconds, then raises OSError; a take-over holds it for milliseconds.
            msvcrt.locking(self.fd, msvcrt.LK_LOCK, 1)
        else:
            fcntl = self.module or __import__("fcntl")
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.windows:
            msvcrt = self.module or __import__("msvcrt")
            os.lseek(self.fd, 0, os.SEEK_SET)
            msvcrt.locking(self.fd, msvcrt.LK_UNLCK, 1)
        # POSIX: closing the descriptor releases the flock.
        return False
