"""Review 2's findings (issues 17 and 19), each reproduced before its fix."""

import os
import subprocess
import sys
import signal
from pathlib import Path

import pytest

from providers.lab import provider, scenario, store
from reconciler import interrupts
from reconciler.cli.command import main
from reconciler.errors import ProviderError

EXAMPLE = str(Path(__file__).resolve().parents[1] / "desired-state" / "example.toml")
GRAPH_401 = (
    "Microsoft Graph rejected the credentials (401 InvalidAuthenticationToken: IDX14100: JWT is not well formed, there are no dots (.).\n"
    "The token needs to be in JWS or JWE Compact Serialization Format.)"
)


@pytest.fixture
def lab(tmp_path):
    path = tmp_path / "lab.json"
    store.save(scenario.build("default", users=20), path)
    return path


def test_a_server_error_inside_a_step_prints_as_one_line_wherever_it_is_shown(lab, monkeypatch, capsys):
    def refuse(self, operation):
        raise ProviderError("graph", "licences", GRAPH_401)

    monkeypatch.setattr(provider.LabTenant, "apply", refuse)
    code = main(["--no-color", "apply", EXAMPLE, "--lab", str(lab), "--auto-approve"])
    shown = capsys.readouterr()
    lines = [line for line in (shown.out + shown.err).splitlines() if "JWS or JWE" in line]
    assert code == 1 and lines
    assert all("IDX14100" in line for line in lines), lines


def test_a_second_stop_signal_while_the_scheduler_is_resumed_waits_until_it_is(lab, monkeypatch, capsys):
    """A CI cancel sends SIGINT, then SIGTERM seconds later: the second must not cut the bracket short."""
    real = provider.LabServer.apply
    sent = []

    def apply(self, operation):
        if type(operation).__name__ == "SetScheduler" and operation.enabled:
            os.kill(os.getpid(), signal.SIGTERM)  # the second signal, as the bracket resumes the scheduler
        result = real(self, operation)
        if type(operation).__name__ != "SetScheduler" and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)  # the first, mid-apply
        return result

    monkeypatch.setattr(provider.LabServer, "apply", apply)
    code = main(["--no-color", "apply", EXAMPLE, "--lab", str(lab), "--auto-approve"])
    assert code == 130
    assert store.load(lab).server.sync_cycle_enabled, "the scheduler was left paused"
    assert "the sync scheduler was resumed" in capsys.readouterr().out


class _Signals:
    """A signal module whose handlers the test calls by hand."""

    SIGINT, SIGTERM, SIGBREAK = 2, 15, 21

    def __init__(self):
        self.handlers = {}

    def signal(self, number, handler):
        previous, self.handlers[number] = self.handlers.get(number), handler
        return previous


def test_a_deferred_signal_is_raised_when_the_work_is_done_and_a_second_one_at_once():
    signals = _Signals()
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.deferred(platform="win32", signal_module=signals):
            signals.handlers[signals.SIGBREAK](signals.SIGBREAK, None)
            done.append("restored")
    assert done == ["restored"] and signals.handlers[signals.SIGBREAK] is None
    with pytest.raises(KeyboardInterrupt):
        with interrupts.deferred(platform="posix", signal_module=signals):
            signals.handlers[signals.SIGINT](signals.SIGINT, None)
            signals.handlers[signals.SIGTERM](signals.SIGTERM, None)  # the operator insists
            done.append("not reached")
    assert done == ["restored"]
    with interrupts.deferred(platform="posix", signal_module=signals):
        done.append("quiet")
    assert done == ["restored", "quiet"]


def test_a_change_log_with_a_negative_list_length_is_refused_in_one_line(tmp_path):
    from providers.lab.provider import open_lab_target
    from reconciler.errors import LabError

    path = tmp_path / "lab.json"
    store.save(scenario.build("default", users=20), path)
    target = open_lab_target(path)
    target.lab.advance(1)
    target.checkpoint()
    with open(store.changes_path(path), "ab") as fh:
        fh.write(b'{"users": {"cloud_users": [-5, []]}}\n')
    with pytest.raises(LabError, match="negative length") as refused:
        store.load(path)
    assert "\n" not in str(refused.value)


def test_plan_out_and_export_o_never_write_over_the_lab_s_change_log(cli):
    from reconciler.cli.options import lab_files

    assert cli("lab", "init")[0] == 0
    log = lab_files(".syncprep/lab.json")["the lab file's change log"]
    for command in (("plan", EXAMPLE, "-out", log), ("export", "-o", log), ("drift", EXAMPLE, "-o", log)):
        code, _out, err = cli(*command)
        assert code == 1 and "change log" in err and "nothing was written" in err, (command, err)
        assert not Path(log).exists() or Path(log).read_bytes().startswith(b"{"), command


@pytest.mark.parametrize("speed", ["nan", "inf", "0", "-1", "fast"])
def test_lab_serve_refuses_a_speed_that_is_not_a_finite_number_above_zero(cli, speed):
    with pytest.raises(SystemExit) as refused:
        cli("lab", "serve", "--speed", speed)
    assert refused.value.code == 1



# ---------------------------------------------------------------------------- review 2, finding 1


def _checkpointed(path):
    from providers.lab.provider import open_lab_target

    store.save(scenario.build("default", users=20), path)
    target = open_lab_target(path)
    target.lab.advance(1)
    target.checkpoint()
    return target


def _race(monkeypatch, path, subcommand):
    """Returns a list that holds the subcommand once the other process has written."""
    real, raced = store._encoded, []
    def encoded(lab, last=None):
        # another syncprep process writes the lab while this one encodes its checkpoint
        # (after save() compared identities, before it appends)
        if last is not None:
            subprocess.run([sys.executable, "-m", "reconciler.cli"] + ["lab", *subcommand, "--lab", str(path)], check=True, capture_output=True)
            raced.append(subcommand)
            monkeypatch.setattr(store, "_encoded", real)
        return real(lab, last)
    monkeypatch.setattr(store, "_encoded", encoded)
    return raced


def test_another_process_writing_the_lab_during_a_checkpoint_leaves_a_lab_that_loads(tmp_path, monkeypatch):
    path = tmp_path / "lab.json"
    target = _checkpointed(path)  # the log exists now
    raced = _race(monkeypatch, path, ["advance", "1"])
    target.lab.advance(2)
    target.checkpoint()
    assert raced, "the other process wrote during the checkpoint"
    store.load(path)                      # the lab must still load


def test_another_process_writing_the_lab_during_the_first_checkpoint_loses_no_later_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "lab.json"
    store.save(scenario.build("default", users=20), path)
    from providers.lab.provider import open_lab_target

    target = open_lab_target(path)
    target.lab.advance(1)
    target.checkpoint()                   # writes whole (no log yet)
    store.changes_path(path).unlink(missing_ok=True)
    raced = _race(monkeypatch, path, ["scheduler", "pause"])
    target.lab.advance(7)
    target.checkpoint()
    target.lab.server.deletion_threshold = 123
    target.checkpoint()
    assert raced, "the other process wrote during a checkpoint"
    # the process is killed here (no close): what does the lab file say?
    loaded = store.load(path)
    assert loaded.clock == target.lab.clock and loaded.server.deletion_threshold == 123, (loaded.clock, target.lab.clock, loaded.server.deletion_threshold)


def test_a_lock_pid_no_process_can_have_is_not_alive_instead_of_a_traceback():
    from reconciler.processes import pid_alive

    class Kernel32:
        def OpenProcess(self, *args):  # noqa: N802 - the Windows name
            raise AssertionError("a pid no process can have is never asked about")

    assert pid_alive(2**31, platform="linux") is False
    assert pid_alive(2**40, platform="win32", kernel32=Kernel32(), get_last_error=lambda: 0) is False
    assert pid_alive(os.getpid(), platform="linux") is True
