"""An approved apply whose standard output fails other than by a closed pipe (the disk fills:
ENOSPC) runs to its end as it does for a closed pipe (tests/test_closed_output.py): its
brackets put back, the read-back, --report; what it prints from then on is dropped. It then
says the output failed, in one line on stderr, and exits 1, as a verb whose output fails does
(tests/test_left_alone_verb_into_full.py). Before, the first print after the disk filled raised
OSError and stopped the apply there."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLE
from providers.lab import store
from providers.lab.provider import LabServer
from reconciler.cli import apply as apply_verb
from reconciler.cli.command import main
from reconciler.operations import RemoveRule

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")

FAILED = "error: cannot write the output: No space left on device\n"


def _stdout_that_fills(tmp_path, monkeypatch, request):
    """Standard output goes to a file; the function returned puts /dev/full under it (the disk is full)."""
    stream = open(tmp_path / "stdout.txt", "w", encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", stream)

    def close():
        with contextlib.suppress(OSError):
            stream.close()

    request.addfinalizer(close)

    def disk_full():
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, stream.fileno())
        os.close(full)

    return disk_full


def _ran_to_its_end(tmp_path):
    lab = store.load(tmp_path / ".syncprep" / "lab.json")
    assert lab.server.sync_cycle_enabled, "the scheduler was resumed"
    assert not list((tmp_path / ".syncprep").glob("*.lock")), "the lock was released"
    assert "contractor01@contoso.com" in (tmp_path / "users.csv").read_text(), "--report was written"
    done = subprocess.run([sys.executable, "-m", "reconciler.cli", "plan", str(EXAMPLE), "--detailed-exitcode"], capture_output=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, "the whole plan was applied"


def test_an_apply_whose_disk_fills_as_it_is_approved_runs_to_its_end(tmp_path, monkeypatch, request, capsys):
    monkeypatch.chdir(tmp_path)
    disk_full = _stdout_that_fills(tmp_path, monkeypatch, request)
    approved = apply_verb.run_to_the_end

    def approved_then_full(*consoles):
        approved(*consoles)
        disk_full()

    monkeypatch.setattr(apply_verb, "run_to_the_end", approved_then_full)
    code = main(["apply", str(EXAMPLE), "--auto-approve", "--report", "users.csv"])
    assert (code, capsys.readouterr().err) == (1, FAILED)
    assert (tmp_path / "stdout.txt").read_text().startswith("Plan for "), "the plan was shown before"
    _ran_to_its_end(tmp_path)


def test_an_apply_whose_disk_fills_with_the_scheduler_paused_puts_it_back_and_reads_back(tmp_path, monkeypatch, request, capsys):
    """The disk fills inside a step: the progress lines, the summary and the read-back's lines are dropped."""
    monkeypatch.chdir(tmp_path)
    disk_full = _stdout_that_fills(tmp_path, monkeypatch, request)
    real = LabServer.apply

    def fills(self, operation):
        if isinstance(operation, RemoveRule):
            assert not self.lab.server.sync_cycle_enabled, "inside the bracket: the scheduler is paused"
            disk_full()
        return real(self, operation)

    monkeypatch.setattr(LabServer, "apply", fills)
    code = main(["apply", str(EXAMPLE), "--auto-approve", "--report", "users.csv"])
    assert (code, capsys.readouterr().err) == (1, FAILED)
    _ran_to_its_end(tmp_path)
