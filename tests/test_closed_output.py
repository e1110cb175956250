"""An output closed early (a pipe whose reader stopped: ``syncprep plan | head -1``) and Ctrl-C:
the exit codes the README's table gives, through real pipes. 141 (128 + SIGPIPE, as a shell
reports a command that a closed pipe stopped) when the command stops at a closed output, with
nothing on stderr; 130 when it was interrupted, also when its output is gone as well; an apply
that has started runs to its end whatever becomes of its output, and exits with its own code."""

import contextlib
import os
import subprocess
import sys

import pytest

from conftest import EXAMPLE
from reconciler.cli import validate
from reconciler.cli.command import main
from reconciler.render import ApplyRenderer


def _syncprep(*args):
    return [sys.executable, "-m", "reconciler.cli", *map(str, args)]


def _into_a_closed_pipe(tmp_path, *args):
    """Run syncprep with standard output a pipe whose reader is gone before it starts."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(_syncprep(*args), stdout=write, stderr=subprocess.PIPE, cwd=tmp_path, text=True, timeout=120)
    finally:
        os.close(write)
    return done.returncode, done.stderr


def test_an_apply_whose_reader_stops_after_the_first_line_runs_to_its_end(tmp_path):
    """'syncprep apply ... | head -1': the apply runs to its end (its output dropped) and exits with its own code."""
    process = subprocess.Popen(_syncprep("apply", EXAMPLE, "--auto-approve"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    assert process.stdout.readline().startswith(b"Plan for ")
    process.stdout.close()
    _, err = process.communicate(timeout=120)
    assert (process.returncode, err.decode()) == (4, ""), "4: two users end without a licence (as in test_cli)"
    done = subprocess.run(_syncprep("plan", EXAMPLE, "--detailed-exitcode"), capture_output=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, "the whole plan was applied"


@pytest.mark.parametrize(
    "args", [("plan", EXAMPLE), ("plan", EXAMPLE, "--json"), ("lab", "show"), ("validate", EXAMPLE), ("plan", "--help")], ids=["plan", "plan-json", "lab-show", "validate", "help"]
)
def test_an_output_closed_before_the_command_starts_gives_141(tmp_path, args):
    assert _into_a_closed_pipe(tmp_path, *args) == (141, "")


def test_an_apply_whose_output_is_closed_stops_before_any_change(tmp_path):
    """The plan cannot be shown, so it is not applied (also with --auto-approve)."""
    assert _into_a_closed_pipe(tmp_path, "apply", EXAMPLE, "--auto-approve") == (141, "")
    done = subprocess.run(_syncprep("plan", EXAMPLE, "--detailed-exitcode"), capture_output=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, "the plan still has every change"


def _streams_to_a_pipe(monkeypatch, request):
    """Standard output and error of this process go to one pipe; the function returned closes its
    reader. (Called in the test itself: pytest's capture sets its own streams as each phase starts.)"""
    read, write = os.pipe()
    stream = open(write, "w", encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", stream)
    monkeypatch.setattr(sys, "stderr", stream)

    def close():
        with contextlib.suppress(OSError):
            stream.close()

    request.addfinalizer(close)
    return lambda: os.close(read)


def test_ctrl_c_with_the_output_gone_exits_130_not_1(tmp_path, monkeypatch, request):
    """Ctrl-C on 'syncprep apply 2>&1 | tee log' ends tee too: 'interrupted' cannot be said,
    and the exit code still says it."""

    def interrupted(args, out, err):
        raise KeyboardInterrupt

    monkeypatch.setattr(validate, "run", interrupted)
    _streams_to_a_pipe(monkeypatch, request)()
    assert main(["validate", str(EXAMPLE)]) == 130


def test_an_apply_whose_output_closes_at_its_report_still_reads_back_and_writes_the_report(tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    report = ApplyRenderer.report
    close_the_reader = _streams_to_a_pipe(monkeypatch, request)

    def reader_gone(self, result):
        close_the_reader()
        report(self, result)

    monkeypatch.setattr(ApplyRenderer, "report", reader_gone)
    code = main(["apply", str(EXAMPLE), "--auto-approve", "--report", "users.csv"])
    assert code == 4, "the apply's own code: 4, two users end without a licence (as in test_cli)"
    assert "contractor01@contoso.com" in (tmp_path / "users.csv").read_text()
