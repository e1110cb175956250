"""Standard output or error closed before syncprep starts (``>&-``, ``2>&-``; pythonw and some
service launchers): Python makes ``sys.stdout``/``sys.stderr`` None. The command runs and exits
with its own code, no traceback (final read B, B4: it ended in AttributeError and exit 1)."""

import subprocess
import sys

from conftest import EXAMPLE


def _closed(tmp_path, redirect, *args):
    """Run syncprep under sh with ``redirect`` (e.g. ``>&-``); stderr, when open, to a file."""
    err = tmp_path / "err.txt"
    command = [sys.executable, "-m", "reconciler.cli", *map(str, args)]
    script = f'exec "$@" {redirect}'
    done = subprocess.run(["sh", "-c", script, "sh", *command], cwd=tmp_path, timeout=120, stdout=subprocess.DEVNULL, stderr=err.open("w"))
    return done.returncode, err.read_text()


def test_validate_with_stderr_closed_exits_0(tmp_path):
    assert _closed(tmp_path, "2>&-", "validate", EXAMPLE) == (0, "")


def test_validate_with_stdout_closed_exits_0(tmp_path):
    assert _closed(tmp_path, ">&-", "validate", EXAMPLE) == (0, "")


def test_an_apply_with_both_streams_closed_exits_with_its_own_code(tmp_path):
    """As `syncprep apply ... | head -1`: 4 (two users end without a licence, as in test_cli)."""
    assert _closed(tmp_path, ">&- 2>&-", "apply", EXAMPLE, "--auto-approve")[0] == 4
    plan = subprocess.run([sys.executable, "-m", "reconciler.cli", "plan", str(EXAMPLE), "--detailed-exitcode"], capture_output=True, cwd=tmp_path, timeout=120)
    assert plan.returncode == 0, "the whole plan was applied"


def test_an_apply_with_stdout_closed_says_nothing_on_stderr(tmp_path):
    assert _closed(tmp_path, ">&-", "apply", EXAMPLE, "--auto-approve") == (4, "")


def test_plan_detailed_exitcode_with_stdout_closed_keeps_its_meaning(tmp_path):
    assert _closed(tmp_path, ">&-", "plan", EXAMPLE, "--detailed-exitcode") == (2, "")
