"""``capture.run_together``: processes started at once, each one's pipes read while they all run."""

import os
import subprocess
import sys

import pytest

from capture import run_together

#: Writes ``n`` bytes to stdout and to stderr, more than a pipe holds (64 KiB on Linux).
LOUD = "import sys; n = int(sys.argv[1]); sys.stdout.write('o' * n); sys.stdout.flush(); sys.stderr.write('e' * n); sys.exit(int(sys.argv[2]))"


def test_two_processes_that_write_more_than_a_pipe_holds_both_finish_with_all_their_output(tmp_path):
    size = 1 << 20
    results = run_together([[sys.executable, "-c", LOUD, str(size), "3"], {"args": [sys.executable, "-c", LOUD, str(size), "4"], "cwd": tmp_path}], timeout=120)
    assert [(code, len(out), len(err)) for code, out, err in results] == [(3, size, size), (4, size, size)]
    assert results[0][1] == "o" * size and results[1][2] == "e" * size


def test_waiting_before_reading_blocks_where_run_together_does_not():
    """Why the helper exists: the old ``[(p.wait(), p.stdout.read()) for p in ...]`` never ends."""
    process = subprocess.Popen([sys.executable, "-c", LOUD, str(1 << 20), "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=10)  # blocked writing into a full pipe
    finally:
        process.kill()
        process.communicate()


def test_a_timeout_kills_every_process_and_says_so(tmp_path):
    sleeper = lambda name: [sys.executable, "-c", f"import os, time; open({str(tmp_path / name)!r}, 'w').write(str(os.getpid())); time.sleep(600)"]  # noqa: E731
    quick = [sys.executable, "-c", "print('done')"]
    with pytest.raises(subprocess.TimeoutExpired):
        run_together([sleeper("a"), quick, sleeper("b")], timeout=8)
    for name in ("a", "b"):
        with pytest.raises(ProcessLookupError):  # killed and reaped
            os.kill(int((tmp_path / name).read_text()), 0)
