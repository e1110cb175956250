"""``capture.run_together``: processes started at once, each one's pipes read while they all run."""

import os
import subprocess
import sys
import time

import pytest

from capture import run_together

#: Writes ``n`` bytes to stdout and to stderr, more than a pipe holds (64 KiB on Linux).
LOUD = "import sys; n = int(sys.argv[1]); sys.stdout.write('o' * n); sys.stdout.flush(); sys.stderr.write('e' * n); sys.exit(int(sys.argv[2]))"


def test_two_processes_that_write_more_than_a_pipe_holds_both_finish_with_all_their_output(tmp_path):
    size = 1 << 20
    results = run_together([[sys.executable, "-c", LOUD, str(size), "3"], {"args": [sys.executable, "-c", LOUD, str(size), "4"], "cwd": tmp_path}], timeout=120)
    assert [(code, len(out), len(err)) for code, out, err in results] == [(3, size, size), (4, size, size)]
    assert results[0][1] == "o" * size and results[1][2] == "e" * size


def _pipe_is_full(stream):
    """Whether the pipe behind ``stream`` holds as many bytes as it can (nobody has read it)."""
    import fcntl
    import struct
    import termios

    unread = struct.unpack("i", fcntl.ioctl(stream.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    return unread >= fcntl.fcntl(stream.fileno(), fcntl.F_GETPIPE_SZ)


def test_waiting_before_reading_blocks_where_run_together_does_not():
    """Why the helper exists: the old ``[(p.wait(), p.stdout.read()) for p in ...]`` never ends.
    Once its stdout pipe is full, the child (1 MiB to write) cannot go on until someone reads:
    the wait then times out however long it is, so it need not be long (it was 10 s)."""
    process = subprocess.Popen([sys.executable, "-c", LOUD, str(1 << 20), "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _pipe_is_full(process.stdout) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _pipe_is_full(process.stdout), "the child filled its stdout pipe"
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=0.5)  # blocked writing into a full pipe
    finally:
        process.kill()
        process.communicate()


def test_a_timeout_kills_every_process_and_says_so(monkeypatch):
    """The processes are known by the Popen objects run_together makes (they were known by a
    file each wrote its pid to, which needed a timeout long enough, 8 s, for every sleeper to
    have started under load): the sleepers never end, so any timeout is theirs."""
    started = []

    class Recorded(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(subprocess, "Popen", Recorded)
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    quick = [sys.executable, "-c", "print('done')"]
    with pytest.raises(subprocess.TimeoutExpired):
        run_together([sleeper, quick, sleeper], timeout=1)
    assert len(started) == 3
    for process in (started[0], started[2]):
        assert process.returncode == -9, "killed"
        with pytest.raises(ProcessLookupError):  # and reaped
            os.kill(process.pid, 0)
