"""``--help``/``--version`` (and a usage error) into an output that fails other than by a closed
pipe (a full disk: /dev/full): one line on stderr and 1, as the README's exit-code table gives an
error, no traceback (final read B, B1: the write's OSError escaped as a traceback)."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")


def _into_dev_full(*args, stream="stdout"):
    with open("/dev/full", "w") as full:
        redirect = {"stdout": full, "stderr": subprocess.PIPE} if stream == "stdout" else {"stdout": subprocess.PIPE, "stderr": full}
        done = subprocess.run([sys.executable, "-m", "reconciler.cli", *args], timeout=120, text=True, **redirect)
    return done.returncode, done.stderr if stream == "stdout" else done.stdout


@pytest.mark.parametrize("args", [("--help",), ("--version",), ("plan", "--help")], ids=["help", "version", "verb-help"])
def test_help_into_a_full_disk_is_one_line_and_1(args):
    code, err = _into_dev_full(*args)
    assert (code, err) == (1, "error: cannot write the output: No space left on device\n")


def test_a_usage_error_into_a_full_stderr_exits_1_without_a_traceback():
    assert _into_dev_full("plan", "--no-such-option", stream="stderr") == (1, "")
