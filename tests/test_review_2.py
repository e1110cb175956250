"""Review 2's findings on the operable CLI (issue 17), each reproduced before its fix."""

import os
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
